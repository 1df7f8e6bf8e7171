"""Wire encoding of xDS responses, serialized once per resource and shared by every stream.

Why: with a thousand sidecars that receive the same thousand clusters, building a ``DiscoveryResponse`` per
stream copies a million ``Any`` messages and serializes them a thousand times. Protobuf's wire format lets a
message be the concatenation of its fields (repeated fields accumulate), so each resource is encoded once as a
one-element response (``resources`` only) and a stream's response is ``header bytes + cached resource bytes``.
The gRPC method handlers send ``bytes`` as they are. The cache lives for one push epoch (one PushContext).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from envoy.service.discovery.v3 import discovery_pb2

from meshplane.xds.translator import ResourceLike


class TypeUrlMismatch(ValueError):
    """A generated resource's Any type_url differs from the response type_url (Envoy would reject it)."""


class Encoder:
    """Per-epoch cache of encoded resources and of whole resource lists. Not thread-safe (one event loop)."""

    def __init__(self) -> None:
        # id(obj) -> (obj, bytes): the object is kept so its id cannot be reused while the entry lives.
        self._sotw: dict[int, tuple[ResourceLike, bytes]] = {}
        self._delta: dict[int, tuple[ResourceLike, bytes]] = {}
        self._lists: dict[int, tuple[Sequence[ResourceLike], bytes, str, dict[str, str]]] = {}
        # (type, nonce, version) -> (resources blob, whole response): the response bytes of a shared list, for
        # streams whose nonces coincide. Bounded (each entry holds a copy of a list's bytes).
        self._responses: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}

    def sotw_resource(self, type_url: str, r: ResourceLike) -> bytes:
        hit = self._sotw.get(id(r))
        if hit is not None and hit[0] is r:
            return hit[1]
        _check(type_url, r)
        data: bytes = discovery_pb2.DiscoveryResponse(resources=[r.resource]).SerializeToString()
        self._sotw[id(r)] = (r, data)
        return data

    def delta_resource(self, type_url: str, r: ResourceLike) -> bytes:
        hit = self._delta.get(id(r))
        if hit is not None and hit[0] is r:
            return hit[1]
        _check(type_url, r)
        res = discovery_pb2.Resource(name=r.name, version=r.version, resource=r.resource)
        data: bytes = discovery_pb2.DeltaDiscoveryResponse(resources=[res]).SerializeToString()
        self._delta[id(r)] = (r, data)
        return data

    def sotw_list(self, type_url: str, resources: Sequence[ResourceLike]) -> tuple[bytes, str, dict[str, str]]:
        """The encoded resources of a whole list, its content key and its name -> version map (shared: do not
        mutate); cached by list identity."""
        hit = self._lists.get(id(resources))
        if hit is not None and hit[0] is resources:
            return hit[1], hit[2], hit[3]
        blob = b"".join(self.sotw_resource(type_url, r) for r in resources)
        key = content_key((r.name, r.version) for r in resources)
        versions = {r.name: r.version for r in resources}
        self._lists[id(resources)] = (resources, blob, key, versions)
        return blob, key, versions

    def sotw_response(self, version: str, type_url: str, nonce: str, blob: bytes) -> bytes:
        """``sotw_response(...)`` built once for every stream that sends this blob with this nonce."""
        hit = self._responses.get((type_url, nonce, version))
        if hit is not None and hit[0] is blob:
            return hit[1]
        data = sotw_response(version, type_url, nonce, blob)
        if len(self._responses) >= _RESPONSES_MAX:
            self._responses.clear()
        self._responses[(type_url, nonce, version)] = (blob, data)
        return data


_RESPONSES_MAX = 16


def _check(type_url: str, r: ResourceLike) -> None:
    if r.resource.type_url != type_url:
        raise TypeUrlMismatch(f"resource {r.name!r}: Any type_url {r.resource.type_url!r} is not {type_url!r}")



def content_key(pairs: Iterable[tuple[str, str]], removed: Iterable[str] = ()) -> str:
    """An opaque, stable digest of (name, version) pairs (and removed names): equal content, equal key."""
    h = hashlib.blake2b(digest_size=8)
    for name, version in pairs:
        h.update(name.encode())
        h.update(b"\x00")
        h.update(version.encode())
        h.update(b"\x01")
    for name in removed:
        h.update(b"-")
        h.update(name.encode())
        h.update(b"\x01")
    return h.hexdigest()


def sotw_response(version: str, type_url: str, nonce: str, blob: bytes) -> bytes:
    head = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
    encoded: bytes = head.SerializeToString()
    return encoded + blob


def delta_response(version: str, type_url: str, nonce: str, blob: bytes, removed: Iterable[str] = ()) -> bytes:
    head = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=version, type_url=type_url, nonce=nonce, removed_resources=sorted(removed)
    )
    encoded: bytes = head.SerializeToString()
    return encoded + blob
