"""The manifest's ``mesh:`` settings (locality load balancing, on by default) and the local MemberCluster objects
the supervisor declares for the manifest's clusters."""

from __future__ import annotations

from typing import Any

import pytest

from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate
from meshplane.runtime.manifest import ManifestError, parse_manifest
from meshplane.runtime.supervisor import member_cluster


def doc(**extra: Any) -> dict[str, Any]:
    return {"clusters": [{"name": "c1", "network": "n1", "region": "r1", "zone": "z1"}], **extra}


def test_locality_load_balancing_defaults_on_and_can_be_turned_off() -> None:
    assert parse_manifest(doc()).mesh.locality_lb is True
    assert parse_manifest(doc(mesh={"localityLoadBalancing": False})).mesh.locality_lb is False


@pytest.mark.parametrize("mesh", [{"localityLoadBalancing": "yes"}, {"locality": True}, ["x"]])
def test_mesh_errors_name_the_field(mesh: Any) -> None:
    with pytest.raises(ManifestError, match="mesh"):
        parse_manifest(doc(mesh=mesh))


def test_clusters_become_valid_local_member_clusters() -> None:
    m = parse_manifest(doc())
    obj = member_cluster(m.clusters[0])
    assert obj["metadata"]["name"] == "c1"
    assert obj["spec"] == {"local": True, "network": "n1", "region": "r1", "zone": "z1"}
    info = default_registry().by_api_version(obj["apiVersion"], obj["kind"])
    assert info is not None and not info.namespaced
    validate(info, obj, field_validation="Strict")  # raises when the API would refuse it
