"""Hand-written structural schemas of the extension kinds: ASM's ASMLocalRateLimiter, EnvoyFilterTemplate and
EnvoyFilterTemplateBinding, and Istio's WasmPlugin.

Why here and not in ``schemas/istio.json``: that file is generated from the Istio packages meshplane vendors,
which carry no WasmPlugin, and ASM publishes its kinds only as field references ("ASMLocalRateLimiter CRD fields",
"EnvoyFilterTemplate and EnvoyFilterTemplateBinding fields"); the shapes below follow those documents (ASM's
snake_case field names inside ``configs`` included).
Fields the documents list but meshplane does not implement are left out on purpose: the API server then warns
about them by name and drops them, as kube-apiserver does with unknown CRD fields (docs/extensions.md).
"""

from __future__ import annotations

from meshplane.api.asm_schemas import Schema, _arr, _bool, _int, _map, _obj, _str, _workload_selector


def _header_match() -> Schema:
    return _obj(
        {
            "name": _str("The header's name (``:path`` for the path)."),
            "exact_match": _str("The value equals this."),
            "prefix_match": _str("The value starts with this."),
            "suffix_match": _str("The value ends with this."),
            "regex_match": _str("The value matches this RE2 regex (whole value)."),
            "present_match": _bool("The header is present."),
            "invert_match": _bool("Invert the match."),
        },
        "One header condition (Envoy's HeaderMatcher, ASM's form).",
        required=("name",),
    )


def _query_match() -> Schema:
    return _obj(
        {
            "name": _str("The query parameter's name."),
            "exact_match": _str("Its value equals this."),
            "prefix_match": _str("Its value starts with this."),
            "suffix_match": _str("Its value ends with this."),
            "regex_match": _str("Its value matches this RE2 regex."),
            "present_match": _bool("The parameter is present."),
        },
        "One query parameter condition.",
        required=("name",),
    )


def _fill_interval() -> Schema:
    return _obj({"seconds": _int("Seconds.", minimum=0), "nanos": _int("Nanoseconds.", minimum=0)},
                "How often the bucket is refilled (at least 50 ms, Envoy's minimum).")


def _limit(description: str, *, full: bool) -> Schema:
    props: dict[str, Schema] = {
        "fill_interval": _fill_interval(),
        "quota": _int("Tokens added at each fill interval, and the bucket's size.", minimum=1),
    }
    if full:
        props |= {
            "per_downstream_connection": _bool("A bucket per downstream connection instead of one per proxy."),
            "custom_response_body": _str("The body of a limited request's response (Envoy's default: "
                                         "``local_rate_limited``)."),
            "response_header_to_add": _map(_str(), "Headers added to a limited request's response."),
            "status": _int("The status code of a limited request's response (default 429).",
                           minimum=400, maximum=599),
        }
    return _obj(props, description, required=("fill_interval", "quota"))


def local_rate_limiter_spec() -> Schema:
    return _obj(
        {
            "workloadSelector": _workload_selector("The workloads (in this namespace) whose proxies limit."),
            "isGateway": _bool("The selected workloads are gateways: the limit applies to the routes they serve "
                               "for the Gateway's hosts; otherwise to the sidecars' inbound traffic."),
            "configs": _arr(_obj(
                {
                    "name": _str("The rule's name."),
                    "match": _obj({"vhost": _obj(
                        {
                            "name": _str("Gateway: the host (virtual host) whose routes are limited. Sidecar: "
                                         "``*`` or omitted."),
                            "port": _int("Gateway: the Gateway server's port; sidecar: the inbound (target) port.",
                                         minimum=1, maximum=65535),
                            "route": _obj(
                                {
                                    "name_match": _str("Only the route of this name (a VirtualService http[].name)."),
                                    "header_match": _arr(_header_match(), "Only requests with these headers."),
                                },
                                "Which routes of the virtual host are limited (omitted: all)."),
                        },
                        "The virtual host (and its routes) this rule limits.", required=("port",))},
                        "What this rule limits.", required=("vhost",)),
                    "limit": _limit("The token bucket of the matched routes.", full=True),
                    "limit_overrides": _arr(_obj(
                        {
                            "request_match": _obj(
                                {"header_match": _arr(_header_match(), "Request headers that must match."),
                                 "query_match": _arr(_query_match(), "Query parameters that must match.")},
                                "Which requests get this bucket instead of the rule's."),
                            "limit": _limit("Their own token bucket.", full=False),
                        },
                        "A bucket of its own for requests that match.", required=("request_match", "limit")),
                        "Buckets for some requests of the matched routes (the first that matches wins)."),
                },
                "One limiting rule.", required=("match", "limit")),
                "The limiting rules.", minItems=1),
        },
        "ASM's ASMLocalRateLimiter: token-bucket limits per workload and route, enforced by each proxy (429).",
        required=("configs",),
    )


