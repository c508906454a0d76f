"""ARP responder on one interface: AF_PACKET + a BPF of the owned IPs, answered by a dedicated thread
(speaker/responder.py: the model and flood limits it shares with NDP).

The kernel filter passes only ARP requests for IPs this node owns, and ARP frames in which another
MAC claims one of them (conflicts, a successor's takeover), so on a busy LAN the other nodes'
speakers never wake. The hot path is a blocking recv, a set lookup and one struct pack per
request (lbctl.core.arp.answer_arp).
"""

from __future__ import annotations

import ctypes
import socket
import time

from lbctl.core.arp import (ARP_BPF, ETH_P_ARP, PACKET_IGNORE_OUTGOING, SO_ATTACH_FILTER, SOL_PACKET, Insn,
                            answer_arp, arp_filter_for, bpf_bytes, build_gratuitous, foreign_claim)

from .metrics import Metrics
from .responder import ANSWERED, ERROR, LIMITED, SEEN, ForeignCallback, Responder, set_poll_timeout

_REQUESTER = slice(22, 42)  # sha spa tha tpa: who asks, for which address (the flood limit's key)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach_filter(sock: socket.socket, prog: tuple[Insn, ...]) -> None:
    """Attach, or atomically replace, the socket's classic BPF program."""
    raw = bpf_bytes(prog)
    buf = ctypes.create_string_buffer(raw, len(raw))  # must outlive the setsockopt call only
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(_SockFprog(len(prog), ctypes.addressof(buf))))


def open_arp_socket(ifname: str, prog: tuple[Insn, ...] = ARP_BPF) -> socket.socket:
    # Protocol 0 until the filter is attached, so no unfiltered frame is ever queued (mdlayher/packet).
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        attach_filter(sock, prog)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass  # Linux < 4.20: the filter drops our own replies; answer_arp never answers our announcements
        sock.bind((ifname, ETH_P_ARP))
        set_poll_timeout(sock)
    except BaseException:
        sock.close()
        raise
    return sock


class ArpResponder(Responder):
    kind = "arp"

    def __init__(self, ifname: str, index: int, mac: bytes, metrics: Metrics,
                 on_foreign: ForeignCallback | None = None) -> None:
        super().__init__(ifname, index, mac, metrics, open_arp_socket(ifname, arp_filter_for(frozenset(), mac)),
                         on_foreign)
        self._seen = metrics.arp_seen.labels(ifname)
        self._answered = metrics.arp_answered.labels(ifname)
        self._filtered = True
        self._start()

    def _counters(self) -> tuple:
        return self._seen, self._answered

    def _one(self) -> int:
        frame = self.sock.recv(2048)
        reply = answer_arp(frame, self.owned, self.mac)
        if reply is not None:
            if not self._answers.allow(frame[_REQUESTER], time.monotonic()):
                return LIMITED
            try:
                self.sock.send(reply)
            except OSError:
                return ERROR
            return ANSWERED
        if frame[28:32] in self.owned:  # cheap pre-check: the filter passed a sender claim
            self._foreign(foreign_claim(frame, self.owned, self.mac))
        return SEEN

    def set_owned(self, owned: frozenset[bytes]) -> None:
        """Answer exactly `owned` from now on; the kernel filter follows so other nodes' IPs never wake us.

        Lost IPs stop at once (the set shrinks before the filter changes); gained ones are answered
        as soon as the new filter is in. If the kernel refuses the narrow program, the generic one
        is kept and the set alone decides, which is correct, only busier."""
        if owned == self.owned:
            return
        self.owned = self.owned & owned
        if self._filtered:
            try:
                attach_filter(self.sock, arp_filter_for(owned, self.mac))
            except OSError:
                self._filtered = False
                self._errors.inc()
                try:
                    attach_filter(self.sock, ARP_BPF)
                except OSError:
                    pass  # the previous (narrower) filter stays; the next set_owned retries nothing
        self.owned = owned

    def gratuitous(self, ip: bytes) -> bool:
        """Both GARP forms (RFC 5227 request, RFC 5944 reply); receivers differ in which they honour."""
        try:
            self.sock.send(build_gratuitous(self.mac, ip, reply=False))
            self.sock.send(build_gratuitous(self.mac, ip, reply=True))
        except OSError:
            self._errors.inc()
            return False
        self._garps.inc(2)
        return True
