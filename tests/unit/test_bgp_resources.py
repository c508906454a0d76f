"""BGPPeer, BFDProfile and IPPool spec.bgp parsing: defaults, the checks openAPI cannot make, and that
arbitrary JSON only ever raises BGPError."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lbctl.core.bfdprofiles import BFDProfile, parse_bfd_profile
from lbctl.core.bgp_advertisements import Advertisement, parse_advertisements, unknown_peers
from lbctl.core.bgp_fields import BGPError, parse_community, parse_duration
from lbctl.core.bgppeers import BGPPeer, SecretRef, judge_peers, parse_peer
from lbctl.core.pools import parse_pool
from lbctl.core.ranges import parse_range

PEER = {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.0.1"}


def test_peer_defaults_follow_metallb():
    assert parse_peer("tor", PEER) == BGPPeer("tor", 64512, 64513, "198.18.0.1", peer_port=179, hold_time=90,
                                              keepalive_time=30, ebgp_multihop=False, graceful_restart=False)


def test_peer_all_fields():
    peer = parse_peer("tor6", {**PEER, "peerAddress": "2001:DB8::1", "peerPort": 1790, "sourceAddress": "2001:db8::2",
                               "holdTime": "1m30s", "keepaliveTime": "10s", "routerID": "198.18.0.9",
                               "ebgpMultiHop": True, "passwordSecret": {"name": "tor-pw", "namespace": "lbctl-system"},
                               "nodeSelectors": [{"matchLabels": {"rack": "a"}}], "bfdProfile": "fast",
                               "enableGracefulRestart": True})
    assert (peer.peer_address, peer.family, peer.hold_time, peer.keepalive_time) == ("2001:db8::1", 6, 90, 10)
    assert peer.password_secret == SecretRef("tor-pw", "lbctl-system") and peer.bfd_profile == "fast"
    assert peer.node_selectors == ({"matchLabels": {"rack": "a"}},) and peer.graceful_restart and peer.ebgp


@pytest.mark.parametrize("spec,named", [
    ({"peerASN": 1, "peerAddress": "198.18.0.1"}, "spec.myASN is required"),
    ({**PEER, "myASN": 0}, "spec.myASN must be an integer from 1 to 4294967295"),
    ({**PEER, "peerASN": 4294967296}, "spec.peerASN must be an integer from 1"),
    ({**PEER, "peerAddress": "198.18.0.0/24"}, "spec.peerAddress must be an IP address"),
    ({**PEER, "peerPort": 0}, "spec.peerPort must be an integer from 1 to 65535"),
    ({**PEER, "sourceAddress": "2001:db8::1"}, "spec.sourceAddress must be an IPv4 address"),
    ({**PEER, "routerID": "2001:db8::1"}, "spec.routerID must be an IPv4 address"),
    ({**PEER, "holdTime": "2s"}, "spec.holdTime must be 0 or from 3s to 65535s"),
    ({**PEER, "holdTime": "90"}, "spec.holdTime must be a duration"),
    ({**PEER, "holdTime": "1.5s"}, "spec.holdTime must be whole seconds"),
    ({**PEER, "holdTime": "9s", "keepaliveTime": "9s"}, "spec.keepaliveTime (9s) must be at least 1s and less than"),
    ({**PEER, "holdTime": "0s", "keepaliveTime": "3s"}, "spec.keepaliveTime (3s) must be 0 when spec.holdTime is 0"),
    ({**PEER, "password": "secret"}, "spec.password is not a field"),
    ({**PEER, "passwordSecret": {"name": "Bad_Name"}}, "spec.passwordSecret.name must be a Kubernetes object name"),
    ({**PEER, "nodeSelectors": [{"matchExpressions": [{"key": "a", "operator": "In"}]}]},
     "spec.nodeSelectors[0].matchExpressions[0] (In) needs values"),
    ({**PEER, "nodeSelectors": {"matchLabels": {}}}, "spec.nodeSelectors must be a list of label selectors"),
    ({**PEER, "ebgpMultiHop": "yes"}, "spec.ebgpMultiHop must be true or false"),
])
def test_peer_errors_name_the_field(spec, named):
    with pytest.raises(BGPError, match="^" + re.escape(named)):
        parse_peer("tor", spec)


def test_hold_zero_means_no_keepalive():
    assert parse_peer("p", {**PEER, "holdTime": "0"}).keepalive_time == 0


def test_judge_peers_duplicates_and_missing_bfd_profile():
    verdicts = judge_peers([("b", PEER), ("a", PEER), ("c", {**PEER, "bfdProfile": "fast"}),
                            ("d", {**PEER, "peerAddress": "198.18.0.2", "bfdProfile": "fast"}),
                            ("e", {**PEER, "peerPort": 1790}), ("f", {**PEER, "myASN": 0})], bfd_profiles=["fast"])
    assert verdicts["a"].ready and verdicts["d"].ready and verdicts["e"].ready
    assert not verdicts["b"].ready and "duplicates BGPPeer a" in verdicts["b"].message
    assert not verdicts["c"].ready and "duplicates BGPPeer a" in verdicts["c"].message
    assert verdicts["f"].reason == "Invalid" and "spec.myASN" in verdicts["f"].message
    assert "no BFDProfile named 'slow'" in judge_peers([("x", {**PEER, "bfdProfile": "slow"})])["x"].message


def test_same_router_from_disjoint_racks_is_no_duplicate():
    rack = lambda r: {**PEER, "nodeSelectors": [{"matchLabels": {"rack": r}}]}  # noqa: E731
    verdicts = judge_peers([("a", rack("1")), ("b", rack("2")), ("c", rack("1"))])
    assert verdicts["a"].ready and verdicts["b"].ready and not verdicts["c"].ready


def test_bfd_profile_defaults_and_bounds():
    assert parse_bfd_profile("default", {}) == BFDProfile("default", 300, 300, 3, 50, False, False, 254)
    fast = parse_bfd_profile("fast", {"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3,
                                      "echoMode": True, "minimumTtl": 250})
    assert fast.detect_time_ms == 300 and fast.echo_mode
    for spec, named in (({"receiveInterval": 9}, "spec.receiveInterval must be an integer from 10 to 60000"),
                        ({"detectMultiplier": 1}, "spec.detectMultiplier must be an integer from 2 to 255"),
                        ({"minimumTtl": 255}, "spec.minimumTtl must be an integer from 1 to 254"),
                        ({"passiveMode": 1}, "spec.passiveMode must be true or false")):
        with pytest.raises(BGPError, match="^" + re.escape(named)):
            parse_bfd_profile("p", spec)


@pytest.mark.parametrize("text,canonical", [
    ("65000:100", "65000:100"), ("large:4200000000:1:2", "large:4200000000:1:2"), ("no-export", "65535:65281"),
    ("NO-ADVERTISE", "65535:65282"), ("no-peer", "65535:65284"), ("graceful-shutdown", "65535:0"),
    ("blackhole", "65535:666"), ("local-as", "65535:65283")])
def test_communities(text, canonical):
    assert parse_community(text, "c") == canonical


@pytest.mark.parametrize("bad", ["65536:1", "1:2:3", "large:1:2", "large:1:2:4294967296", "1_0:1", " ", 7, None])
def test_bad_communities(bad):
    with pytest.raises(BGPError, match="^c must be"):
        parse_community(bad, "c")


def test_durations():
    assert parse_duration("1h2m3s", "d") == 3723 and parse_duration("0", "d") == 0
    assert parse_duration("1500ms", "d") == 1.5


def test_pool_bgp_and_layer2_flags():
    old = parse_pool("a", {"addresses": ["198.18.0.0/28"]})
    assert old.layer2_enabled and old.bgp == () and not old.error
    pool = parse_pool("b", {"addresses": ["198.18.1.0/28", "2001:db8::/124"], "layer2": {"enabled": False},
                            "bgp": {"advertisements": [
                                {}, {"peers": ["tor", "tor"], "aggregationLength": 28, "aggregationLengthV6": 124,
                                     "localPref": 100, "communities": ["65000:1", "no-export", "large:1:2:3"],
                                     "nodeSelectors": [{"matchLabels": {"rack": "a"}}]}]}})
    assert not pool.error and not pool.layer2_enabled
    assert pool.bgp == (Advertisement(), Advertisement(("tor",), 28, 124, 100, ("65000:1", "65535:65281",
                                                                                  "large:1:2:3"),
                                                       ({"matchLabels": {"rack": "a"}},)))
    assert unknown_peers(pool.bgp, ["other"]) == ["spec.bgp.advertisements[1].peers names 'tor', which is not a BGPPeer"]


@pytest.mark.parametrize("spec,named", [
    ({"addresses": ["198.18.1.0/28"], "bgp": {"advertisements": [{"aggregationLength": 24}]}},
     "spec.bgp.advertisements[0].aggregationLength (24) is shorter than the pool's 198.18.1.0/28"),
    ({"addresses": ["198.18.1.1-198.18.1.2"], "bgp": {"advertisements": [{"aggregationLength": 31}]}},
     "spec.bgp.advertisements[0].aggregationLength (31) is shorter than the pool's 198.18.1.1/32"),
    ({"addresses": ["2001:db8::/120"], "bgp": {"advertisements": [{"aggregationLengthV6": 64}]}},
     "spec.bgp.advertisements[0].aggregationLengthV6 (64)"),
    ({"addresses": ["198.18.1.0/28"], "bgp": {"advertisements": [{"aggregationLength": 33}]}},
     "spec.bgp.advertisements[0].aggregationLength must be an integer from 0 to 32"),
    ({"addresses": ["198.18.1.0/28"], "bgp": {"advertisements": [{"communities": ["65000"]}]}},
     "spec.bgp.advertisements[0].communities[0] must be"),
    ({"addresses": ["198.18.1.0/28"], "bgp": {"advertisements": [{"serviceSelectors": []}]}},
     "spec.bgp.advertisements[0].serviceSelectors is not a field"),
    ({"addresses": ["198.18.1.0/28"], "layer2": {"enabled": "no"}}, "spec.layer2.enabled must be true or false"),
])
def test_pool_bgp_errors_name_the_field(spec, named):
    assert parse_pool("p", spec).error.startswith(named)


def test_aggregation_may_cover_a_whole_pool():
    (adv,) = parse_advertisements({"advertisements": [{"aggregationLength": 24}]}, [parse_range("198.18.0.0/24")])
    assert adv.aggregation_length == 24


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                    max_leaves=20)
KEYS = st.sampled_from(["myASN", "peerASN", "peerAddress", "peerPort", "sourceAddress", "holdTime", "keepaliveTime",
                        "routerID", "ebgpMultiHop", "passwordSecret", "nodeSelectors", "bfdProfile",
                        "enableGracefulRestart", "receiveInterval", "detectMultiplier", "echoMode", "minimumTtl",
                        "advertisements", "peers", "aggregationLength", "communities", "localPref", "matchLabels",
                        "matchExpressions", "name", "namespace", "key", "operator", "values"])
SPECS = JSON | st.recursive(JSON, lambda inner: st.dictionaries(KEYS, inner, max_size=6) | st.lists(inner, max_size=3),
                            max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(name=JSON | st.just("p"), spec=SPECS)
def test_parsers_raise_only_their_own_error_on_arbitrary_json(name, spec):
    for parse in (parse_peer, parse_bfd_profile):
        try:
            parse(name, spec)
        except BGPError:
            pass
    try:
        parse_advertisements(spec, [parse_range("198.18.0.0/28")])
    except BGPError:
        pass
    parse_pool("p", {"addresses": ["198.18.0.0/28"], "bgp": spec, "layer2": spec})  # errors land in .error


# Selector-shaped junk: the right keys with values of any type, where a parser might index or iterate.
EXPRESSIONS = st.lists(st.dictionaries(st.sampled_from(["key", "operator", "values"]),
                                       JSON | st.sampled_from(["In", "Exists", "k"]) | st.lists(JSON, max_size=2),
                                       max_size=3), max_size=2)
SELECTORS = st.lists(JSON | st.dictionaries(st.sampled_from(["matchLabels", "matchExpressions"]),
                                            JSON | EXPRESSIONS, max_size=2), max_size=2)


@settings(max_examples=300, deadline=None)
@given(spec=st.fixed_dictionaries({"myASN": JSON | st.integers(0, 2**33), "peerASN": st.integers(1, 2**32),
                                   "peerAddress": st.sampled_from(["198.18.0.1", "2001:db8::1", "x"])},
                                  optional={**{k: SPECS for k in ("holdTime", "keepaliveTime", "passwordSecret",
                                                                  "sourceAddress")}, "nodeSelectors": SELECTORS}),
       adv=st.fixed_dictionaries({}, optional={"nodeSelectors": SELECTORS, "communities": st.lists(JSON, max_size=2),
                                               "peers": st.lists(JSON, max_size=2)}))
@example(spec={**PEER, "nodeSelectors": [{"matchExpressions": 5}]}, adv={"nodeSelectors": [{"matchExpressions": True}]})
@example(spec={**PEER, "nodeSelectors": [{"matchExpressions": [{"key": "k", "operator": "In", "values": 3}]}]},
         adv={"nodeSelectors": [{"matchLabels": {"a": 1}, "matchExpressions": [7]}]})
def test_parsers_on_near_valid_specs(spec, adv):
    try:
        parse_peer("p", spec)
    except BGPError:
        pass
    try:
        parse_advertisements({"advertisements": [adv]})
    except BGPError:
        pass
