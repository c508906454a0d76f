"""Issue 8: address conflicts (a rogue host), a link flap of an owner, and the SIGTERM handover, seen on the
lab's wire (every ARP frame crossing the bridge) and through the API (Events, SpeakerStatus, `lbctl status`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from lbctl.lab import probes
from lbctl.lab.api import wait_for
from lbctl.lab.processes import STATE
from lbctl.lab.topology import BRIDGE_NS, CLIENT_NS, CP_NS
from tests.figures import figure

from .conftest import Lab, ipv4_of, ipv6_of
from .wire import ROGUE_MAC, Recorder, RogueHost, asker, asker_seq

DETECT_S = 1.0
DEFEND_EVERY = 10.0
KUBECONFIG = STATE / "cp" / "kubeconfig-admin"

# Polls, inside lbctl-cp, what `lbctl status` computes (same code, in-process: a CLI start per poll would
# cost more than the 1 s being measured) and the Service's Events; prints when each first shows the conflict
# and when the status stops showing it.
_WATCH = r"""
import argparse, asyncio, datetime as dt, json, sys, time
from lbctl.cli import status as cli
from lbctl.cli.cluster import connect
from lbctl.cli.snapshot import take
svc, mac, seconds = sys.argv[2], sys.argv[3], float(sys.argv[4])
args = argparse.Namespace(kubeconfig=sys.argv[1], context=None, lb_class=None)
out = {}
async def main():
    stop = time.monotonic() + seconds
    print("ready", flush=True)
    async with connect(args) as kube:
        while time.monotonic() < stop:
            snap = await take(kube, "services", "pools", "speakers", "leases")
            t = time.monotonic()
            doc = cli.build(snap, dt.datetime.now(dt.timezone.utc))
            state = next((s["state"] for s in doc["services"] if s["name"] == svc), None)
            foreign = [f["mac"] for s in doc["services"] if s["name"] == svc
                       for a in s["addresses"] for f in a.get("foreign", [])]
            if state == "Conflict" and mac in foreign:
                out.setdefault("status", t)
            elif "status" in out and state == "Announced":
                out.setdefault("status_cleared", t)
            evs = await kube.list("/api/v1/namespaces/default/events", fieldSelector=f"involvedObject.name={svc}")
            t = time.monotonic()
            if any(e.get("reason") == "IPConflict" and e.get("type") == "Warning" and mac in e.get("message", "")
                   for e in evs):
                out.setdefault("event", t)
            if any(e.get("reason") == "IPConflictResolved" for e in evs):
                out.setdefault("event_cleared", t)
            await asyncio.sleep(0.05)
asyncio.run(main())
print(json.dumps(out), flush=True)
"""


def metric(lab: Lab, node: str, name: str) -> float:
    """Sum of a speaker metric's samples, from its /metrics inside the node's namespace."""
    url = lab.speaker_url(node)
    res = subprocess.run(["ip", "netns", "exec", lab.topo.host(node).netns, "curl", "-sf", "-m", "1", url],
                         capture_output=True, text=True, timeout=10)
    total = 0.0
    for line in res.stdout.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def conflict_seen(lab: Lab, node: str, t0: float, within: float = 3.0) -> float | None:
    """When the node's conflict gauge first reads ≥ 1 (polled from its /metrics), or None."""
    while time.monotonic() - t0 < within:
        if metric(lab, node, "lbctl_speaker_ip_conflicts_active") >= 1:
            return time.monotonic()
        time.sleep(0.02)
    return None


@pytest.fixture
def rogue() -> Iterator[RogueHost]:
    host = RogueHost()
    try:
        yield host
    finally:
        host.close()


