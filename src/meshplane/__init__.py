"""meshplane: a multi-cluster service mesh control plane speaking the Istio API.

The package is layered; dependencies point down (see docs/architecture.md):
cli -> apiserver | xds -> translate | registry -> store -> model | api.
Nothing is configured at import time: every component takes its settings explicitly.
"""

__version__ = "0.1.0"
