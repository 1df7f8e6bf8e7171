"""The product's gRPC services that are not xDS: certificate signing, SDS and ext_authz.

Why a package of its own: ``meshplane.xds`` is the control plane's push pipeline (ADS, debounce, translation's
seam); these are small single-purpose servers and clients that other processes host. The control plane hosts the
signing service (:mod:`meshplane.rpc.ca_service`, with :class:`SecurityPlane`); the agent hosts SDS
(:mod:`meshplane.rpc.sds`) and ext_authz (:mod:`meshplane.rpc.extauthz`) next to its Envoy and calls the signing
service with :class:`CaClient`. With ``meshplane.xds`` this is the only package that imports gRPC (enforced by
``lint-imports``); the policy each service applies lives in ``meshplane.security``, so it is tested without gRPC.
"""

from meshplane.rpc._serve import SERVER_OPTIONS, AddressInUse, bind
from meshplane.rpc.ca_service import CaClient, CaServer, CaService, SecurityPlane
from meshplane.rpc.extauthz import ExtAuthzServer
from meshplane.rpc.sds import SdsServer

__all__ = [
    "SERVER_OPTIONS", "AddressInUse", "CaClient", "CaServer", "CaService", "ExtAuthzServer", "SdsServer",
    "SecurityPlane", "bind",
]
