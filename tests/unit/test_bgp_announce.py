"""lbctl.core.bgp_announce and the BGP intents of the model: which addresses a node advertises by BGP."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core.announce import ClusterModel, IpIntent
from lbctl.core.bgp_advertisements import Advertisement
from lbctl.core.bgp_announce import advertised, announcements, renderable, symbols
from lbctl.core.bgp_plan import plan
from lbctl.core.bgp_render import RenderError
from lbctl.core.bgppeers import parse_peer
from lbctl.core.election import EXCLUDE_LB_LABEL, NodeInfo
from lbctl.core.intent_index import IntentIndex
from lbctl.core.pools import parse_pool

from .test_intent_index import events
from .test_speaker_model import eps, node, pool, svc

BGP = {"advertisements": [{}]}


def bgp_pool(name: str, addresses: list[str], layer2: bool = True, bgp: Any = BGP) -> dict:
    obj = pool(name, addresses, None if layer2 else {"enabled": False})
    if bgp is not None:
        obj["spec"]["bgp"] = bgp
    return obj


def a_model(bgp: bool) -> ClusterModel:
    m = ClusterModel()
    m.bgp = bgp
    m.apply("Node", "SYNC", [node("a"), node("b")])
    m.apply("IPPool", "SYNC", [bgp_pool("both", ["198.18.20.0/24"]), bgp_pool("bgp", ["198.18.21.0/24"], False),
                               bgp_pool("l2", ["198.18.22.0/24"], bgp=None),
                               bgp_pool("none", ["198.18.23.0/24"], False, bgp=None)])
    m.apply("Service", "SYNC", [svc("both", ["198.18.20.1"]), svc("bgp", ["198.18.21.1"], etp="Local"),
                                svc("l2", ["198.18.22.1"]), svc("none", ["198.18.23.1"])])
    m.apply("EndpointSlice", "SYNC", [eps("bgp", ["b"])])
    return m


def test_bgp_only_pools_are_withheld_without_bgp_and_announced_by_bgp_only_with_it() -> None:
    off, on = a_model(False), a_model(True)
    assert set(off.intents(None)) == {"198.18.20.1", "198.18.22.1"}
    assert set(off.withheld(None)) == {"198.18.21.1", "198.18.23.1"}
    assert off.bgp_intents(None) == {}
    # With BGP on, the BGP-only pool is neither withheld nor elected for layer 2; a pool with neither stays withheld.
    assert set(on.intents(None)) == {"198.18.20.1", "198.18.22.1"}
    assert set(on.withheld(None)) == {"198.18.23.1"}
    bgp = on.bgp_intents(None)
    assert set(bgp) == {"198.18.20.1", "198.18.21.1"}
    assert bgp["198.18.21.1"].etp_local and bgp["198.18.21.1"].ready_nodes == {"b"}


def intents_for(m: ClusterModel) -> tuple[dict[str, IpIntent], dict, dict[str, NodeInfo]]:
    return m.bgp_intents(None), m.pools, m.nodes


def test_cluster_every_eligible_node_local_only_nodes_with_a_ready_endpoint() -> None:
    m = a_model(True)
    got = {n: [a.ip for a in announcements(n, *intents_for(m))] for n in ("a", "b", "gone")}
    assert got == {"a": ["198.18.20.1"], "b": ["198.18.20.1", "198.18.21.1"], "gone": []}  # unknown node: none
    m.apply("EndpointSlice", "SYNC", [])  # the last endpoint went: withdrawn from b too
    assert [a.ip for a in announcements("b", *intents_for(m))] == ["198.18.20.1"]
    m.apply("Node", "SYNC", [node("a", {EXCLUDE_LB_LABEL: ""}), node("b", unavailable=True)])
    assert announcements("a", *intents_for(m)) == [] and announcements("b", *intents_for(m)) == []


def test_advertised_names_the_peers_each_address_goes_to() -> None:
    peers = [parse_peer(n, {"myASN": 64512, "peerASN": 64513, "peerAddress": a})
             for n, a in (("tor1", "198.18.1.1"), ("tor2", "198.18.1.9"), ("tor6", "2001:db8::1"))]
    p = parse_pool("p", {"addresses": ["198.18.20.0/24"], "bgp": {"advertisements": [
        {"peers": ["tor1"]}, {"peers": ["tor2"], "aggregationLength": 24}]}}, "")
    intents = {"198.18.20.9": IpIntent("198.18.20.9", pool="p")}
    anns = announcements("a", intents, {"p": p}, {"a": NodeInfo("a")})
    config = plan({}, "198.18.1.2", peers, {}, anns).config
    assert advertised(config, anns) == [{"ip": "198.18.20.9", "peers": ["tor1", "tor2"]}]
    assert advertised(None, anns) == []
    assert symbols(config) == {"peer_tor1": "tor1", "peer_tor2": "tor2", "peer_tor6": "tor6"}


@settings(max_examples=300, deadline=None)
@given(st.lists(events(), max_size=40), st.lists(st.sampled_from(["p0", "p1"]), max_size=2), st.booleans())
def test_incremental_bgp_intents_equal_full_recompute(seq: list[tuple[str, str, Any]], bgp_pools: list[str],
                                                     l2_off: bool) -> None:
    index = IntentIndex(None)
    index.model.bgp = True
    for kind, event, obj in seq:
        if kind == "IPPool":  # some pools advertise by BGP, some of those by BGP only
            for o in obj if event == "SYNC" else [obj]:
                if o["metadata"]["name"] in bgp_pools:
                    o["spec"]["bgp"] = BGP
                    if l2_off:
                        o["spec"]["layer2"] = {"enabled": False}
        index.apply(kind, event, obj)
        assert index.bgp == index.model.bgp_intents(None)
        assert index.intents == index.model.intents(None)
        assert index.withheld == index.model.withheld(None)
        assert not set(index.bgp) & set(index.withheld)  # announced by BGP means not reported as withheld


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(1, 50), st.tuples(st.booleans(), st.frozensets(st.sampled_from("abc")),
                                                     st.booleans())),
       st.sampled_from("abc"))
def test_a_node_advertises_exactly_cluster_addresses_and_local_ones_it_serves(spec: dict, me: str) -> None:
    p = parse_pool("p", {"addresses": ["198.18.20.0/24"], "bgp": BGP}, "")
    q = parse_pool("q", {"addresses": ["198.18.21.0/24"]}, "")
    intents = {f"198.18.{20 + other}.{i}": IpIntent(f"198.18.{20 + other}.{i}", pool="q" if other else "p",
                                                     etp_local=local, ready_nodes=ready)
               for i, (local, ready, other) in spec.items()}
    got = {a.ip for a in announcements(me, intents, {"p": p, "q": q}, {n: NodeInfo(n) for n in "abc"})}
    assert got == {ip for ip, i in intents.items() if i.pool == "p" and (not i.etp_local or me in i.ready_nodes)}
    assert all(a.advertisements == p.bgp for a in announcements(me, intents, {"p": p, "q": q},
                                                                  {n: NodeInfo(n) for n in "abc"}))


def test_renderable_leaves_out_the_peers_the_renderer_refuses() -> None:
    good = parse_peer("good", {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.1.1"})
    bad = parse_peer("bad", {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.1.9",
                             "passwordSecret": {"name": "pw"}})
    got = renderable(plan({}, "198.18.1.2", [good, bad], {}, [], passwords={"bad": "with\"quote"}))
    assert got.config and [p.name for p in got.config.peers] == ["good"]
    assert got.skipped["bad"].startswith("cannot be rendered: peer 'bad': password")
    alone = renderable(plan({}, "198.18.1.2", [bad], {}, [], passwords={"bad": "with\"quote"}))
    assert alone.config is None and "bad" in alone.skipped
    with pytest.raises(RenderError):  # no peer to blame: the node has no IPv4 address for a router ID
        renderable(plan({}, "", [good], {}, []))
