"""A starting speaker elects only once the peers it hears have verified it (CI, real cluster: a replaced speaker
pod claimed a live peer's address for a moment after its fixed 0.45 s warm-up, resetting connections)."""

from __future__ import annotations

from lbctl.core.heartbeat import WARM_UP_CAP, PeerTable, warm_up_done

D = 0.45


def test_a_peer_heard_but_not_yet_echoing_us_is_unverified_until_it_does() -> None:
    t = PeerTable("me", dead_after=D)
    t.observe_fields("node2", inc=7, seq=1, leaving=False, echoes_us=False, now=0.0)
    assert t.unverified(0.1) == {"node2"}
    assert "node2" not in t.live(0.1)  # what the election would see: node2 dead
    t.observe_fields("node2", inc=7, seq=2, leaving=False, echoes_us=True, now=0.2)
    assert t.unverified(0.3) == set() and "node2" in t.live(0.3)


def test_silent_or_departed_peers_are_not_waited_for() -> None:
    t = PeerTable("me", dead_after=D)
    t.observe_fields("gone", inc=1, seq=1, leaving=False, echoes_us=False, now=0.0)
    t.observe_fields("leaver", inc=2, seq=1, leaving=True, echoes_us=False, now=1.0)
    assert t.unverified(1.0) == set()  # "gone" silent for longer than dead_after; "leaver" said goodbye


def test_warm_up_waits_for_unverified_peers_up_to_the_cap() -> None:
    assert not warm_up_done(0.2, D, set())  # one full dead_after of listening first
    assert warm_up_done(D, D, set())
    assert not warm_up_done(D, D, {"node2"})
    assert not warm_up_done((WARM_UP_CAP - 0.5) * D, D, {"node2"})
    assert warm_up_done(WARM_UP_CAP * D, D, {"node2"})
