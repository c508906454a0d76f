"""Departed peers are forgotten (issue 12, bug 4): peers silent for long and Nodes deleted from the API leave
the table, its scans, peer_count() and the receive-queue sizing; forgetting never changes who is live."""

from __future__ import annotations

import asyncio
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core.heartbeat import Keyring, PeerTable
from lbctl.speaker.heartbeats import Heartbeats
from lbctl.speaker.metrics import Metrics

KEY = b"k" * 32
DEAD = 0.45
INTERVAL = 0.1
CHURN = 5_000
SILENT_FOR = max(60.0, 100 * DEAD) + 1  # a peer silent this long is forgotten (what the fix promises)
EVERY = 0.05  # one new node name heard every 50 ms: 5,000 names over 250 s, each heard once then silent


def test_churning_thousands_of_node_names_keeps_the_table_and_the_receive_queue_bounded() -> None:
    async def scenario() -> None:
        hb = Heartbeats("me", Keyring([KEY]), 0, INTERVAL, DEAD, lambda: None, Metrics())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            hb._socks["eth0"] = (sock, ())
            hb.segments["eth0"] = PeerTable("me", DEAD, require_echo=False)
            # Within forget_after about this many names are heard: what the table may hold at most.
            window = int((SILENT_FOR + 2 * DEAD) / EVERY) + 2
            most = sized_for = 0
            next_check = 0.0
            for i in range(CHURN):
                t = i * EVERY
                hb.peers.observe_fields(f"gone-{i}", 1000 + i, 1, False, True, t)
                hb.segments["eth0"].observe_fields(f"gone-{i}", 1000 + i, 1, False, True, t)
                if t >= next_check:  # the heartbeat thread's cadence
                    hb._check_heard(t)
                    hb._publish(t)
                    next_check = t + DEAD
                most = max(most, hb.peers.peer_count(), hb.segments["eth0"].peer_count())
                sized_for = max(sized_for, hb._rcvbuf_peers)
            assert most <= window, f"{most} names tracked at once (bound {window})"
            assert sized_for <= window * 3 // 2 + 1, f"receive queue sized for {sized_for} peers"
            held = len(hb.peers._peers) + len(getattr(hb.peers, "_ghosts", ()))
            assert held <= window + getattr(hb.peers, "ghosts_max", 0), f"{held} peers held"
            assert len(hb.live(0.0)) <= DEAD / EVERY + 2  # those heard within dead_after, and us
        finally:
            hb.close()
            sock.close()
    asyncio.run(scenario())


def test_a_peer_silent_for_long_is_forgotten_and_a_replay_does_not_revive_it() -> None:
    t = PeerTable("me", DEAD)
    t.observe_fields("a", 7, 10, False, True, 0.0)
    t.observe_fields("a", 7, 11, False, True, 0.1)
    t.refresh(0.1)
    assert t.live_set == {"me", "a"}
    later = 0.1 + SILENT_FOR + 1
    t.forget_silent(later)
    assert t.peer_count() == 0
    assert not t.observe_fields("a", 7, 11, False, True, later)  # a replay of its last beacon: still refused
    assert t.peer_count() == 0 and t.live(later) == {"me"}
    assert t.observe_fields("a", 7, 12, False, True, later)  # the same process, heard again: welcome back
    assert t.live(later) == {"me", "a"}


def test_a_node_deleted_from_the_api_is_forgotten() -> None:
    async def scenario() -> None:
        hb = Heartbeats("me", Keyring([KEY]), 0, INTERVAL, DEAD, lambda: None, Metrics())
        try:
            for name in ("a", "b"):
                hb.peers.observe_fields(name, 1, 1, False, True, 0.0)
            hb.nodes_known({"me", "a", "b"})
            hb.nodes_known({"me", "a"})  # b deleted
            assert hb.peers.peer_count() == 1
            hb._publish(0.0)
            assert hb.live(0.0) == {"me", "a"}
        finally:
            hb.close()
    asyncio.run(scenario())


# --- the property: a table that forgets agrees with one that never does -------------------------

_event = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),  # node
    st.integers(1, 6),  # incarnation
    st.integers(0, 8),  # sequence
    st.booleans(),  # leaving
    st.booleans(),  # echoes us
    st.floats(0.0, 80.0),  # time step before it (seconds): long silences included
    st.sampled_from([100, 250, 2000]),  # interval_ms claimed
    st.sampled_from(["none", "silent", "api"]),  # what the forgetting table does before the beacon
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_event, max_size=60))
def test_forgetting_never_changes_who_is_live(events) -> None:
    keep, forget = PeerTable("me", DEAD), PeerTable("me", DEAD)
    now = 0.0
    deleted: set[str] = set()  # Nodes deleted from the API: no longer reported as deaf until accepted again
    for node, inc, seq, leaving, echoes, step, interval_ms, action in events:
        now += step
        if action == "silent":
            forget.forget_silent(now)
        elif action == "api" and node not in keep.live(now):
            forget.forget(node)  # a Node deleted from the API while it was not live
            deleted.add(node)
        got = (keep.observe_fields(node, inc, seq, leaving, echoes, now, interval_ms),
               forget.observe_fields(node, inc, seq, leaving, echoes, now, interval_ms))
        assert got[0] == got[1]
        assert keep.live(now) == forget.live(now)
        assert keep.refresh(now) == forget.refresh(now) and keep.live_set == forget.live_set
        if node in forget.live_set or node in forget.deaf(now):
            deleted.discard(node)  # heard again on a beacon its old record accepts: known as before
        assert sorted(set(keep.deaf(now)) - deleted) == sorted(set(forget.deaf(now)) - deleted)
