""""Alone among many", end to end: a real speaker among signed simulated peers (benchmarks/peersim.py) on a
bridge between network namespaces loses most of them at once. It must hold (claim nothing new, warn
`isolated`) for the bounded hold, then fail over to exactly its new rendezvous share.

Without the guard the speaker claims the vanished peers' addresses one dead_after after they go quiet (and
without the moment of suspicion, those of every peer that expired before the hold triggered); this test
waits well past that before it looks, so it fails for a speaker that does not hold.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.peersim import peer_names
from benchmarks.speaker_scale import (REAL, SPK_IP, SIM_NS, Child, Speaker, addresses, build_namespaces,
                                      clean_namespaces)
from lbctl.core.election import rank
from lbctl.core.heartbeat import DEFAULT_DEAD_AFTER
from lbctl.core.isolation import hold_for

PEERS = 8
GONE = 6  # at least 3 and more than half at once: the guard's trigger
IPS = 300


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[Path]:
    clean_namespaces()
    build_namespaces()
    try:
        yield tmp_path
    finally:
        clean_namespaces()


def share(ips: list[str], nodes: list[str]) -> set[str]:
    return {ip for ip in ips if rank(ip, nodes)[0] == REAL}


def test_speaker_losing_most_peers_at_once_holds_then_fails_over(segment: Path) -> None:
    env = {**os.environ, "LBCTL_HEARTBEAT_KEY": os.urandom(24).hex(), "PYTHONUNBUFFERED": "1"}
    names = peer_names(PEERS)
    ips = addresses(IPS)
    cfg = segment / "static.json"
    cfg.write_text(json.dumps({"nodes": [REAL, *names], "ips": {ip: {} for ip in ips}}))
    children: list[Child] = []
    try:
        sim = Child("peersim", SIM_NS, [sys.executable, "-m", "benchmarks.peersim", "--peers", str(PEERS),
                                        "--dest", SPK_IP], env)
        children.append(sim)
        sim.next_event("ready", 0, 20)
        spk = Speaker([sys.executable, "-m", "lbctl.speaker", "--node-name", REAL, "--static-config", str(cfg),
                       "--interfaces", "eth0", "--log-format", "json"], env)
        children.append(spk)
        before = share(ips, [REAL, *names])
        assert spk.settle(before, 30, 1.0) is not None, f"never settled at its share ({len(spk.announced)})"

        mark, events = len(spk.changes), len(spk.events)
        for name in names[:GONE]:
            sim.request(f"stop {name}", "stopped", 5)
        stopped = time.monotonic()
        warning = spk.next_event("isolated", events, 5)
        # It triggers as soon as more than half have expired (their deadlines are spread by their phases).
        assert 2 * warning["missing"] > PEERS and set(warning["sample"]) <= set(names[:GONE]), warning
        hold = hold_for(DEFAULT_DEAD_AFTER)
        time.sleep(max(0.0, stopped + hold - 1.0 - time.monotonic()))  # well past dead_after, before the hold ends
        gained = set().union(*(g for _, g, _ in spk.changes[mark:]))
        # The first peer to expire is an ordinary failover, claimed at once; nothing of the others until the hold
        # ends (a second loss makes the speaker wait for the rest of a mass expiry).
        one = [share(ips, [REAL, *(n for n in names if n != p)]) - before for p in names[:GONE]]
        assert any(gained <= mine for mine in one), f"claimed {len(gained)} addresses while it should hold"
        assert spk.announced >= before  # and kept what it had

        after = share(ips, [REAL, *names[GONE:]])
        assert after > before
        reached = spk.settle(after, 10, 0.5)
        assert reached is not None, f"did not fail over after the hold ({len(spk.announced)} of {len(after)})"
        took = reached - stopped
        print(f"\nheld {took:.2f} s (hold {hold:.1f} s), then took {len(after - before)} addresses")
        assert took >= hold - 0.1
        assert spk.next_event("isolation_ended", events, 1)["reason"] == "hold expired"
    finally:
        for child in reversed(children):
            if child.name == "peersim" and child.alive():
                child.send("quit")
            child.stop(grace=5)
