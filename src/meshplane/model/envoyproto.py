"""The product's protobuf registry for user-written Envoy config: type URLs resolved, JSON read as typed protos.

Why one module: an EnvoyFilter's ``patch.value`` (and a WasmPlugin's generated filter) is Envoy config written as
JSON, with ``typed_config: {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua", ...}``
inside. Istio reads it into the typed proto of the object patched (``BuildXDSObjectFromStruct``) and MERGE is then
proto merge on typed messages. Admission and translation must read it the same way, so both call :func:`parse`.

Envoy's descriptors come from the ``xds-protos`` package, one Python package per proto package
(``envoy.extensions.filters.http.lua.v3`` is ``envoy/extensions/filters/http/lua/v3/*_pb2.py``). Importing all
of them costs seconds, so a type URL is resolved on first use by importing the modules of its proto package only;
an ``@type`` no module defines is an :class:`UnknownType`.

Errors: :class:`EnvoyProtoError` (a ``ValueError``) -> :class:`UnknownType` (an ``@type`` the registry does not
know), :class:`BadValue` (the JSON does not read as the message: an unknown field, a wrong type).
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any, TypeVar, cast

from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

_PREFIX = "type.googleapis.com/"

M = TypeVar("M", bound=Message)


class EnvoyProtoError(ValueError):
    """User-written Envoy config that cannot be read as its typed proto; the message says why."""


class UnknownType(EnvoyProtoError):
    def __init__(self, type_url: str) -> None:
        super().__init__(f"unknown @type {type_url!r}: no Envoy or xDS message of that name is known")
        self.type_url = type_url


class BadValue(EnvoyProtoError):
    pass


_imported: set[str] = set()


def _import_package(package: str) -> None:
    """Import every ``*_pb2`` module of one proto package (their descriptors join the default pool)."""
    if package in _imported:
        return
    _imported.add(package)
    try:
        mod = importlib.import_module(package)
    except ImportError:
        return
    for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")


def message_class(full_name: str) -> type[Message] | None:
    """The Python class of a proto message by full name (``envoy.config.cluster.v3.Cluster``), or None."""
    pool = descriptor_pool.Default()
    parts = full_name.split(".")
    # A nested message's package is a prefix of its name: try the longest package first.
    for cut in range(len(parts) - 1, 0, -1):
        try:
            desc = pool.FindMessageTypeByName(full_name)
        except KeyError:
            _import_package(".".join(parts[:cut]))
            continue
        return cast(type[Message], message_factory.GetMessageClass(desc))
    try:
        return cast(type[Message], message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name)))
    except KeyError:
        return None


def resolve(type_url: str) -> type[Message]:
    """The class of an ``@type`` / ``Any.type_url``; :class:`UnknownType` when no known message has that name."""
    name = type_url.rpartition("/")[2]
    cls = message_class(name) if name else None
    if cls is None:
        raise UnknownType(type_url)
    return cls


def _type_urls(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        t = value.get("@type")
        if isinstance(t, str):
            yield t
        for v in value.values():
            yield from _type_urls(v)
    elif isinstance(value, list):
        for v in value:
            yield from _type_urls(v)


_TYPED_STRUCTS = frozenset({_PREFIX + "udpa.type.v1.TypedStruct", _PREFIX + "xds.type.v3.TypedStruct"})


def _check_typed_structs(value: Any) -> None:
    """A ``TypedStruct`` (``{"@type": ".../TypedStruct", "type_url": ..., "value": {...}}``, as Istio's local rate
    limit task writes filter configs) is read as the message its ``type_url`` names, as Envoy will: an unknown type
    or a value that does not read is refused here, not by the proxy."""
    if isinstance(value, dict):
        if value.get("@type") in _TYPED_STRUCTS:
            inner = value.get("type_url", value.get("typeUrl"))
            if not isinstance(inner, str) or not inner:
                raise BadValue("a TypedStruct needs type_url")
            body = value.get("value", {})
            try:
                parse(body, resolve(inner))
            except BadValue as e:
                raise BadValue(f"TypedStruct value as {inner}: {e}") from None
            return
        for v in value.values():
            _check_typed_structs(v)
    elif isinstance(value, list):
        for v in value:
            _check_typed_structs(v)


def parse(value: Any, cls: type[M]) -> M:
    """``value`` (JSON: snake_case or camelCase field names, as Envoy and Istio accept) as a ``cls`` message; every
    ``@type`` inside is resolved first, and a ``TypedStruct``'s value read as its ``type_url``.
    :class:`UnknownType` / :class:`BadValue` on failure."""
    for url in _type_urls(value):
        resolve(url)
    _check_typed_structs(value)
    msg = cls()
    try:
        json_format.ParseDict(value, msg)
    except (json_format.ParseError, TypeError, ValueError) as e:
        raise BadValue(str(e)) from None
    return cast(M, msg)


def unpack(packed: any_pb2.Any) -> Message:
    """The typed message inside an ``Any`` (its type resolved by the registry)."""
    msg = resolve(packed.type_url)()
    if not packed.Unpack(msg):
        raise BadValue(f"cannot unpack {packed.type_url}")
    return msg


def to_json(msg: Message) -> dict[str, Any]:
    """``msg`` as Envoy's JSON (camelCase names), every ``Any`` inside resolved by the registry."""
    for url in _any_urls(msg):
        resolve(url)
    out: dict[str, Any] = json_format.MessageToDict(msg)
    return out


