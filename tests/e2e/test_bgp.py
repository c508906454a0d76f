"""BGP mode end to end (issue 14's acceptance on the lab router): `lbctl lab up --bgp`, the chart's speakers
driving their BIRD sidecars, peering with the lab's FRR router (lbctl.lab.router); the client sits behind the
router on its own subnet, so it reaches a Service only through routes the router learned by BGP.

Covers: sessions Established from every node in both families (on the router and in each SpeakerStatus); one
next hop per eligible node (externalTrafficPolicy Cluster: every worker, never the excluded control plane; Local:
exactly the nodes with a ready endpoint, none when there is none); the client's traffic following the routes;
a pool change re-advertised without any session reset; a SIGTERMed speaker withdrawing before it exits, with no
failed connection; a SIGKILLed speaker's routes withdrawn by its sidecar, and a SIGKILLed BIRD restarted by the
kubelet with its routes back; routes the router sends changing nothing on a node; a kubespray layer3 file
imported and applied, establishing sessions under the imported peer names. Figures go to stdout (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbctl.lab import connprobe, probes, processes, realspeakers, router
from lbctl.lab.cluster import NAMESPACE
from lbctl.lab.lifecycle import TOPOLOGY_FILE
from lbctl.lab.topology import BRIDGE_NS, CLIENT_NS, ROUTER_IP4, ROUTER_IP6, Topology, in_ns, sh

from tests.figures import figure
from tests.wait import wait_for

from .conftest import Lab, _cli, ingress_ips, ipv4_of, ipv6_of

GROUP = "/apis/lbctl.io/v1alpha1"
NODES = ["node1", "node2", "node3"]
POOL = "default"  # the lab's pool (lbctl.lab.router.pool_values: BGP only)
INTERVAL = 0.01


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """This module's lab: the conftest's, in BGP mode (overrides its `lab`, so `fresh` restores this one)."""
    if os.geteuid() != 0:
        pytest.skip("e2e tests need root: they create network namespaces")
    try:
        res = _cli("up", "--bgp", "--nodes", "3", "--restart-hold", "0")
        if res.returncode:
            pytest.fail(f"lbctl lab up --bgp failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        yield Lab(Topology.load(TOPOLOGY_FILE))
    finally:
        _cli("down", timeout=60)


def peers(lab: Lab) -> list[str]:
    """The router's neighbour addresses for the workers (one session per family)."""
    return [a for n in NODES for a in (lab.topo.host(n).ip4, lab.topo.host(n).ip6)]


@pytest.fixture
def bgp(fresh: Lab) -> Lab:
    """`fresh`, with every worker's sessions Established on the router (a restored speaker pushes its config
    again, a restarted BIRD reconnects)."""
    wait_for(lambda: router.established(peers(fresh)), 30, what="every worker's sessions Established on the router")
    return fresh


def hop_nodes(lab: Lab, address: str) -> list[str]:
    return sorted(router.node_of(lab.topo, h) or h for h in router.next_hops(address))


def wait_hops(lab: Lab, address: str, nodes: list[str], timeout: float = 15) -> float:
    """Wait until the router's route for `address` goes to exactly `nodes` ([]: no route); seconds it took."""
    started = time.monotonic()
    wait_for(lambda: hop_nodes(lab, address) == sorted(nodes), timeout, interval=0.01,
             what=f"{address}'s next hops on the router to be {nodes} (now {hop_nodes(lab, address)})")
    return time.monotonic() - started


def prefix(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def speaker_bgp(lab: Lab, node: str) -> dict[str, Any]:
    return (lab.api.get(f"{GROUP}/speakerstatuses/{node}").get("status") or {}).get("bgp") or {}


def bird_pid(node: str) -> int | None:
    """BIRD in `node`'s speaker pod (the sidecar's child: argv[0] `bird`)."""
    for p in realspeakers.node(node).pids_in_cgroup():
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].rsplit(b"/", 1)[-1] == b"bird" and processes.alive(p):
            return p
    return None


def birdc(node: str, *command: str) -> str:
    """birdc inside the sidecar's mount namespace, on the socket the speaker drives."""
    pid = bird_pid(node)
    assert pid, f"no BIRD running on {node}"
    res = subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", "birdc", "-s", "/run/lbctl-bgp/bird.ctl",
                          *command], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    return res.stdout


def pool_spec(lab: Lab, name: str = POOL) -> dict[str, Any]:
    return lab.api.get(f"{GROUP}/ippools/{name}")["spec"]


def set_advertisements(lab: Lab, advertisements: list[dict[str, Any]], name: str = POOL) -> None:
    lab.api.patch(f"{GROUP}/ippools/{name}", {"spec": {"bgp": {"advertisements": advertisements}}})


