"""The peer simulator's pure parts: scheduling, echo choice, lag percentiles, and that its beacons are
what a real speaker accepts (decoded and counted live by the speaker's own PeerTable)."""

from __future__ import annotations

import random

from benchmarks.peersim import (EchoRing, Heard, LagHistogram, Schedule, Simulator, choose_echo, echoes_real,
                                next_due, peer_names)
from lbctl.core.heartbeat import MAX_ECHO, Keyring, PeerTable, decode, incarnation_bytes

KEY = b"unit-test-heartbeat-key-0123456789"


def test_schedule_pops_in_due_order_and_only_when_due() -> None:
    s = Schedule()
    for peer, due in [(0, 0.30), (1, 0.10), (2, 0.20)]:
        s.add(peer, due)
    assert s.pop_due(0.05) is None
    assert s.first() == 0.10
    got = []
    while (hit := s.pop_due(0.25)) is not None:
        got.append(hit)
    assert got == [(1, 0.10), (2, 0.20)]
    assert s.first() == 0.30


def test_schedule_drops_a_removed_peer_and_requeues_a_popped_one() -> None:
    s = Schedule()
    s.add(0, 0.1)
    s.add(1, 0.2)
    s.remove(0)
    assert s.pop_due(1.0) == (1, 0.2)
    s.push(1, 0.3)
    assert s.pop_due(1.0) == (1, 0.3)
    assert s.pop_due(1.0) is None and s.first() is None
    s.add(0, 0.5)  # restarted: a fresh entry counts again
    assert s.pop_due(1.0) == (0, 0.5)


def test_schedule_restart_invalidates_the_old_entry() -> None:
    s = Schedule()
    s.add(0, 0.1)
    s.add(0, 0.4)  # stop + start before the old entry came due: only the new one may fire
    assert s.pop_due(1.0) == (0, 0.4)
    assert s.pop_due(1.0) is None


def test_next_due_keeps_cadence_and_resumes_after_a_stall() -> None:
    assert next_due(1.0, 1.003, 0.1) == (1.1, False)  # a little late: the cadence holds
    assert next_due(1.0, 1.15, 0.1) == (1.1, False)  # one interval behind: still catch up
    assert next_due(1.0, 1.5, 0.1) == (1.5, True)  # far behind: no burst of backlog


def test_phases_spread_and_every_peer_beacons_once_per_interval() -> None:
    sim = Simulator(peer_names(50), Keyring([KEY]), "198.18.0.2", 7946, 0.1, 8, rng=random.Random(1))
    s, now = sim.schedule, 100.0
    for i in range(50):
        s.add(i, now + sim._rng.uniform(0, 0.1))
    sent: dict[int, list[float]] = {}
    t = now
    while t < now + 1.0:
        t += 0.001
        while (hit := s.pop_due(t)) is not None:
            i, due = hit
            sent.setdefault(i, []).append(due)
            s.push(i, next_due(due, t, 0.1)[0])
    assert all(9 <= len(v) <= 10 for v in sent.values()) and len(sent) == 50
    firsts = sorted(v[0] for v in sent.values())
    assert firsts[-1] - firsts[0] > 0.05  # own phases, not one burst


def test_echo_ring_rotates_over_every_other_peer_and_never_echoes_itself() -> None:
    ring = EchoRing(10)
    for i in range(10):
        ring.set(i, 1000 + i)
    seen: set[int] = set()
    for beat in range(1, 6):
        w = ring.window(3, beat, 4)
        assert len(w) == 4 and 1003 not in w and len(set(w)) == 4
        seen |= set(w)
    assert seen == {1000 + i for i in range(10)} - {1003}


def test_echo_ring_skips_stopped_peers_and_copes_with_few() -> None:
    ring = EchoRing(3)
    ring.set(0, 7)
    ring.set(1, 8)
    ring.set(2, 9)
    ring.set(1, None)  # stopped
    assert sorted(ring.window(0, 1, 32)) == [9]
    assert ring.window(0, 1, 0) == []
    ring.set(2, None)
    assert ring.window(0, 5, 4) == []


def test_choose_echo_puts_the_real_speaker_first_and_caps() -> None:
    assert choose_echo([5, 6], [1, 2, 3], 4) == [5, 6, 1, 2]
    many = choose_echo([5], list(range(500)), 1000)
    assert many[:2] == [5, 0] and len(many) == MAX_ECHO
    assert choose_echo([], [1, 2], 2) == [1, 2]


def test_heard_echoes_recent_incarnations_newest_first_and_only_since_a_peers_start() -> None:
    h = Heard(hear_for=1.0)
    h.observe(11, 10.0)
    h.observe(22, 10.5)
    assert h.current(10.6) == [22, 11]
    assert h.current(10.6, since=10.2) == [22]  # a peer restarted at 10.2 has not heard 11 itself
    assert h.current(11.2) == [22]  # 11 not heard for over hear_for
    h.observe(22, 11.3, leaving=True)
    assert h.current(11.4) == []


