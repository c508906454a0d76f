"""lbctl.core.bgp_plan: which peers a node's daemon talks to and which prefixes go to each."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core.bfdprofiles import parse_bfd_profile
from lbctl.core.bgp_advertisements import Advertisement
from lbctl.core.bgp_plan import Announcement, plan
from lbctl.core.bgp_render import render
from lbctl.core.bgppeers import parse_peer

NODE = {"kubernetes.io/hostname": "node1", "rack": "a"}


def peer(name: str, **spec):
    return parse_peer(name, {"myASN": 64513, "peerASN": 64512, "peerAddress": "198.18.0.1", **spec})


def test_peers_are_chosen_per_node_and_the_rest_say_why() -> None:
    peers = [peer("tor-a", nodeSelectors=[{"matchLabels": {"rack": "a"}}]),
             peer("tor-c", peerAddress="198.18.0.8"),
             peer("tor-b", peerAddress="198.18.0.2", nodeSelectors=[{"matchLabels": {"rack": "b"}}]),
             peer("secret", peerAddress="198.18.0.3", passwordSecret={"name": "pw"}),
             peer("echo", peerAddress="198.18.0.4", bfdProfile="echo"),
             peer("nobfd", peerAddress="198.18.0.5", bfdProfile="gone"),
             peer("other-asn", peerAddress="198.18.0.6", myASN=65000),
             peer("bad", peerAddress="198.18.0.7")]
    profiles = {"echo": parse_bfd_profile("echo", {"echoMode": True})}
    got = plan(NODE, "198.18.0.21", peers, profiles, [], invalid={"bad": "duplicate of tor-a"})
    assert got.config and [p.name for p in got.config.peers] == ["tor-a", "tor-c"]
    assert got.config.local_asn == 64513 and got.config.router_id == "198.18.0.21"
    assert got.skipped == {
        "tor-b": "its nodeSelectors do not select this node",
        "secret": "its password Secret pw could not be read",
        "echo": "its BFDProfile echo asks for echo mode, which BIRD does not have",
        "nobfd": "its BFDProfile gone does not exist",
        "other-asn": "myASN 65000 differs from 64513 (BGPPeer tor-a) on this node",  # the majority's ASN wins
        "bad": "the BGPPeer is invalid: duplicate of tor-a"}
    with_pw = plan(NODE, "198.18.0.21", peers[3:4], {}, [], passwords={"secret": "s3cret"})
    assert with_pw.config and with_pw.config.peers[0].password == "s3cret"
    assert plan(NODE, "198.18.0.21", peers[2:3], {}, []).config is None  # no peer for this node: no daemon config


def test_exports_follow_the_advertisements() -> None:
    v4, v6 = peer("tor"), peer("tor6", peerAddress="2001:db8::1")
    anns = [Announcement("198.18.0.50", (Advertisement(local_pref=200, communities=("65000:1",)),
                                         Advertisement(peers=("tor",), aggregation_length=24))),
            Announcement("198.18.0.51", (Advertisement(peers=("elsewhere",)),)),
            Announcement("198.18.0.52", (Advertisement(node_selectors=({"matchLabels": {"rack": "b"}},)),)),
            Announcement("2001:db8:18::50", (Advertisement(aggregation_length_v6=64),))]
    got = plan(NODE, "198.18.0.21", [v4, v6], {}, anns).config
    assert got
    by_peer = {p.name: p.exports for p in got.peers}
    assert [(e.prefix, e.local_pref, e.communities) for e in by_peer["tor"]] == [
        ("198.18.0.0/24", None, ()), ("198.18.0.50/32", 200, ("65000:1",))]
    assert [e.prefix for e in by_peer["tor6"]] == ["2001:db8:18::/64"]  # each session carries its own family
    assert "protocol bgp" in render(got)  # the renderer takes the plan as it is


def test_multihop_bfd_keeps_only_a_minimum_ttl_that_was_asked_for() -> None:
    profiles = {"fast": parse_bfd_profile("fast", {"receiveInterval": 100, "transmitInterval": 100})}
    hop = peer("far", ebgpMultiHop=True, bfdProfile="fast", sourceAddress="198.18.0.21")
    got = plan(NODE, "198.18.0.21", [hop], profiles, []).config
    assert got and got.peers[0].bfd and got.peers[0].bfd.minimum_ttl is None
    render(got)  # BIRD would refuse a minimum TTL on a multihop session; none is asked for here
    near = plan(NODE, "198.18.0.21", [peer("near", bfdProfile="fast")], profiles, []).config
    assert near and near.peers[0].bfd and near.peers[0].bfd.minimum_ttl == 254


ips = st.one_of(st.ip_addresses(v=4, network="198.18.0.0/16"), st.ip_addresses(v=6, network="2001:db8::/32"))
advs = st.builds(Advertisement, peers=st.sampled_from([(), ("tor",), ("tor6",), ("x",)]),
                 aggregation_length=st.integers(16, 32), aggregation_length_v6=st.integers(48, 128))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ips, st.lists(advs, min_size=1, max_size=3)), max_size=12))
def test_every_export_covers_an_announced_address_of_its_family_once(items) -> None:
    anns = [Announcement(str(ip), tuple(a)) for ip, a in items]
    got = plan(NODE, "198.18.0.21", [peer("tor"), peer("tor6", peerAddress="2001:db8::1")], {}, anns).config
    assert got
    for p in got.peers:
        family = ipaddress.ip_address(p.address).version
        prefixes = [e.prefix for e in p.exports]
        assert len(prefixes) == len(set(prefixes))
        for e in p.exports:
            net = ipaddress.ip_network(e.prefix)
            assert net.version == family
            assert any(ipaddress.ip_address(a.ip) in net for a in anns)
        # ...and every address announced to this peer is covered by one of them.
        for a in anns:
            ip = ipaddress.ip_address(a.ip)
            if ip.version == family and any(not adv.peers or p.name in adv.peers for adv in a.advertisements):
                assert any(ip in ipaddress.ip_network(x) for x in prefixes)
    render(got)
