"""The dynamic forward proxy's DNS cache: one configuration shared by the cluster and the HTTP filter.

Envoy requires the ``PassthroughCluster`` of an explicit-proxy sidecar (``clusters``) and the HTTP filter that
resolves the Host header (``filters``) to name the same cache with the same settings, so both take it from here.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.common.dynamic_forward_proxy.v3 import dns_cache_pb2

DFP_CACHE = "dynamic_forward_proxy_cache_config"


def dns_cache_config() -> dns_cache_pb2.DnsCacheConfig:
    return dns_cache_pb2.DnsCacheConfig(name=DFP_CACHE, dns_lookup_family=cluster_pb2.Cluster.V4_ONLY)
