"""The Lua that serves a proxy's mesh metrics under Istio's names and labels on its metrics listener (15090).

Why at scrape time: ``translate.telemetry`` puts every label known when a listener is built into the stat name
(``model.statname``), so Envoy does not format ~20 tags per request; Envoy then exports
``envoy_istio_m<labels>__requests_total{meshplane="200|-||spiffe://...|productpage_2dv1;..."}``. This filter, on
the response of ``/stats/prometheus``, turns each such sample back into ``istio_requests_total{reporter=...,
source_workload=...,...}``: it decodes the name's labels, fills the placeholders (``$self`` from the proxy's own
identity, written into the script by its agent; ``$code``, ``$flags``, ``$principal`` from the request tag's
fields; ``$peer`` from its peer value, split into its five labels; ``$service`` likewise; ``$mtls``), and
merges the samples of every encoded name of one metric into one family with one ``# TYPE`` line (the text
format allows no second one). Other lines pass unchanged, except that a plain ``envoy_istio_*`` (a listener
from before the encoding) is renamed ``istio_*`` and merged the same way.

The cost is paid per scrape (every few seconds), proportional to the stats text; Envoy's per-request work is
one tag per sample. The unit tests run this script with LuaJIT (the interpreter of Envoy's Lua filter).
"""

from __future__ import annotations

from collections.abc import Mapping

from meshplane.model.statname import (
    CODE,
    FIELD_SEPARATOR,
    FLAGS,
    LABEL_SUFFIXES,
    MARK,
    MTLS,
    PEER,
    PEER_FIELDS,
    PEER_TAG,
    PRINCIPAL,
    REQUEST_FIELDS,
    REQUEST_TAG,
    SELF,
    SEPARATOR,
    SERVICE,
    SERVICE_LABELS,
    SERVICE_TAG,
    UNKNOWN,
)

PREFIX = "envoy_istio_"  # translate.telemetry.STAT_PREFIX as Envoy's Prometheus output writes it


def _lua_string(value: str) -> str:
    """A Lua string literal of ``value`` (every byte outside printable ASCII, and quotes, as ``\\ddd``)."""
    out = []
    for byte in value.encode():
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in "\"\\" else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


