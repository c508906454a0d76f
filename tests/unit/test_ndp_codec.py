"""NDP codec, checked against scapy's ICMPv6 ND layers."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptSrcLLAddr,
)

from lbctl.core.ndp import (
    ALL_NODES,
    UNSPECIFIED,
    NeighborSolicitation,
    build_neighbor_advertisement,
    icmp6_filter_only,
    parse_neighbor_solicitation,
    solicited_node_multicast,
)

VIP = "2001:db8::100"
PEER_MAC = "02:00:00:00:00:01"
OUR_MAC = "02:00:00:00:00:aa"


def ip6(s: str) -> bytes:
    return ipaddress.IPv6Address(s).packed


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def ns(target: str = VIP, lladdr: str | None = PEER_MAC, **kw) -> bytes:
    pkt = ICMPv6ND_NS(tgt=target, **kw)
    if lladdr is not None:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=lladdr)
    return bytes(pkt)


def test_parse_scapy_ns():
    assert parse_neighbor_solicitation(ns(), 255) == NeighborSolicitation(ip6(VIP), mac(PEER_MAC))


def test_parse_without_slla_and_unknown_options():
    assert parse_neighbor_solicitation(ns(lladdr=None), 255) == NeighborSolicitation(ip6(VIP), None)
    with_mtu = bytes(ICMPv6ND_NS(tgt=VIP) / ICMPv6NDOptMTU() / ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC))
    assert parse_neighbor_solicitation(with_mtu, None) == NeighborSolicitation(ip6(VIP), mac(PEER_MAC))


def test_dad_from_unspecified_source():
    assert parse_neighbor_solicitation(ns(lladdr=None), 255, source=UNSPECIFIED) is not None
    assert parse_neighbor_solicitation(ns(), 255, source=UNSPECIFIED) is None  # RFC 4861 §7.1.1


@pytest.mark.parametrize(
    "payload,hop",
    [
        (ns(), 64),  # may have been routed
        (ns(), 254),
        (ns(code=1), 255),
        (ns(target="ff02::1"), 255),
        (bytes(ICMPv6ND_NA(tgt=VIP)), 255),
        (bytes(ICMPv6EchoRequest()), 255),
        (ns() [:-8] + b"\x01\x00" + bytes(6), 255),  # option length 0
        (ns() + b"\x01", 255),  # dangling option byte
        (ns(lladdr=None) + b"\x01\x02" + bytes(6), 255),  # option claims 16 bytes, has 8
        (b"", None),
    ],
)
def test_parse_rejects(payload, hop):
    assert parse_neighbor_solicitation(payload, hop) is None


def test_every_truncation_is_rejected_or_option_free():
    payload = ns()
    for n in range(len(payload)):
        got = parse_neighbor_solicitation(payload[:n], 255)
        # Exactly the header without options is itself a valid NS.
        assert got is None or (n == 24 and got.source_lladdr is None)


@settings(max_examples=500)
@given(st.binary(max_size=96), st.one_of(st.none(), st.integers(0, 255)))
def test_garbage_never_raises(data, hop):
    parse_neighbor_solicitation(data, hop)
    parse_neighbor_solicitation(memoryview(data), hop, source=UNSPECIFIED)


@given(st.binary(min_size=24, max_size=24).map(lambda b: b"\x87\x00" + b[2:]), st.binary(max_size=40))
def test_fuzzed_ns_headers_with_garbage_options_never_raise(head, opts):
    parse_neighbor_solicitation(head + opts, 255)


def without_checksum(b: bytes) -> bytes:
    return b[:2] + b"\x00\x00" + b[4:]


@pytest.mark.parametrize("solicited,override", [(True, True), (False, True), (True, False), (False, False)])
def test_na_matches_scapy(solicited, override):
    ours = build_neighbor_advertisement(ip6(VIP), mac(OUR_MAC), solicited, override)
    ref = ICMPv6ND_NA(tgt=VIP, R=0, S=int(solicited), O=int(override)) / ICMPv6NDOptDstLLAddr(lladdr=OUR_MAC)
    assert ours == without_checksum(bytes(ref))
    assert ours[2:4] == b"\x00\x00"  # the kernel fills it on raw ICMPv6 sockets
    pkt = ICMPv6ND_NA(ours)
    assert (pkt.type, pkt.code, pkt.R, pkt.S, pkt.O, pkt.tgt) == (136, 0, 0, int(solicited), int(override), VIP)
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == OUR_MAC


def test_na_rejects_wrong_sizes():
    with pytest.raises(ValueError):
        build_neighbor_advertisement(bytes(4), mac(OUR_MAC), True)
    with pytest.raises(ValueError):
        build_neighbor_advertisement(ip6(VIP), bytes(5), True)


def test_solicited_node_multicast():
    assert solicited_node_multicast(ip6("2001:db8::1:2a3b:4c5d")) == ip6("ff02::1:ff3b:4c5d")
    assert solicited_node_multicast(ip6(VIP)) == ip6("ff02::1:ff00:100")
    assert ALL_NODES == ip6("ff02::1")
    with pytest.raises(ValueError):
        solicited_node_multicast(bytes(4))


def will_pass(filt: bytes, typ: int) -> bool:
    """ICMP6_FILTER_WILLPASS from glibc <netinet/icmp6.h>: the type's bit is clear."""
    words = struct.unpack("=8I", filt)
    return not words[typ >> 5] & (1 << (typ & 31))