# --- 1. sessions -------------------------------------------------------------------------------------------

def test_sessions_established_from_every_node(bgp: Lab) -> None:
    sessions = router.sessions()
    for n in NODES:
        h = bgp.topo.host(n)
        for address, family in ((h.ip4, "ipv4Unicast"), (h.ip6, "ipv6Unicast")):
            s = sessions[address]
            assert (s.state, s.family, s.asn) == ("Established", family, router.NODE_ASN), s

    def speakers_say_established() -> dict[str, Any] | None:
        seen = {n: {s["peer"]: (s["state"], s["address"]) for s in speaker_bgp(bgp, n).get("sessions") or []}
                for n in NODES}
        want = {"router": ("Established", ROUTER_IP4), "router-v6": ("Established", ROUTER_IP6)}
        return None if any(v != want for v in seen.values()) else seen
    wait_for(speakers_say_established, 15, what="every worker's SpeakerStatus bgp sessions Established")
    print(router.sessions_table(bgp.topo))


# --- 2./3. next hops per eligible node, the client only through them ----------------------------------------

def test_cluster_policy_every_worker_advertises(bgp: Lab) -> None:
    """externalTrafficPolicy Cluster: every worker is a next hop, in both families; the control plane (labelled
    exclude-from-external-load-balancers) never."""
    started = time.monotonic()
    bgp.service("bgp-cluster", wait_ip=False, externalTrafficPolicy="Cluster", ipFamilyPolicy="RequireDualStack")
    svc = bgp.wait_ips("bgp-cluster", count=2)
    ip4, ip6 = ipv4_of(svc), ipv6_of(svc)
    assert ip6, ingress_ips(svc)
    router.wait_next_hops(prefix(ip4), 3, timeout=15)
    took = time.monotonic() - started
    print(f"figure: Service created -> its route on the router with 3 next hops in {took:.3f} s")
    figure("bgp_service_to_route_s", took, "s")
    assert hop_nodes(bgp, prefix(ip4)) == NODES
    wait_hops(bgp, prefix(ip6), NODES)  # via each node's link-local address
    assert "cp" not in hop_nodes(bgp, prefix(ip4)) + hop_nodes(bgp, prefix(ip6))

    def advertised_everywhere() -> bool:
        for n in NODES:
            ads = {a["ip"]: a["peers"] for a in speaker_bgp(bgp, n).get("advertised") or []}
            if ads.get(ip4) != ["router"] or ads.get(ip6) != ["router-v6"]:
                return False
        return True
    wait_for(advertised_everywhere, 15, what=f"every worker's SpeakerStatus advertising {ip4} and {ip6}")
    assert not [a for a in speaker_bgp(bgp, "cp").get("advertised") or [] if a["ip"] in (ip4, ip6)]
    assert bgp.wait_served(ip4) in NODES
    assert wait_for(lambda: probes.node_answering(ip6), 10, what=f"an answer on {ip6}") in NODES


def test_local_policy_follows_ready_endpoints_and_the_client_only_bgp_routes(bgp: Lab) -> None:
    ip = ipv4_of(bgp.service("bgp-local"))
    wait_hops(bgp, prefix(ip), NODES)  # every worker has a ready backend
    t0 = time.monotonic()
    bgp.select("bgp-local", "node2")  # the patch's apicall alone takes a few 100 ms: counted in
    wait_hops(bgp, prefix(ip), ["node2"])
    took = time.monotonic() - t0
    figure("bgp_endpoint_move_to_route_s", took, "s")
    print(f"figure: the only endpoint moved to node2 (patch sent) -> the router's next hops follow in {took:.3f} s")
    answers = {wait_for(lambda: probes.node_answering(ip), 10, what=f"an answer on {ip}")}
    answers |= {probes.node_answering(ip) for _ in range(5)}
    assert answers == {"node2"}, answers
    bgp.select("bgp-local", None)
    wait_hops(bgp, prefix(ip), [])
    bgp.select("bgp-local", "node3")
    wait_hops(bgp, prefix(ip), ["node3"])
    assert bgp.wait_served(ip) == "node3"
    # Only the route carries the client: the endpoint stays ready on node3, but with its advertisement limited
    # to nodes labelled lbctl-test/bgp=yes (none yet) the route goes, and with it every answer.
    before = pool_spec(bgp)["bgp"]["advertisements"]
    try:
        set_advertisements(bgp, [{**a, "nodeSelectors": [{"matchLabels": {"lbctl-test/bgp": "yes"}}]}
                                 for a in before])
        wait_hops(bgp, prefix(ip), [])
        assert probes.curl(ip, timeout=1) is None
        bgp.label_node("node3", "lbctl-test/bgp", "yes")
        wait_hops(bgp, prefix(ip), ["node3"])
        assert bgp.wait_served(ip) == "node3"
    finally:
        set_advertisements(bgp, before)
        bgp.label_node("node3", "lbctl-test/bgp", None)


