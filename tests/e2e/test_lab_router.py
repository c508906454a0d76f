"""The lab's router (lbctl.lab.router) on its own, without the cluster or the speaker side: FRR in the router
namespace on the lab bridge, a plain BIRD in two node namespaces with the configuration lbctl.core.bgp_render makes
(as the speaker's sidecar will), and the client behind the router on its own subnet. Each node holds the VIPs
on its kube-ipvs0 dummy (as kube-proxy does) and answers HTTP there with its name.

Covers: sessions Established from every node in both families, one next hop per node in the router's kernel
table (ECMP), the client reaching a VIP only through those routes, a changed export list applied with `birdc
configure` without any session reset, a killed BIRD's next hop gone, and BFD taking out a node whose link was
cut within a second (the hold timer alone would take 90 s). Figures go to stdout (`pytest -s`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lbctl.core.bgp_render import BfdProfile, BgpConfig, Export, Peer, render
from lbctl.lab import lifecycle, probes, processes, prober, router, topology
from lbctl.lab.processes import STATE
from lbctl.lab.topology import BRIDGE_NS, IPVS_DEV, ROUTER_IP4, ROUTER_IP6, ROUTER_NS, Topology, in_ns, sh

from tests.wait import wait_for

VIP4, VIP6 = "198.18.0.50", "2001:db8:18::50"
VIP4_2 = "198.18.0.51"
BFD = BfdProfile(router.BFD_PROFILE, router.BFD_INTERVAL_MS, router.BFD_INTERVAL_MS, router.BFD_MULTIPLIER)
BASE = (f"{VIP4}/32", f"{VIP6}/128")
HTTP_PORT = 80


def say(what: str) -> None:
    print(f"figure: {what}", flush=True)


@dataclass
class RouterLab:
    topo: Topology
    exports: dict[str, tuple[Export, ...]] = field(default_factory=dict)  # node -> what its BIRD exports now

    @property
    def peers(self) -> list[str]:
        return [a for h in self.topo.node_hosts for a in (h.ip4, h.ip6)]

    def conf_path(self, node: str) -> Path:
        return STATE / "birds" / node / "bird.conf"

    def write(self, node: str, exports: tuple[Export, ...]) -> None:
        """bird.conf for `node` from the speaker's renderer: one peer per family to the router, BFD `lab`."""
        h = self.topo.host(node)
        peers = tuple(Peer(name, address, router.ROUTER_ASN, bfd=BFD,
                           exports=tuple(e for e in exports if (":" in e.prefix) == (":" in address)))
                      for name, address in zip(router.peer_names(self.topo), (ROUTER_IP4, ROUTER_IP6)))
        path = self.conf_path(node)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(BgpConfig(h.ip4, router.NODE_ASN, peers)))
        self.exports[node] = exports

    def start(self, node: str) -> None:
        path = self.conf_path(node)
        processes.spawn(f"bird-{node}", self.topo.host(node).netns,
                        ["bird", "-f", "-c", str(path), "-s", str(path.with_name("bird.ctl"))])

    def bird_running(self, node: str) -> bool:
        return processes.alive(processes.pid_of(f"bird-{node}"))

    def configure(self, node: str, exports: tuple[Export, ...]) -> None:
        """The graceful way the speaker applies a change: rewrite, then `birdc configure`."""
        self.write(node, exports)
        out = in_ns(self.topo.host(node).netns, "birdc", "-s", str(self.conf_path(node).with_name("bird.ctl")),
                    "configure").stdout
        assert "Reconfigured" in out or "Reconfiguration in progress" in out, out

    def kill(self, node: str) -> None:
        os.kill(processes.pid_of(f"bird-{node}") or 0, signal.SIGKILL)

    def link(self, node: str, up: bool) -> None:
        sh("ip", "-n", BRIDGE_NS, "link", "set", self.topo.host(node).port, "up" if up else "down")

    def hop_nodes(self, address: str) -> list[str | None]:
        return sorted((router.node_of(self.topo, hop) or hop) for hop in router.next_hops(address))

    def bfd_up(self) -> bool:
        up = {p["peer"] for p in router.bfd_peers() if p.get("status") == "up"}
        return set(self.peers) <= up