_DECODER = r"""
local PREFIX, MARK, SEP = %(prefix)s, %(mark)s, %(sep)s
local SELF, PEER, SERVICE, MTLS = %(self)s, %(peer)s, %(service)s, %(mtls)s
local PEER_TAG, SERVICE_TAG, UNKNOWN = %(peer_tag)s, %(service_tag)s, %(unknown)s
local CODE, FLAGS, PRINCIPAL, REQUEST_TAG, FSEP = %(code)s, %(flags)s, %(principal)s, %(request_tag)s, %(fsep)s
local REQUEST_FIELDS = {%(request_fields)s}
local FIELDS = {%(fields)s}
local SUFFIX_FIELD = {%(suffixes)s}
local SERVICE_FIELD = {%(services)s}

local function unescape(s)
  return (s:gsub("_(%%x%%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The labels of an encoded name's label part: "name__value" pairs joined by "__" (model.statname).
local function decode_pairs(body)
  local parts, cur, i, n = {}, {}, 1, #body
  while i <= n do
    local c = body:sub(i, i)
    if c == "_" and body:sub(i + 1, i + 1) == "_" then
      parts[#parts + 1] = table.concat(cur); cur = {}; i = i + 2
    elseif c == "_" then
      cur[#cur + 1] = body:sub(i, i + 2); i = i + 3
    else
      cur[#cur + 1] = c; i = i + 1
    end
  end
  if n > 0 then parts[#parts + 1] = table.concat(cur) end
  if #parts %% 2 == 1 then return nil end
  local pairs_ = {}
  for j = 1, #parts, 2 do
    pairs_[#pairs_ + 1] = {unescape(parts[j]), unescape(parts[j + 1])}
  end
  return pairs_
end

-- (family, sample name, fixed labels) of an exported name; nil: not one of the mesh metrics.
local cache = {}
local function decode_name(name)
  local hit = cache[name]
  if hit ~= nil then return hit end
  if name:sub(1, #PREFIX) ~= PREFIX then return nil end
  local rest = name:sub(#PREFIX + 1)
  local entry = false
  if rest:sub(1, #MARK) == MARK then
    local body, metric = rest:sub(#MARK + 1):match("^(.*)" .. SEP .. "(.-)$")
    if body ~= nil and metric ~= "" then
      local labels = decode_pairs(body)
      if labels ~= nil then entry = {metric, labels} end
    end
  end
  if entry == false then entry = {rest, {}} end
  cache[name] = entry
  return entry
end

-- The labels of a sample line "{a="x",b="y\"z"}" as an ordered list of {name, raw value}.
local function parse_labels(text)
  local out, i, n = {}, 2, #text - 1
  while i <= n do
    local eq = text:find('="', i, true)
    if eq == nil then break end
    local key = text:sub(i, eq - 1)
    local j, buf = eq + 2, {}
    while j <= n do
      local c = text:sub(j, j)
      if c == "\\" then
        local d = text:sub(j + 1, j + 1)
        buf[#buf + 1] = (d == "n") and "\n" or d; j = j + 2
      elseif c == '"' then break
      else buf[#buf + 1] = c; j = j + 1 end
    end
    out[#out + 1] = {key, table.concat(buf)}
    i = j + 2  -- past the quote and the comma
  end
  return out
end

local function quote(v)
  return (v:gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"'))
end

local function known(v)
  return v ~= nil and v ~= "" and v ~= "-" and v ~= UNKNOWN
end

-- Field i of a joined value ("a;b;c", each escaped); unknown when missing (model.statname.split).
local function field(v, i)
  if v == nil or v == "" or v == "-" then return UNKNOWN end
  local n = 0
  for part in (v .. ";"):gmatch("([^;]*);") do
    n = n + 1
    if n == i then
      if part == "" then return UNKNOWN end
      return unescape(part)
    end
  end
  return UNKNOWN
end

local function suffix_of(label)
  return label:match("^source_(.*)$") or label:match("^destination_(.*)$")
end

-- The fields of the request tag's value (model.statname.split_request): the first three at the first
-- separators, the rest at its last one; missing fields are empty.
local function split_request(v)
  local parts, rest = {}, v
  for i = 1, 3 do
    local at = rest:find(FSEP, 1, true)
    if at == nil then parts[i] = rest; rest = nil; break end
    parts[i] = rest:sub(1, at - 1); rest = rest:sub(at + #FSEP)
  end
  if rest ~= nil then
    local principal, peer = rest:match("^(.*)" .. FSEP:gsub("%%p", "%%%%%%0") .. "(.-)$")
    if principal ~= nil then parts[4], parts[5] = principal, peer else parts[4] = rest end
  end
  local out = {}
  for i, name in ipairs(REQUEST_FIELDS) do out[name] = parts[i] or "" end
  return out
end

local function sample(fixed, dynamic)
  local dyn = {}
  for _, kv in ipairs(dynamic) do dyn[kv[1]] = kv[2] end
  -- names from before the request tag: the peer and the service as tags of their own, the other side's
  -- principal a plain tag (destination_principal at the source, source_principal at the destination)
  local f = dyn[REQUEST_TAG] and split_request(dyn[REQUEST_TAG]) or {peer = dyn[PEER_TAG], service = dyn[SERVICE_TAG],
    principal = dyn["destination_principal"] or dyn["source_principal"]}
  local out = {}
  for _, kv in ipairs(fixed) do
    local label, v = kv[1], kv[2]
    if v == SELF then
      local suffix = suffix_of(label) or ""
      local idx = SUFFIX_FIELD[suffix]
      v = (suffix == "principal" and OWN.principal) or (idx and OWN[FIELDS[idx]]) or UNKNOWN
    elseif v == PEER then
      v = field(f.peer, SUFFIX_FIELD[suffix_of(label) or ""] or 0)
    elseif v == SERVICE then
      v = field(f.service, SERVICE_FIELD[label] or 0)
    elseif v == CODE then
      v = f.code or UNKNOWN
    elseif v == FLAGS then
      v = f.flags or UNKNOWN
    elseif v == PRINCIPAL then
      v = known(f.principal) and f.principal or UNKNOWN
    elseif v == MTLS then
      v = known(f.principal) and OWN.principal or UNKNOWN
    end
    out[#out + 1] = label:gsub("[^%%w_]", "_") .. '="' .. quote(v) .. '"'
  end
  for _, kv in ipairs(dynamic) do
    if kv[1] ~= PEER_TAG and kv[1] ~= SERVICE_TAG and kv[1] ~= REQUEST_TAG then
      out[#out + 1] = kv[1] .. '="' .. quote(kv[2]) .. '"'
    end
  end
  return out
end

-- The Prometheus text of Envoy's stats with the mesh metrics decoded and merged by family.
function decode_stats(text)
  local out, families, order = {}, {}, {}
  local current = nil
  for line in text:gmatch("([^\n]*)\n?") do
    if line:sub(1, 7) == "# TYPE " then
      local name, kind = line:match("^# TYPE (%%S+) (%%S+)")
      local entry = name and decode_name(name)
      if entry then
        local fam = "istio_" .. entry[1]
        if families[fam] == nil then
          families[fam] = {kind = kind, lines = {}}
          order[#order + 1] = fam
        end
        current = families[fam]
        current.base = entry[1]
      else
        current = nil
        out[#out + 1] = line
      end
    elseif line:sub(1, #PREFIX) == PREFIX then
      local name, labels, value = line:match("^([%%w_:]+)(%%{.*%%}) (%%S+)$")
      if name == nil then
        name, value = line:match("^([%%w_:]+) (.*)$")
        labels = "{}"
      end
      local entry = name and decode_name(name)
      if entry then
        local fam = families["istio_" .. entry[1]]
        local target = fam or current
        if target == nil then
          families["istio_" .. entry[1]] = {kind = "untyped", lines = {}}
          order[#order + 1] = "istio_" .. entry[1]
          target = families["istio_" .. entry[1]]
        end
        local rendered = sample(entry[2], parse_labels(labels))
        local text_labels = ""
        if #rendered > 0 then text_labels = "{" .. table.concat(rendered, ",") .. "}" end
        target.lines[#target.lines + 1] = "istio_" .. entry[1] .. text_labels .. " " .. value
      else
        out[#out + 1] = line
      end
    elseif line ~= "" then
      out[#out + 1] = line
    end
  end
  for _, fam in ipairs(order) do
    out[#out + 1] = "# TYPE " .. fam .. " " .. families[fam].kind
    for _, l in ipairs(families[fam].lines) do out[#out + 1] = l end
  end
  return table.concat(out, "\n") .. "\n"
end

function envoy_on_response(handle)
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  body:setBytes(decode_stats(body:getBytes(0, body:length())))
end
"""