# --- 4. a pool change, no session reset ---------------------------------------------------------------------

def communities(ip: str) -> list[tuple[str, str]]:
    """(community, large community) of every path the router has for `ip`."""
    doc = json.loads(router.vtysh(f"show bgp ipv{6 if ':' in ip else 4} unicast {prefix(ip)} json"))
    return sorted(((p.get("community") or {}).get("string", ""), (p.get("largeCommunity") or {}).get("string", ""))
                  for p in doc.get("paths") or [])


def test_pool_change_readvertises_without_session_reset(bgp: Lab) -> None:
    ip = ipv4_of(bgp.service("bgp-attrs", externalTrafficPolicy="Cluster"))
    wait_hops(bgp, prefix(ip), NODES)
    assert communities(ip) == [("", "")] * 3
    resets, before = router.resets(), router.sessions()
    original = pool_spec(bgp)["bgp"]["advertisements"]
    try:
        t0 = time.monotonic()
        set_advertisements(bgp, [{**a, "communities": ["65000:7", "large:64512:1:2"]} for a in original])
        wait_for(lambda: communities(ip) == [("65000:7", "64512:1:2")] * 3, 15, interval=0.02,
                 what=f"the router's 3 paths for {ip} with the new communities (now {communities(ip)})")
        took = time.monotonic() - t0
        print(f"figure: pool's advertisement changed -> the router has the new communities in {took:.3f} s")
        figure("bgp_pool_change_to_router_s", took, "s")
    finally:
        set_advertisements(bgp, original)
    wait_for(lambda: communities(ip) == [("", "")] * 3, 15, what="the communities gone again")
    after = router.sessions()
    assert router.resets() == resets
    for peer in peers(bgp):
        assert after[peer].state == "Established", after[peer]
        assert after[peer].uptime_s >= before[peer].uptime_s, (before[peer], after[peer])
    assert hop_nodes(bgp, prefix(ip)) == NODES


# --- 5. graceful stop ---------------------------------------------------------------------------------------

def test_sigterm_withdraws_before_exit_and_no_connection_fails(bgp: Lab) -> None:
    """A new connection every 10 ms to each of 3 VIPs (Local: each node serves what it advertises) while node1's
    speaker is SIGTERMed. Its next hop must leave the router before the speaker exits; then node1's link is cut,
    as a node taken down after its drain: had the routes stayed, the connections the router still hashed to
    node1 would fail until BFD noticed."""
    vips = [ipv4_of(bgp.service(f"bgp-g{i}")) for i in range(3)]
    for vip in vips:
        wait_hops(bgp, prefix(vip), NODES)
        bgp.wait_served(vip)
    node1 = bgp.topo.host("node1")
    probe = connprobe.launch(CLIENT_NS, [f"{v}:80" for v in vips], INTERVAL)
    try:
        time.sleep(1.0)
        t_kill = time.monotonic()
        pid = realspeakers.kill("node1", signal.SIGTERM)
        gone = exited = None
        deadline = t_kill + 10
        # Until the speaker exited and its next hop left, or 2 s after the exit without that.
        while time.monotonic() < deadline and (gone is None or exited is None):
            table = router.routes(4)
            now = time.monotonic()
            if gone is None and not any(node1.ip4 in table.get(prefix(v), []) for v in vips):
                gone = now
            if exited is None and not processes.alive(pid):
                exited = now
                deadline = min(deadline, now + 2)
            time.sleep(0.002)
        assert exited is not None, "node1's speaker still running 10 s after SIGTERM"
        sh("ip", "-n", BRIDGE_NS, "link", "set", node1.port, "down")  # the node goes, as after a drain
        t_cut = time.monotonic()
        time.sleep(1.5)
    finally:
        run = connprobe.finish(probe)
    failed = [a for a in run.attempts if not a.ok]
    print(f"  client: {len(failed)} of {len(run.attempts)} connections failed; node1's next hop "
          + (f"gone {gone - t_kill:.3f} s" if gone else "still there") + f", speaker exited {exited - t_kill:.3f} s "
          "after SIGTERM")
    assert gone is not None, f"node1's next hop still on the router 2 s after its speaker exited: {router.routes(4)}"
    # The one loss no announcer can avoid: a connection open at the instant the router drops a next hop is
    # hashed anew (plain Linux ECMP, hash-threshold) and its next segment meets a node without its conntrack
    # entry, which resets it (CI saw one, 2.5 ms long, at the withdrawal). Anything else fails: a timeout, a
    # reset away from the withdrawal, or more than one (routes left behind give dozens).
    in_flight = [a for a in failed if a.outcome == "reset" and gone - 0.1 <= a.t <= gone]
    assert len(failed) == len(in_flight) <= 1, ([(round(a.t - t_kill, 3), a.target, a.outcome) for a in failed],
                                                 f"withdrawn {gone - t_kill:.3f} s after SIGTERM")
    print(f"figure: SIGTERM -> node1's next hop gone from the router in {gone - t_kill:.3f} s")
    figure("bgp_sigterm_withdraw_s", gone - t_kill, "s")
    assert gone <= exited, f"the speaker exited {gone - exited:.3f} s before its next hop left the router"
    for vip in vips:
        assert hop_nodes(bgp, prefix(vip)) == ["node2", "node3"]
    before = {a.body for a in run.attempts if a.t < t_kill}
    assert "node1" in before, before  # the router did send connections to node1 before
    assert "node1" not in {a.body for a in run.attempts if a.t > t_cut}


