"""The ``meshplane`` command: the control plane server, kubeconfig, and (later) the local runtime."""