def _node_setup(topo: Topology) -> None:
    """What kube-proxy and the lab's routes give a node, and a backend: the VIPs on the dummy, a default route via
    the router (the way back to the client), an HTTP server answering with the node's name."""
    for h in topo.node_hosts:
        sh("ip", "-n", h.netns, "addr", "add", f"{VIP4}/32", "dev", IPVS_DEV)
        sh("ip", "-n", h.netns, "addr", "add", f"{VIP6}/128", "dev", IPVS_DEV, "nodad")
        sh("ip", "-n", h.netns, "route", "add", "default", "via", ROUTER_IP4)
        sh("ip", "-n", h.netns, "-6", "route", "add", "default", "via", ROUTER_IP6)
        root = STATE / "www" / h.name
        root.mkdir(parents=True)
        (root / "index.html").write_text(f'{{"node": "{h.name}"}}\n')
        processes.spawn(f"http-{h.name}", h.netns, [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind",
                                                    "::", "--directory", str(root)])
    for h in topo.node_hosts:
        wait_for(lambda: f":{HTTP_PORT} " in in_ns(h.netns, "ss", "-Htln").stdout, 10, what=f"{h.name}'s HTTP server")


@pytest.fixture(scope="module")
def lab() -> Iterator[RouterLab]:
    if lifecycle.leftovers():
        pytest.fail(f"a lab (or its leftovers) is in the way: {STATE} or namespaces {topology.lab_namespaces()}; "
                    "run `lbctl lab down` with the same LBCTL_LAB_PREFIX/LBCTL_LAB_STATE")
    topo = Topology.plan(2, ipv6=True, bgp=True)
    try:
        STATE.mkdir(mode=0o700, parents=True)
        topology.build(topo)
        say(f"router up (zebra, bfdd, bgpd answering) in {router.start(topo):.3f} s")
        _node_setup(topo)
        yield RouterLab(topo)
    finally:
        lifecycle.down(say=lambda _: None)


@pytest.fixture
def birds(lab: RouterLab) -> RouterLab:
    """Both nodes' BIRD running, linked, exporting BASE; every session Established with BFD up and the VIPs on
    the router with a next hop per node."""
    started = None
    for h in lab.topo.node_hosts:
        lab.link(h.name, up=True)
        if not lab.bird_running(h.name):
            lab.write(h.name, tuple(Export(p) for p in BASE))
            started = started or time.monotonic()
            lab.start(h.name)
        elif lab.exports.get(h.name) != tuple(Export(p) for p in BASE):
            lab.configure(h.name, tuple(Export(p) for p in BASE))
    wait_for(lambda: router.established(lab.peers), 30, what="every session Established on the router")
    if started:
        say(f"BIRD start -> every session Established on the router in {time.monotonic() - started:.3f} s")
    for vip in BASE:
        router.wait_next_hops(vip, 2, timeout=10)
    wait_for(lab.bfd_up, 15, what="BFD up with every node")
    if started:
        say(f"BIRD start -> BFD up with every node in {time.monotonic() - started:.3f} s")
    return lab


def test_router_keeps_to_its_state_dir(lab: RouterLab) -> None:
    """Nothing of the host's FRR: every open file and socket of the router's daemons is under the lab's state dir
    (or the fixed /var/tmp/frr crash log dir), the TCP vty is off."""
    for daemon in router.DAEMONS:
        pid = processes.pid_of(f"router-{daemon}")
        assert processes.alive(pid), f"the router's {daemon} is not running"
        paths = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        files = [p for p in paths if p.startswith("/")]
        assert not [p for p in files if p.startswith(("/etc/frr", "/run/frr", "/var/run/frr"))], files
        assert any(p.startswith(str(router.DIR)) for p in files) or (router.DIR / f"{daemon}.vty").exists()
    listening = in_ns(ROUTER_NS, "ss", "-Htln").stdout
    assert ":2601 " not in listening and ":2605 " not in listening, listening  # vty TCP ports of zebra and bgpd


def test_sessions_established_with_a_next_hop_per_node(birds: RouterLab) -> None:
    sessions = router.sessions()
    for h in birds.topo.node_hosts:
        for address, family in ((h.ip4, "ipv4Unicast"), (h.ip6, "ipv6Unicast")):
            s = sessions[address]
            assert (s.state, s.family, s.asn, s.prefixes_received) == ("Established", family, router.NODE_ASN, 1), s
    assert birds.hop_nodes(f"{VIP4}/32") == ["node1", "node2"]
    assert birds.hop_nodes(f"{VIP6}/128") == ["node1", "node2"]  # via each node's link-local address
    route = in_ns(ROUTER_NS, "ip", "route", "show", VIP4).stdout
    assert "proto bgp" in route and route.count("nexthop via") == 2, route
    assert router.sessions_table(birds.topo).count("Established") == 4  # what `lbctl lab status` shows
    assert "node1, node2" in router.hops_table(birds.topo, [f"{VIP4}/32"])


