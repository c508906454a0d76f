"""Hostile input for a speaker: seeded generators of malformed, truncated, oversized and random frames.

ARP and NDP frames go on the wire at the speakers' raw sockets; heartbeat payloads go to their UDP port.
Every generator is deterministic for a seed, so a failure can be replayed. Valid-looking frames are built
once (with scapy, the reference) and then broken in every way a parser can trip on: truncation at each
offset, random bit flips, lengths and types that lie, extensions up to the MTU. Requests for addresses no
speaker owns are mixed in: those must never be answered.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

MTU_FRAME = 1514
BROADCAST = "ff:ff:ff:ff:ff:ff"


def _arp(cmac: str, psrc: str, pdst: str, op: int = 1) -> bytes:
    from scapy.layers.l2 import ARP, Ether
    return bytes(Ether(dst=BROADCAST, src=cmac) / ARP(op=op, hwsrc=cmac, psrc=psrc, pdst=pdst))


def _ns(cmac: str, src6: str, target: str, hlim: int = 255) -> bytes:
    from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6, in6_getnsma, in6_getnsmac
    from scapy.layers.l2 import Ether
    group = in6_getnsma(socket.inet_pton(socket.AF_INET6, target))
    return bytes(Ether(dst=in6_getnsmac(group), src=cmac) /
                 IPv6(src=src6, dst=socket.inet_ntop(socket.AF_INET6, group), hlim=hlim) /
                 ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=cmac))


def _mutate(rnd: random.Random, frame: bytes) -> bytes:
    kind = rnd.randrange(6)
    b = bytearray(frame)
    if kind == 0:  # truncated anywhere past the Ethernet header
        return bytes(b[:rnd.randint(14, len(b))])
    if kind == 1:  # a few random bit flips past the Ethernet addresses
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(12, len(b))
            b[i] ^= 1 << rnd.randrange(8)
        return bytes(b)
    if kind == 2:  # a lying byte: hardware/protocol lengths, types, opcodes, option lengths
        i = rnd.randrange(14, min(len(b), 80))
        b[i] = rnd.choice((0, 1, 2, 4, 6, 8, 16, 0x7F, 0x80, 0xFF))
        return bytes(b)
    if kind == 3:  # extended with junk up to the MTU (oversized for what the headers claim)
        return bytes(b) + rnd.randbytes(rnd.randint(1, MTU_FRAME - len(b)))
    if kind == 4:  # right headers, random body
        return bytes(b[:14]) + rnd.randbytes(rnd.randint(0, MTU_FRAME - 14))
    return rnd.randbytes(rnd.randint(14, MTU_FRAME))  # noise


def l2_frames(seed: int, count: int, cmac: str, owned4: list[str], owned6: list[str], unowned4: list[str],
              unowned6: list[str], src4: str, src6: str) -> Iterator[bytes]:
    """`count` hostile ARP/NDP frames; every fourth is a well-formed request for an address nobody owns."""
    rnd = random.Random(seed)
    bases = [_arp(cmac, src4, ip) for ip in owned4] + [_arp(cmac, src4, ip, op=2) for ip in owned4]
    bases += [_ns(cmac, src6, ip) for ip in owned6] + [_ns(cmac, src6, ip, hlim=64) for ip in owned6]
    clean = [_arp(cmac, src4, ip) for ip in unowned4] + [_ns(cmac, src6, ip) for ip in unowned6]
    for i in range(count):
        yield rnd.choice(clean) if i % 4 == 0 else _mutate(rnd, rnd.choice(bases))


def heartbeat_payloads(seed: int, count: int, captured: list[bytes]) -> Iterator[bytes]:
    """Garbage for the heartbeat port: random datagrams, and real beacons (captured from the wire) broken
    or replayed. None may make a dead peer look alive or crash the receiver."""
    rnd = random.Random(seed)
    for _ in range(count):
        if not captured or rnd.random() < 0.3:
            yield rnd.randbytes(rnd.randint(0, 1400))
            continue
        beacon = bytearray(rnd.choice(captured))
        kind = rnd.randrange(4)
        if kind == 0:
            yield bytes(beacon[:rnd.randint(0, len(beacon))])
        elif kind == 1:
            i = rnd.randrange(len(beacon))
            beacon[i] ^= 1 << rnd.randrange(8)
            yield bytes(beacon)
        elif kind == 2:
            yield bytes(beacon) + rnd.randbytes(rnd.randint(1, 600))
        else:
            yield bytes(beacon)  # a replay, unchanged
