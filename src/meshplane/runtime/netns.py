"""The pod network model of transparent interception: one network namespace per instance, a veth pair to one bridge
per mesh, and istio-init's iptables rules inside each namespace.

Why namespaces and not loopback addresses: a sidecar can capture an application's traffic only if the kernel
redirects it (iptables ``REDIRECT`` to Envoy's 15001/15006), and such rules must apply to the application alone,
not to the whole machine. A network namespace is what a Kubernetes pod is: its own interfaces, routes, iptables and
``/etc/resolv.conf`` (``ip netns exec`` bind-mounts ``/etc/netns/NAME/resolv.conf``).

Addresses: the mesh with loopback octet B gets ``10.B.0.0/16`` on a bridge ``mpbrB`` in the host namespace
(``10.B.0.1``, where the supervisor relays the control plane and DNS) and instance n of cluster c ``10.B.c.n`` on
``eth0`` inside its namespace. Nothing here can leave the machine: the bridge has no other port, IPv4 forwarding is
switched off on it (``net.ipv4.conf.mpbrB.forwarding=0``: the host never routes a packet that arrived on it), and
the range is refused when the host already routes any part of it. The namespaces' default route points at the
bridge address, so connections to virtual IPs are routable long enough for iptables to redirect them.

Everything created is recorded in ``HOME/net/*.json`` before it is created, so ``meshplane down`` removes it even
after the supervisor was killed with SIGKILL (:func:`remove_recorded`). Deleting a namespace deletes its veth end,
its addresses and its iptables; the bridge and ``/etc/netns/NAME`` are removed explicitly.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROXY_GID = 1337  # Istio's istio-proxy id: the agent and Envoy run with this group; their traffic is not captured
INBOUND_CAPTURE_PORT = 15006
OUTBOUND_CAPTURE_PORT = 15001
DNS_CAPTURE_PORT = 15053
# Ports of the proxy itself, never redirected inbound (Istio: 15090 stats, 15021 health, 15020 merged metrics,
# 15000 admin, 15001/15006 the capture ports, 15008 HBONE, 15053 DNS).
PROXY_PORTS = (15000, 15001, 15006, 15008, 15020, 15021, 15053, 15090)
NETNS_DIR = Path("/etc/netns")

ANNOTATIONS = (
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/includeOutboundPorts",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
)


class NetnsError(RuntimeError):
    """A namespace, link or rule could not be created; the message has the command and its error."""


class CaptureSpecError(ValueError):
    """A capture annotation cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Capture:
    """What is redirected, from the ``traffic.sidecar.istio.io/*`` annotations (Istio's defaults: every outbound
    address and port, every inbound port the workload declares)."""

    include_outbound: tuple[str, ...] = ("*",)
    exclude_outbound: tuple[str, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    include_outbound_ports: tuple[int, ...] = ()
    include_inbound: tuple[str, ...] = ("*",)  # "*" or port numbers as strings
    exclude_inbound_ports: tuple[int, ...] = ()


def _list(raw: str) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()]


def _ports(key: str, raw: str) -> tuple[int, ...]:
    out = []
    for p in _list(raw):
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise CaptureSpecError(f"annotation {key}: {p!r} is not a port number")
        out.append(int(p))
    return tuple(out)


def _cidrs(key: str, raw: str) -> tuple[str, ...]:
    items = _list(raw)
    if items == ["*"]:
        return ("*",)
    out = []
    for c in items:
        try:
            net = ipaddress.ip_network(c, strict=False)
        except ValueError as e:
            raise CaptureSpecError(f"annotation {key}: {c!r} is not an IP range ({e})") from e
        if net.version != 4:
            raise CaptureSpecError(f"annotation {key}: {c!r}: only IPv4 ranges are captured here")
        out.append(str(net))
    return tuple(out)


