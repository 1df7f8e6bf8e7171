"""The one registry of resource kinds meshplane serves: Istio's, ASM's and meshplane's own.

Everything that differs between kinds and is not schema or validation lives here as data: names (plural, singular,
short names, categories), scope, the API versions that serve the kind (the first is preferred), and the printer
columns ``kubectl get`` shows. The API server, discovery, OpenAPI and Table output are all driven by this table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from meshplane.model.resources import GroupResource


@dataclass(frozen=True, slots=True)
class PrinterColumn:
    """A column of ``kubectl get`` output, as a CRD's additionalPrinterColumns declares it."""

    name: str
    type: str  # string | integer | number | boolean | date
    json_path: str  # a dotted path into the object, e.g. ".spec.hosts"
    description: str = ""
    priority: int = 0
    format: str = ""


AGE = PrinterColumn(
    "Age",
    "date",
    ".metadata.creationTimestamp",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
)


@dataclass(frozen=True, slots=True)
class KindInfo:
    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    columns: tuple[PrinterColumn, ...] = (AGE,)
    # Objects of this kind hold credentials: never returned in full by reads (see the API server).
    has_secrets: bool = False
    singular: str = field(default="")

    def __post_init__(self) -> None:
        if not self.singular:
            object.__setattr__(self, "singular", self.kind.lower())

    @property
    def gr(self) -> GroupResource:
        return GroupResource(self.group, self.plural)

    @property
    def preferred_version(self) -> str:
        return self.versions[0]

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


class KindRegistry:
    """Lookup of kinds by (group, version, plural), by (group, kind) and by GroupResource."""

    def __init__(self, kinds: Iterable[KindInfo]) -> None:
        self._kinds = tuple(kinds)
        self._by_resource: dict[tuple[str, str, str], KindInfo] = {}
        self._by_kind: dict[tuple[str, str], KindInfo] = {}
        self._by_gr: dict[GroupResource, KindInfo] = {}
        for k in self._kinds:
            if k.gr in self._by_gr:
                raise ValueError(f"kind {k.kind}: resource {k.gr} registered twice")
            self._by_gr[k.gr] = k
            self._by_kind[(k.group, k.kind)] = k
            for v in k.versions:
                self._by_resource[(k.group, v, k.plural)] = k

    def __iter__(self) -> Iterator[KindInfo]:
        return iter(self._kinds)

    def by_resource(self, group: str, version: str, plural: str) -> KindInfo | None:
        return self._by_resource.get((group, version, plural))

    def by_kind(self, group: str, kind: str) -> KindInfo | None:
        return self._by_kind.get((group, kind))

    def by_api_version(self, api_version: str, kind: str) -> KindInfo | None:
        group, _, version = api_version.rpartition("/")
        info = self._by_kind.get((group, kind))
        return info if info is not None and version in info.versions else None

    def by_gr(self, gr: GroupResource) -> KindInfo | None:
        return self._by_gr.get(gr)

    def groups(self) -> dict[str, list[str]]:
        """Each API group with its versions, preferred first, in registration order."""
        out: dict[str, list[str]] = {}
        for k in self._kinds:
            versions = out.setdefault(k.group, [])
            for v in k.versions:
                if v not in versions:
                    versions.append(v)
        return out


NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
TELEMETRY = "telemetry.istio.io"
EXTENSIONS = "extensions.istio.io"
ASM = "istio.alibabacloud.com"
MESHPLANE = "meshplane.io"
CORE = ""  # Kubernetes' core group (/api/v1): Secret and ConfigMap are registry kinds; Namespace is served apart

_NET_VERSIONS = ("v1", "v1beta1", "v1alpha3")
_NET_CATS = ("istio-io", "networking-istio-io")
_SEC_CATS = ("istio-io", "security-istio-io")


def _col(name: str, path: str, description: str, type_: str = "string") -> PrinterColumn:
    return PrinterColumn(name, type_, path, description)


