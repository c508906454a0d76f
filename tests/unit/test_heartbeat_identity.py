"""Heartbeat identity: clock steps, forged incarnations, replays (issue 8, weak point 2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core.heartbeat import (
    ECHO_WINDOW,
    INCARNATIONS_PER_PEER,
    RETIRED_PER_PEER,
    Heartbeat,
    Keyring,
    PeerTable,
    decode,
    encode,
    incarnation_bytes,
)

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


A_OLD, A_NEW = 0x1111, 0x2222  # node-a's incarnation before and after its restart


def feed(t: PeerTable, wires, mine, start=0.0):
    for i, wire in enumerate(wires):
        hb = decode(wire, KEY, [incarnation_bytes(m) for m in mine])
        if hb is not None:
            t.observe(hb, start + 0.1 * i)


def test_restarted_receiver_does_not_accept_a_replayed_stream():
    # node-b's beacons echoed node-a's previous incarnation: captured then, replayed after node-a restarted.
    captured = [encode(Heartbeat("node-b", T0, i), KEY, [A_OLD]) for i in range(1, 50)]
    t = PeerTable("node-a", 0.45)  # node-a restarted: an empty table; node-b is dead
    feed(t, captured, [A_NEW])
    assert "node-b" not in t.live(4.8)
    # The same stream was good evidence for the incarnation it echoed: the check is the echo, nothing else.
    t_old = PeerTable("node-a", 0.45)
    feed(t_old, captured, [A_OLD])
    assert "node-b" in t_old.live(4.8)


def test_replay_within_our_lifetime_cannot_revive_a_dead_peer():
    stream = [encode(Heartbeat("node-b", T0, i), KEY, [A_NEW]) for i in range(1, 20)]
    t = PeerTable("node-a", 0.45)
    feed(t, stream, [A_NEW])
    feed(t, stream, [A_NEW], start=5.0)  # node-b died; its whole stream replayed
    assert "node-b" not in t.live(6.0)


def test_peer_not_echoing_us_yet_is_not_live_but_is_echoed():
    t = PeerTable("node-a", 0.45)
    assert t.observe(Heartbeat("node-b", 7, 1, echoes_us=False), 0.0)
    assert t.live(0.0) == {"node-a"} and t.heard(0.0) == [7]
    assert t.observe(Heartbeat("node-b", 7, 2, echoes_us=True), 0.1)
    assert t.live(0.1) == {"node-a", "node-b"}
    assert t.heard(1.0) == []


def test_forged_goodbye_is_noticed_as_deafness():
    """A key holder's goodbye under node-b's real incarnation silences it in our table; node-b sees
    our beacons stop echoing it (deaf), takes a new incarnation, and is heard again."""
    t = PeerTable("node-a", 0.45)
    t.observe(Heartbeat("node-b", 7, 1), 0.0)
    assert t.observe(Heartbeat("node-b", 7, 10**9, leaving=True), 0.05)  # the forgery
    assert not t.observe(Heartbeat("node-b", 7, 2), 0.1)  # the real node-b: refused from now on
    assert "node-b" not in t.live(0.1)
    # node-b's side of the same story, seen from a table: a peer that keeps beaconing but no longer
    # echoes us for longer than its echo window (dead_after + ECHO_WINDOW of its 0.1 s intervals).
    window = 0.45 + ECHO_WINDOW * 0.1
    tb = PeerTable("node-b", 0.45)
    tb.observe(Heartbeat("node-a", 1, 1), 0.0)
    for i in range(2, 50):
        tb.observe(Heartbeat("node-a", 1, i, echoes_us=False), 0.1 * i)
    assert tb.deaf(window - 0.05) == [] and tb.deaf(window + 0.05) == ["node-a"]
    # node-b's new incarnation (8) is unknown to node-a, so accepted and live once it echoes node-a.
    assert t.observe(Heartbeat("node-b", 8, 1), 0.8)
    assert "node-b" in t.live(0.8)


def test_memory_per_peer_is_bounded_and_pushed_out_incarnations_are_refused():
    t = PeerTable("node-a", 0.45)
    for inc in range(1000):
        t.observe(Heartbeat("node-b", inc, 1), inc * 0.01)
    peer = t._peers["node-b"]
    assert len(peer.incs) == INCARNATIONS_PER_PEER and len(peer.retired) == RETIRED_PER_PEER
    assert not t.observe(Heartbeat("node-b", 990, 2), 20.0)  # retired: even a newer sequence is refused


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.booleans(), st.booleans()),
                max_size=30))
def test_forgeries_of_other_incarnations_never_silence_a_live_peer(forged):
    """Whatever a key holder sends under other incarnations (huge, tiny, goodbyes, echoing or not),
    a peer that keeps beaconing under its own incarnation stays live."""
    real = 0xABCDEF
    t = PeerTable("node-a", 0.45)
    now, seq = 0.0, 0
    for inc, fseq, leaving, echoes in forged:
        seq += 1
        assert t.observe(Heartbeat("node-b", real, seq), now)
        if inc != real:
            t.observe(Heartbeat("node-b", inc, fseq, leaving=leaving, echoes_us=echoes), now + 0.01)
        now += 0.1
        assert "node-b" in t.live(now)


# --- keyring ---------------------------------------------------------------------------------

OLD, NEW = b"o" * 32, b"n" * 32


def test_keyring_signs_with_first_and_verifies_with_any():
    hb = Heartbeat("node-b", 1, 1)
    wire = encode(hb, Keyring([NEW, OLD]))
    assert wire == encode(hb, NEW)
    assert decode(wire, Keyring([OLD, NEW])).key_index == 1
    assert decode(wire, Keyring([NEW])).key_index == 0
    assert decode(wire, Keyring([OLD])) is None
    assert decode(encode(hb, OLD), Keyring([NEW, OLD])).key_index == 1


def test_rotation_node_by_node_never_leaves_two_speakers_deaf_to_each_other():
    """[old] -> [old, new] -> [new, old] -> [new], one node at a time: every pair hears each other."""
    phases = [[OLD], [OLD, NEW], [NEW, OLD], [NEW]]
    nodes = 3
    rings = [phases[0]] * nodes
    for phase in phases[1:]:
        for n in range(nodes):
            rings = rings[:n] + [phase] + rings[n + 1:]
            for a in range(nodes):
                for b in range(nodes):
                    assert decode(encode(Heartbeat("x", 1, 1), Keyring(rings[a])), Keyring(rings[b])), (phase, n)
    # Skipping the first phase is what fails: a node signing with the new key among nodes that lack it.
    assert decode(encode(Heartbeat("x", 1, 1), Keyring([NEW, OLD])), Keyring([OLD])) is None


@pytest.mark.parametrize("keys", [[], [OLD] * 2, [b"a" * 16, b"b" * 16, b"c" * 16, b"d" * 16, b"e" * 16]])
def test_keyring_rejects_bad_sets(keys):
    with pytest.raises(ValueError):
        Keyring(keys)
