"""ARP responder on one interface: AF_PACKET + a BPF of the owned IPs, answered by a dedicated thread.

The kernel filter passes only ARP requests for IPs this node owns, and ARP frames in which another
MAC claims one of them (conflicts, a successor's takeover), so on a busy LAN the other nodes'
speakers never wake. The hot path is a blocking recv, a set lookup and one struct pack per
request (lbctl.core.arp.answer_arp); no logging, no allocation beyond the reply. A thread blocked in
recv answers markedly faster than a wake-up through the event loop (89 -> ~60-75 us RTT in
benchmarks/lab_bench.py), and the GIL is free while the loop idles. Ownership is the `owned`
frozenset, swapped atomically, so losing an IP stops the answers at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
import threading
import time
from collections.abc import Callable

from lbctl.core.arp import (ARP_BPF, ETH_P_ARP, PACKET_IGNORE_OUTGOING, SO_ATTACH_FILTER, SOL_PACKET, Insn,
                            answer_arp, arp_filter_for, bpf_bytes, build_gratuitous, foreign_claim)

from .metrics import Metrics

POLL_STOP = 0.5  # seconds a blocked recv waits before checking whether to stop
FLUSH_EVERY = 256  # frames between metric updates (a lock each) under load
NOTIFY_GAP = 0.1  # seconds between two reports of the same foreign claim to the event loop


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
        sec = int(POLL_STOP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", sec, int((POLL_STOP - sec) * 1e6)))
    except BaseException:
        sock.close()
        raise
    return sock


ForeignCallback = Callable[[str, bytes, bytes], None]  # (interface, packed IP, foreign MAC), on the loop


class ArpResponder:
    def __init__(self, ifname: str, index: int, mac: bytes, metrics: Metrics,
                 on_foreign: ForeignCallback | None = None) -> None:
        self.ifname, self.index, self.mac = ifname, index, mac
        self.owned: frozenset[bytes] = frozenset()  # packed IPv4 addresses we answer for
        # Leaving (SIGTERM): an IP whose successor is heard announcing it is dropped by this thread at once,
        # so no reply of ours can follow the successor's announcement on this socket.
        self.yielding = False
        self._on_foreign = on_foreign
        self._loop = asyncio.get_running_loop() if on_foreign else None
        self._reported: dict[tuple[bytes, bytes], float] = {}
        self._seen = metrics.arp_seen.labels(ifname)
        self._answered = metrics.arp_answered.labels(ifname)
        self._garps = metrics.garps.labels(ifname)
        self._errors = metrics.socket_errors.labels(ifname)
        self.sock = open_arp_socket(ifname, arp_filter_for(self.owned, mac))
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
                    elif frame[28:32] in self.owned:  # cheap pre-check: the filter passed a sender claim
                        self._foreign(frame)
                    if seen < FLUSH_EVERY:
                        continue
                if seen or errors:
                    self._seen.inc(seen)
                    self._answered.inc(answered)
                    self._errors.inc(errors)
                    seen = answered = errors = 0
        finally:
            sock.close()

    def _foreign(self, frame: bytes) -> None:
        claim = foreign_claim(frame, self.owned, self.mac)
        if claim is None:
            return
        ip, mac = claim
        if self.yielding:
            self.owned = self.owned - {ip}
        # A flood of foreign claims must not flood the event loop: one report per (ip, MAC) per gap.
        now = time.monotonic()
        if now - self._reported.get((ip, mac), -NOTIFY_GAP) < NOTIFY_GAP:
            return
        if len(self._reported) > 4096:
            self._reported.clear()
        self._reported[(ip, mac)] = now
        if self._loop is not None and self._on_foreign is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_foreign, self.ifname, ip, mac)
            except RuntimeError:  # the loop closed while we were shutting down
                pass

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

    def release(self, ip: bytes) -> None:
        self.owned = self.owned - {ip}

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
