"""The per-workload agent: what runs next to each Envoy (bootstrap now; SDS, DNS proxy and health later).

No gRPC server lives here yet; :func:`build_bootstrap` is pure so the CLI and the local runtime can write a
bootstrap without starting anything.
"""

from meshplane.agent.bootstrap import build_bootstrap, split_address

__all__ = ["build_bootstrap", "split_address"]