# --- 6. crashes ---------------------------------------------------------------------------------------------

def test_crashed_speaker_withdrawn_by_sidecar_and_killed_bird_comes_back(bgp: Lab) -> None:
    ip = ipv4_of(bgp.service("bgp-crash", externalTrafficPolicy="Cluster"))
    wait_hops(bgp, prefix(ip), NODES)
    resets = router.resets()
    realspeakers.kill("node1", signal.SIGKILL)  # its kubelet is stopped first: nothing restarts it
    took = wait_hops(bgp, prefix(ip), ["node2", "node3"], timeout=5)
    print(f"figure: speaker SIGKILLed -> its sidecar withdrew, next hop gone from the router in {took:.3f} s")
    figure("bgp_speaker_sigkill_withdraw_s", took, "s")
    assert bird_pid("node1"), "the sidecar's BIRD died with the speaker: the withdrawal is not the sidecar's"
    wait_for(lambda: router.established([bgp.topo.host("node1").ip4]), 5, what="node1's session still up")
    bgp.restore()  # the kubelet restarts the speaker, which pushes its config to the same BIRD
    wait_hops(bgp, prefix(ip), NODES, timeout=30)
    assert router.resets() == resets  # the sessions stayed up through the speaker's death and return

    old = bird_pid("node2")
    assert old
    restarts = bgp_restarts(bgp, "node2")
    t0 = time.monotonic()
    subprocess.run(["kill", "-KILL", str(old)], check=True)
    wait_hops(bgp, prefix(ip), ["node1", "node3"], timeout=5)
    wait_hops(bgp, prefix(ip), NODES, timeout=60)
    total = time.monotonic() - t0
    print(f"figure: BIRD SIGKILLed on node2 -> restarted by the kubelet, routes back on the router in {total:.3f} s")
    figure("bgp_bird_sigkill_routes_back_s", total, "s")
    assert bird_pid("node2") not in (None, old)
    wait_for(lambda: bgp_restarts(bgp, "node2") == restarts + 1, 10, what="the bgp container's restart counted")


def bgp_restarts(lab: Lab, node: str) -> int:
    pod = lab.speaker_pods()[node]
    return next(c["restartCount"] for c in pod["status"]["containerStatuses"] if c["name"] == "bgp")


# --- 7. hostile peer input -----------------------------------------------------------------------------------

HOSTILE4, HOSTILE6 = "198.18.99.0/24", "2001:db8:99::/48"


def node_routes(lab: Lab, node: str) -> list[str]:
    out = []
    for family in ("-4", "-6"):
        text = in_ns(lab.topo.host(node).netns, "ip", family, "route", "show", "table", "all").stdout
        out += [" ".join(w for w in line.split() if not w.startswith("expires")) for line in text.splitlines()]
    return sorted(out)


def imported_updates(node: str) -> list[int]:
    """Per BGP channel of the node's BIRD, the import updates received (`Route change stats`)."""
    return [int(line.split()[2]) for line in birdc(node, "show", "protocols", "all").splitlines()
            if line.strip().startswith("Import updates:")]


