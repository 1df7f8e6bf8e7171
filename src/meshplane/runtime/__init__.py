"""The local multi-cluster runtime: a whole mesh (control plane, member clusters, workloads with their sidecars)
as processes on one machine, each instance on its own loopback address (``meshplane up``, ``meshplane demo``).

Modules: ``manifest`` (the YAML format), ``home`` (state on disk), ``supervisor`` (the process tree),
``control`` (what the commands do), ``demo`` and ``demoapp`` (the Bookinfo-shaped demo). See docs/runtime.md.
"""
