"""ARP responder on one interface: AF_PACKET + a 10-instruction BPF, answered from the event loop.

The hot path does a set lookup and one struct pack per request; no logging, no allocation beyond the
reply. Ownership is the `owned` frozenset, swapped atomically by the announcer, so losing an IP stops
the answers at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket

from lbctl.core.arp import (ARP_REQUEST_BPF, ETH_P_ARP, PACKET_IGNORE_OUTGOING, SO_ATTACH_FILTER, SOL_PACKET,
                            bpf_bytes, build_arp_reply, build_gratuitous, parse_arp_request)

from .metrics import Metrics

DRAIN_LIMIT = 512  # per wake-up; under a flood, let heartbeats and timers run in between


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def open_arp_socket(ifname: str) -> socket.socket:
    # Protocol 0 until the filter is attached, so no unfiltered frame is ever queued (mdlayher/packet).
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        prog = bpf_bytes(ARP_REQUEST_BPF)
        buf = ctypes.create_string_buffer(prog, len(prog))
        fprog = _SockFprog(len(ARP_REQUEST_BPF), ctypes.addressof(buf))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass  # Linux < 4.20: our own replies are not requests, the filter drops them anyway
        sock.bind((ifname, ETH_P_ARP))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ArpResponder:
    def __init__(self, ifname: str, index: int, mac: bytes, metrics: Metrics) -> None:
        self.ifname, self.index, self.mac = ifname, index, mac
        self.owned: frozenset[bytes] = frozenset()  # packed IPv4 addresses we answer for
        self._seen = metrics.arp_seen.labels(ifname)
        self._answered = metrics.arp_answered.labels(ifname)
        self._garps = metrics.garps.labels(ifname)
        self._errors = metrics.socket_errors.labels(ifname)
        self.sock = open_arp_socket(ifname)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        sock, owned, mac = self.sock, self.owned, self.mac
        seen = answered = errors = 0
        for _ in range(DRAIN_LIMIT):
            try:
                frame = sock.recv(2048)
            except BlockingIOError:
                break
            except OSError:  # e.g. ENETDOWN while the link flaps
                errors += 1
                break
            seen += 1
            req = parse_arp_request(frame)
            # An announcement (sender == target) is not a question; someone else's GARP is not ours to answer.
            if req is None or req.target_ip not in owned or req.sender_ip == req.target_ip:
                continue
            try:
                sock.send(build_arp_reply(mac, req.target_ip, req))
                answered += 1
            except OSError:
                errors += 1
        if seen:
            self._seen.inc(seen)
        if answered:
            self._answered.inc(answered)
        if errors:
            self._errors.inc(errors)

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

    def close(self) -> None:
        self.owned = frozenset()
        try:
            self._loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()
