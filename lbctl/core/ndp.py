"""NDP codec for the L2 speaker: neighbour solicitations in, neighbour advertisements out.

Payloads are ICMPv6 messages as a raw IPPROTO_ICMPV6 socket delivers them: no IPv6 header, checksum
already verified by the kernel on receive and filled in by it on send. Parsers never raise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ICMPV6_NS = 135
ICMPV6_NA = 136
ICMP6_FILTER = 1  # sockopt at level IPPROTO_ICMPV6; Python does not export it
OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
NDP_HOP_LIMIT = 255  # RFC 4861 §7.1.1: anything else may have crossed a router

NA_FLAG_ROUTER = 0x80000000
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000

ALL_NODES = b"\xff\x02" + b"\x00" * 13 + b"\x01"
UNSPECIFIED = b"\x00" * 16

_HEAD = struct.Struct("!BBHI16s")  # type code checksum reserved/flags target
_NA = struct.Struct("!BBHI16sBB6s")  # ... plus one target link-layer address option


@dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    target: bytes  # 16 bytes
    source_lladdr: bytes | None  # 6 bytes, or None when absent (always absent for DAD)


def parse_neighbor_solicitation(
    payload: bytes | bytearray | memoryview, hop_limit: int | None, source: bytes | None = None
) -> NeighborSolicitation | None:
    """Validate per RFC 4861 §7.1.1; None for anything invalid.

    hop_limit is from IPV6_HOPLIMIT ancillary data (None when the shell could not get it). source is
    the IPv6 source if known; then a DAD solicitation (source ::) carrying an SLLA is dropped too.
    """
    if hop_limit is not None and hop_limit != NDP_HOP_LIMIT:
        return None
    if len(payload) < _HEAD.size:
        return None
    try:
        typ, code, _cksum, _reserved, target = _HEAD.unpack_from(payload)
        data = bytes(payload[_HEAD.size :])
    except (struct.error, TypeError):
        return None
    if typ != ICMPV6_NS or code != 0 or target[0] == 0xFF:
        return None
    lladdr = None
    off = 0
    while off < len(data):
        if off + 2 > len(data):
            return None
        otype, olen = data[off], data[off + 1] * 8
        if olen == 0 or off + olen > len(data):  # zero length would loop forever; RFC says drop
            return None
        if otype == OPT_SOURCE_LLADDR and lladdr is None and olen >= 8:
            lladdr = data[off + 2 : off + 8]  # Ethernet: 6 bytes, rest (if any) is padding
        off += olen
    if source == UNSPECIFIED and lladdr is not None:
        return None
    return NeighborSolicitation(target, lladdr)


def build_neighbor_advertisement(target: bytes, our_mac: bytes, solicited: bool, override: bool = True) -> bytes:
    """NA with a TLLA option and checksum 0 (the kernel computes it on raw ICMPv6 sockets).

    Solicited replies go unicast to the soliciter with S set; unsolicited ones (takeover, answers
    to DAD) go to ALL_NODES with S clear, per RFC 4861 §7.2.4.
    """
    if len(target) != 16 or len(our_mac) != 6:
        raise ValueError("need a 16-byte IPv6 target and a 6-byte MAC")
    flags = (NA_FLAG_SOLICITED if solicited else 0) | (NA_FLAG_OVERRIDE if override else 0)
    return _NA.pack(ICMPV6_NA, 0, 0, flags, target, OPT_TARGET_LLADDR, 1, our_mac)


def solicited_node_multicast(ip: bytes) -> bytes:
    """ff02::1:ffXX:XXXX, the group an NS for `ip` is sent to (RFC 4291 §2.7.1)."""
    if len(ip) != 16:
        raise ValueError("need a 16-byte IPv6 address")
    return b"\xff\x02" + b"\x00" * 9 + b"\x01\xff" + ip[13:]


def icmp6_filter_only(*types: int) -> bytes:
    """struct icmp6_filter passing only `types`: Linux blocks a type when its bit is set."""
    words = [0xFFFFFFFF] * 8
    for t in types:
        if not 0 <= t <= 255:
            raise ValueError(f"ICMPv6 type out of range: {t}")
        words[t >> 5] &= ~(1 << (t & 31)) & 0xFFFFFFFF
    return struct.pack("=8I", *words)  # native order: the kernel indexes __u32 data[8]


_NS = struct.Struct("!BBHI16sBB6s")


def build_neighbor_solicitation(target: bytes, our_mac: bytes) -> bytes:
    """NS for `target` with our source link-layer option (checksum left to the kernel)."""
    if len(target) != 16 or len(our_mac) != 6:
        raise ValueError("need a 16-byte IPv6 target and a 6-byte MAC")
    return _NS.pack(ICMPV6_NS, 0, 0, 0, target, OPT_SOURCE_LLADDR, 1, our_mac)


def parse_neighbor_advertisement(payload: bytes | bytearray | memoryview) -> tuple[bytes, bytes | None] | None:
    """(target, target link-layer address or None) of an NA; None for anything else. Never raises."""
    if len(payload) < _HEAD.size or payload[0] != ICMPV6_NA or payload[1] != 0:
        return None
    target = bytes(payload[8:24])
    i = _HEAD.size
    while i + 2 <= len(payload):
        kind, length = payload[i], payload[i + 1] * 8
        if length == 0 or i + length > len(payload):
            return None
        if kind == OPT_TARGET_LLADDR and length >= 8:
            return target, bytes(payload[i + 2:i + 8])
        i += length
    return target, None


def foreign_advertisement(payload: bytes | bytearray | memoryview, owned: frozenset[bytes] | set[bytes],
                          our_mac: bytes) -> tuple[bytes, bytes] | None:
    """(owned target, foreign MAC) when an NA advertises one of our addresses with another link-layer
    address: the IPv6 form of a conflicting announcement. Never raises."""
    na = parse_neighbor_advertisement(payload)
    if na is None or na[1] is None:
        return None
    target, mac = na
    if target not in owned or mac == our_mac or mac[0] & 1 or mac == b"\x00" * 6:
        return None
    return target, mac
