"""Heartbeat identity and keys on the real cluster (issue 8, weak point 2 and capability 4).

Both tests change the chart's speaker DaemonSet as an operator would: the pod template edited with
updateStrategy OnDelete, then one node's speaker pod deleted and its successor (from the DaemonSet controller,
Ready by the kubelet's probe) awaited, node by node; the chart's DaemonSet is put back afterwards. Four
speakers run (the control plane's too; it is excluded from load balancers, so it owns no address): each
counts 4 live, and the election ranks node1-3 only.

1. A speaker restarted with its wall clock an hour behind (Debian's libfaketime in LD_PRELOAD, from a read-only
   hostPath; CLOCK_MONOTONIC left real, as after an NTP step) is heard by its peers at once: every speaker
   counts all four live and every address is answered by exactly one MAC, the owner the election gives. With
   the old wall-clock incarnation, the restarted speaker's (incarnation, sequence) was below the one its peers
   remembered, so they ignored it while it heard them: its addresses were answered by two MACs
   (docs/reliability.md, "Heartbeats").
2. Key rotation node by node as docs/values.md tells it, [key] -> [key,next] -> [next,key] -> [next] on every
   speaker, moves no address: at every 50 ms ARP round an address whose owner is up is answered by that owner
   alone (only the restarting speaker's own addresses move, to a peer and back, which is the restart, not the
   key), and after each restart every address is back on its owner alone. Skipping the overlap step (a speaker
   signing with a key its peers lack) breaks exactly these assertions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import pytest

from lbctl.core.election import rank
from tests.figures import figure

from .conftest import Lab, ipv4_of
from .speakers import (OwnerWatch, SpeakerDaemonSet, add_heartbeat_key, faked_clock, log_clock_offsets,
                       secret_value, with_keys)
from .test_conflicts import metric

pytestmark = pytest.mark.timeout(900)  # 12 speaker replacements, then the chart's roll back: ~4.5 min on a quiet machine

NODES = ["node1", "node2", "node3"]  # eligible: the election ranks these
SPEAKERS = ["cp", *NODES]  # every node runs one
ROUND_S = 0.05  # the OwnerWatch round


@pytest.fixture
def speakers(fresh: Lab) -> Iterator[SpeakerDaemonSet]:
    """The chart's speaker DaemonSet, its own spec put back (and rolled out) after the test."""
    ds = SpeakerDaemonSet(fresh)
    yield ds
    print(f"speaker DaemonSet restored to the chart's spec, rolled out in {ds.restore():.1f} s")


def _vips(lab: Lab, prefix: str, count: int = 8) -> dict[str, str]:
    """count addresses, spread over all nodes, each answered by its elected owner: ip -> node."""
    ips = [ipv4_of(lab.service(f"{prefix}{i}")) for i in range(count)]
    owners = {ip: rank(ip, NODES)[0] for ip in ips}
    assert set(owners.values()) == set(NODES), f"want addresses on every node: {owners}"
    for ip, node in owners.items():
        assert lab.wait_arp_owner(ip) == node
    return owners


def _live_peers(lab: Lab) -> dict[str, float]:
    return {n: metric(lab, n, "lbctl_speaker_live_peers") for n in SPEAKERS}


def _live_peers_once_all(lab: Lab, timeout: float = 10) -> dict[str, float]:
    """What each speaker counts live, once every one counts all of them or at the deadline."""
    deadline = time.monotonic() + timeout
    while (heard := _live_peers(lab)) != {n: float(len(SPEAKERS)) for n in SPEAKERS} and time.monotonic() < deadline:
        time.sleep(0.2)
    return heard


