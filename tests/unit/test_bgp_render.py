"""lbctl.core.bgp_render: golden bird.conf texts, refusals that never render hostile text, and properties."""

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core.bgp_render import BfdProfile, BgpConfig, Export, Peer, RenderError, render

TOR_A = Peer(
    "tor-a", "198.18.0.1", 64500, source_address="198.18.0.2", hold_time_s=9, keepalive_time_s=3,
    password="s3cret", bfd=BfdProfile("fast", 100, 100, 3),
    exports=(Export("198.18.10.2/32", 200, ("65000:1", "large:64500:1:2", "no-export")),
             Export("198.18.10.1/32", 200, ("no-export", "large:64500:1:2", "65000:1")),
             Export("198.18.10.3/32")),
)

HEADER = """\
# Rendered by lbctl: the node's BGP speaker exports only. Do not edit: the speaker rewrites it.
router id {router_id};
log stderr { info, remote, warning, error, auth, fatal, bug };

# Interfaces and their addresses: needed to reach directly connected peers. Read-only.
protocol device lbctl_device {}
"""

GOLDEN_V4 = HEADER.replace("{router_id}", "198.18.0.2") + """\

# Session parameters come from each BGP protocol's bfd block.
protocol bfd lbctl_bfd {}

# Peer tor-a: what goes to it, with its attributes, in a table of its own.
ipv4 table peer_tor_a_t;
protocol static peer_tor_a_s {
  ipv4 { table peer_tor_a_t; };
  route 198.18.10.1/32 blackhole { bgp_local_pref = 200; bgp_community.add((65000, 1)); bgp_community.add((65535, 65281)); bgp_large_community.add((64500, 1, 2)); };
  route 198.18.10.2/32 blackhole { bgp_local_pref = 200; bgp_community.add((65000, 1)); bgp_community.add((65535, 65281)); bgp_large_community.add((64500, 1, 2)); };
  route 198.18.10.3/32 blackhole;
}

protocol bgp peer_tor_a {
  local 198.18.0.2 port 1790 as 64501;
  strict bind on;
  neighbor 198.18.0.1 port 179 as 64500;
  hold time 9;
  keepalive time 3;
  connect delay time 1;
  connect retry time 5;
  error wait time 1, 30;
  graceful restart off;
  password "s3cret";
  bfd { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; passive off; };
  ipv4 {
    table peer_tor_a_t;
    import none;  # export only: nothing a peer sends enters BIRD, let alone the node
    export all;  # its own table holds exactly what goes to this peer
    next hop self on;
  };
}
"""

GOLDEN_V6_MULTIHOP = HEADER.replace("{router_id}", "198.18.0.3") + """\

# Peer spine.1: what goes to it, with its attributes, in a table of its own.
ipv6 table peer_spine_1_t;
protocol static peer_spine_1_s {
  ipv6 { table peer_spine_1_t; };
  route 2001:db8:10::/64 blackhole { bgp_local_pref = 50; };
}

protocol bgp peer_spine_1 {
  local port 1790 as 4200000001;
  neighbor 2001:db8::1 port 1179 as 4200000000;
  multihop;
  hold time 90;
  connect delay time 1;
  connect retry time 5;
  error wait time 1, 30;
  graceful restart on;
  ipv6 {
    table peer_spine_1_t;
    import none;  # export only: nothing a peer sends enters BIRD, let alone the node
    export all;  # its own table holds exactly what goes to this peer
    next hop self on;
  };
}
"""


def test_golden_ipv4_peer_with_bfd_password_and_attributes():
    assert render(BgpConfig("198.18.0.2", 64501, (TOR_A,))) == GOLDEN_V4


def test_golden_ipv6_multihop_graceful_restart_four_byte_asn():
    peer = Peer("spine.1", "2001:db8::1", 4200000000, port=1179, ebgp_multihop=True, graceful_restart=True,
                exports=(Export("2001:db8:10::/64", 50),))
    assert render(BgpConfig("198.18.0.3", 4200000001, (peer,))) == GOLDEN_V6_MULTIHOP


def test_no_peers_is_a_valid_empty_config():
    text = render(BgpConfig("198.18.0.2", 64501))
    assert "protocol bgp" not in text and "protocol bfd" not in text


