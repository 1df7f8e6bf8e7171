"""``meshplane describe pod|service NAME [-n NS]``: reads the objects ``meshplane.diag.describe`` reasons over
from the API (every namespace: a policy in the root namespace applies everywhere) and prints its report."""

from __future__ import annotations

import argparse
import sys

from meshplane.cli import locate
from meshplane.cli.serverproc import ServerConfigError
from meshplane.client import ClientError, SyncClient
from meshplane.diag.describe import DescribeError, Mesh, describe_pod, describe_service

TIMEOUT_S = 15.0
NETWORKING, SECURITY = "networking.istio.io/v1", "security.istio.io/v1"


def read_mesh(client: SyncClient) -> Mesh:
    def items(api_version: str, kind: str) -> list[dict[str, object]]:
        return client.list(api_version, kind)

    return Mesh(
        service_entries=items(NETWORKING, "ServiceEntry"),
        workload_entries=items(NETWORKING, "WorkloadEntry"),
        virtual_services=items(NETWORKING, "VirtualService"),
        destination_rules=items(NETWORKING, "DestinationRule"),
        peer_authentications=items(SECURITY, "PeerAuthentication"),
        authorization_policies=items(SECURITY, "AuthorizationPolicy"),
        root_namespace=_root_namespace(client),
    )


def _root_namespace(client: SyncClient) -> str:
    """MeshConfig's rootNamespace (ConfigMap istio-system/istio, key ``mesh``), else istio-system."""
    import yaml

    try:
        cm = client.get("v1", "ConfigMap", "istio", "istio-system")
        mesh = yaml.safe_load(str((cm.get("data") or {}).get("mesh") or "")) or {}
    except (ClientError, yaml.YAMLError):
        return "istio-system"
    return str(mesh.get("rootNamespace") or "istio-system") if isinstance(mesh, dict) else "istio-system"


def describe(args: argparse.Namespace) -> int:
    ep = locate.endpoint(args)
    try:
        with SyncClient(ep.api, token=ep.token, timeout=TIMEOUT_S) as client:
            mesh = read_mesh(client)
    except ClientError as e:
        raise ServerConfigError(str(e)) from None
    try:
        if args.target in ("pod", "po"):
            text = describe_pod(mesh, args.name, args.namespace)
        else:
            text = describe_service(mesh, args.name, args.namespace)
    except DescribeError as e:
        raise ServerConfigError(str(e)) from None
    sys.stdout.write(text)
    return 0