def capture_from_annotations(annotations: Mapping[str, str]) -> Capture:
    """The capture of a workload; an annotation of the ``traffic.sidecar.istio.io`` group that is not
    implemented, or a bad value, is refused with its name."""
    for k in annotations:
        if k.startswith("traffic.sidecar.istio.io/") and k not in ANNOTATIONS:
            raise CaptureSpecError(f"annotation {k}: not supported (supported: {', '.join(ANNOTATIONS)})")
    a = annotations
    inc_in = _list(a.get("traffic.sidecar.istio.io/includeInboundPorts", "*"))
    if inc_in != ["*"]:
        inc_in = [str(n) for n in _ports("traffic.sidecar.istio.io/includeInboundPorts", ",".join(inc_in))]
    return Capture(
        include_outbound=_cidrs("traffic.sidecar.istio.io/includeOutboundIPRanges",
                                a.get("traffic.sidecar.istio.io/includeOutboundIPRanges", "*")),
        exclude_outbound=_cidrs("traffic.sidecar.istio.io/excludeOutboundIPRanges",
                                a.get("traffic.sidecar.istio.io/excludeOutboundIPRanges", "")),
        exclude_outbound_ports=_ports("traffic.sidecar.istio.io/excludeOutboundPorts",
                                      a.get("traffic.sidecar.istio.io/excludeOutboundPorts", "")),
        include_outbound_ports=_ports("traffic.sidecar.istio.io/includeOutboundPorts",
                                      a.get("traffic.sidecar.istio.io/includeOutboundPorts", "")),
        include_inbound=tuple(inc_in),
        exclude_inbound_ports=_ports("traffic.sidecar.istio.io/excludeInboundPorts",
                                     a.get("traffic.sidecar.istio.io/excludeInboundPorts", "")),
    )


def iptables_rules(capture: Capture, *, proxy_gid: int = PROXY_GID, dns: bool = True) -> str:
    """The ``iptables-restore`` input for one namespace, in istio-init's shape: PREROUTING -> MESH_INBOUND ->
    MESH_IN_REDIRECT (15006); OUTPUT -> MESH_OUTPUT -> MESH_REDIRECT (15001); the proxy's group and loopback are
    never captured; DNS to any server on port 53 goes to the agent (15053). Pure: tested without a kernel."""
    r = ["*nat", ":MESH_INBOUND - [0:0]", ":MESH_IN_REDIRECT - [0:0]", ":MESH_OUTPUT - [0:0]",
         ":MESH_REDIRECT - [0:0]"]
    r.append(f"-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_CAPTURE_PORT}")
    r.append(f"-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_CAPTURE_PORT}")
    r.append("-A PREROUTING -p tcp -j MESH_INBOUND")
    for p in (*PROXY_PORTS, *capture.exclude_inbound_ports):
        r.append(f"-A MESH_INBOUND -p tcp --dport {p} -j RETURN")
    if capture.include_inbound == ("*",):
        r.append("-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT")
    else:
        for port in capture.include_inbound:
            r.append(f"-A MESH_INBOUND -p tcp --dport {port} -j MESH_IN_REDIRECT")
    if dns:  # Istio's DNS capture: the application's queries, whatever server they name, reach the agent
        for proto in ("udp", "tcp"):
            r.append(f"-A OUTPUT -p {proto} --dport 53 -m owner ! --gid-owner {proxy_gid} "
                     f"-j REDIRECT --to-ports {DNS_CAPTURE_PORT}")
    r.append("-A OUTPUT -p tcp -j MESH_OUTPUT")
    r.append(f"-A MESH_OUTPUT -m owner --gid-owner {proxy_gid} -j RETURN")
    r.append("-A MESH_OUTPUT -o lo -j RETURN")
    for p in capture.exclude_outbound_ports:
        r.append(f"-A MESH_OUTPUT -p tcp --dport {p} -j RETURN")
    for c in capture.exclude_outbound:
        r.append(f"-A MESH_OUTPUT -d {c} -j RETURN")
    for p in capture.include_outbound_ports:  # Istio: these ports are captured whatever the address
        r.append(f"-A MESH_OUTPUT -p tcp --dport {p} -j MESH_REDIRECT")
    if capture.include_outbound == ("*",):
        r.append("-A MESH_OUTPUT -j MESH_REDIRECT")
    else:
        for c in capture.include_outbound:
            r.append(f"-A MESH_OUTPUT -d {c} -j MESH_REDIRECT")
        r.append("-A MESH_OUTPUT -j RETURN")
    r.append("COMMIT")
    return "\n".join(r) + "\n"