def decoder_lua(own: Mapping[str, str]) -> str:
    """The metrics listener's Lua for a proxy whose identity is ``own`` (``model.peer``'s fields and
    ``principal``; a missing one is ``unknown``)."""
    values = {f: own.get(f) or UNKNOWN for f in (*PEER_FIELDS, "principal")}
    table = ", ".join(f"{k} = {_lua_string(v)}" for k, v in values.items())
    return f"local OWN = {{{table}}}\n" + _DECODER % {
        "prefix": _lua_string(PREFIX), "mark": _lua_string(MARK), "sep": _lua_string(SEPARATOR),
        "self": _lua_string(SELF), "peer": _lua_string(PEER), "service": _lua_string(SERVICE),
        "mtls": _lua_string(MTLS), "peer_tag": _lua_string(PEER_TAG), "service_tag": _lua_string(SERVICE_TAG),
        "code": _lua_string(CODE), "flags": _lua_string(FLAGS), "principal": _lua_string(PRINCIPAL),
        "request_tag": _lua_string(REQUEST_TAG), "fsep": _lua_string(FIELD_SEPARATOR),
        "request_fields": ", ".join(_lua_string(f) for f in REQUEST_FIELDS),
        "unknown": _lua_string(UNKNOWN), "fields": ", ".join(_lua_string(f) for f in PEER_FIELDS),
        "suffixes": ", ".join(f"{s} = {i}" for i, s in enumerate(LABEL_SUFFIXES, 1)),
        "services": ", ".join(f"{s} = {i}" for i, s in enumerate(SERVICE_LABELS, 1))}


__all__ = ["PREFIX", "decoder_lua"]