def _any_urls(msg: Message) -> Iterator[str]:
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        items = value if fd.is_repeated else [value]
        if fd.message_type.GetOptions().map_entry:
            items = list(value.values()) if fd.message_type.fields_by_name["value"].message_type else []
        for item in items:
            if isinstance(item, any_pb2.Any):
                yield item.type_url
                with contextlib.suppress(EnvoyProtoError):
                    yield from _any_urls(unpack(item))
            elif isinstance(item, Message):
                yield from _any_urls(item)


__all__ = ["BadValue", "EnvoyProtoError", "UnknownType", "message_class", "parse", "resolve", "to_json", "unpack"]


# The message an EnvoyFilter ``patch.value`` is, by ``applyTo`` (Istio's ``BuildXDSObjectFromStruct``).
PATCH_MESSAGES: dict[str, str] = {
    "LISTENER": "envoy.config.listener.v3.Listener",
    "LISTENER_FILTER": "envoy.config.listener.v3.ListenerFilter",
    "FILTER_CHAIN": "envoy.config.listener.v3.FilterChain",
    "NETWORK_FILTER": "envoy.config.listener.v3.Filter",
    "HTTP_FILTER": "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
    "ROUTE_CONFIGURATION": "envoy.config.route.v3.RouteConfiguration",
    "VIRTUAL_HOST": "envoy.config.route.v3.VirtualHost",
    "HTTP_ROUTE": "envoy.config.route.v3.Route",
    "CLUSTER": "envoy.config.cluster.v3.Cluster",
    "EXTENSION_CONFIG": "envoy.config.core.v3.TypedExtensionConfig",
    "BOOTSTRAP": "envoy.config.bootstrap.v3.Bootstrap",
}


def patch_value(apply_to: str, value: Any) -> Message:
    """An EnvoyFilter patch's ``value`` as the typed message of what it applies to."""
    cls = message_class(PATCH_MESSAGES[apply_to])
    assert cls is not None, apply_to
    if not isinstance(value, dict):
        raise BadValue(f"expected an object (a {PATCH_MESSAGES[apply_to]}), got {type(value).__name__}")
    return parse(value, cls)


__all__ += ["PATCH_MESSAGES", "patch_value"]


_REPLACED = frozenset({"google.protobuf.Duration"})


def merge(dst: Message, src: Message) -> None:
    """Istio's proto merge (``pkg/proto/merge``): protobuf's merge (set scalars overwrite, lists append, messages
    merge field by field, map entries replace), except that a ``google.protobuf.Duration`` replaces the one in
    ``dst`` whole: a timeout of ``0.5s`` merged into ``10s`` is 0.5 s, not 10.5 s."""
    for fd, value in src.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            target = getattr(dst, fd.name)
            if fd.message_type.fields_by_name["value"].message_type is not None:
                for k, v in value.items():
                    target[k].CopyFrom(v)
            else:
                for k, v in value.items():
                    target[k] = v
        elif fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            sub = getattr(dst, fd.name)
            if fd.message_type.full_name in _REPLACED:
                sub.CopyFrom(value)
            else:
                sub.SetInParent()
                merge(sub, value)
        else:
            setattr(dst, fd.name, value)


__all__ += ["merge"]
