"""The etcd v3 backend: the store shared by several control-plane replicas, and their leader election.

Only this package knows gRPC's etcd API (see ``_client``); the rest of the control plane sees a ``Store``.
"""

from meshplane.store.etcd._client import EtcdSettings, parse_etcd_url
from meshplane.store.etcd.store import EtcdStore

__all__ = ["EtcdSettings", "EtcdStore", "parse_etcd_url"]