def test_export_only_no_kernel_protocol_and_every_channel_imports_nothing():
    text = render(BgpConfig("198.18.0.2", 64501, (TOR_A, Peer("b", "2001:db8::1", 1))))
    assert "protocol kernel" not in text
    assert text.count("import none;") == text.count("protocol bgp ") == 2
    # each channel exports only its peer's own table, which only its peer's static protocol fills
    assert text.count("export all;") == 2 and "master4" not in text and "master6" not in text


def test_long_kubernetes_names_fit_birds_symbols_and_stay_distinct():
    long_a, long_b = "a" * 200 + "-x", "a" * 200 + "-y"
    text = render(BgpConfig("198.18.0.2", 1, (Peer(long_a, "198.18.0.1", 2), Peer(long_b, "198.18.0.3", 2))))
    symbols = re.findall(r"^ipv\d table (\S+);$", text, re.M) + re.findall(r"^protocol \w+ (\S+) \{", text, re.M)
    assert len(symbols) == 7 and len(set(symbols)) == 7 and all(len(s) <= 64 for s in symbols), symbols
    # up to 57 characters a name is kept whole: its table and static protocol add 2 to BIRD's 64
    assert render(BgpConfig("198.18.0.2", 1, (Peer("a" * 57, "198.18.0.1", 2),))).count(
        f"protocol bgp peer_{'a' * 57} {{") == 1


def test_password_never_in_repr():
    assert "s3cret" not in repr(TOR_A)


