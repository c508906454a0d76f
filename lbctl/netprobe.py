"""Ask the segment who answers for an address: ARP for IPv4, neighbour solicitation for IPv6.

I/O shell over the pure codecs; used by `lbctl probe` (and handy on a node to check that exactly one
MAC answers for a LoadBalancer IP).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .core.arp import ETH_P_ARP, build_arp_request, mac_to_bytes, mac_to_str, parse_arp_reply
from .core.ndp import build_neighbor_solicitation, parse_neighbor_advertisement, solicited_node_multicast

IPV6_MULTICAST_HOPS = 18


@dataclass(frozen=True)
class Answer:
    mac: str
    rtt_ms: float


def interface_mac(ifname: str) -> bytes:
    return mac_to_bytes(Path(f"/sys/class/net/{ifname}/address").read_text().strip())


def arp(ifname: str, target: str, source_ip: str, count: int = 3, timeout: float = 1.0) -> list[Answer]:
    """Send `count` ARP requests; every reply (several MACs answering is what we look for)."""
    mac = interface_mac(ifname)
    req = build_arp_request(mac, ipaddress.IPv4Address(source_ip).packed, ipaddress.IPv4Address(target).packed)
    want = ipaddress.IPv4Address(target).packed
    answers: list[Answer] = []
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((ifname, ETH_P_ARP))
        for _ in range(count):
            sent = time.perf_counter()
            s.send(req)
            deadline = sent + timeout
            while (left := deadline - time.perf_counter()) > 0:
                if not select.select([s], [], [], left)[0]:
                    break
                got = parse_arp_reply(s.recv(2048))
                if got and got[1] == want:
                    answers.append(Answer(mac_to_str(got[0]), (time.perf_counter() - sent) * 1000))
    return answers


def ndp(ifname: str, target: str, count: int = 3, timeout: float = 1.0) -> list[Answer]:
    mac = interface_mac(ifname)
    tgt = ipaddress.IPv6Address(target).packed
    group = str(ipaddress.IPv6Address(solicited_node_multicast(tgt)))
    answers: list[Answer] = []
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        ifindex = socket.if_nametoindex(ifname)
        for _ in range(count):
            sent = time.perf_counter()
            s.sendto(build_neighbor_solicitation(tgt, mac), (group, 0, 0, ifindex))
            deadline = sent + timeout
            while (left := deadline - time.perf_counter()) > 0:
                if not select.select([s], [], [], left)[0]:
                    break
                got = parse_neighbor_advertisement(s.recv(2048))
                if got and got[0] == tgt and got[1]:
                    answers.append(Answer(mac_to_str(got[1]), (time.perf_counter() - sent) * 1000))
    return answers