def builtin_kinds() -> list[KindInfo]:
    """Every kind meshplane serves, in the order discovery lists them."""
    net = [
        KindInfo(
            NETWORKING,
            "VirtualService",
            "virtualservices",
            _NET_VERSIONS,
            short_names=("vs",),
            categories=_NET_CATS,
            columns=(
                _col("Gateways", ".spec.gateways", "The names of gateways and sidecars that should apply these routes"),
                _col("Hosts", ".spec.hosts", "The destination hosts to which traffic is being sent"),
                AGE,
            ),
        ),
        KindInfo(
            NETWORKING,
            "DestinationRule",
            "destinationrules",
            _NET_VERSIONS,
            short_names=("dr",),
            categories=_NET_CATS,
            columns=(_col("Host", ".spec.host", "The name of a service from the service registry"), AGE),
        ),
        KindInfo(NETWORKING, "Gateway", "gateways", _NET_VERSIONS, short_names=("gw",), categories=_NET_CATS),
        KindInfo(
            NETWORKING,
            "ServiceEntry",
            "serviceentries",
            _NET_VERSIONS,
            short_names=("se",),
            categories=_NET_CATS,
            columns=(
                _col("Hosts", ".spec.hosts", "The hosts associated with the ServiceEntry"),
                _col(
                    "Location",
                    ".spec.location",
                    "Whether the service is external to the mesh or part of the mesh (MESH_EXTERNAL or MESH_INTERNAL)",
                ),
                _col("Resolution", ".spec.resolution", "Service resolution mode for the hosts (NONE, STATIC, or DNS)"),
                AGE,
            ),
        ),
        KindInfo(
            NETWORKING,
            "WorkloadEntry",
            "workloadentries",
            _NET_VERSIONS,
            short_names=("we",),
            categories=_NET_CATS,
            columns=(AGE, _col("Address", ".spec.address", "Address associated with the network endpoint.")),
        ),
        KindInfo(
            NETWORKING, "WorkloadGroup", "workloadgroups", _NET_VERSIONS, short_names=("wg",), categories=_NET_CATS
        ),
        KindInfo(NETWORKING, "Sidecar", "sidecars", _NET_VERSIONS, categories=_NET_CATS),
        KindInfo(NETWORKING, "EnvoyFilter", "envoyfilters", ("v1alpha3",), categories=_NET_CATS),
    ]
    sec = [
        KindInfo(
            SECURITY,
            "AuthorizationPolicy",
            "authorizationpolicies",
            ("v1", "v1beta1"),
            short_names=("ap",),
            categories=_SEC_CATS,
            columns=(_col("Action", ".spec.action", "The operation to take."), AGE),
        ),
        KindInfo(
            SECURITY,
            "PeerAuthentication",
            "peerauthentications",
            ("v1", "v1beta1"),
            short_names=("pa",),
            categories=_SEC_CATS,
            columns=(_col("Mode", ".spec.mtls.mode", "Defines the mTLS mode used for peer authentication."), AGE),
        ),
        KindInfo(
            SECURITY,
            "RequestAuthentication",
            "requestauthentications",
            ("v1", "v1beta1"),
            short_names=("ra",),
            categories=_SEC_CATS,
        ),
    ]
    tel = [
        KindInfo(
            TELEMETRY,
            "Telemetry",
            "telemetries",
            ("v1", "v1alpha1"),
            short_names=("telemetry",),
            categories=("istio-io", "telemetry-istio-io"),
        ),
    ]
    ext = [
        KindInfo(EXTENSIONS, "WasmPlugin", "wasmplugins", ("v1alpha1",),
                 categories=("istio-io", "extensions-istio-io")),
    ]
    asm = [
        KindInfo(ASM, "TrafficLabel", "trafficlabels", ("v1", "v1beta1"), categories=("asm",)),
        KindInfo(ASM, "ASMSwimLaneGroup", "asmswimlanegroups", ("v1",), categories=("asm",)),
        KindInfo(ASM, "ASMSwimLane", "asmswimlanes", ("v1",), categories=("asm",)),
        KindInfo(ASM, "ASMHeaderPropagation", "asmheaderpropagations", ("v1beta1",), categories=("asm",)),
        KindInfo(ASM, "ASMOPAPolicy", "asmopapolicies", ("v1",), categories=("asm",)),
        KindInfo(ASM, "ASMLocalRateLimiter", "asmlocalratelimiters", ("v1", "v1beta1"), categories=("asm",)),
        KindInfo(ASM, "EnvoyFilterTemplate", "envoyfiltertemplates", ("v1",), categories=("asm",)),
        KindInfo(ASM, "EnvoyFilterTemplateBinding", "envoyfiltertemplatebindings", ("v1",), categories=("asm",)),
    ]
    own = [
        KindInfo(
            MESHPLANE,
            "MemberCluster",
            "memberclusters",
            ("v1",),
            namespaced=False,
            short_names=("mc",),
            categories=("meshplane",),
            has_secrets=True,
            columns=(
                _col("Network", ".spec.network", "The network the cluster's workloads are on"),
                _col("Region", ".spec.region", "Default region of the cluster's workloads"),
                _col("Zone", ".spec.zone", "Default zone of the cluster's workloads"),
                _col(
                    "Connected",
                    '.status.conditions[?(@.type=="Connected")].status',
                    "Whether the control plane reaches the cluster",
                ),
                AGE,
            ),
        ),
    ]
    core = [
        # Gateway TLS credentials (``credentialName``): values are never read back (see apiserver.objects).
        KindInfo(
            CORE,
            "Secret",
            "secrets",
            ("v1",),
            has_secrets=True,
            columns=(_col("Type", ".type", "The type of the secret's data"), AGE),
        ),
        # The mesh configuration as Istio users know it: ConfigMap ``istio`` in the root namespace, key ``mesh``
        # (``model.meshconfig``; admission refuses a MeshConfig the server could not load).
        KindInfo(CORE, "ConfigMap", "configmaps", ("v1",), short_names=("cm",), columns=(AGE,)),
    ]
    return [*net, *sec, *tel, *ext, *asm, *own, *core]


def default_registry() -> KindRegistry:
    return KindRegistry(builtin_kinds())