HOSTILE = ["a\nprotocol kernel {", "a}", "a{", 'a"', "a;b", "a b", "", "-a", "a" * 254, "a\\b", "a#b", "a/b"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_peer_name_is_refused_not_rendered(name):
    with pytest.raises(RenderError, match="peer name"):
        render(BgpConfig("198.18.0.2", 1, (Peer(name, "198.18.0.1", 2),)))


@pytest.mark.parametrize("community", ["65000:1\n}", "65000:1}", "{65000:1}", "65000:1; accept", "65536:1",
                                       "1:65536", "large:1:2", "large:1:2:4294967296", "large:1:2:3}", "x",
                                       " 65000:1", "65000:1 ", "well-known"])
def test_hostile_or_malformed_community_is_refused(community):
    peer = Peer("a", "198.18.0.1", 2, exports=(Export("198.18.10.1/32", communities=(community,)),))
    with pytest.raises(RenderError, match="community") as err:
        render(BgpConfig("198.18.0.2", 1, (peer,)))
    assert "peer 'a'" in str(err.value)


def test_communities_given_as_a_string_are_refused():
    peer = Peer("a", "198.18.0.1", 2, exports=(Export("198.18.10.1/32", communities="65000:1"),))
    with pytest.raises(RenderError, match="must be a list"):
        render(BgpConfig("198.18.0.2", 1, (peer,)))


@pytest.mark.parametrize("password", ['a"b', "a\nb", "a\\b", "\t", "", "x" * 81, "é" * 41])
def test_unrenderable_password_is_refused_without_showing_it(password):
    peer = Peer("a", "198.18.0.1", 2, password=password)
    with pytest.raises(RenderError, match="password") as err:
        render(BgpConfig("198.18.0.2", 1, (peer,)))
    if password.strip():
        assert password not in str(err.value)


@pytest.mark.parametrize("peer,message", [
    (Peer("a", "198.18.0.1\n", 2), "peerAddress"),
    (Peer("a", "198.18.0.1", 0), "peerASN"),
    (Peer("a", "198.18.0.1", 2**32), "peerASN"),
    (Peer("a", "198.18.0.1", 2, port=0), "peerPort"),
    (Peer("a", "198.18.0.1", 2, hold_time_s=2), "holdTime"),
    (Peer("a", "198.18.0.1", 2, hold_time_s=9, keepalive_time_s=10), "exceeds holdTime"),
    (Peer("a", "198.18.0.1", 2, source_address="2001:db8::2"), "differ in family"),
    (Peer("a", "198.18.0.1", 2, exports=(Export("198.18.10.1/24"),)), "host bits"),
    (Peer("a", "198.18.0.1", 2, exports=(Export("198.18.10.1/32"), Export("198.18.10.1/32", 5))), "twice"),
    (Peer("a", "198.18.0.1", 2, exports=(Export("2001:db8::/64"),)), "a peer of its own family"),
    (Peer("a", "198.18.0.1", 2, exports=(Export("198.18.10.1/32", -1),)), "localPref"),
    (Peer("a", "198.18.0.1", 2, bfd=BfdProfile("p", echo_mode=True)), "echoMode"),
    (Peer("a", "198.18.0.1", 2, ebgp_multihop=True, source_address="198.18.0.2",
          bfd=BfdProfile("p", minimum_ttl=254)), "minimumTtl"),
    (Peer("a", "198.18.0.1", 2, bfd=BfdProfile("p", detect_multiplier=1)), "detectMultiplier"),
    (Peer("a", "198.18.0.1", 2, ebgp_multihop=True, bfd=BfdProfile("p")), "multihop BFD needs sourceAddress"),
    (Peer("a", "198.18.0.1", 2, bfd=BfdProfile("p\n}", 100)), "BFD profile name"),
    (Peer("a", "198.18.0.1", 2, bfd=BfdProfile("p", True)), "receiveInterval"),
])
def test_bad_peer_fields_are_refused_naming_the_field(peer, message):
    with pytest.raises(RenderError, match=message):
        render(BgpConfig("198.18.0.2", 1, (peer,)))


def test_router_id_must_be_ipv4_and_names_must_not_collide():
    with pytest.raises(RenderError, match="routerID"):
        render(BgpConfig("2001:db8::2", 1))
    with pytest.raises(RenderError, match="same name once rendered"):
        render(BgpConfig("198.18.0.2", 1, (Peer("a-b", "198.18.0.1", 2), Peer("a.b", "198.18.0.3", 2))))


def test_single_hop_minimum_ttl_is_satisfied_by_birds_255():
    peer = Peer("a", "198.18.0.1", 2, bfd=BfdProfile("p", minimum_ttl=254))
    assert "bfd {" in render(BgpConfig("198.18.0.2", 1, (peer,)))


# --- properties ---

_v4 = st.integers(0, 2**32 - 1).map(lambda i: ipaddress.IPv4Network((i, 32)))
_v6 = st.integers(0, 2**128 - 1).map(lambda i: ipaddress.IPv6Network((i, 128)))
_community = st.one_of(
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(*[st.integers(0, 2**32 - 1)] * 3).map(lambda t: "large:%d:%d:%d" % t),
    st.sampled_from(["no-export", "no-advertise"]))
_export = st.builds(lambda net, lp, comms: Export(str(net), lp, tuple(comms)), st.one_of(_v4, _v6),
                    st.none() | st.integers(0, 2**32 - 1), st.lists(_community, max_size=3))


@st.composite
def _configs(draw):
    names = draw(st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), min_size=1, max_size=4, unique=True))
    peers = []
    for i, name in enumerate(names):
        v6 = draw(st.booleans())
        exports = draw(st.lists(_export, max_size=12, unique_by=lambda e: e.prefix))
        peers.append(Peer(name, f"2001:db8::{i + 10:x}" if v6 else f"198.18.0.{i + 10}",
                          draw(st.integers(1, 2**32 - 1)),
                          exports=tuple(e for e in exports if (":" in e.prefix) == v6)))
    return BgpConfig("198.18.0.2", 64501, tuple(peers))


def _peer_blocks(text: str) -> dict[str, str]:
    return {m[1]: m[2] for m in re.finditer(r"^protocol bgp (\S+) \{\n(.*?)^\}$", text, re.M | re.S)}


@settings(max_examples=150, deadline=None)
@given(_configs(), st.randoms(use_true_random=False))
def test_rendering_is_deterministic_and_exports_each_prefix_once_per_peer(config, rnd):
    text = render(config)
    shuffled = list(config.peers)
    rnd.shuffle(shuffled)
    reordered = tuple(Peer(**{**p.__dict__, "exports": tuple(rnd.sample(p.exports, len(p.exports)))})
                      for p in shuffled)
    assert render(BgpConfig(config.router_id, config.local_asn, reordered)) == text
    blocks = _peer_blocks(text)
    assert len(blocks) == len(config.peers)
    for peer in config.peers:
        assert f"table peer_{peer.name}_t;" in blocks["peer_" + peer.name]
        static = re.search(rf"^protocol static peer_{peer.name}_s {{\n(.*?)^}}$", text, re.M | re.S)
        assert static, text
        rendered = re.findall(r"^  route (\S+) blackhole", static[1], re.M)
        assert sorted(rendered) == sorted(str(ipaddress.ip_network(e.prefix)) for e in peer.exports)
