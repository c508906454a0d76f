"""IntentIndex (bug 5): the intents and withheld addresses kept per changed object equal a full recompute
after any sequence of events, its reported changes cover every IP that changed, and an event for a Service
recomputes only that Service's IPs (10,000 Services: one event, one IP)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core.announce import ClusterModel, IpIntent
from lbctl.core.intent_index import IntentIndex

from .test_speaker_model import eps, node, pool, svc

IPS = ["198.18.0.1", "198.18.0.2", "198.18.1.1", "198.18.9.9", "2001:db8::1", "2001:DB8::0:1", "bogus"]
RANGES = ["198.18.0.0/24", "198.18.0.0/30", "198.18.1.0/24", "2001:db8::/120", "not-a-range"]
NODES = ["n0", "n1", "n2"]
SVC_NAMES = [("default", "s0"), ("default", "s1"), ("other", "s0"), ("other", "s2")]


def a_service(ns_name: tuple[str, str], ips: list[str], etp: str, lb_class: str | None, lb: bool) -> dict:
    obj = svc(ns_name[1], ips, etp=etp, lb_class=lb_class, ns=ns_name[0])
    if not lb:
        obj["spec"]["type"] = "ClusterIP"
    return obj


services = st.builds(a_service, st.sampled_from(SVC_NAMES), st.lists(st.sampled_from(IPS), min_size=1, max_size=3),
                     st.sampled_from(["Cluster", "Local"]), st.sampled_from([None, None, "mine", "theirs"]),
                     st.sampled_from([True, True, True, False]))


def a_slice(name: str, owner: tuple[str, str] | None, nodes: list[str], ready: bool | None) -> dict:
    obj = eps(owner[1] if owner else "x", nodes)
    obj["metadata"]["name"] = name
    obj["metadata"]["namespace"] = owner[0] if owner else "default"
    if owner is None:
        del obj["metadata"]["labels"]
    for ep in obj["endpoints"]:
        ep["conditions"] = {} if ready is None else {"ready": ready}
    return obj


slices = st.builds(a_slice, st.sampled_from(["e0", "e1", "e2"]), st.none() | st.sampled_from(SVC_NAMES),
                   st.lists(st.sampled_from(NODES), max_size=3), st.none() | st.booleans())


def a_pool(name: str, ranges: list[str], created: str, selector: str | None, unready: bool) -> dict:
    obj = pool(name, ranges, {"nodeSelector": {"matchLabels": {"zone": selector}}} if selector else None, created)
    if unready:
        obj["status"] = {"conditions": [{"type": "Ready", "status": "False", "message": "broken"}]}
    return obj


pools = st.builds(a_pool, st.sampled_from(["p0", "p1"]), st.lists(st.sampled_from(RANGES), min_size=1, max_size=2),
                  st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]), st.none() | st.just("x"),
                  st.booleans())
nodes = st.builds(lambda n, z: node(n, {"zone": z}), st.sampled_from(NODES), st.sampled_from(["x", "y"]))
OBJECTS = {"Service": services, "EndpointSlice": slices, "IPPool": pools, "Node": nodes}


@st.composite
def events(draw: Any) -> tuple[str, str, Any]:
    kind = draw(st.sampled_from(sorted(OBJECTS)))
    event = draw(st.sampled_from(["ADDED", "MODIFIED", "DELETED", "DELETED", "SYNC"]))
    if event == "SYNC":
        return kind, event, draw(st.lists(OBJECTS[kind], max_size=4))
    return kind, event, draw(OBJECTS[kind])


Snapshot = tuple[dict[str, IpIntent], dict[str, Any]]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from([None, "mine"]), st.lists(events(), max_size=40))
def test_incremental_equals_full_recompute(lb_class: str | None, seq: list[tuple[str, str, Any]]) -> None:
    index = IntentIndex(lb_class)
    before: Snapshot = ({}, {})
    for kind, event, obj in seq:
        index.apply(kind, event, obj)
        assert index.intents == index.model.intents(lb_class)
        assert index.withheld == index.model.withheld(lb_class)
        changes = index.take_changes()
        if changes is not None:  # every IP whose intent or withheld entry differs was reported
            moved = {ip for ip in index.intents.keys() | before[0].keys() if index.intents.get(ip) != before[0].get(ip)}
            moved |= {ip for ip in index.withheld.keys() | before[1].keys()
                      if index.withheld.get(ip) != before[1].get(ip)}
            assert moved <= changes
        before = (dict(index.intents), dict(index.withheld))


def big_index(n: int) -> IntentIndex:
    index = IntentIndex(None)
    index.apply("Node", "SYNC", [node(f"n{i}") for i in range(3)])
    index.apply("IPPool", "SYNC", [pool("p", ["198.18.0.0/16"])])
    index.apply("Service", "SYNC", [svc(f"s{i}", [f"198.18.{i >> 8}.{i & 255}"]) for i in range(n)])
    index.apply("EndpointSlice", "SYNC", [eps(f"s{i}", ["n0"]) for i in range(n)])
    assert len(index.intents) == n
    return index


def test_churn_recomputes_only_the_ips_of_the_changed_service() -> None:
    index = big_index(10_000)
    index.take_changes()
    start = index.recomputed
    per_event = []
    for i in range(0, 200, 2):  # a label change on one Service, a readiness flip on another's slice
        changed = svc(f"s{i}", [f"198.18.0.{i}"])
        changed["metadata"]["labels"] = {"churn": str(i)}
        mark = index.recomputed
        index.apply("Service", "MODIFIED", changed)
        per_event.append(index.recomputed - mark)
        mark = index.recomputed
        index.apply("EndpointSlice", "MODIFIED", eps(f"s{i + 1}", ["n1"]))
        per_event.append(index.recomputed - mark)
        assert index.take_changes() == {f"198.18.0.{i}", f"198.18.0.{i + 1}"}
    assert per_event == [1] * 200
    mark = index.recomputed
    index.apply("Node", "MODIFIED", node("n2", {"zone": "z"}))  # nodes are the election's business only
    assert index.recomputed == mark and index.take_changes() == set()
    assert index.recomputed - start == 200
    assert index.intents == index.model.intents(None)