def test_icmp6_filter():
    f = icmp6_filter_only(135)
    assert len(f) == 32
    assert [t for t in range(256) if will_pass(f, t)] == [135]
    f2 = icmp6_filter_only(135, 136, 0, 255)
    assert [t for t in range(256) if will_pass(f2, t)] == [0, 135, 136, 255]
    assert icmp6_filter_only() == b"\xff" * 32
    with pytest.raises(ValueError):
        icmp6_filter_only(256)


def test_probe_solicitation_and_advertisement_match_scapy():
    import ipaddress

    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr

    from lbctl.core.ndp import build_neighbor_solicitation, parse_neighbor_advertisement
    target = ipaddress.IPv6Address("2001:db8:18::50").packed
    ns = ICMPv6ND_NS(build_neighbor_solicitation(target, bytes.fromhex("020000000001")))
    assert ns.tgt == "2001:db8:18::50" and ns[ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:00:00:01"
    na = bytes(ICMPv6ND_NA(tgt="2001:db8:18::50", S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:22"))
    assert parse_neighbor_advertisement(na) == (target, bytes.fromhex("020000000022"))
    assert all(parse_neighbor_advertisement(na[:n]) in (None, (target, None)) for n in range(len(na)))
    assert parse_neighbor_advertisement(bytes(ns)) is None


def test_foreign_advertisement_of_an_owned_target() -> None:
    from lbctl.core.ndp import foreign_advertisement

    owned = {ip6(VIP)}
    rogue = bytes(ICMPv6ND_NA(tgt=VIP, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:66"))
    assert foreign_advertisement(rogue, owned, mac(OUR_MAC)) == (ip6(VIP), mac("02:00:00:00:00:66"))
    ours = bytes(ICMPv6ND_NA(tgt=VIP, O=1) / ICMPv6NDOptDstLLAddr(lladdr=OUR_MAC))
    other = bytes(ICMPv6ND_NA(tgt="2001:db8::101", O=1) / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:66"))
    no_tlla = bytes(ICMPv6ND_NA(tgt=VIP, O=1))
    group = bytes(ICMPv6ND_NA(tgt=VIP, O=1) / ICMPv6NDOptDstLLAddr(lladdr="33:33:00:00:00:01"))
    for payload in (ours, other, no_tlla, group, ns(), rogue[:23], b""):
        assert foreign_advertisement(payload, owned, mac(OUR_MAC)) is None
    assert icmp6_filter_only(135, 136) != icmp6_filter_only(135)
