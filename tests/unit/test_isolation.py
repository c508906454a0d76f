"""The "alone among many" decision: hold on a sudden mass loss of peers, never on ordinary failover, and
always let a genuine rack failure fail over after a bounded hold."""

from __future__ import annotations

from lbctl.core.isolation import ALONE_HOLD_S, IsolationGuard, hold_for

PEERS = {f"peer-{i}" for i in range(10)}
ME = "me"


def settled(guard: IsolationGuard, peers: set[str], t: float = 0.0) -> None:
    assert not guard.check(peers | {ME}, None, t).holding


def test_one_peer_leaving_is_ordinary_failover():
    g = IsolationGuard(ME)
    settled(g, {"a", "b"})
    assert not g.check({ME, "a"}, None, 5.0).holding  # 1 of 2 lost: under the minimum


def test_three_node_cluster_losing_two_fails_over_at_once():
    g = IsolationGuard(ME)
    settled(g, {"a", "b"})
    assert not g.check({ME}, frozenset({ME, "a", "b"}), 1.0).holding  # a plausible failure, not isolation


def test_four_node_cluster_losing_three_at_once_holds():
    g = IsolationGuard(ME)
    settled(g, {"a", "b", "c"})
    assert g.check({ME}, None, 1.0).holding


def test_losing_half_is_not_enough():
    g = IsolationGuard(ME)
    settled(g, {"a", "b", "c", "d"})
    assert not g.check({ME, "a", "b"}, None, 1.0).holding


def test_sudden_solitude_holds_and_warns_once():
    g = IsolationGuard(ME)
    settled(g, PEERS)
    v = g.check({ME}, None, 60.0)  # idle for a minute (no checks), then everyone is gone at once
    assert v.holding and v.started and v.missing == PEERS and v.until == 60.0 + g.hold_s
    again = g.check({ME}, None, 60.5)
    assert again.holding and not again.started


def test_hold_ends_when_peers_are_heard_again():
    g = IsolationGuard(ME)
    settled(g, PEERS)
    assert g.check({ME}, None, 1.0).holding
    v = g.check(PEERS | {ME}, None, 1.4)
    assert not v.holding and v.ended == "peers heard"


def test_losses_spread_over_a_beacon_interval_count_as_at_once():
    g = IsolationGuard(ME)
    settled(g, PEERS)
    left = set(PEERS)
    held = []
    for i, p in enumerate(sorted(PEERS)):  # peers time out one by one, 20 ms apart
        left.discard(p)
        held.append(g.check(left | {ME}, None, 1.0 + 0.02 * i).holding)
    assert held[-1] and held.index(True) == 5  # the 6th loss is more than half of 10


def test_slow_departures_never_trigger():
    g = IsolationGuard(ME)
    settled(g, PEERS)
    left = set(PEERS)
    for i, p in enumerate(sorted(PEERS)):  # a rolling restart: one peer every 5 s
        left.discard(p)
        assert not g.check(left | {ME}, None, 5.0 * (i + 1)).holding


def test_rack_failure_fails_over_after_the_bounded_hold_static_mode():
    g = IsolationGuard(ME, hold_s=hold_for(0.45))
    settled(g, PEERS)
    survivors = {"peer-0", "peer-1", "peer-2"}
    v = g.check(survivors | {ME}, None, 10.0)  # 7 of 10 peers die together
    assert v.holding and v.until == 13.0
    assert g.check(survivors | {ME}, None, 12.9).holding
    end = g.check(survivors | {ME}, None, 13.0)  # the shell wakes itself at v.until
    assert not end.holding and end.ended == "hold expired"
    assert not g.check(survivors | {ME}, None, 13.1).holding  # and does not hold again for the same loss


def test_rack_failure_with_kubernetes_and_survivors_uses_the_short_hold():
    g = IsolationGuard(ME)
    settled(g, PEERS)
    registered = frozenset(PEERS | {ME})  # Leases still fresh right after the failure
    assert g.check({ME, "peer-0", "peer-1"}, registered, 1.0).holding
    assert not g.check({ME, "peer-0", "peer-1"}, registered, 1.0 + g.hold_s).holding


def test_alone_with_fresh_leases_holds_until_they_lapse():
    g = IsolationGuard(ME)
    settled(g, PEERS)
    registered = frozenset(PEERS | {ME})
    assert g.check({ME}, registered, 1.0).holding
    assert g.check({ME}, registered, 1.0 + g.hold_s + 1).holding  # longer than the static hold
    lapsed = g.check({ME}, frozenset({ME}), 25.0)  # the census no longer counts them: confirmed gone
    assert not lapsed.holding and lapsed.ended == "peers gone"


def test_alone_hold_is_bounded_even_if_the_census_never_updates():
    g = IsolationGuard(ME)
    settled(g, PEERS)
    stale = frozenset(PEERS | {ME})
    assert g.check({ME}, stale, 1.0).until == 1.0 + ALONE_HOLD_S
    v = g.check({ME}, stale, 1.0 + ALONE_HOLD_S)
    assert not v.holding and v.ended == "hold expired"


def test_confirmed_gone_at_once_means_no_hold():
    g = IsolationGuard(ME)
    settled(g, PEERS)
    v = g.check({ME}, frozenset({ME}), 1.0)  # a census already shows their Leases lapsed
    assert not v.holding and v.ended == "peers gone"


def test_hold_length_follows_dead_after():
    assert hold_for(0.45) == 3.0 and hold_for(1.0) == 4.0


def test_second_loss_while_the_first_is_recent_waits_for_the_rest_of_a_mass_expiry():
    """Peers that vanish together expire one by one (their phases): without a moment of suspicion the first
    half would be claimed before the hold could trigger."""
    g = IsolationGuard(ME, suspect_s=0.15)
    settled(g, PEERS)
    peers = sorted(PEERS)
    assert not g.check({ME, *peers[1:]}, None, 10.0).holding  # one node failing: failover at once
    v = g.check({ME, *peers[2:]}, None, 10.03)
    assert v.holding and v.suspect and not v.started and v.until == 10.03 + 0.15  # two: wait a moment
    for k in range(3, 7):  # six of ten gone: more than half
        v = g.check({ME, *peers[k:]}, None, 10.03 + 0.02 * k)
    assert v.holding and v.started and not v.suspect  # the rest landed: a hold, with its warning


def test_a_double_failure_is_claimed_after_the_moment_of_suspicion():
    g = IsolationGuard(ME, suspect_s=0.15)
    settled(g, PEERS)
    peers = sorted(PEERS)
    g.check({ME, *peers[1:]}, None, 10.0)
    assert g.check({ME, *peers[2:]}, None, 10.05).suspect
    assert not g.check({ME, *peers[2:]}, None, 10.21).holding  # nothing more vanished: an ordinary failover
