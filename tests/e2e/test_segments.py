"""Issue 8, "Which segment is alive": a speaker whose heartbeats are filtered (its Lease still renews over
the API) says it hears fewer peers than are registered, and its peers say the same about it; heartbeats
over IPv6 link-local multicast find each other across the lab's bridge."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from lbctl.lab import realcluster
from lbctl.lab.api import wait_for

from .conftest import Lab
from .test_conflicts import metric

# The speaker's Heartbeats class on a spare port, IPv6 group only (as on an IPv6-only segment): prints who
# it heard, overall and per interface, after `seconds`.
_V6_BEACONS = r"""
import asyncio, json, sys, time
from lbctl.core.heartbeat import Keyring
from lbctl.speaker.heartbeats import Heartbeats
from lbctl.speaker.interfaces import HEARTBEAT_GROUP6
from lbctl.speaker.metrics import Metrics
node, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
async def main():
    hb = Heartbeats(node, Keyring([b"e2e-v6-key"]), port, 0.1, 0.45, lambda: None, Metrics())
    hb.set_targets({"eth0": (HEARTBEAT_GROUP6,)})
    hb.start()
    await asyncio.sleep(seconds)
    now = time.monotonic()
    out = {"live": sorted(hb.live(now)), "on": {k: sorted(v) for k, v in hb.live_on(now).items()},
           "family": int(hb._socks["eth0"][0].family)}
    hb.close()
    print(json.dumps(out))
asyncio.run(main())
"""
SPARE_PORT = 47946
HEARTBEAT_PORT = 7946  # the chart's speaker.heartbeat.port
CENSUS_S = 10  # speaker/registered.py checks every lease renewal period
RULES = [["INPUT", "-p", "udp", "--dport", str(HEARTBEAT_PORT), "-j", "DROP"],
         ["OUTPUT", "-p", "udp", "--dport", str(HEARTBEAT_PORT), "-j", "DROP"]]


def _log_has(lab: Lab, node: str, needle: str, after: int) -> bool:
    return needle in lab.speaker_log(node)[after:]


def test_filtered_heartbeats_are_reported_as_missing_registered_peers(fresh: Lab) -> None:
    node, other = fresh.topo.node_hosts[0], fresh.topo.node_hosts[1]
    n = len(realcluster.hosts(fresh.topo))  # the control plane runs a speaker too
    wait_for(lambda: metric(fresh, node.name, "lbctl_speaker_registered_peers") == n, 3 * CENSUS_S,
             "every speaker registered and counted")
    assert metric(fresh, node.name, "lbctl_speaker_live_peers") == n
    marks = {h.name: len(fresh.speaker_log(h.name)) for h in (node, other)}
    t0 = time.monotonic()
    for rule in RULES:
        subprocess.run(["ip", "netns", "exec", node.netns, "iptables", "-I", *rule], check=True)
    try:
        wait_for(lambda: _log_has(fresh, node.name, "fewer_peers_than_registered", marks[node.name]), 3 * CENSUS_S,
                 f"{node.name} to report its peers missing")
        took = time.monotonic() - t0
        assert metric(fresh, node.name, "lbctl_speaker_live_peers") == 1
        assert metric(fresh, node.name, "lbctl_speaker_registered_peers") == n  # its Lease kept renewing
        line = next(ln for ln in fresh.speaker_log(node.name)[marks[node.name]:]
                    .splitlines() if "fewer_peers_than_registered" in ln)
        assert all(h.name in line for h in realcluster.hosts(fresh.topo) if h is not node), line
        # Its peers name it as well.
        wait_for(lambda: _log_has(fresh, other.name, "fewer_peers_than_registered", marks[other.name]), 3 * CENSUS_S,
                 f"{other.name} to report {node.name} missing")
        print(f"{node.name} heartbeats filtered: reported missing peers after {took:.1f} s")
    finally:
        for rule in RULES:
            subprocess.run(["ip", "netns", "exec", node.netns, "iptables", "-D", *rule], check=False)
    wait_for(lambda: _log_has(fresh, node.name, "registered_peers_heard", marks[node.name]), 3 * CENSUS_S,
             f"{node.name} to hear every registered peer again")


def test_ipv6_multicast_heartbeats_find_each_other(fresh: Lab) -> None:
    hosts = fresh.topo.node_hosts[:2]
    procs = [subprocess.Popen(["ip", "netns", "exec", h.netns, sys.executable, "-c", _V6_BEACONS, h.name,
                               str(SPARE_PORT), "2.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for h in hosts]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    names = sorted(h.name for h in hosts)
    for got in outs:
        assert got["family"] == 10  # AF_INET6: the beacons really went over IPv6
        assert got["live"] == names and got["on"] == {"eth0": names}, got


def test_filtered_broadcast_falls_back_to_unicast_to_internal_ips(fresh: Lab) -> None:
    node = fresh.topo.node_hosts[2]
    n = len(realcluster.hosts(fresh.topo))  # the control plane runs a speaker too
    wait_for(lambda: metric(fresh, node.name, "lbctl_speaker_live_peers") == n, 3 * CENSUS_S, "all peers heard")
    mark = len(fresh.speaker_log(node.name))
    rules = [["INPUT", "-p", "udp", "--dport", str(HEARTBEAT_PORT), "-m", "pkttype", "--pkt-type", "broadcast",
              "-j", "DROP"],
             ["OUTPUT", "-p", "udp", "--dport", str(HEARTBEAT_PORT), "-m", "addrtype", "--dst-type", "BROADCAST",
              "-j", "DROP"]]
    t0 = time.monotonic()
    for rule in rules:
        subprocess.run(["ip", "netns", "exec", node.netns, "iptables", "-I", *rule], check=True)
    try:
        # Below n, not 1: peers that fell back to unicast in an earlier test still reach it that way.
        wait_for(lambda: metric(fresh, node.name, "lbctl_speaker_live_peers") < n, 5, "broadcast cut off")
        wait_for(lambda: _log_has(fresh, node.name, "heartbeat_unicast_fallback", mark), 3 * CENSUS_S,
                 f"{node.name} to fall back to unicast")
        wait_for(lambda: metric(fresh, node.name, "lbctl_speaker_live_peers") == n, 3 * CENSUS_S,
                 f"{node.name} to hear its peers again over unicast")
        took = time.monotonic() - t0
        time.sleep(2.0)  # and it stays so: no flapping between broadcast and unicast
        assert metric(fresh, node.name, "lbctl_speaker_live_peers") == n
        print(f"broadcast heartbeats filtered at {node.name}: all peers heard again over unicast after {took:.1f} s")
    finally:
        for rule in rules:
            subprocess.run(["ip", "netns", "exec", node.netns, "iptables", "-D", *rule], check=False)
