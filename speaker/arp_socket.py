"""ARP responder on one interface: AF_PACKET + a BPF of the owned IPs, answered by a dedicated thread.

The kernel filter passes only ARP requests for IPs this node owns, so on a busy LAN the other
nodes' speakers never wake. The hot path is a blocking recv, a set lookup and one struct pack per
request (lbctl.core.arp.answer_arp); no logging, no allocation beyond the reply. A thread blocked in
recv answers markedly faster than a wake-up through the event loop (89 -> ~60-75 us RTT in
benchmarks/lab_bench.py), and the GIL is free while the loop idles. Ownership is the `owned`
frozenset, swapped atomically, so losing an IP stops the answers at once.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
import time

from lbctl.core.arp import (ARP_REQUEST_BPF, ETH_P_ARP, PACKET_IGNORE_OUTGOING, SO_ATTACH_FILTER, SOL_PACKET, Insn,
                            answer_arp, arp_filter_for, bpf_bytes, build_gratuitous)

from .metrics import Metrics

POLL_STOP = 0.5  # seconds a blocked recv waits before checking whether to stop
FLUSH_EVERY = 256  # frames between metric updates (a lock each) under load


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach_filter(sock: socket.socket, prog: tuple[Insn, ...]) -> None:
    """Attach, or atomically replace, the socket's classic BPF program."""
    raw = bpf_bytes(prog)
    buf = ctypes.create_string_buffer(raw, len(raw))  # must outlive the setsockopt call only
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(_SockFprog(len(prog), ctypes.addressof(buf))))


def open_arp_socket(ifname: str, prog: tuple[Insn, ...] = ARP_REQUEST_BPF) -> socket.socket:
    # Protocol 0 until the filter is attached, so no unfiltered frame is ever queued (mdlayher/packet).
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        attach_filter(sock, prog)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass  # Linux < 4.20: our own replies are not requests, the filter drops them anyway
        sock.bind((ifname, ETH_P_ARP))
        sec = int(POLL_STOP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", sec, int((POLL_STOP - sec) * 1e6)))
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
        self.sock = open_arp_socket(ifname, arp_filter_for(self.owned))
        self._filtered = True
        self._stop = False
        self._thread = threading.Thread(target=self._serve, name=f"arp-{ifname}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sock, mac = self.sock, self.mac
        seen = answered = errors = 0
        try:
            while not self._stop:
                try:
                    frame = sock.recv(2048)
                except (BlockingIOError, InterruptedError, TimeoutError):  # SO_RCVTIMEO: check _stop
                    frame = b""
                except OSError:  # ENETDOWN while the link flaps; closed socket on shutdown
                    errors += 1
                    if self._stop:
                        break
                    time.sleep(0.05)
                    continue
                if frame:
                    seen += 1
                    reply = answer_arp(frame, self.owned, mac)
                    if reply is not None:
                        try:
                            sock.send(reply)
                            answered += 1
                        except OSError:
                            errors += 1
                    if seen < FLUSH_EVERY:
                        continue
                if seen or errors:
                    self._seen.inc(seen)
                    self._answered.inc(answered)
                    self._errors.inc(errors)
                    seen = answered = errors = 0
        finally:
            sock.close()

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
                attach_filter(self.sock, arp_filter_for(owned))
            except OSError:
                self._filtered = False
                self._errors.inc()
                try:
                    attach_filter(self.sock, ARP_REQUEST_BPF)
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

    def close(self) -> None:
        """Stop answering now; the thread closes the socket within POLL_STOP."""
        self.owned = frozenset()
        self._stop = True
