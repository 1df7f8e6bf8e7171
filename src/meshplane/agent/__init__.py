"""The per-workload agent: what runs next to each Envoy (certificate, SDS, bootstrap, the Envoy process,
registration, readiness, OPA ext_authz).

Its gRPC servers (SDS, ext_authz) and its CA client come from ``meshplane.rpc``; it needs nothing of
``meshplane.xds`` (Envoy reaches the control plane's ADS server directly). :func:`build_bootstrap` is pure so the
CLI and the local runtime can write a bootstrap without starting anything.
"""

from meshplane.agent.bootstrap import build_bootstrap, split_address

__all__ = ["build_bootstrap", "split_address"]
