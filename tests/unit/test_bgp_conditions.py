"""The Valid condition of BGPPeers and BFDProfiles (lbctl/core/bgp_conditions.py) and the controller's writer
(controller/bgp_status.py) against a recording fake client: what lands on each object, and no write storms."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.bgp_status import BgpStatusWriter
from controller.metrics import Metrics
from lbctl.core.bgp_conditions import Condition, Obj, bfd_conditions, event_for, peer_conditions, status_update

GOOD = {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.0.1"}
T0, T1 = "2026-12-05T09:00:00Z", "2026-12-05T09:05:00Z"


def test_a_good_peer_is_valid_and_names_its_router():
    cond = peer_conditions({"tor1": GOOD}, {})["tor1"]
    assert cond == Condition(True, "Valid", "AS 64513 at 198.18.0.1:179")


def test_bad_peers_name_the_field_and_value():
    peers = {
        "keep": {**GOOD, "holdTime": "9s", "keepaliveTime": "10s"},
        "fam": {**GOOD, "sourceAddress": "2001:db8::1"},
        "rid": {**GOOD, "peerAddress": "198.18.0.3", "routerID": "2001:db8::9"},
        "nobfd": {**GOOD, "peerAddress": "198.18.0.4", "bfdProfile": "fast"},
        "hold": {**GOOD, "peerAddress": "198.18.0.5", "holdTime": "2s"},
    }
    conds = peer_conditions(peers, {})
    assert not any(c.valid for c in conds.values())
    assert {c.reason for c in conds.values()} == {"Invalid"}
    assert "spec.keepaliveTime (10s)" in conds["keep"].message and "spec.holdTime (9s)" in conds["keep"].message
    assert "spec.sourceAddress" in conds["fam"].message and "2001:db8::1" in conds["fam"].message
    assert "spec.routerID" in conds["rid"].message
    assert conds["nobfd"].message == "spec.bfdProfile: no BFDProfile named 'fast'"
    assert "spec.holdTime" in conds["hold"].message and "'2s'" in conds["hold"].message


def test_duplicate_peer_names_the_first():
    conds = peer_conditions({"a": GOOD, "b": GOOD}, {})
    assert conds["a"].valid and not conds["b"].valid and "duplicates BGPPeer a" in conds["b"].message


def test_password_secret_is_left_to_the_speakers():
    cond = peer_conditions({"p": {**GOOD, "passwordSecret": {"name": "tor-pw"}}}, {})["p"]
    assert cond.valid and "tor-pw" in cond.message and "checked by the speakers" in cond.message


def test_bfd_profile_checks_and_what_bird_cannot_do():
    conds = bfd_conditions({"fast": {"receiveInterval": 100}, "echo": {"echoMode": True},
                            "slow": {"detectMultiplier": 1}})
    assert conds["fast"].valid and "300 ms" in conds["fast"].message
    assert not conds["echo"].valid and "spec.echoMode" in conds["echo"].message
    assert not conds["slow"].valid and "spec.detectMultiplier" in conds["slow"].message and "got 1" in conds["slow"].message
    peers = peer_conditions({"a": {**GOOD, "bfdProfile": "echo"},
                             "m": {**GOOD, "peerAddress": "198.18.9.9", "ebgpMultiHop": True, "bfdProfile": "fast"}},
                            {"echo": {"echoMode": True}, "fast": {}})
    assert not peers["a"].valid and "BFDProfile 'echo' is invalid" in peers["a"].message
    assert not peers["m"].valid and "spec.sourceAddress is required" in peers["m"].message


def test_status_update_keeps_transition_time_and_skips_equal():
    cond = Condition(True, "Valid", "ok")
    first = status_update(cond, Obj(GOOD, 1), T0)
    assert first == {"observedGeneration": 1, "conditions": [{"type": "Valid", "status": "True", "reason": "Valid",
                     "message": "ok", "observedGeneration": 1, "lastTransitionTime": T0}]}
    assert status_update(cond, Obj(GOOD, 1, first), T1) is None
    # a new generation with the same verdict: rewritten (observedGeneration) but the transition time stays
    again = status_update(Condition(True, "Valid", "ok2"), Obj(GOOD, 2, first), T1)
    assert again is not None and again["conditions"][0]["lastTransitionTime"] == T0
    flipped = status_update(Condition(False, "Invalid", "bad"), Obj(GOOD, 3, again), T1)
    assert flipped is not None and flipped["conditions"][0]["lastTransitionTime"] == T1


def test_events_only_on_a_change_of_verdict_taken_from_the_server():
    bad, good = Condition(False, "Invalid", "bad"), Condition(True, "Valid", "ok")
    assert event_for(bad, Obj({}, 1)) == ("Warning", "Invalid", "bad")
    assert event_for(good, Obj({}, 1)) is None
    written = Obj({}, 1, status_update(bad, Obj({}, 1), T0))
    assert event_for(bad, written) is None  # a restarted controller repeats nothing
    assert event_for(good, written) == ("Normal", "Valid", "ok")


specs = st.fixed_dictionaries({"myASN": st.integers(0, 2**32), "peerASN": st.integers(1, 70000),
                               "peerAddress": st.sampled_from(["198.18.0.1", "198.18.0.2", "2001:db8::1", "x"])},
                              optional={"holdTime": st.sampled_from(["0", "2s", "9s", "90s", "1m", "1.5s"]),
                                        "keepaliveTime": st.sampled_from(["1s", "3s", "30s", "100s"]),
                                        "bfdProfile": st.sampled_from(["fast", "echo", "none"]),
                                        "ebgpMultiHop": st.booleans(), "routerID": st.sampled_from(["1.2.3.4", "::1"]),
                                        "peerPort": st.integers(0, 70000)})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), specs, max_size=4),
       st.dictionaries(st.sampled_from(["fast", "echo"]), st.fixed_dictionaries(
           {}, optional={"echoMode": st.booleans(), "detectMultiplier": st.integers(1, 300)}), max_size=2))
def test_judging_again_after_writing_writes_nothing(peers, profiles):
    """Whatever the specs: every object gets a condition naming the field when Invalid, and once the statuses
    are written, judging again (a relist, a restart, another replica) wants no write at all."""
    conds = peer_conditions(peers, profiles)
    assert set(conds) == set(peers)
    assert all(c.message.startswith(("spec.", "duplicates", "metadata.")) for c in conds.values() if not c.valid)
    held = {n: Obj(peers[n], 1, status_update(c, Obj(peers[n], 1), T0)) for n, c in conds.items()}
    again = peer_conditions(peers, profiles)
    assert all(status_update(c, held[n], T1) is None for n, c in again.items())


class FakeKube:
    """Records status patches and answers as the API server would (the object with the new status)."""

    def __init__(self, specs: dict[str, Any]) -> None:
        self.patches: list[str] = []
        self.rv, self.specs = 100, specs

    async def patch(self, path: str, body: Any, content_type: str = "") -> dict[str, Any]:
        self.patches.append(path)
        self.rv += 1
        name = path.split("/")[-2]
        return {"metadata": {"name": name, "generation": 1, "resourceVersion": str(self.rv), "uid": "u"},
                "spec": self.specs[name], "status": body["status"]}


class FakeEvents:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, str, str]] = []

    def emit(self, involved: Any, type_: str, reason: str, message: str) -> None:
        self.emitted.append((involved["name"], type_, reason))


def _item(name: str, spec: Any, rv: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 1, "resourceVersion": str(rv)}, "spec": spec}


def test_writer_writes_once_then_nothing_and_ignores_its_own_stale_echo():
    specs = {"fast": {}, "good": GOOD, "bad": {**GOOD, "peerAddress": "198.18.0.9", "bfdProfile": "x"}}
    kube, events = FakeKube(specs), FakeEvents()
    w = BgpStatusWriter(kube, events, Metrics(), now=lambda: T0)  # type: ignore[arg-type]
    w.listed("BFDProfile", [_item("fast", {})])
    w.listed("BGPPeer", [_item("good", GOOD), _item("bad", specs["bad"])])
    assert asyncio.run(w.flush()) == 0
    assert sorted(kube.patches) == ["/apis/lbctl.io/v1alpha1/bfdprofiles/fast/status",
                                    "/apis/lbctl.io/v1alpha1/bgppeers/bad/status",
                                    "/apis/lbctl.io/v1alpha1/bgppeers/good/status"]
    assert events.emitted == [("bad", "Warning", "Invalid")]
    w.seen("BGPPeer", "MODIFIED", _item("good", GOOD, rv=2))  # the watch replaying a version older than our write
    asyncio.run(w.flush())
    assert len(kube.patches) == 3 and len(events.emitted) == 1
    # a relist that brings the written statuses back (a restart): still nothing to write
    w2 = BgpStatusWriter(kube, events, Metrics(), now=lambda: T1)  # type: ignore[arg-type]
    objs = {k: v for k, v in w.objects.items()}
    for kind, items in objs.items():
        w2.listed(kind, [{"metadata": {"name": n, "generation": o.generation}, "spec": o.spec, "status": o.status}
                         for n, o in items.items()])
    asyncio.run(w2.flush())
    assert len(kube.patches) == 3 and len(events.emitted) == 1


class MissingCrdKube:
    """An API server without the BGPPeer CRD: every list answers 404 (then the informer would retry)."""

    def __init__(self, answers: list[tuple[str, Any]]) -> None:
        self.answers = answers

    async def informer(self, path: str, **params: Any):
        for answer in self.answers:
            yield answer


def test_a_kind_not_served_is_not_a_failing_watch():
    """`helm upgrade` adds no CRDs: without bgppeers the controller must stay healthy (layer 2 goes on), and
    start judging once the CRD appears."""
    from controller.informer import watch_bgp
    from lbctl.kube.client import ApiError
    from lbctl.kube.watch_health import WatchHealth

    writer, health = BgpStatusWriter(None, FakeEvents(), Metrics()), WatchHealth()  # type: ignore[arg-type]
    missing = ApiError(404, "NotFound", "the server could not find the requested resource")
    kube = MissingCrdKube([("ERROR", missing), ("ERROR", missing)])
    asyncio.run(watch_bgp(kube, "BGPPeer", writer, health))  # type: ignore[arg-type]
    assert health.worst() == 0 and not health.failing_since
    # a server error, then the server answers "no such kind": it is answering, so the watch is not failing
    kube = MissingCrdKube([("ERROR", ApiError(500, "InternalError", "etcd")), ("ERROR", missing)])
    asyncio.run(watch_bgp(kube, "BGPPeer", writer, health))  # type: ignore[arg-type]
    assert not health.failing_since
    asyncio.run(watch_bgp(MissingCrdKube([("SYNC", [_item("p", GOOD)])]), "BGPPeer", writer, health))  # type: ignore[arg-type]
    assert "p" in writer.objects["BGPPeer"]
