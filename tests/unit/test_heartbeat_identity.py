"""Heartbeat identity: clock steps, forged incarnations, replays (issue 8, weak point 2)."""

from __future__ import annotations

from lbctl.core.heartbeat import Heartbeat, PeerTable, decode, encode

KEY = b"k" * 32
HOUR_NS = 3600 * 10**9
T0 = 1_700_000_000 * 10**9


def test_peer_restarted_with_clock_an_hour_behind_is_heard():
    t = PeerTable("node-a", 0.45)
    assert t.observe(Heartbeat("node-b", T0, 500), 0.0)
    # node-b restarts with its clock stepped back: a smaller incarnation, sequence from 1.
    for i in range(1, 10):
        t.observe(Heartbeat("node-b", T0 - HOUR_NS, i), 1.0 + 0.1 * i)
    assert "node-b" in t.live(1.9)


def test_one_forged_huge_incarnation_does_not_kill_a_peer_for_good():
    t = PeerTable("node-a", 0.45)
    assert t.observe(Heartbeat("node-b", T0, 1), 0.0)
    t.observe(Heartbeat("node-b", 2**64 - 1, 0), 0.05)  # a key holder's single forgery
    for i in range(2, 30):
        t.observe(Heartbeat("node-b", T0, i), 0.1 * i)
    assert "node-b" in t.live(2.9)


def test_restarted_receiver_does_not_accept_a_replayed_stream():
    captured = [encode(Heartbeat("node-b", T0, i), KEY) for i in range(1, 50)]
    t = PeerTable("node-a", 0.45)  # node-a restarted: an empty table; node-b is dead
    for i, wire in enumerate(captured):
        hb = decode(wire, KEY)
        if hb is not None:
            t.observe(hb, 0.1 * i)
    assert "node-b" not in t.live(4.8)