def test_client_reaches_a_vip_only_by_learned_routes(birds: RouterLab) -> None:
    # The router hashes on ports: new connections from the one client spread over both nodes.
    seen: set[str] = set()

    def both() -> set[str] | None:
        seen.add(probes.node_answering(VIP4) or "no answer")
        return seen if {"node1", "node2"} <= seen else None
    wait_for(both, 20, interval=0, what=f"answers from both nodes on {VIP4}")
    assert probes.node_answering(VIP6) in ("node1", "node2")
    for h in birds.topo.node_hosts:  # withdrawn by every node: the router has no way to the VIP
        birds.configure(h.name, ())
    router.wait_next_hops(f"{VIP4}/32", 0, timeout=10)
    router.wait_next_hops(f"{VIP6}/128", 0, timeout=10)
    assert probes.curl(VIP4, timeout=1) is None
    assert probes.curl(VIP6, timeout=1) is None
    birds.configure("node2", tuple(Export(p) for p in BASE))
    router.wait_next_hops(f"{VIP4}/32", 1, timeout=10)
    assert wait_for(lambda: probes.node_answering(VIP4), 5, what=f"an answer on {VIP4}") == "node2"


def test_export_changes_reset_no_session(birds: RouterLab) -> None:
    before = router.sessions()
    resets = router.resets()
    changes = [tuple(Export(p) for p in BASE) + (Export(f"{VIP4_2}/32"),),  # add a prefix
               (Export(BASE[0], communities=("65000:7",)), Export(BASE[1]), Export(f"{VIP4_2}/32")),  # a community
               tuple(Export(p) for p in BASE)]  # remove the prefix
    birds.configure("node1", changes[0])
    router.wait_next_hops(f"{VIP4_2}/32", 1, timeout=10)
    birds.configure("node1", changes[1])
    wait_for(lambda: "65000:7" in router.vtysh(f"show bgp ipv4 unicast {VIP4}/32"), 10, what="the community")
    birds.configure("node1", changes[2])
    router.wait_next_hops(f"{VIP4_2}/32", 0, timeout=10)
    after = router.sessions()
    assert router.resets() == resets
    for peer in birds.peers:
        assert after[peer].state == "Established"
        assert after[peer].uptime_s >= before[peer].uptime_s, (before[peer], after[peer])
    assert birds.hop_nodes(f"{VIP4}/32") == ["node1", "node2"]


def test_killed_daemon_leaves_and_traffic_keeps_flowing(birds: RouterLab) -> None:
    resets = router.resets()
    probe = probes.prober(VIP4, interval=0.02, duration=3.0)
    time.sleep(1.0)
    t_kill = time.monotonic()
    birds.kill("node1")
    hops, _ = router.wait_next_hops(f"{VIP4}/32", 1, timeout=5)
    removed = time.monotonic()
    say(f"BIRD SIGKILLed -> its next hop gone from the router's kernel table in {removed - t_kill:.3f} s "
        "(its TCP session closes at once)")
    assert [router.node_of(birds.topo, h) for h in hops] == ["node2"]
    router.wait_next_hops(f"{VIP6}/128", 1, timeout=5)
    out, err = probe.communicate(timeout=30)
    assert probe.returncode == 0, err
    results = prober.read_probes(out)
    late = [p for p in results if p.t > removed + 0.05]
    assert late and all(p.ok and p.node == "node2" for p in late), late[:5]
    assert {p.node for p in results if p.ok and p.t < t_kill} == {"node1", "node2"}
    say(f"  client, a new connection every 20 ms: {sum(not p.ok for p in results)} of {len(results)} failed")
    assert router.resets().get(birds.topo.host("node1").ip4, 0) == resets.get(birds.topo.host("node1").ip4, 0) + 1


def test_bfd_takes_out_a_node_whose_link_was_cut(birds: RouterLab) -> None:
    """TCP notices nothing when a link goes: without BFD the route would stay for the hold timer (90 s)."""
    node = birds.topo.host("node1")
    probe = probes.prober(VIP4, interval=0.02, duration=3.0)
    time.sleep(1.0)
    birds.link("node1", up=False)
    hops, took = router.wait_next_hops(f"{VIP4}/32", 1, timeout=1.0)
    say(f"link cut -> next hop gone from the router's kernel table in {took:.3f} s (BFD {router.BFD_INTERVAL_MS} ms "
        f"x {router.BFD_MULTIPLIER})")
    assert [router.node_of(birds.topo, h) for h in hops] == ["node2"]
    router.wait_next_hops(f"{VIP6}/128", 1, timeout=1.0)
    removed = time.monotonic()
    assert "Cease/BFD Down" in router.notifications_sent().get(node.ip4, []), router.log()[-2000:]
    out, err = probe.communicate(timeout=30)
    assert probe.returncode == 0, err
    results = prober.read_probes(out)
    late = [p for p in results if p.t > removed + 0.05]
    assert late and all(p.ok and p.node == "node2" for p in late), late[:5]
    say(f"  client, a new connection every 20 ms: {sum(not p.ok for p in results)} of {len(results)} failed "
        f"(cut at +1.0 s)")  # the link comes back in the next test's fixture