def test_speaker_restarted_with_its_clock_an_hour_behind_is_heard(fresh: Lab, speakers: SpeakerDaemonSet) -> None:
    owners = _vips(fresh, "clock")
    expect = {ip: fresh.topo.host(n).mac for ip, n in owners.items()}
    node = "node2"
    speakers.edit(faked_clock("-1h"))
    watch = OwnerWatch(fresh, list(owners))
    settle: float | None = None
    reason = ""
    try:
        pod, took = speakers.replace(node)
        offsets = log_clock_offsets(fresh.speaker_log(node))
        assert offsets and all(3590 <= o <= 3610 for o in offsets), \
            f"libfaketime did not take effect in {pod['metadata']['name']}: clock offsets {offsets[:5]}"
        heard = _live_peers_once_all(fresh)
        try:
            settle = watch.settled(expect)
        except TimeoutError as exc:
            reason = str(exc)
    finally:
        rounds = watch.stop()
    two = [ip for ip in owners if any(len(seen[ip]) > 1 for _, seen in rounds[-20:])]
    print(f"clock -1h on {node} (its log's clock {statistics.median(offsets):.0f} s behind the runtime's): "
          f"replaced and Ready in {took:.1f} s; live peers {heard}; every address on its owner alone for 20 rounds "
          + (f"{settle:.2f} s after Ready (1 s at least)" if settle is not None else "never") + f"; two MACs in the last 20 "
          f"rounds: {two}")
    figure("clock_step_addresses_with_two_macs", len(two), "count")
    assert heard == {n: 4.0 for n in SPEAKERS}, f"a speaker does not count all four live: {heard}"
    assert settle is not None, reason


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


def test_heartbeat_key_rotation_node_by_node_moves_no_address(fresh: Lab, speakers: SpeakerDaemonSet) -> None:
    owners = _vips(fresh, "rot")
    macs = {n: fresh.topo.host(n).mac for n in NODES}
    expect = {ip: macs[n] for ip, n in owners.items()}
    secret = speakers.secret()
    new_key = add_heartbeat_key(fresh, secret, "next")
    watch = OwnerWatch(fresh, list(owners))
    restarts: list[tuple[float, float, str]] = []
    ready_s, settle_s = [], []
    try:
        for keys in (["key", "next"], ["next", "key"], ["next"]):
            speakers.edit(with_keys(keys))
            for node in SPEAKERS:
                t0 = time.monotonic()
                _, took = speakers.replace(node)
                ready_s.append(took)
                try:
                    settle_s.append(watch.settled(expect))
                except TimeoutError as exc:
                    raise AssertionError(f"after replacing {node}'s speaker with keys {keys}: {exc}") from None
                restarts.append((t0, time.monotonic(), node))
    finally:
        rounds = watch.stop()
    wrong, overlaps = _check_rotation(rounds, restarts, owners, macs)
    previous_key = {n: metric(fresh, n, "lbctl_speaker_heartbeats_previous_key_total") for n in SPEAKERS}
    print(f"key rotation: {len(restarts)} pod replacements over {rounds[-1][0] - rounds[0][0]:.0f} s (delete to Ready "
          f"{min(ready_s):.1f}/{statistics.median(ready_s):.1f}/{max(ready_s):.1f} s min/median/max; then every "
          f"address on its owner alone after {max(settle_s):.2f} s at most), {len(rounds)} ARP rounds x "
          f"{len(owners)} addresses: {len(wrong)} answers by another MAC for a live owner's address; "
          f"{overlaps} handover overlaps (two MACs in one round) for a restarting owner's address; "
          f"previous-key beacons since the last step {previous_key}")
    figure("key_rotation_answers_off_a_live_owner", len(wrong), "count")
    assert not wrong, wrong[:5]
    assert previous_key == {n: 0.0 for n in SPEAKERS}, "a speaker still hears beacons signed with the old key"
    # The chart's template (restored after the test) signs with `key`: it gets the new key's bytes, so the
    # chart's own pods share the key every speaker now holds (the old key is gone, as step 3 allows).
    add_heartbeat_key(fresh, secret, "key", new_key)
    assert secret_value(fresh, secret, "key") == new_key
