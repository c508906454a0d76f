"""NDP responder on one interface: a raw ICMPv6 socket that answers Neighbor Solicitations for owned IPs.

The kernel verifies and fills ICMPv6 checksums. RFC 4861 wants hop limit 255 both ways, so we read
it from IPV6_HOPLIMIT ancillary data and drop anything else. Solicitations for a VIP go to its
solicited-node group, which we join (reference-counted: VIPs can share a group). Advertisements sent to
all-nodes are read too: another MAC advertising an owned target is a conflict (or our successor).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

from lbctl.core.ndp import (ALL_NODES, ICMP6_FILTER, ICMPV6_NA, ICMPV6_NS, NDP_HOP_LIMIT, UNSPECIFIED,
                            build_neighbor_advertisement, foreign_advertisement, icmp6_filter_only,
                            parse_neighbor_solicitation, solicited_node_multicast)

from .metrics import Metrics

DRAIN_LIMIT = 512
_CMSG_SPACE = socket.CMSG_SPACE(4)
ALL_NODES_TEXT = socket.inet_ntop(socket.AF_INET6, ALL_NODES)


def open_ndp_socket(ifname: str, index: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter_only(ICMPV6_NS, ICMPV6_NA))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, NDP_HOP_LIMIT)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, NDP_HOP_LIMIT)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class NdpResponder:
    def __init__(self, ifname: str, index: int, mac: bytes, metrics: Metrics,
                 on_foreign: Callable[[str, bytes, bytes], None] | None = None) -> None:
        self.ifname, self.index, self.mac = ifname, index, mac
        self.yielding = False  # see ArpResponder.yielding
        self._on_foreign = on_foreign
        self._owned: frozenset[bytes] = frozenset()
        self._groups: dict[bytes, int] = {}  # joined solicited-node group -> owned IPs in it
        self._answered = metrics.ndp_answered.labels(ifname)
        self._garps = metrics.garps.labels(ifname)
        self._errors = metrics.socket_errors.labels(ifname)
        self.sock = open_ndp_socket(ifname, index)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)

    @property
    def owned(self) -> frozenset[bytes]:
        return self._owned

    def set_owned(self, owned: frozenset[bytes]) -> None:
        self._owned = owned  # answers stop/start here; group membership follows
        wanted: dict[bytes, int] = {}
        for ip in owned:
            g = solicited_node_multicast(ip)
            wanted[g] = wanted.get(g, 0) + 1
        for g in self._groups.keys() - wanted.keys():
            self._membership(socket.IPV6_LEAVE_GROUP, g)
        for g in wanted.keys() - self._groups.keys():
            self._membership(socket.IPV6_JOIN_GROUP, g)
        self._groups = wanted

    def _membership(self, op: int, group: bytes) -> None:
        try:
            self.sock.setsockopt(socket.IPPROTO_IPV6, op, group + struct.pack("@I", self.index))
        except OSError:  # EADDRINUSE on a double join, or the link went away: the next apply fixes it
            self._errors.inc()

    def _on_readable(self) -> None:
        sock, owned = self.sock, self._owned
        answered = errors = 0
        for _ in range(DRAIN_LIMIT):
            try:
                data, anc, _flags, addr = sock.recvmsg(1500, _CMSG_SPACE)
            except BlockingIOError:
                break
            except OSError:
                errors += 1
                break
            hop_limit = None
            for level, kind, value in anc:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                    hop_limit = struct.unpack("@i", value[:4])[0]
            try:
                source = socket.inet_pton(socket.AF_INET6, addr[0].split("%")[0])
            except (OSError, ValueError, IndexError):
                continue
            if data[:1] == bytes([ICMPV6_NA]):
                if hop_limit == NDP_HOP_LIMIT:
                    self._foreign(data)
                continue
            # Without the hop limit we cannot tell an on-link NS from a routed one: drop (RFC 4861 §7.1.1).
            ns = parse_neighbor_solicitation(data, hop_limit if hop_limit is not None else -1, source)
            if ns is None or ns.target not in owned:
                continue
            dad = source == UNSPECIFIED  # a duplicate-address probe: defend with an all-nodes NA
            dest = (ALL_NODES_TEXT, 0, 0, self.index) if dad else (addr[0], 0, 0, self.index)
            try:
                sock.sendto(build_neighbor_advertisement(ns.target, self.mac, solicited=not dad), dest)
                answered += 1
            except OSError:
                errors += 1
        if answered:
            self._answered.inc(answered)
        if errors:
            self._errors.inc(errors)

    def _foreign(self, payload: bytes) -> None:
        claim = foreign_advertisement(payload, self._owned, self.mac)
        if claim is None:
            return
        ip, mac = claim
        if self.yielding:
            self.set_owned(self._owned - {ip})
        if self._on_foreign is not None:
            self._on_foreign(self.ifname, ip, mac)

    def release(self, ip: bytes) -> None:
        self.set_owned(self._owned - {ip})

    def unsolicited(self, ip: bytes) -> bool:
        """Unsolicited NA with O set to all-nodes: neighbours update their cache to our MAC."""
        try:
            self.sock.sendto(build_neighbor_advertisement(ip, self.mac, solicited=False),
                             (ALL_NODES_TEXT, 0, 0, self.index))
        except OSError:
            self._errors.inc()
            return False
        self._garps.inc()
        return True

    def close(self) -> None:
        self._owned = frozenset()
        try:
            self._loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()  # closing drops the group memberships