# --- what exists, and what is recorded -----------------------------------------------------------------------


def _run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip() or proc.returncode}")
    return proc


def iptables_restore() -> str | None:
    """The iptables-restore binary (iptables-nft or legacy, whatever ``iptables`` is here), or None."""
    return shutil.which("iptables-restore")


def capture_unavailable() -> str:
    """Why transparent interception cannot run here ("" when it can): it needs root, ``ip netns`` and
    iptables with the nat table inside a namespace. Checked by creating (and deleting) a scratch namespace."""
    if os.geteuid() != 0:
        return "not running as root (network namespaces and iptables need it)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    restore = iptables_restore()
    if restore is None:
        return "no iptables (apt-get install iptables)"
    probe = f"mpprobe-{uuid.uuid4().hex[:8]}"
    try:
        if _run(["ip", "netns", "add", probe], check=False).returncode != 0:
            return "cannot create network namespaces (ip netns add failed)"
        rules = "*nat\n-A OUTPUT -p tcp --dport 1 -j REDIRECT --to-ports 2\nCOMMIT\n"
        res = _run(["ip", "netns", "exec", probe, restore], input_text=rules, check=False)
        if res.returncode != 0:
            return f"iptables nat REDIRECT does not work in a namespace: {res.stderr.strip()}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return ""


def host_routes_overlap(subnet: str) -> str:
    """A host route overlapping ``subnet`` (other than our own bridge's), or ""."""
    net = ipaddress.ip_network(subnet)
    out = _run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout
    for line in out.splitlines():
        parts = line.split()
        if not parts or parts[0] in ("default", "broadcast", "local", "unreachable", "multicast"):
            dest = parts[1] if len(parts) > 1 and parts[0] in ("broadcast", "local") else ""
        else:
            dest = parts[0]
        if not dest:
            continue
        try:
            other = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue
        if other.version == 4 and other.overlaps(net) and "dev mpbr" not in line:
            return line.strip()
    return ""


@dataclass(frozen=True, slots=True)
class Bridge:
    """The mesh's bridge in the host namespace."""

    name: str  # mpbrB (at most 15 characters)
    address: str  # 10.B.0.1
    prefix: int = 16

    @property
    def subnet(self) -> str:
        return str(ipaddress.ip_network(f"{self.address}/{self.prefix}", strict=False))


@dataclass(frozen=True, slots=True)
class Pod:
    """One instance's namespace: its name, the host end of its veth and its address on ``eth0``."""

    netns: str
    veth: str
    address: str
    resolv: str = ""  # the namespace's /etc/resolv.conf
    rules: str = ""  # iptables-restore input ("" = no capture: explicit interception in a namespace)
    hosts: Mapping[str, str] = field(default_factory=dict)


def bridge_for(octet: int) -> Bridge:
    return Bridge(f"mpbr{octet}", f"10.{octet}.0.1")


def pod_address(octet: int, cluster_index: int, n: int) -> str:
    return f"10.{octet}.{cluster_index}.{n}"


def netns_name(octet: int, instance: str) -> str:
    return f"mp{octet}-{instance}"


def veth_name(octet: int, cluster_index: int, n: int) -> str:
    return f"mp{octet:02x}{cluster_index:02x}{n:02x}"


def resolv_conf(namespace: str, domain: str = "cluster.local") -> str:
    """A pod's resolver: the agent's DNS proxy (reached on 127.0.0.1:53, redirected to 15053) with Kubernetes'
    search path, so ``reviews`` and ``reviews.default`` resolve as in a pod of ``namespace``."""
    return (f"nameserver 127.0.0.1\nsearch {namespace}.svc.{domain} svc.{domain} {domain}\n"
            "options ndots:5 attempts:2 timeout:2\n")


