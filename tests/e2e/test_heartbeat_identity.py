"""Heartbeat identity and keys on the lab (issue 8, weak point 2 and capability 4).

1. A speaker restarted with its wall clock an hour behind (Debian's libfaketime; CLOCK_MONOTONIC left real, as
   after an NTP step) is heard by its peers at once: every address answered by exactly one MAC, the owner the
   election gives with all three nodes live. With the old wall-clock incarnation, the restarted speaker's
   (incarnation, sequence) was below the one its peers remembered, so they ignored it while it heard them:
   its addresses were answered by two MACs (docs/reliability.md, "Heartbeats").
2. Key rotation node by node, [old] -> [old,new] -> [new,old] -> [new], moves no address: at every 50 ms ARP
   round an address whose owner is up is answered by that owner alone (only the restarting speaker's own
   addresses move, to a peer and back, which is the restart, not the key), and after each restart every
   address is back on its owner alone. Skipping the overlap step (a speaker signing with a key its
   peers lack) breaks exactly these assertions.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator

import pytest

from lbctl.core.election import rank
from tests.figures import figure

from .conftest import Lab, ipv4_of
from .speakers import OwnerWatch, add_heartbeat_key, faked_clock_env, start_speaker, stop_speaker
from .test_conflicts import metric


@pytest.fixture(autouse=True, scope="module")
def _no_faketime_leftovers() -> Iterator[None]:
    """libfaketime leaves a shared-memory segment and a semaphore per faked process in /dev/shm: remove the
    ones this module's processes made."""
    before = set(glob.glob("/dev/shm/*faketime_*"))
    yield
    for path in set(glob.glob("/dev/shm/*faketime_*")) - before:
        os.unlink(path)

NODES = ["node1", "node2", "node3"]
ROUND_S = 0.05  # the OwnerWatch round
SETTLE_S = 2.0  # > warm-up (dead-after) plus the takeover GARPs


def _vips(lab: Lab, prefix: str, count: int = 8) -> dict[str, str]:
    """count addresses, spread over all nodes, each answered by its elected owner: ip -> node."""
    ips = [ipv4_of(lab.service(f"{prefix}{i}")) for i in range(count)]
    owners = {ip: rank(ip, NODES)[0] for ip in ips}
    assert set(owners.values()) == set(NODES), f"want addresses on every node: {owners}"
    for ip, node in owners.items():
        assert lab.wait_arp_owner(ip) == node
    return owners


def _answered_by(lab: Lab, owners: dict[str, str]) -> dict[str, set[str]]:
    return {ip: lab.arp_owners(ip, count=3) for ip in owners}


def test_speaker_restarted_with_its_clock_an_hour_behind_is_heard(fresh: Lab) -> None:
    owners = _vips(fresh, "clock")
    node = "node2"
    env = faked_clock_env("-1h")
    stop_speaker(fresh, node)
    start_speaker(node, extra_env=env)
    time.sleep(SETTLE_S)
    heard = {n: metric(fresh, n, "lbctl_speaker_live_peers") for n in NODES}
    answered = _answered_by(fresh, owners)
    print(f"clock -1h on {node}: live peers {heard}; answers {answered}")
    figure("clock_step_addresses_with_two_macs", sum(len(m) > 1 for m in answered.values()), "count")
    assert heard == {n: 3.0 for n in NODES}, f"a speaker does not count all three live: {heard}"
    assert answered == {ip: {n} for ip, n in owners.items()}, "an address has no owner, two, or the wrong one"


def _check_rotation(rounds: list[tuple[float, dict[str, list[str]]]], restarts: list[tuple[float, float, str]],
                    owners: dict[str, str], macs: dict[str, str]) -> tuple[list[str], int]:
    """(answers by another MAC for an address whose owner is up, rounds in which a restarting owner's address
    had two MACs). The restarting owner's own addresses are handed over and back (the restart, not the key),
    so within its window they are only counted: two MACs in one 50 ms round is the handover's overlap."""
    wrong, overlaps = [], 0
    for t, seen in rounds:
        restarting = {n for t0, t1, n in restarts if t0 - ROUND_S <= t <= t1}  # a round listens ROUND_S
        for ip, got in seen.items():
            if owners[ip] in restarting:
                overlaps += len(got) > 1
            elif set(got) - {macs[owners[ip]]}:
                wrong.append(f"{ip} answered by {got} at {t:.2f} while its owner {owners[ip]} was up "
                             f"(restarting: {restarting})")
    return wrong, overlaps


def test_heartbeat_key_rotation_node_by_node_moves_no_address(fresh: Lab) -> None:
    owners = _vips(fresh, "rot")
    macs = {n: fresh.topo.host(n).mac for n in NODES}
    add_heartbeat_key(fresh, "next")
    watch = OwnerWatch(fresh, list(owners))
    restarts: list[tuple[float, float, str]] = []
    try:
        for keys in (["key", "next"], ["next", "key"], ["next"]):
            for node in NODES:
                t0 = time.monotonic()
                stop_speaker(fresh, node)
                start_speaker(node, keys=keys)
                time.sleep(SETTLE_S)
                restarts.append((t0, time.monotonic(), node))
                assert _answered_by(fresh, owners) == {ip: {n} for ip, n in owners.items()}, \
                    f"after restarting {node} with keys {keys}, an address is not on its owner alone"
    finally:
        rounds = watch.stop()
    wrong, overlaps = _check_rotation(rounds, restarts, owners, macs)
    previous_key = {n: metric(fresh, n, "lbctl_speaker_heartbeats_previous_key_total") for n in NODES}
    print(f"key rotation: 9 restarts over {rounds[-1][0] - rounds[0][0]:.0f} s, {len(rounds)} ARP rounds x "
          f"{len(owners)} addresses: {len(wrong)} answers by another MAC for a live owner's address; "
          f"{overlaps} handover overlaps (two MACs in one round) for a restarting owner's address; "
          f"previous-key beacons since the last step {previous_key}")
    figure("key_rotation_answers_off_a_live_owner", len(wrong), "count")
    assert not wrong, wrong[:5]
    assert previous_key == {n: 0.0 for n in NODES}, "a speaker still hears beacons signed with the old key"
