"""ASM's TrafficLabel and ASMHeaderPropagation as Lua scripts in Envoy's HTTP filter chain. Pure.

Why Lua, attached per virtual host (``LuaPerRoute`` in ``typed_per_filter_config``): every HTTP connection manager
carries one Lua filter with no code of its own (:func:`lua_filter`, placed before the router); the script a proxy
needs rides on its route configuration, which is built where the proxy and its config are known (sidecar RDS,
gateway RDS, the inbound route). A proxy that needs nothing gets no script and the filter only looks up an absent
per-route config. After a script changes headers it clears the route cache, so the router routes on the new values
(lanes route on the header a TrafficLabel or a baggage lift sets).

What the outbound script does, in order: lift the ASMHeaderPropagation keys out of W3C ``baggage`` into headers;
then for each TrafficLabel label, try its sources in order and set the header from the first that resolves:

* ``$getLabel(l)``: a label of the workload, baked into the script (so routes become label-sensitive);
* ``$getLocalOutboundRequestHeader(h)``, and ``$getInboundRequestHeader(h)``: a header of the request being
  routed (at a gateway that is the incoming request; at a sidecar, the application's outgoing one);
* ``$getExternalInboundRequestHeader(h, c)``: at a sidecar, the value ``h`` had on the *inbound* request whose
  context header ``c`` (e.g. ``x-request-id``, which applications propagate) equals this outbound request's;
* ASM's v1beta1 forms: ``$getContext(c)`` is ``$getExternalInboundRequestHeader(label, c)`` for the label being
  set (the label travels from the inbound request to the outbound ones), ``$localLabel`` (also spelt
  ``$(localLabel)``) is ``$getLabel(ASM_TRAFFIC_TAG)``.

The last one needs state shared by the inbound and the outbound filter chains of one Envoy, which Envoy does not
have: Lua states are per filter config and per worker, and filter state / dynamic metadata live and die with one
stream. The inbound script therefore records ``h`` in a small file named by the context id on tmpfs (``/dev/shm``,
else ``/tmp``) and deletes it when the inbound response leaves (every outbound call the request causes happens in
between); the outbound script reads it. Measured in bench/lanes_overhead.py against the alternative of asking a
local service over HTTP (Lua ``httpCall``): a file open/read on tmpfs costs microseconds, a loopback HTTP round
trip tens to hundreds (docs/lanes.md). File names carry a prefix per workload (namespace and labels), so proxies
sharing a host never see each other's entries, and the context value is reduced to ``[A-Za-z0-9_-]``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshplane.model import spec as istio
from meshplane.model.labels import LOCAL_LABEL_FORMS
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.spec import ConfigObject
from meshplane.translate.common import pack, selects_workload

LUA = "envoy.filters.http.lua"
_VARIABLE = re.compile(r"^\s*\$(\w+)\((.*)\)\s*$")

Source = tuple[str, ...]  # ("h", header) | ("x", header, context header) | ("c", constant)
TrafficLabels = Sequence[ConfigObject[istio.TrafficLabel]]
Propagations = Sequence[ConfigObject[istio.ASMHeaderPropagation]]


def lua_filter() -> hcm_pb2.HttpFilter:
    """The Lua filter every chain carries, disabled by default: a stream whose virtual host has no script never
    instantiates it (measured: an enabled no-op Lua filter costs ~35 µs of sidecar CPU per request, ~15% of a
    sidecar's per-request cost). Virtual hosts with a script enable it (:func:`attach`). Keeping the filter in
    every chain means a TrafficLabel appearing or going away changes routes only, never listeners."""
    return hcm_pb2.HttpFilter(name=LUA, typed_config=pack(lua_pb2.Lua()), disabled=True)


LOCAL_LABEL_KEY = "ASM_TRAFFIC_TAG"  # what ASM's $localLabel reads


def parse_source(entry: str, proxy: Proxy, label: str = "") -> Source | None:
    """One ``valueFrom`` entry for the label (header) ``label``, as the script's source tuple."""
    if entry.strip() in LOCAL_LABEL_FORMS:
        value = proxy.labels.get(LOCAL_LABEL_KEY)
        return ("c", value) if value else None
    m = _VARIABLE.match(entry)
    if m is None:
        return None
    name = m.group(1)
    args = [a.strip() for a in m.group(2).split(",")] if m.group(2).strip() else []
    if name == "getLabel" and len(args) == 1:
        value = proxy.labels.get(args[0])
        return ("c", value) if value else None
    if name in ("getLocalOutboundRequestHeader", "getInboundRequestHeader") and len(args) == 1:
        return ("h", args[0].lower())
    if name == "getExternalInboundRequestHeader" and len(args) == 2:
        h, ctx_header = args[0].lower(), args[1].lower()
        if proxy.type is ProxyType.ROUTER:
            return ("h", h)  # a gateway's inbound request is the request it routes
        return ("x", h, ctx_header)
    if name == "getContext" and len(args) == 1 and label:
        # This label's own value on the inbound request that shares the context header (ASM's v1beta1 form).
        if proxy.type is ProxyType.ROUTER:
            return ("h", label)
        return ("x", label, args[0].lower())
    return None


def labels_for(proxy: Proxy, objects: TrafficLabels) -> list[tuple[str, list[Source]]]:
    """(header, sources) for every TrafficLabel label selecting ``proxy`` (objects by name)."""
    out: list[tuple[str, list[Source]]] = []
    for obj in sorted(objects, key=lambda o: o.meta.name):
        if not selects_workload(obj.meta, obj.spec.workload_selector, proxy):
            continue
        for rule in obj.spec.rules:
            for label in rule.labels:
                name = (label.name or "").lower()
                sources = [s for s in (parse_source(e, proxy, name) for e in label.value_from) if s]
                if name and sources:
                    out.append((name, sources))
    return out


def span_tags(proxy: Proxy, objects: TrafficLabels) -> tuple[str, ...]:
    """The labels (header names) that rules with ``attachTo: [opentracing]`` selecting ``proxy`` also record as
    span tags (translated as request-header custom tags of the proxy's tracing, so only where it traces)."""
    out: list[str] = []
    for obj in sorted(objects, key=lambda o: o.meta.name):
        if not selects_workload(obj.meta, obj.spec.workload_selector, proxy):
            continue
        for rule in obj.spec.rules:
            if not any(a.lower() == "opentracing" for a in rule.attach_to):
                continue
            for label in rule.labels:
                name = (label.name or "").lower()
                if name and name not in out:
                    out.append(name)
    return tuple(out)


def propagation_for(proxy: Proxy, objects: Propagations) -> tuple[list[str], list[str]]:
    """The baggage keys and key prefixes the ASMHeaderPropagations selecting ``proxy`` lift into headers."""
    keys: list[str] = []
    prefixes: list[str] = []
    for obj in objects:
        if not selects_workload(obj.meta, obj.spec.workload_selector, proxy):
            continue
        keys += [h for h in obj.spec.headers if h not in keys]
        if obj.spec.header_prefix:
            prefixes.append(obj.spec.header_prefix)
    return keys, prefixes


def _lua_str(s: str) -> str:
    out = []
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= o < 127:
            out.append(ch)
        else:
            out.extend(f"\\{b}" for b in ch.encode())
    return '"' + "".join(out) + '"'


def context_prefix(proxy: Proxy) -> str:
    """The file-name prefix of one workload's context entries (same for its inbound and outbound scripts)."""
    h = hashlib.blake2b(digest_size=6)
    h.update(proxy.namespace.encode())
    for k, v in sorted(proxy.labels.items()):
        h.update(f"\0{k}={v}".encode())
    return f"meshplane-ctx-{h.hexdigest()}-"


_COMMON = """
local DIR = "/dev/shm/"
do local f = io.open(DIR .. PREFIX .. "probe", "w") if f then f:close() os.remove(DIR .. PREFIX .. "probe")
  else DIR = "/tmp/" end end
local function ctxpath(ctx, h)
  return DIR .. PREFIX .. string.sub(string.gsub(ctx, "[^%w_-]", "_"), 1, 160) .. "." .. h
end
"""

_OUTBOUND = """
local function unescape(s)
  return (string.gsub(s, "%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end))
end
local function lookup(ctx, h)
  local f = io.open(ctxpath(ctx, h), "r")
  if not f then return nil end
  local v = f:read("*a")
  f:close()
  return v
end
function envoy_on_request(handle)
  local hs = handle:headers()
  local changed = false
  if #KEYS > 0 or #KEY_PREFIXES > 0 then
    local b = hs:get("baggage")
    if b then
      for entry in string.gmatch(b, "[^,]+") do
        local k, v = string.match(entry, "^%s*([^=%s]+)%s*=%s*([^;]-)%s*$")
        if not k then k, v = string.match(entry, "^%s*([^=%s]+)%s*=%s*([^;]-)%s*;") end
        if k then
          k = string.lower(unescape(k))
          local want = KEYS[k] ~= nil
          for _, p in ipairs(KEY_PREFIXES) do
            if string.sub(k, 1, #p) == p then want = true end
          end
          if want and v ~= "" then hs:replace(k, unescape(v)) changed = true end
        end
      end
    end
  end
  for _, l in ipairs(LABELS) do
    for _, s in ipairs(l[2]) do
      local v = nil
      if s[1] == "h" then v = hs:get(s[2])
      elseif s[1] == "c" then v = s[2]
      elseif s[1] == "x" then
        local c = hs:get(s[3])
        if c then v = lookup(c, s[2]) end
      end
      if v ~= nil and v ~= "" then
        if hs:get(l[1]) ~= v then hs:replace(l[1], v) changed = true end
        break
      end
    end
  end
  if changed then handle:clearRouteCache() end
end
"""

_INBOUND = """
function envoy_on_request(handle)
  local hs = handle:headers()
  local written = {}
  for _, r in ipairs(RECORD) do
    local c = hs:get(r[2])
    local v = hs:get(r[1])
    if c and v then
      local p = ctxpath(c, r[1])
      local f = io.open(p, "w")
      if f then f:write(v) f:close() written[#written + 1] = p end
    end
  end
  if #written > 0 then
    handle:streamInfo():dynamicMetadata():set("meshplane.ctx", "files", table.concat(written, "\\n"))
  end
end
function envoy_on_response(handle)
  local md = handle:streamInfo():dynamicMetadata():get("meshplane.ctx")
  if md and md["files"] then
    for p in string.gmatch(md["files"], "[^\\n]+") do os.remove(p) end
  end
end
"""


def outbound_script(proxy: Proxy, traffic_labels: TrafficLabels, propagations: Propagations) -> str | None:
    labels = labels_for(proxy, traffic_labels)
    keys, prefixes = propagation_for(proxy, propagations)
    if not labels and not keys and not prefixes:
        return None
    lua_labels = ", ".join(
        "{" + _lua_str(name) + ", {" + ", ".join("{" + ", ".join(_lua_str(p) for p in s) + "}" for s in sources)
        + "}}" for name, sources in labels)
    key_table = ", ".join(f"[{_lua_str(k.lower())}] = true" for k in keys)
    return (f"local PREFIX = {_lua_str(context_prefix(proxy))}\n"
            f"local LABELS = {{{lua_labels}}}\n"
            f"local KEYS = {{{key_table}}}\n"
            f"local KEY_PREFIXES = {{{', '.join(_lua_str(p.lower()) for p in prefixes)}}}\n"
            + _COMMON + _OUTBOUND.replace("#KEYS > 0", "next(KEYS) ~= nil"))


def inbound_script(proxy: Proxy, traffic_labels: TrafficLabels) -> str | None:
    """The recorder for ``$getExternalInboundRequestHeader``, or None when no label of the proxy uses it."""
    if proxy.type is not ProxyType.SIDECAR:
        return None
    pairs = sorted({(s[1], s[2]) for _, sources in labels_for(proxy, traffic_labels) for s in sources
                    if s[0] == "x"})
    if not pairs:
        return None
    record = ", ".join("{" + _lua_str(h) + ", " + _lua_str(c) + "}" for h, c in pairs)
    return f"local PREFIX = {_lua_str(context_prefix(proxy))}\nlocal RECORD = {{{record}}}\n" + _COMMON + _INBOUND


def per_route(script: str) -> lua_pb2.LuaPerRoute:
    return lua_pb2.LuaPerRoute(source_code=base_pb2.DataSource(inline_string=script))


def attach(vhosts: Sequence[rc.VirtualHost], script: str | None) -> None:
    if script is None:
        return
    # FilterConfig{disabled: false} enables the (disabled by default) Lua filter on this virtual host.
    cfg = pack(rc.FilterConfig(config=pack(per_route(script)), disabled=False))
    for vh in vhosts:
        vh.typed_per_filter_config[LUA].CopyFrom(cfg)


def attach_outbound(configs: Sequence[route_pb2.RouteConfiguration], proxy: Proxy, traffic_labels: TrafficLabels,
                    propagations: Propagations) -> None:
    """Plug-in for RDS (sidecar and gateway route configurations)."""
    script = outbound_script(proxy, traffic_labels, propagations)
    for cfg in configs:
        attach(cfg.virtual_hosts, script)
