"""The xDS engine: ADS over gRPC (State-of-the-World and Delta) and the push pipeline that feeds it.

With ``meshplane.rpc`` (the gRPC services that are not xDS) the only package that imports gRPC. Public surface:

- :class:`XdsServer` (``start(address) -> port``, ``stop(grace)``, ``proxy_status()``, ``add_registry``,
  ``registry_changed``, ``wait_idle``) and :class:`XdsSettings`;
- :class:`ProxyStatus` / :class:`TypeStatus` / :class:`SyncState` / :class:`NackRecord`: what the management API
  shows;
- :class:`Translator`: the seam to translation (``DefaultTranslator`` wraps ``meshplane.translate``);
- :func:`should_respond`: every ACK/NACK/respond decision, documented against the xDS spec.
"""

from meshplane.xds.protocol import NackRecord, SyncState, Verdict, WatchedType, XdsRequest, should_respond
from meshplane.xds.server import XdsServer
from meshplane.xds.settings import XdsSettings
from meshplane.xds.status import ProxyStatus, TypeStatus
from meshplane.xds.translator import ResourceLike, Translator

__all__ = [
    "NackRecord",
    "ProxyStatus",
    "ResourceLike",
    "SyncState",
    "Translator",
    "TypeStatus",
    "Verdict",
    "WatchedType",
    "XdsRequest",
    "XdsServer",
    "XdsSettings",
    "should_respond",
]
