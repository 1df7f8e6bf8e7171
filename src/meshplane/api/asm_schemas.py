"""Hand-written structural schemas of the kinds no package describes: ASM's extensions and meshplane's own.

Alibaba Cloud Service Mesh publishes its CRDs only as prose and examples (its "ASMSwimLaneGroup and
ASMSwimLane field reference", the TrafficLabel and header propagation guides), so the shapes below follow
those examples. meshplane's MemberCluster is ours. Each function returns a fresh ``spec`` (and, where it has
one, ``status``) schema in the same structural form as the generated Istio schemas, so the same validator and
``kubectl explain`` serve both.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _str(description: str = "", **extra: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **extra}


def _int(description: str = "", **extra: Any) -> Schema:
    return {"type": "integer", **({"description": description} if description else {}), **extra}


def _bool(description: str = "") -> Schema:
    return {"type": "boolean", **({"description": description} if description else {})}


def _arr(items: Schema, description: str = "", **extra: Any) -> Schema:
    return {"type": "array", "items": items, **({"description": description} if description else {}), **extra}


def _map(values: Schema, description: str = "") -> Schema:
    return {"type": "object", "additionalProperties": values, **({"description": description} if description else {})}


def _obj(properties: dict[str, Schema], description: str = "", required: tuple[str, ...] = ()) -> Schema:
    out: Schema = {"type": "object", "properties": properties}
    if description:
        out["description"] = description
    if required:
        out["required"] = list(required)
    return out


def _workload_selector(description: str) -> Schema:
    return _obj({"labels": _map(_str(), "Labels a workload must carry to be selected.")}, description)


def _string_match(description: str) -> Schema:
    return _obj(
        {
            "exact": _str("exact string match"),
            "prefix": _str("prefix-based match"),
            "regex": _str("RE2 style regex-based match"),
        },
        description,
    )


def traffic_label_spec() -> Schema:
    label = _obj(
        {
            "name": _str("Name of the request header that carries the label on outbound requests."),
            "valueFrom": _arr(
                _str(),
                "Where the value comes from, tried in order; the first that resolves wins. Each entry is one of "
                "$getInboundRequestHeader(header), $getExternalInboundRequestHeader(header, contextHeader), "
                "$getLocalOutboundRequestHeader(header), $getLabel(label), $getContext(contextHeader) (this label's "
                "value on the inbound request with the same context header, e.g. x-request-id) or $localLabel (the "
                "workload's ASM_TRAFFIC_TAG label).",
            ),
        },
        "One label: a header name and the sources of its value.",
        required=("name",),
    )
    return _obj(
        {
            "workloadSelector": _workload_selector(
                "The workloads this TrafficLabel applies to; omitted, every workload of the namespace."
            ),
            "rules": _arr(
                _obj(
                    {
                        "labels": _arr(label, "Labels this rule computes."),
                        "attachTo": _arr(_str(), "Where else the label is recorded (e.g. opentracing)."),
                        "protocols": _str("Protocols the rule applies to; \"*\" for all."),
                    }
                ),
                "Rules computing traffic labels.",
            ),
            # Named in ASM's API but documented nowhere: served so admission can refuse them by name (see
            # api._asm.traffic_label) instead of their being pruned as unknown fields.
            "hosts": _arr(_str(), "Not supported (refused at admission)."),
            "http": _arr({"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                         "Not supported (refused at admission)."),
            "overwrite": {"x-kubernetes-preserve-unknown-fields": True,
                          "description": "Not supported (refused at admission)."},
        },
        "Labels requests with a header computed at the proxy, so routing rules can match it.",
    )


def _cluster_service_ref() -> Schema:
    return _obj(
        {
            "name": _str("Name of the service."),
            "namespace": _str("Namespace of the service."),
            "cluster": _obj(
                {"name": _str("Name of the member cluster."), "id": _str("ID of the member cluster.")},
                "The member cluster the service runs in; omitted, any cluster.",
            ),
        },
        "A service in a member cluster.",
        required=("name", "namespace"),
    )


def _ingress_rule(description: str) -> Schema:
    return _obj(
        {
            "name": _str("Name of the rule."),
            "hosts": _arr(_str(), "Hosts the rule applies to at the gateway."),
            "match": _obj(
                {
                    "uri": _string_match("URI match."),
                    "headers": _map(_string_match("Header value match."),
                                    "Request headers the request must carry (name: match), all of them."),
                },
                "Match conditions of the rule.",
            ),
            "online": _bool("Whether the rule is in effect."),
            "route": _obj(
                {"destination": _obj({"host": _str("Destination host.")}, "Destination of the requests.")},
                "Where matching requests go.",
            ),
            "weight": _int("Share (0-100) of the rule's traffic sent to this lane.", minimum=0, maximum=100),
        },
        description,
    )


def swim_lane_group_spec() -> Schema:
    return _obj(
        {
            "services": _arr(_cluster_service_ref(), "The services of the call chain that take part in lanes."),
            "ingressRoutingStrategy": _str(
                "How the gateway routes requests into the lanes: rule_based (default: each lane's ingressRules) or "
                "weighted (one weightedIngressRule for the group, split by the lanes' ingressWeight)."),
            "weightedIngressRule": _ingress_rule(
                "With ingressRoutingStrategy weighted: the group's one ingress rule; matching requests are split "
                "across the lanes by their ingressWeight (the lanes' ingressRules are not used)."),
            "ingress": _obj(
                {
                    "gateway": _obj(
                        {
                            "name": _str("Name of the ingress gateway."),
                            "namespace": _str("Namespace of the ingress gateway."),
                            "type": _str("Type of the gateway (ASM)."),
                        },
                        "The ingress gateway routing requests into the lanes.",
                    )
                },
                "Ingress configuration of the lane group.",
            ),
            "isPermissive": _bool("true: permissive mode (lanes may be partial); false or unset: strict mode."),
            "permissiveModeConfiguration": _obj(
                {
                    "routeHeader": _str("Request header the gateway routes on, e.g. x-asm-prefer-tag."),
                    "traceHeader": _str("Header the applications propagate along the chain, e.g. baggage."),
                    "fallbackTarget": _str("The base lane that requests fall back to."),
                },
                "Settings of permissive mode; required when isPermissive is true.",
            ),
        },
        "A group of traffic lanes: the services of one call chain and its ingress gateway.",
        required=("services",),
    )


def swim_lane_spec() -> Schema:
    rule = _ingress_rule("A gateway routing rule into this lane.")
    return _obj(
        {
            "labelSelector": _map(_str(), "Workload labels that select the lane's versions, e.g. {version: v2}."),
            "services": _arr(_cluster_service_ref(), "In permissive mode, the services this lane contains."),
            "ingressRules": _arr(rule, "Gateway rules routing requests into this lane."),
            "ingressWeight": _int(
                "Share (0-100) of the group's ingress traffic sent to this lane.", minimum=0, maximum=100
            ),
        },
        "One traffic lane: a set of versions of the group's services.",
    )


def header_propagation_spec() -> Schema:
    return _obj(
        {
            "workloadSelector": _workload_selector("The workloads this applies to; omitted, the whole namespace."),
            "headers": _arr(_str(), "Keys lifted out of baggage and set as request headers."),
            "headerPrefix": _str("Lift every baggage key with this prefix."),
        },
        "Lifts named keys out of the W3C baggage header and sets them as request headers.",
    )


def opa_policy_spec() -> Schema:
    return _obj(
        {
            "workloadSelector": _workload_selector("The workloads whose inbound requests the policy decides; "
                                                   "omitted, every workload of the namespace."),
            "policy": _str("Rego (v1, or v0 as ASM's examples) defining `allow`; `default allow = false` denies "
                           "what no rule allows. Input: OPA-Envoy's attributes (source.principal, request.http)."),
            "policyRegoID": _str("The ID of a shared Rego policy. With `policy`: this policy's Rego is published "
                                 "under the ID, for other ASMOPAPolicies of its namespace (or, from the root "
                                 "namespace, of every namespace) to use. Without `policy`: this policy uses the "
                                 "Rego published under the ID (its own namespace's first, then the root "
                                 "namespace's); while none is, or more than one is, its workloads deny every "
                                 "request."),
        },
        "ASM's ASMOPAPolicy: a Rego policy evaluated by OPA next to the workload through ext_authz.",
    )


def _label_selector() -> Schema:
    return _obj(
        {
            "matchLabels": _map(_str(), "Labels that must all match."),
            "matchExpressions": _arr(
                _obj(
                    {
                        "key": _str("The label key."),
                        "operator": _str(
                            "How the key relates to the values.", enum=["In", "NotIn", "Exists", "DoesNotExist"]
                        ),
                        "values": _arr(_str(), "Values for In and NotIn; empty for Exists and DoesNotExist."),
                    },
                    required=("key", "operator"),
                ),
                "Label requirements that must all hold.",
            ),
        },
        "A Kubernetes label selector.",
    )


def member_cluster_spec() -> Schema:
    return _obj(
        {
            "network": _str("The network the cluster's workloads are on."),
            "region": _str("Default region of the cluster's workloads."),
            "zone": _str("Default zone of the cluster's workloads."),
            "kubeconfig": _str("Kubeconfig reaching the cluster's API server (a secret: never returned by reads)."),
            "local": _bool("The cluster is run by meshplane's local runtime instead of a Kubernetes API server."),
            "discoverySelectors": _arr(
                _label_selector(), "Only namespaces matching one of these selectors are part of the mesh."
            ),
        },
        "A cluster that is a member of the mesh.",
    )


def member_cluster_status() -> Schema:
    condition = _obj(
        {
            "type": _str("Type of the condition, e.g. Connected."),
            "status": _str("Status of the condition.", enum=["True", "False", "Unknown"]),
            "reason": _str("Machine-readable reason of the last transition."),
            "message": _str("Human-readable message of the last transition."),
            "lastTransitionTime": _str("When the condition last changed.", format="date-time"),
        },
        required=("type", "status"),
    )
    return _obj(
        {
            "conditions": _arr(condition, "Observed conditions of the member cluster."),
            "observedGeneration": _int("The generation the status describes."),
        },
        "Observed state of the member cluster.",
    )


def preserved_status() -> Schema:
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "Status written by the control plane.",
    }


def secret_fields() -> Schema:
    """The top-level fields of Kubernetes' core ``v1`` Secret (it has no ``spec``): as kube-apiserver's schema."""
    return {
        "type": _str("Used to facilitate programmatic handling of secret data (kubernetes.io/tls: tls.crt, "
                     "tls.key, optionally ca.crt)."),
        "data": _map(_str(format="byte"), "The secret data: base64-encoded values by key. Never read back."),
        "stringData": _map(_str(), "Write-only plain-text values, merged into data on write."),
        "immutable": _bool("If true, the data cannot be updated."),
    }


def configmap_fields() -> Schema:
    """The top-level fields of Kubernetes' core ``v1`` ConfigMap (it has no ``spec``)."""
    return {
        "data": _map(_str(), "Configuration data by key (the mesh configuration: key mesh, MeshConfig YAML)."),
        "binaryData": _map(_str(format="byte"), "Binary data by key, base64-encoded."),
        "immutable": _bool("If true, the data cannot be updated."),
    }