def test_lag_histogram_percentiles() -> None:
    h = LagHistogram()
    assert h.quantile(0.5) == 0.0
    for k in range(1, 101):
        h.add(k / 1000)  # 1..100 ms
    assert abs(h.quantile(0.5) - 0.0501) < 2e-4
    assert abs(h.quantile(0.99) - 0.0991) < 2e-4
    assert h.worst == 0.1
    h.add(-0.001)  # a clock oddity lands in the first bucket, never an IndexError
    h.add(50.0)
    assert h.worst == 50.0 and h.quantile(1.0) == 2.0


def test_beacons_make_peers_live_to_a_real_speaker_only_once_they_heard_it() -> None:
    """End to end through the speaker's own decoder and PeerTable: echoes carry its incarnation."""
    incs = iter(range(1, 10_000))
    sim = Simulator(peer_names(5), Keyring([KEY]), "198.18.0.2", 7946, 0.1, 32, incarnation=lambda: next(incs))
    speaker_inc = 0xDEADBEEF
    table = PeerTable("spk-real", dead_after=0.45)
    mine = (incarnation_bytes(speaker_inc),)
    for i in range(5):
        hb = decode(sim.beacon(i, 1.0), KEY, mine)
        assert hb is not None and not hb.echoes_us
        table.observe(hb, 1.0)
    assert table.live(1.0) == {"spk-real"}
    sim.heard.observe(speaker_inc, 1.05)
    for i in range(5):
        data = sim.beacon(i, 1.1)
        hb = decode(data, KEY, mine)
        assert hb is not None and hb.echoes_us and hb.sequence == 2
        assert (len(data) - 28 - len("sim-0001") - 32) // 8 == 5  # the speaker + the 4 others
        table.observe(hb, 1.1)
    assert table.live(1.2) == {"spk-real", *peer_names(5)}


def test_controls_stop_restart_and_goodbye() -> None:
    incs = iter(range(1, 10_000))
    sim = Simulator(peer_names(3), Keyring([KEY]), "198.18.0.2", 7946, 0.1, 32, incarnation=lambda: next(incs))
    sent: list[bytes] = []
    sim._send = sent.append  # type: ignore[method-assign]  # no socket: the bytes are the point
    for i in range(3):
        sim.schedule.add(i, 0.0)
    old = sim.peers[1].incarnation
    ev = sim.control("stop sim-0002")
    assert ev and ev["event"] == "stopped" and not sim.peers[1].running
    assert old not in sim.ring.window(0, 1, 32)
    assert sim.control("stop sim-0002")["event"] == "error"  # type: ignore[index]
    ev = sim.control("start sim-0002")
    assert ev and ev["event"] == "started" and ev["incarnation"] != old and sim.peers[1].sequence == 0
    ev = sim.control("bye sim-0003")
    assert ev and ev["event"] == "left"
    hbs = [decode(d, KEY) for d in sent]
    assert len(hbs) == 3 and all(h is not None and h.leaving and h.node == "sim-0003" for h in hbs)
    assert sim.control("bogus sim-0001")["event"] == "error"  # type: ignore[index]
    assert sim.control("stop nobody")["event"] == "error"  # type: ignore[index]
    assert sim.control("quit") is None


def test_rotating_echo_of_the_real_speaker_while_new_then_once_per_rotation() -> None:
    # new to this peer: every beacon
    assert all(echoes_real(10.0, 0.0, 10.1, beat, 10, 0.3) for beat in range(1, 20))
    # after that: one beacon in ten
    assert [b for b in range(1, 31) if echoes_real(10.0, 0.0, 12.0, b, 10, 0.3)] == [10, 20, 30]
    # a peer that restarted hears it anew: new to it again, whenever the speaker was first heard
    assert echoes_real(10.0, 11.9, 12.0, 3, 10, 0.3)
    # rotation 1: every beacon always
    assert echoes_real(10.0, 0.0, 99.0, 7, 1, 0.3)


def test_rotating_peers_are_live_to_a_rotating_speaker_and_widen_their_echo() -> None:
    incs = iter(range(1, 10_000))
    sim = Simulator(peer_names(500), Keyring([KEY]), "198.18.0.2", 7946, 0.1, 32, incarnation=lambda: next(incs),
                    rotation=10)
    assert sim.echoes == 50  # everyone once per 10 beacons
    speaker_inc = 0xFEED
    sim.heard.observe(speaker_inc, 0.0)
    mine = (incarnation_bytes(speaker_inc),)
    echoed = []
    for k in range(20):
        now = 5.0 + k * 0.1
        sim.heard.observe(speaker_inc, now - 0.05)  # the speaker keeps beaconing
        hb = decode(sim.beacon(0, now), KEY, mine)
        assert hb is not None
        echoed.append(hb.echoes_us)
    assert sum(echoed) == 2  # heard since 0.0, not new any more: 2 of 20 beacons