class NetRecords:
    """``HOME/net``: one JSON file per bridge or namespace, written before it is created."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def record(self, kind: str, name: str, extra: Mapping[str, str] | None = None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{kind}.{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"kind": kind, "name": name, **(extra or {})}))
        os.replace(tmp, path)

    def forget(self, kind: str, name: str) -> None:
        (self.root / f"{kind}.{name}.json").unlink(missing_ok=True)

    def entries(self) -> list[dict[str, str]]:
        out = []
        for p in sorted(self.root.glob("*.json")) if self.root.is_dir() else []:
            try:
                raw = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(raw, dict) and raw.get("kind") in ("bridge", "netns") and raw.get("name"):
                out.append({str(k): str(v) for k, v in raw.items()})
        return out


def create_bridge(records: NetRecords, bridge: Bridge) -> None:
    overlap = host_routes_overlap(bridge.subnet)
    if overlap:
        raise NetnsError(f"the host already routes part of {bridge.subnet} ({overlap}): not creating {bridge.name}")
    records.record("bridge", bridge.name)
    delete_link(bridge.name)  # left by an earlier run of this very mesh (same name = same home)
    _run(["ip", "link", "add", bridge.name, "type", "bridge"])
    # Never route what arrives from the namespaces anywhere else (checked on input, whatever ip_forward is).
    _run(["sysctl", "-q", "-w", f"net.ipv4.conf.{bridge.name}.forwarding=0"])
    _run(["sysctl", "-q", "-w", f"net.ipv6.conf.{bridge.name}.disable_ipv6=1"])
    _run(["ip", "addr", "add", f"{bridge.address}/{bridge.prefix}", "dev", bridge.name])
    _run(["ip", "link", "set", bridge.name, "up"])


def create_pod(records: NetRecords, bridge: Bridge, pod: Pod) -> None:
    """The namespace with ``eth0`` (``pod.address``) on the bridge, loopback up, default route via the bridge,
    its resolv.conf and (for captured pods) iptables; an earlier one of the same name is replaced."""
    records.record("netns", pod.netns, {"veth": pod.veth})
    delete_pod(pod.netns, pod.veth)
    _run(["ip", "netns", "add", pod.netns])
    _run(["ip", "link", "add", pod.veth, "type", "veth", "peer", "name", "eth0", "netns", pod.netns])
    _run(["ip", "link", "set", pod.veth, "master", bridge.name, "up"])
    ns = ["ip", "netns", "exec", pod.netns]
    _run([*ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
    _run([*ns, "ip", "addr", "add", f"{pod.address}/{bridge.prefix}", "dev", "eth0"])
    _run([*ns, "ip", "link", "set", "eth0", "up"])
    _run([*ns, "ip", "link", "set", "lo", "up"])
    _run([*ns, "ip", "route", "add", "default", "via", bridge.address, "dev", "eth0"])
    if pod.resolv:
        d = NETNS_DIR / pod.netns
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(pod.resolv)
    if pod.rules:
        restore = iptables_restore()
        if restore is None:
            raise NetnsError("iptables-restore is not installed")
        _run([*ns, restore], input_text=pod.rules)


def delete_link(name: str) -> None:
    if Path(f"/sys/class/net/{name}").exists():
        _run(["ip", "link", "del", name], check=False)


def delete_pod(netns: str, veth: str = "") -> None:
    if (Path("/run/netns") / netns).exists():
        _run(["ip", "netns", "del", netns], check=False)
    if veth:
        delete_link(veth)  # normally gone with the namespace (its peer was inside)
    d = NETNS_DIR / netns
    if d.is_dir():
        shutil.rmtree(d, ignore_errors=True)


def remove_recorded(records: NetRecords) -> list[str]:
    """Remove every recorded namespace, then the bridges; returns what could not be removed (should be empty)."""
    left = []
    entries = records.entries()
    for e in entries:
        if e["kind"] == "netns":
            delete_pod(e["name"], e.get("veth", ""))
            if (Path("/run/netns") / e["name"]).exists():
                left.append(f"netns {e['name']}")
            else:
                records.forget("netns", e["name"])
    for e in entries:
        if e["kind"] == "bridge":
            delete_link(e["name"])
            if Path(f"/sys/class/net/{e['name']}").exists():
                left.append(f"bridge {e['name']}")
            else:
                records.forget("bridge", e["name"])
    return left


def exec_prefix(netns: str) -> list[str]:
    """Run a command in ``netns`` (with its resolv.conf): ``ip netns exec`` execs the command, so its PID is the
    command's own and the process records stay exact."""
    return ["ip", "netns", "exec", netns]
