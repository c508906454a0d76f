"""NDP responder on one interface: a raw ICMPv6 socket that answers Neighbor Solicitations for owned IPs, in a
dedicated thread (speaker/responder.py: the model and flood limits it shares with ARP).

The kernel verifies and fills ICMPv6 checksums. RFC 4861 wants hop limit 255 both ways, so we read
it from IPV6_HOPLIMIT ancillary data and drop anything else. Solicitations for a VIP go to its
solicited-node group, which we join (reference-counted: VIPs can share a group). Advertisements sent to
all-nodes are read too: another MAC advertising an owned target is a conflict (or our successor).
"""

from __future__ import annotations

import socket
import struct
import time

from lbctl.core.ndp import (ALL_NODES, ICMP6_FILTER, ICMPV6_NA, ICMPV6_NS, NDP_HOP_LIMIT, UNSPECIFIED,
                            build_neighbor_advertisement, foreign_advertisement, icmp6_filter_only,
                            parse_neighbor_solicitation, solicited_node_multicast)

from .metrics import Metrics
from .responder import ANSWERED, ERROR, LIMITED, SEEN, ForeignCallback, Responder, set_poll_timeout

_CMSG_SPACE = socket.CMSG_SPACE(4)
ALL_NODES_TEXT = socket.inet_ntop(socket.AF_INET6, ALL_NODES)
_NA_TYPE = bytes([ICMPV6_NA])


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
        set_poll_timeout(sock)
    except BaseException:
        sock.close()
        raise
    return sock


class NdpResponder(Responder):
    kind = "ndp"

    def __init__(self, ifname: str, index: int, mac: bytes, metrics: Metrics,
                 on_foreign: ForeignCallback | None = None) -> None:
        super().__init__(ifname, index, mac, metrics, open_ndp_socket(ifname, index), on_foreign)
        self._groups: dict[bytes, int] = {}  # joined solicited-node group -> owned IPs in it
        self._answered = metrics.ndp_answered.labels(ifname)
        self._start()

    def _counters(self) -> tuple:
        return None, self._answered

    def set_owned(self, owned: frozenset[bytes]) -> None:
        self.owned = owned  # answers stop/start here; group membership follows
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

    def _one(self) -> int:
        data, anc, _flags, addr = self.sock.recvmsg(1500, _CMSG_SPACE)
        hop_limit = None
        for level, kind, value in anc:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                hop_limit = struct.unpack("@i", value[:4])[0]
        try:
            source = socket.inet_pton(socket.AF_INET6, addr[0].split("%")[0])
        except (OSError, ValueError, IndexError):
            return SEEN
        if data[:1] == _NA_TYPE:
            if hop_limit == NDP_HOP_LIMIT:
                self._foreign(foreign_advertisement(data, self.owned, self.mac))
            return SEEN
        # Without the hop limit we cannot tell an on-link NS from a routed one: drop (RFC 4861 §7.1.1).
        ns = parse_neighbor_solicitation(data, hop_limit if hop_limit is not None else -1, source)
        if ns is None or ns.target not in self.owned:
            return SEEN
        if not self._answers.allow((source, ns.source_lladdr, ns.target), time.monotonic()):
            return LIMITED
        dad = source == UNSPECIFIED  # a duplicate-address probe: defend with an all-nodes NA
        dest = (ALL_NODES_TEXT, 0, 0, self.index) if dad else (addr[0], 0, 0, self.index)
        try:
            self.sock.sendto(build_neighbor_advertisement(ns.target, self.mac, solicited=not dad), dest)
        except OSError:
            return ERROR
        return ANSWERED

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
        """Stop answering and leave the groups now; the thread closes the socket within POLL_STOP."""
        self.set_owned(frozenset())
        super().close()