def _enum(values: tuple[str, ...], description: str) -> Schema:
    return _str(description, enum=list(values))


def _policy_target() -> Schema:
    return _obj(
        {
            "group": _str("The target's API group (``gateway.networking.k8s.io`` for a Gateway)."),
            "kind": _str("The target's kind (``Gateway``)."),
            "name": _str("The target's name."),
            "namespace": _str("The target's namespace (this one when omitted)."),
        },
        "A resource the plugin attaches to.", required=("kind", "name"))


def wasm_plugin_spec() -> Schema:
    return _obj(
        {
            "selector": _obj({"matchLabels": _map(_str(), "Labels a workload must carry.")},
                             "The workloads (in this namespace; every namespace from the root namespace) that run "
                             "the plugin; omitted, all of them."),
            "targetRef": _policy_target(),
            "targetRefs": _arr(_policy_target(), "Gateways the plugin attaches to (instead of selector)."),
            "url": _str("Where the module is: ``file:///absolute/path.wasm`` on the proxies' host (meshplane "
                        "fetches nothing: http, https and oci URLs are refused)."),
            "sha256": _str("SHA256 of the module (not checked for file:// URLs: Envoy reads the file itself)."),
            "imagePullPolicy": _enum(("UNSPECIFIED_POLICY", "IfNotPresent", "Always"),
                                     "Of OCI images; nothing is pulled for file:// URLs."),
            "imagePullSecret": _str("Of OCI images; nothing is pulled for file:// URLs."),
            "verificationKey": _str("Deprecated by Istio; not used."),
            "pluginConfig": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                             "description": "The plugin's configuration, handed to it as JSON."},
            "pluginName": _str("The plugin's root id (a module with several plugins)."),
            "phase": _enum(("UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"),
                           "Where in the filter chain: before authentication, before authorization, before the "
                           "stats filters, or (unspecified) just before the router."),
            "priority": _int("Order within a phase: higher runs first."),
            "failStrategy": _enum(("FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"),
                                  "What a fatal plugin error does: refuse requests (default), skip the plugin, "
                                  "or reload the VM."),
            "vmConfig": _obj({"env": _arr(_obj(
                {
                    "name": _str("The variable's name."),
                    "valueFrom": _enum(("INLINE", "HOST"), "INLINE: ``value``; HOST: the proxy's own."),
                    "value": _str("The value (INLINE)."),
                },
                "One environment variable of the VM.", required=("name",)), "The VM's environment.")},
                "The Wasm VM's settings."),
            "match": _arr(_obj(
                {
                    "mode": _enum(("UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"),
                                  "CLIENT: outbound (and gateways); SERVER: inbound; otherwise both."),
                    "ports": _arr(_obj({"number": _int("A port number.", minimum=1, maximum=65535)},
                                       "A port.", required=("number",)), "Only these listener ports."),
                },
                "Traffic the plugin applies to."), "Only this traffic (any of the entries); omitted, all."),
            "type": _enum(("UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"), "An HTTP (default) or network plugin."),
        },
        "Istio's WasmPlugin: a Wasm HTTP filter in the selected workloads' proxies.",
        required=("url",),
    )


def envoy_filter_template_spec() -> Schema:
    return _obj(
        {
            "templates": _arr(_obj(
                {
                    "istioVersion": _str("The proxy versions this value is for: ``1.19``, ``1.19-1.21``, "
                                         "``1.19-MAX_VERSION`` or ``MIN_VERSION-1.18`` (inclusive); the ranges of "
                                         "one template may not overlap."),
                    "value": _str("An EnvoyFilter (YAML or JSON, its apiVersion, kind and spec; metadata is the "
                                  "binding's)."),
                },
                "One version of the template.", required=("istioVersion", "value")),
                "The template's values, one per proxy version range.", minItems=1),
        },
        "ASM's EnvoyFilterTemplate: a named, versioned EnvoyFilter that EnvoyFilterTemplateBindings apply.",
        required=("templates",),
    )


def envoy_filter_template_binding_spec() -> Schema:
    return _obj(
        {
            "templateRef": _obj(
                {
                    "name": _str("The EnvoyFilterTemplate (in this namespace or the root namespace)."),
                    "istioVersion": _str("The proxy version (``1.20``) whose template value applies; the "
                                         "EnvoyFilter made of it applies to proxies of that version only."),
                },
                "Which template, and which of its versions.", required=("name", "istioVersion")),
            "workloadSelector": _workload_selector("The workloads (of this namespace; every namespace from the "
                                                   "root namespace) the EnvoyFilter applies to; omitted, all."),
        },
        "ASM's EnvoyFilterTemplateBinding: makes an EnvoyFilter of a template's value for some workloads.",
        required=("templateRef",),
    )


__all__ = ["envoy_filter_template_binding_spec", "envoy_filter_template_spec", "local_rate_limiter_spec",
           "wasm_plugin_spec"]
