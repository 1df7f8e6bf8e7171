"""The xDS resource type URLs meshplane serves, and the order in which a full push sends them.

The order follows the xDS spec's advice on eventual consistency ("make before break"): clusters before the
endpoints they use, listeners before the routes they name.
"""

from __future__ import annotations

_PREFIX = "type.googleapis.com/"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
# Istio's DNS name table (model.nds), subscribed by DNS proxies (the agent), never by Envoy.
NAME_TABLE = _PREFIX + "istio.networking.nds.v1.NameTable"

PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
SHORT_NAMES: dict[str, str] = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", SECRET: "SDS",
                               NAME_TABLE: "NDS"}