def test_routes_from_the_router_change_nothing_on_a_node(bgp: Lab) -> None:
    before = {n: node_routes(bgp, n) for n in NODES}
    received = {n: sum(imported_updates(n)) for n in NODES}
    send = ["configure terminal", "router bgp 64500", "no bgp network import-check",
            "address-family ipv4 unicast", f"network {HOSTILE4}", "neighbor NODES route-map ANY out",
            "exit-address-family", "address-family ipv6 unicast", f"network {HOSTILE6}",
            "neighbor NODES6 route-map ANY out", "exit-address-family", "exit", "route-map ANY permit 10", "end",
            "clear bgp * soft out"]
    try:
        router.vtysh(*send)
        # The effect had its chance: every node's BIRD received the router's routes.
        wait_for(lambda: all(sum(imported_updates(n)) >= received[n] + 2 for n in NODES), 15,
                 what="every node's BIRD receiving the router's two routes")
        for n in NODES:
            routes = birdc(n, "show", "route", "all")
            assert "198.18.99" not in routes and "2001:db8:99" not in routes, routes
            assert node_routes(bgp, n) == before[n], n
    finally:
        router.vtysh("configure terminal", "router bgp 64500", "address-family ipv4 unicast",
                     f"no network {HOSTILE4}", "neighbor NODES route-map NOTHING out", "exit-address-family",
                     "address-family ipv6 unicast", f"no network {HOSTILE6}", "neighbor NODES6 route-map NOTHING out",
                     "exit-address-family", "end", "clear bgp * soft out")


# --- 8. kubespray import ------------------------------------------------------------------------------------

KUBESPRAY = f"""\
metallb_enabled: true
metallb_config:
  address_pools:
    imported:
      ip_range: [198.18.96.0/28]
  layer2: []
  layer3:
    defaults:
      peer_port: 179
      hold_time: 30s
    metallb_peers:
      lab-tor:
        peer_address: {ROUTER_IP4}
        peer_asn: {router.ROUTER_ASN}
        my_asn: 64513
        address_pool: [imported]
      lab-tor6:
        peer_address: "{ROUTER_IP6}"
        peer_asn: {router.ROUTER_ASN}
        my_asn: 64513
        address_pool: [imported]
"""
COLLECTIONS = {"BGPPeer": f"{GROUP}/bgppeers", "IPPool": f"{GROUP}/ippools", "BFDProfile": f"{GROUP}/bfdprofiles",
               "Secret": f"/api/v1/namespaces/{NAMESPACE}/secrets"}


def test_kubespray_layer3_import_establishes_sessions(bgp: Lab, tmp_path: Path) -> None:
    src = tmp_path / "addons.yml"
    src.write_text(KUBESPRAY)
    res = subprocess.run([sys.executable, "-m", "lbctl.cli", "import", "kubespray", str(src), "--as", "manifests"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} >= {("BGPPeer", "lab-tor"), ("BGPPeer", "lab-tor6"),
                                                                  ("IPPool", "imported")}, docs
    # The imported peers take the chart's place (the same router: two peers of one address would be Invalid).
    saved = [bgp.api.get(f"{GROUP}/bgppeers/{n}") for n in router.peer_names(bgp.topo)]
    try:
        for p in saved:
            bgp.api.delete(f"{GROUP}/bgppeers/{p['metadata']['name']}")
        for d in docs:
            bgp.api.apply(COLLECTIONS[d["kind"]], d)

        def imported_up() -> bool:
            s = router.sessions()
            return all(a in s and s[a].state == "Established" and s[a].asn == 64513 for a in peers(bgp))
        wait_for(imported_up, 30, what="every worker's sessions Established with the imported myASN 64513")

        def named() -> bool:
            return all({s["peer"]: s["state"] for s in speaker_bgp(bgp, n).get("sessions") or []}
                       == {"lab-tor": "Established", "lab-tor6": "Established"} for n in NODES)
        wait_for(named, 15, what="every worker's SpeakerStatus naming the imported peers")
        ip = ipv4_of(bgp.service("bgp-imported", externalTrafficPolicy="Cluster",
                                 annotations={"lbctl.io/address-pool": "imported"}))
        assert ip.startswith("198.18.96."), ip
        wait_hops(bgp, prefix(ip), NODES)
        assert bgp.wait_served(ip) in NODES
    finally:
        bgp.delete_service("bgp-imported")
        for d in docs:
            bgp.api.delete(f"{COLLECTIONS[d['kind']]}/{d['metadata']['name']}")
        for p in saved:
            meta = {k: p["metadata"][k] for k in ("name", "labels", "annotations") if k in p["metadata"]}
            bgp.api.apply(COLLECTIONS["BGPPeer"], {"apiVersion": p["apiVersion"], "kind": "BGPPeer",
                                                   "metadata": meta, "spec": p["spec"]})

