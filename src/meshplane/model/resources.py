"""Names of stored collections, shared by every layer: the API kinds, the store, the config snapshot.

It lives at the bottom (model) so that the API kind registry and the domain model can name collections without
depending on the store.
"""

from __future__ import annotations

from typing import Any, NamedTuple

JSONObject = dict[str, Any]


class GroupResource(NamedTuple):
    """A stored collection: API group (``""`` for the core group) and plural resource name.

    Objects are stored once per GroupResource, whatever API version they were written through: the versions of
    one kind share a schema, and the API layer rewrites ``apiVersion`` on the way out.
    """

    group: str
    resource: str

    def __str__(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource


# The served collections, named once for every layer (the API's kind registry, ``meshplane.api.kinds``, holds the
# rest of each kind's identity: versions, names, columns; a unit test keeps the two in step).
_NET, _SEC, _TEL, _ASM = "networking.istio.io", "security.istio.io", "telemetry.istio.io", "istio.alibabacloud.com"
VIRTUAL_SERVICES = GroupResource(_NET, "virtualservices")
DESTINATION_RULES = GroupResource(_NET, "destinationrules")
GATEWAYS = GroupResource(_NET, "gateways")
SERVICE_ENTRIES = GroupResource(_NET, "serviceentries")
WORKLOAD_ENTRIES = GroupResource(_NET, "workloadentries")
WORKLOAD_GROUPS = GroupResource(_NET, "workloadgroups")
SIDECARS = GroupResource(_NET, "sidecars")
ENVOY_FILTERS = GroupResource(_NET, "envoyfilters")
AUTHORIZATION_POLICIES = GroupResource(_SEC, "authorizationpolicies")
PEER_AUTHENTICATIONS = GroupResource(_SEC, "peerauthentications")
REQUEST_AUTHENTICATIONS = GroupResource(_SEC, "requestauthentications")
TELEMETRIES = GroupResource(_TEL, "telemetries")
TRAFFIC_LABELS = GroupResource(_ASM, "trafficlabels")
LANE_GROUPS = GroupResource(_ASM, "asmswimlanegroups")
LANES = GroupResource(_ASM, "asmswimlanes")
HEADER_PROPAGATIONS = GroupResource(_ASM, "asmheaderpropagations")
OPA_POLICIES = GroupResource(_ASM, "asmopapolicies")
LOCAL_RATE_LIMITERS = GroupResource(_ASM, "asmlocalratelimiters")
WASM_PLUGINS = GroupResource("extensions.istio.io", "wasmplugins")
ENVOY_FILTER_TEMPLATES = GroupResource(_ASM, "envoyfiltertemplates")
ENVOY_FILTER_TEMPLATE_BINDINGS = GroupResource(_ASM, "envoyfiltertemplatebindings")
MEMBER_CLUSTERS = GroupResource("meshplane.io", "memberclusters")
SECRETS = GroupResource("", "secrets")
CONFIGMAPS = GroupResource("", "configmaps")
NAMESPACES = GroupResource("", "namespaces")