def test_rogue_host_conflict_is_reported_defended_and_cleared(fresh: Lab, rogue: RogueHost) -> None:
    svc = "conflict"
    ip = ipv4_of(fresh.service(svc))
    owner = fresh.wait_arp_owner(ip)
    owner_mac = fresh.topo.host(owner).mac
    time.sleep(1.0)  # the takeover burst is over: every GARP of the owner from here on is a defence
    claim_s, quiet_s = 12.0, 14.0
    watch = subprocess.Popen(["ip", "netns", "exec", CP_NS, sys.executable, "-c", _WATCH, str(KUBECONFIG), svc,
                              ROGUE_MAC, str(claim_s + quiet_s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert watch.stdout and watch.stdout.readline().strip() == "ready", watch.stderr.read() if watch.stderr else ""
    wire = Recorder(claim_s + 1)
    proc, t0 = rogue.claim(ip, claim_s, every=0.2)
    t_metric = conflict_seen(fresh, owner, t0)
    proc.communicate(timeout=claim_s + 30)
    frames = wire.frames()
    seen = json.loads(watch.communicate(timeout=claim_s + quiet_s + 60)[0].strip().splitlines()[-1])

    detect = {k: round(seen[k] - t0, 3) for k in ("status", "event") if k in seen}
    assert t_metric is not None, "lbctl_speaker_ip_conflicts never rose on the owner"
    detect["metric"] = round(t_metric - t0, 3)
    print(f"conflict detection (s after the rogue's first frame): {detect}")
    figure("conflict_detection_s", max(detect.values()), "s")
    assert "event" in seen, "no Warning IPConflict Event naming the rogue MAC"
    assert "status" in seen, "lbctl status never showed Conflict naming the rogue MAC"
    assert max(detect.values()) < DETECT_S, detect

    # Defence: the owner's gratuitous announcements while the rogue claimed the address.
    defences = [f for f in frames if f.sha == owner_mac and f.gratuitous and f.spa == ip and f.op == 1
                and t0 <= f.t <= t0 + claim_s]
    rogue_frames = [f for f in frames if f.sha == ROGUE_MAC]
    print(f"rogue frames {len(rogue_frames)}, defences {len(defences)} at "
          f"{[round(f.t - t0, 2) for f in defences]} s")
    figure("conflict_defences_in_12s", len(defences), "count")
    assert len(rogue_frames) > 40
    assert 1 <= len(defences) <= 1 + int(claim_s // DEFEND_EVERY), defences
    assert all(b.t - a.t >= DEFEND_EVERY - 0.5 for a, b in zip(defences, defences[1:])), defences

    # Cleared once the rogue has been quiet: status back to Announced, the gauge back to 0, an Event says so.
    assert "status_cleared" in seen, f"lbctl status still shows the conflict {quiet_s} s after the rogue stopped"
    assert "event_cleared" in seen
    assert metric(fresh, owner, "lbctl_speaker_ip_conflicts_active") == 0
    print(f"cleared {seen['status_cleared'] - (t0 + claim_s):.1f} s after the rogue stopped")
    figure("conflict_cleared_after_quiet_s", seen["status_cleared"] - (t0 + claim_s), "s")

    # And the real CLI agrees, in a fresh conflict.
    proc, _ = rogue.claim(ip, 3.0, every=0.2)
    time.sleep(1.5)
    res = subprocess.run(["ip", "netns", "exec", CP_NS, sys.executable, "-m", "lbctl.cli", "status",
                          "--kubeconfig", str(KUBECONFIG)], capture_output=True, text=True, timeout=60)
    proc.communicate(timeout=30)
    assert "Conflict" in res.stdout and ROGUE_MAC in res.stdout + res.stderr, res.stdout + res.stderr


def test_rogue_neighbor_advertisement_is_a_conflict(fresh: Lab, rogue: RogueHost) -> None:
    svc = "conflict6"
    fresh.service(svc, wait_ip=False, ipFamilyPolicy="PreferDualStack")
    ip6 = ipv6_of(fresh.wait_ips(svc, count=2))
    assert ip6
    owner = wait_for(lambda: (m := fresh.ndp_macs(ip6)) and len(m) == 1 and fresh.node_of(m.pop()), 10,
                     f"one NDP owner of {ip6}")
    before = metric(fresh, owner, "lbctl_speaker_ip_conflicts_total")
    proc, t0 = rogue.advertise(ip6, 3.0)
    t_metric = conflict_seen(fresh, owner, t0)
    proc.communicate(timeout=30)
    assert t_metric is not None, "no conflict for a rogue unsolicited NA"
    assert metric(fresh, owner, "lbctl_speaker_ip_conflicts_total") == before + 1
    events = fresh.api.get("/api/v1/namespaces/default/events", fieldSelector=f"involvedObject.name={svc}")["items"]
    assert any(e["reason"] == "IPConflict" and ROGUE_MAC in e["message"] for e in events), events
    print(f"NDP conflict detected {t_metric - t0:.3f} s after the rogue's first NA")
    figure("ndp_conflict_detection_s", t_metric - t0, "s")
    assert t_metric - t0 < DETECT_S


_MONITOR = ["ip", "netns", "exec", CLIENT_NS, "ip", "monitor", "neigh"]


def test_link_flap_the_returning_node_claims_nothing_it_does_not_own(fresh: Lab) -> None:
    ips = [ipv4_of(fresh.service(f"flap{i}")) for i in range(6)]
    owners = {ip: fresh.wait_arp_owner(ip) for ip in ips}
    # The node to unplug: it owns something, and something is owned elsewhere.
    node = next(n for n in sorted(set(owners.values())) if list(owners.values()).count(n) < len(ips))
    for ip in ips:
        fresh.wait_served(ip)  # the client has a neighbour entry for every VIP
    port = fresh.topo.host(node).port
    node_mac = fresh.topo.host(node).mac
    subprocess.run(["ip", "-n", BRIDGE_NS, "link", "set", port, "down"], check=True)
    time.sleep(3.0)
    wire = Recorder(6.0)
    mon = subprocess.Popen(_MONITOR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t_up = time.monotonic()
    subprocess.run(["ip", "-n", BRIDGE_NS, "link", "set", port, "up"], check=True)
    frames = wire.frames()
    mon.terminate()
    neigh_lines = mon.communicate(timeout=10)[0].splitlines()
    final = {ip: fresh.wait_arp_owner(ip) for ip in ips}
    not_its = [ip for ip in ips if final[ip] != node]
    assert not_its, final

    wrong_garps = [f for f in frames if f.sha == node_mac and f.gratuitous and f.spa in not_its]
    wrong_neigh = [ln for ln in neigh_lines if node_mac in ln and ln.split()[0] in not_its]
    first_own = min((f.t for f in frames if f.sha == node_mac and f.gratuitous and f.spa not in not_its),
                    default=None)
    print(f"{node} back up: owns {sorted(set(ips) - set(not_its))} finally; "
          f"first own GARP {round(first_own - t_up, 3) if first_own else None} s after link up; "
          f"wrong GARPs {len(wrong_garps)}, client entries moved to it wrongly {len(wrong_neigh)}")
    # How long any address pointed at the wrong node on the wire: from the returning node's first claim of an
    # address it does not own to the rightful owner's next announcement of it (end of recording if none).
    wrong_owner_s = 0.0
    for ip in not_its:
        claims = sorted(f.t for f in frames if f.sha == node_mac and f.spa == ip)
        if claims:
            right = [f.t for f in frames if f.sha == fresh.topo.host(final[ip]).mac and f.spa == ip and f.t > claims[0]]
            wrong_owner_s = max(wrong_owner_s, (min(right) if right else t_up + 6.0) - claims[0])
    figure("link_flap_wrong_owner_s", wrong_owner_s, "s")
    figure("link_flap_wrong_garps", len(wrong_garps), "count")
    figure("link_flap_client_entries_moved_wrongly", len(wrong_neigh), "count")
    assert not wrong_garps, [(round(f.t - t_up, 3), f.spa) for f in wrong_garps]
    assert not wrong_neigh, wrong_neigh
    for ip in not_its:
        entry = probes.neigh(ip)
        assert entry is None or entry.mac != node_mac, entry


def test_sigterm_no_reply_from_the_departing_mac_after_the_successors_announcement(fresh: Lab) -> None:
    ip = ipv4_of(fresh.service("handover"))
    owner = fresh.wait_arp_owner(ip)
    owner_mac = fresh.topo.host(owner).mac
    wire = Recorder(4.0)
    ask = asker(ip, fresh.topo.host("client").ip4, 3.0, every=0.005)
    time.sleep(1.0)
    t_term = time.monotonic()
    fresh.kill_speaker(owner, signal.SIGTERM)
    ask.communicate(timeout=30)
    frames = wire.frames()

    successor = [f for f in frames if f.t > t_term and f.gratuitous and f.spa == ip and f.sha != owner_mac]
    assert successor, "no successor announced the address"
    t_garp = successor[0].t
    # Requests the asker sent after the successor's announcement crossed the bridge...
    asked_after = {asker_seq(f.sha) for f in frames if f.op == 1 and f.t > t_garp and asker_seq(f.sha)}
    # ...must get no answer from the departing MAC.
    late = [f for f in frames if f.op == 2 and f.sha == owner_mac and asker_seq(f.tha) in asked_after]
    replies = [f for f in frames if f.op == 2 and f.sha == owner_mac and asker_seq(f.tha)]
    last_owner = max((f.t for f in replies), default=t_term)
    print(f"SIGTERM {owner}: successor GARP {1000 * (t_garp - t_term):.0f} ms after SIGTERM; last reply from "
          f"{owner} {1000 * (last_owner - t_garp):.1f} ms relative to it; {len(late)} late replies "
          f"({len(asked_after)} requests after the GARP)")
    figure("handover_late_replies", len(late), "count")
    figure("handover_successor_garp_ms", 1000 * (t_garp - t_term), "ms")
    assert len(asked_after) > 50
    assert not late, [(round(f.t - t_garp, 4), f.tha) for f in late[:5]]
    fresh.wait_served(ip)  # by the successor
