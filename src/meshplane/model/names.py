"""Names as their own types: a service's host name and a namespace are both ``str`` at run time, but mixing them
up (a namespace where a host key is expected, a short name where the FQDN is) is a bug mypy can catch.

``Hostname`` is the fully qualified name a service is known by in the registry and in translation
(``reviews.default.svc.cluster.local``, ``api.example.com``): the key of registry snapshots, endpoint shards and
the changed-hosts sets of incremental pushes. ``Namespace`` is a config or workload namespace. Values come from
the typed specs (plain ``str``, as users wrote them) and become these types where the registry and translation
take them as keys; nothing checks their syntax here (admission already did).
"""

from __future__ import annotations

from typing import NewType

__all__ = ["Hostname", "Namespace"]

Hostname = NewType("Hostname", str)
Namespace = NewType("Namespace", str)
