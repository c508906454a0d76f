"""Lab layout (names, addresses, MACs) and building/tearing down its network namespaces.

Everything lives in namespaces we create, the bridge included (`lbctl-br`), so the root namespace's
interfaces, routes and sysctls are never touched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

# LBCTL_LAB_PREFIX (with LBCTL_LAB_STATE) lets several labs share a machine, e.g. parallel developers.
PREFIX = os.environ.get("LBCTL_LAB_PREFIX", "lbctl-")
BRIDGE_NS = f"{PREFIX}br"
CP_NS = f"{PREFIX}cp"
CLIENT_NS = f"{PREFIX}client"
ROUTER_NS = f"{PREFIX}router"
_OURS = re.compile(re.escape(PREFIX) + r"(br|cp|client|router|node\d+)")
NET4, NET6 = "198.18.0", "2001:db8:18:"
CP_IP4 = f"{NET4}.11"
# BGP mode (lbctl.lab.router): the top-of-rack router at .1 on the bridge (every node's default gateway
# already), and the client alone on its own subnet behind it, so it reaches a Service only by learned routes.
ROUTER_IP4, ROUTER_IP6 = f"{NET4}.1", f"{NET6}:1"
CLIENT_NET4, CLIENT_NET6 = "198.18.64", "2001:db8:64:"
ROUTER_CLIENT_IP4, ROUTER_CLIENT_IP6 = f"{CLIENT_NET4}.1", f"{CLIENT_NET6}:1"
POOL4 = f"{NET4}.50-{NET4}.99"
POOL6 = f"{NET6}:50-{NET6}:99"
IPVS_DEV = "kube-ipvs0"  # kube-proxy IPVS mode's dummy that holds every Service IP
MAX_NODES = 29  # nodes sit at .21-.49, below the pool


@dataclass
class Host:
    name: str  # logical name: cp, node1.., client
    netns: str
    ip4: str
    ip6: str
    mac: str
    port: str  # veth end in the bridge namespace (BGP mode: the client's is in the router's namespace)


@dataclass
class Topology:
    nodes: int = 3
    ipv6: bool = True
    hosts: list[Host] = field(default_factory=list)
    bgp: bool = False  # a router on the bridge, the client behind it (lbctl.lab.router)

    @classmethod
    def plan(cls, nodes: int = 3, ipv6: bool = True, bgp: bool = False) -> Topology:
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"--nodes must be between 1 and {MAX_NODES}")
        # Fixed, readable MACs: the last byte is the host's last address octet in decimal digits.
        hosts = [Host("cp", CP_NS, CP_IP4, f"{NET6}:11", "02:18:00:00:00:11", "v-cp")]
        for k in range(1, nodes + 1):
            hosts.append(Host(f"node{k}", f"{PREFIX}node{k}", f"{NET4}.{20 + k}", f"{NET6}:{20 + k}",
                              f"02:18:00:00:00:{20 + k:02d}", f"v-node{k}"))
        if bgp:
            hosts.append(Host("router", ROUTER_NS, ROUTER_IP4, ROUTER_IP6, "02:18:00:00:00:01", "v-router"))
            hosts.append(Host("client", CLIENT_NS, f"{CLIENT_NET4}.100", f"{CLIENT_NET6}:100", "02:18:00:00:01:00",
                              "v-client"))
        else:
            hosts.append(Host("client", CLIENT_NS, f"{NET4}.100", f"{NET6}:100", "02:18:00:00:01:00", "v-client"))
        return cls(nodes, ipv6, hosts, bgp)

    @property
    def node_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.name.startswith("node")]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def node_by_mac(self, mac: str) -> str | None:
        mac = mac.lower()
        return next((h.name for h in self.hosts if h.mac == mac), None)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Topology:
        doc = json.loads(path.read_text())
        return cls(doc["nodes"], doc["ipv6"], [Host(**h) for h in doc["hosts"]], doc.get("bgp", False))

    @property
    def bridged(self) -> list[Host]:
        """The hosts with a port on the bridge: all but a client behind the router."""
        return [h for h in self.hosts if not (self.bgp and h.name == "client")]


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def in_ns(ns: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)


def lab_namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    # Exactly this lab's names: another lab's "lbctl-x-node1" must not match "lbctl-".
    return [line.split()[0] for line in out.splitlines() if line.split() and _OURS.fullmatch(line.split()[0])]


def build(topo: Topology) -> None:
    """Create every namespace, the bridge and the veths. Caller destroys on failure."""
    sh("ip", "netns", "add", BRIDGE_NS)
    br = ["ip", "-n", BRIDGE_NS]
    sh(*br, "link", "set", "lo", "up")
    # The bridge is a dumb switch: no addresses, no IPv6 chatter of its own.
    in_ns(BRIDGE_NS, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    # No snooping: NDP's solicited-node multicast must flood like ARP broadcasts (no MLD querier here).
    sh(*br, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
    sh(*br, "link", "set", "br0", "up")
    for h in topo.bridged:
        sh("ip", "netns", "add", h.netns)
        # Created inside the bridge namespace, peer moved straight into the host's: never in the root ns.
        sh(*br, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
        sh(*br, "link", "set", h.port, "master", "br0", "up")
        _configure_host(topo, h)
    for h in topo.node_hosts:
        _configure_node(h)
    if topo.bgp:
        _client_behind_router(topo)


def _client_behind_router(topo: Topology) -> None:
    """The client's own subnet on a veth pair to the router, its default route via the router: no layer 2
    path to the nodes, so only what the router learned by BGP reaches a Service."""
    router, client = topo.host("router"), topo.host("client")
    sh("ip", "netns", "add", client.netns)
    sh("ip", "-n", router.netns, "link", "add", client.port, "type", "veth", "peer", "name", "eth0",
       "netns", client.netns)
    _configure_host(topo, client)
    r = ["ip", "-n", router.netns]
    sh(*r, "addr", "add", f"{ROUTER_CLIENT_IP4}/24", "dev", client.port)
    if topo.ipv6:
        sh(*r, "addr", "add", f"{ROUTER_CLIENT_IP6}/64", "dev", client.port, "nodad")
    sh(*r, "link", "set", client.port, "up")
    sh("ip", "-n", client.netns, "route", "add", "default", "via", ROUTER_CLIENT_IP4)
    if topo.ipv6:
        sh("ip", "-n", client.netns, "-6", "route", "add", "default", "via", ROUTER_CLIENT_IP6)
    # A router forwards; a layer 4 hash spreads one client's connections over every ECMP next hop (the
    # default layer 3 hash would send every connection from one client to one node).
    in_ns(router.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1",
          *(["net.ipv6.conf.all.forwarding=1", "net.ipv6.fib_multipath_hash_policy=1"] if topo.ipv6 else []))


def _configure_host(topo: Topology, h: Host) -> None:
    ip = ["ip", "-n", h.netns]
    # DAD would hold IPv6 addresses tentative for ~1 s and nothing else here claims them.
    in_ns(h.netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
          f"net.ipv6.conf.all.disable_ipv6={0 if topo.ipv6 else 1}",
          f"net.ipv6.conf.default.disable_ipv6={0 if topo.ipv6 else 1}")
    sh(*ip, "link", "set", "lo", "up")
    sh(*ip, "link", "set", "eth0", "address", h.mac)
    sh(*ip, "addr", "add", f"{h.ip4}/24", "dev", "eth0")
    if topo.ipv6:
        sh(*ip, "addr", "add", f"{h.ip6}/64", "dev", "eth0", "nodad")
    sh(*ip, "link", "set", "eth0", "up")


def _configure_node(h: Host) -> None:
    # kube-proxy IPVS mode with strictARP: LB IPs are local (on a dummy) but the kernel never answers
    # ARP for them on eth0 (arp_ignore=1) nor uses them as ARP sources (arp_announce=2): the speaker
    # alone decides which node answers. For IPv6 the kernel only answers NS for addresses on the
    # receiving interface (proxy_ndp stays 0), so a dummy-held address is silent on eth0 by design.
    in_ns(h.netns, "sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
          "net.ipv4.conf.default.arp_ignore=1", "net.ipv4.conf.default.arp_announce=2",
          "net.ipv4.conf.eth0.arp_ignore=1", "net.ipv4.conf.eth0.arp_announce=2",
          "net.ipv6.conf.all.proxy_ndp=0", "net.ipv6.conf.eth0.proxy_ndp=0")
    ip = ["ip", "-n", h.netns]
    # A dummy is what kube-proxy uses; kernels built without it (e.g. microVMs) usually have ifb,
    # which behaves the same here: NOARP, carrier on, never transmits anywhere.
    if sh(*ip, "link", "add", IPVS_DEV, "type", "dummy", check=False).returncode:
        sh(*ip, "link", "add", IPVS_DEV, "type", "ifb")
    sh(*ip, "link", "set", IPVS_DEV, "up")  # up: IPv6 addresses on a down link never become usable


def destroy() -> list[str]:
    """Delete every lbctl-* namespace (their veths go with them). Returns what was deleted."""
    gone = []
    for ns in lab_namespaces():
        if sh("ip", "netns", "del", ns, check=False).returncode == 0:
            gone.append(ns)
    return gone
