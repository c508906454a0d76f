"""The reconcile that skips its per-owned-IP tail (test_speaker_reconcile_cost.py) must leave exactly what the
full tail leaves: two real Speakers fed the same random events, one of them always running the whole tail;
after every step the announced set, the status body and every Event posted are the same."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lbctl.core.netifs import Interface
from lbctl.speaker.main import Speaker

from .test_speaker_model import eps, node, svc
from .test_speaker_reconcile_cost import ETH0, NODE, cluster_objects, speaker

N_MINE, N_OTHERS = 4, 8
ETH1 = Interface("eth1", 3, "02:00:00:00:00:02", frozenset({"UP", "LOWER_UP"}), "ether")


class FullTail(Speaker):
    def _tail_needed(self, *args: Any) -> bool:
        return True


def ip_of(where: str, i: int) -> str:
    return {"mine": f"198.18.64.{i}", "others": f"198.18.128.{i}", "outside": f"198.19.0.{i}"}[where]


names = st.sampled_from([f"m{i}" for i in range(N_MINE)] + [f"o{i}" for i in range(N_OTHERS)]
                        + ["new0", "new1", "lost"])
where = st.sampled_from(["mine", "others", "outside"])
steps = st.lists(st.one_of(
    st.tuples(st.just("label"), names, st.integers(0, 3)),
    st.tuples(st.just("move"), names, where, st.integers(0, 5), st.sampled_from(["Cluster", "Local"])),
    st.tuples(st.just("delete"), names),
    st.tuples(st.just("ready"), names, st.sampled_from([(), (NODE,), ("n1",), (NODE, "n2")])),
    st.tuples(st.just("node"), st.sampled_from([NODE, "n1", "n2"]), st.booleans()),
    st.tuples(st.just("live"), st.sets(st.sampled_from(["n1", "n2", "n3", "n4"]))),
    st.tuples(st.just("ifaces"), st.sampled_from(["same", "eth0", "both"])),
    st.tuples(st.just("garp"), st.integers(0, 5)),
), min_size=1, max_size=30)


def events_of(step: tuple) -> list[tuple[str, str, Any]]:
    kind = step[0]
    if kind == "label":
        home = {"m": "mine", "o": "others", "n": "others", "l": "outside"}[step[1][0]]
        obj = svc(step[1], [ip_of(home, 1 if step[1] == "lost" else int(step[1][-1]))])
        obj["metadata"]["labels"] = {"churn": str(step[2])}
        return [("Service", "MODIFIED", obj)]
    if kind == "move":
        return [("Service", "MODIFIED", svc(step[1], [ip_of(step[2], step[3])], etp=step[4]))]
    if kind == "delete":
        return [("Service", "DELETED", svc(step[1], []))]
    if kind == "ready":
        return [("EndpointSlice", "MODIFIED", eps(step[1], list(step[2])))]
    if kind == "node":
        return [("Node", "MODIFIED", node(step[1], {"bench-role": "other"} if step[2] else {}))]
    return []


def seen(sp: Speaker) -> dict[str, Any]:
    assert sp.status is not None
    return {"announced": sorted((a.ip, a.interface, a.mac, a.since, a.last_garp, a.services)
                                for a in sp.announcer.current.values()),
            "mine": sorted(sp._mine), "status": sp.status._want}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
@example(steps=[("move", "lost", "others", 1, "Cluster"), ("move", "lost", "outside", 1, "Cluster")])  # said again
def test_skipping_the_tail_changes_nothing(monkeypatch: pytest.MonkeyPatch, steps: list[tuple]) -> None:
    clock = {"t": 0}
    monkeypatch.setattr("lbctl.speaker.announcer.now_iso", lambda: f"t{clock['t']}")  # same stamps for both
    objects = cluster_objects(N_MINE, N_OTHERS)

    async def scenario() -> None:
        with speaker(monkeypatch, Speaker, objects) as (fast, fast_rec), \
                speaker(monkeypatch, FullTail, objects) as (full, full_rec):
            pair = ((fast, fast_rec), (full, full_rec))
            for sp, _ in pair:
                sp.reconcile(1000.0)
            for n, step in enumerate(steps, 1):
                clock["t"] = n
                for sp, _ in pair:
                    for kind, event, obj in events_of(step):
                        sp.source.index.apply(kind, event, obj)  # type: ignore[union-attr]
                    if step[0] == "live":
                        sp.peers["now"] = {NODE, *step[1]}  # type: ignore[attr-defined]
                    if step[0] == "ifaces":  # a re-read replaces the list, even with the same content
                        sp.interfaces.candidates = {"same": list(sp.interfaces.candidates), "eth0": [ETH0],
                                                    "both": [ETH0, ETH1]}[step[1]]
                    if step[0] == "garp":
                        sp.announcer.defend(ip_of("mine", step[1]))
                    sp.reconcile(1000.0 + n)
                assert seen(fast) == seen(full), f"after step {n}: {step}"
                assert fast_rec.emitted == full_rec.emitted, f"after step {n}: {step}"

    asyncio.run(scenario())
