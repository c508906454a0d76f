"""A restarting speaker's addresses are held by its peers (`--restart-hold`) until its next incarnation is live,
so a rolling update moves none of them (each move cuts the connections in flight: benchmarks.upgrade measured
2-3 per 24,000-28,000 connections before). Example tests and a state machine over the real PeerTable."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lbctl.core.heartbeat import INCARNATIONS_PER_PEER, LEAVE, RESTART, Decoder, Heartbeat, PeerTable, encode, incarnation_bytes

D, HOLD = 0.45, 30.0
KEY = b"k" * 32


def _table(hold: float = HOLD) -> PeerTable:
    return PeerTable("me", dead_after=D, restart_hold=hold)


def _beat(t: PeerTable, now: float, inc: int = 1, seq: int = 1, leaving: int = 0, node: str = "node2") -> None:
    assert t.observe_fields(node, inc, seq, leaving, True, now)
    t.refresh(now)


def test_a_restarting_peer_stays_live_until_the_hold_ends() -> None:
    t = _table()
    _beat(t, 0.0)
    _beat(t, 0.1, seq=2, leaving=RESTART)
    assert "node2" in t.live(0.2) and "node2" in t.live_set
    assert "node2" in t.live(HOLD) and t.due <= 0.1 + HOLD  # the shell wakes up when the hold ends
    assert not t.refresh(0.1 + HOLD - 0.01)
    assert t.refresh(0.1 + HOLD + 0.01) and "node2" not in t.live_set


def test_its_next_incarnation_ends_the_hold() -> None:
    t = _table()
    _beat(t, 0.0)
    _beat(t, 0.1, seq=2, leaving=RESTART)
    _beat(t, 3.0, inc=2)  # the new pod, verified (echoes us)
    assert "node2" in t.live_set
    # It dies without a word: dead after dead_after, not held any more.
    assert t.refresh(3.0 + D + 0.01) and "node2" not in t.live_set


def test_a_plain_goodbye_ends_the_hold_and_hands_over_at_once() -> None:
    t = _table()
    _beat(t, 0.0)
    _beat(t, 0.1, seq=2, leaving=RESTART)
    _beat(t, 2.0, inc=2)
    _beat(t, 2.1, inc=2, seq=2, leaving=LEAVE)  # the new one is stopped on a cordoned node
    assert "node2" not in t.live_set


def test_no_hold_for_a_peer_we_do_not_count_live_or_with_hold_zero() -> None:
    t = _table()
    assert t.observe_fields("node2", 1, 1, 0, False, 0.0)  # heard, never echoed us: not live
    t.refresh(0.0)
    t.observe_fields("node2", 1, 2, RESTART, False, 0.1)
    t.refresh(0.1)
    assert "node2" not in t.live_set  # a goodbye does not revive anyone
    t0 = _table(hold=0)
    _beat(t0, 0.0)
    _beat(t0, 0.1, seq=2, leaving=RESTART)
    assert "node2" not in t0.live_set  # --restart-hold 0: hand over at once, as before


def test_a_replayed_restart_goodbye_does_not_hold_again() -> None:
    t = _table()
    _beat(t, 0.0)
    _beat(t, 0.1, seq=2, leaving=RESTART)
    _beat(t, 2.0, inc=2)
    assert not t.observe_fields("node2", 1, 2, RESTART, True, 2.2)  # the old incarnation left: refused
    assert t.refresh(2.0 + D + 0.01) and "node2" not in t.live_set


def test_codec_carries_restart_and_old_receivers_read_a_goodbye() -> None:
    data = encode(Heartbeat("node2", 5, 9, 100, RESTART), KEY)
    got = Decoder(KEY, (incarnation_bytes(1),)).fields(data)
    assert got is not None and got[4] == RESTART
    assert data[5] & 0x01  # FLAG_LEAVING set: a speaker that predates the hold fails over, as before
    assert Decoder(KEY).fields(encode(Heartbeat("node2", 5, 9, 100, True), KEY))[4] == LEAVE


class HoldMachine(RuleBasedStateMachine):
    """Random beacons, restarts, goodbyes, silences and clock steps for two peers; after every step the live
    set equals what the rules say, computed independently from what each peer last did."""

    @initialize()
    def start(self) -> None:
        self.t = _table(hold=2.0)
        self.now = 0.0
        # per peer: its incarnations (inc -> [last heard, left]), the current one, its sequence, the hold
        self.state = {n: {"inc": 1, "seq": 0, "incs": {}, "held_until": None, "held_inc": None} for n in ("a", "b")}

    def _model_live(self, n: str) -> bool:
        s = self.state[n]
        alive = any(not left and self.now - heard <= D for heard, left in s["incs"].values())
        held = s["held_until"] is not None and self.now < s["held_until"]
        return alive or held

    @rule(n=st.sampled_from(["a", "b"]), kind=st.sampled_from(["beat", "restart", "leave", "new"]))
    def send(self, n: str, kind: str) -> None:
        s = self.state[n]
        was_live = n in self.t.live_set
        if kind == "new":  # the next pod: a new incarnation (at most INCARNATIONS_PER_PEER: none is retired)
            if s["inc"] == INCARNATIONS_PER_PEER:
                return
            s["inc"] += 1
            s["seq"] = 0
        if s["incs"].get(s["inc"], [0.0, False])[1]:
            return  # a left incarnation sends nothing more
        s["seq"] += 1
        leaving = {"beat": 0, "new": 0, "restart": RESTART, "leave": LEAVE}[kind]
        assert self.t.observe_fields(n, s["inc"], s["seq"], leaving, True, self.now)
        s["incs"][s["inc"]] = [self.now, bool(leaving)]
        if kind in ("beat", "new"):
            if s["held_until"] is not None and s["inc"] != s["held_inc"]:
                s["held_until"] = None  # its next incarnation is live
        elif kind == "leave":
            s["held_until"] = None  # gone for good
        elif was_live:
            s["held_until"], s["held_inc"] = self.now + 2.0, s["inc"]
        self.t.refresh(self.now)

    @rule(dt=st.floats(0.01, 3.0))
    def wait(self, dt: float) -> None:
        self.now += dt
        self.t.refresh(self.now)

    @invariant()
    def live_set_follows_the_rules(self) -> None:
        for n in ("a", "b"):
            assert (n in self.t.live(self.now)) == self._model_live(n), (n, self.state[n], self.now)
            assert (n in self.t.live_set) == self._model_live(n), (n, self.state[n], self.now)


TestHoldMachine = HoldMachine.TestCase
TestHoldMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_a_node_cordoned_failing_or_being_deleted_is_going() -> None:
    from lbctl.core.announce import node_info
    ready = {"type": "Ready", "status": "True"}
    base = {"metadata": {"name": "n"}, "status": {"conditions": [ready]}}
    assert not node_info(base).going
    assert node_info({**base, "spec": {"unschedulable": True}}).going
    assert node_info({**base, "metadata": {"name": "n", "deletionTimestamp": "2026-12-05T00:00:00Z"}}).going
    assert node_info({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}).going
