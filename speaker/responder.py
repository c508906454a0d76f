"""The one responder model for ARP and NDP: a dedicated thread per interface blocked in a receive.

A thread blocked in recv answers markedly faster than a wake-up through the event loop (89 -> ~60-75 us ARP
RTT in benchmarks/lab_bench.py), the GIL is free while it waits, and a flood keeps this thread busy, not the
event loop. Flood limits (lbctl/core/ratelimit.py), the same for both: answers per requester and address,
foreign claims reported to the loop once per (address, MAC) per REPORT_GAP. Ownership is the `owned`
frozenset, swapped atomically, so losing an IP stops the answers at once. The subclass opens the socket and
handles one datagram (`_one`); no logging, no allocation beyond the reply on the hot path.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable

from lbctl.core.ratelimit import answer_limiter, report_limiter

from .metrics import Metrics

POLL_STOP = 0.5  # seconds a blocked receive waits before checking whether to stop
FLUSH_EVERY = 256  # frames between metric updates (a lock each) under load
SEEN, ANSWERED, LIMITED, ERROR = 0, 1, 2, 3  # what _one did with a datagram

ForeignCallback = Callable[[str, bytes, bytes], None]  # (interface, packed IP, foreign MAC), on the loop


def set_poll_timeout(sock: socket.socket) -> None:
    """Blocking receives that return every POLL_STOP, so the thread notices close()."""
    sec = int(POLL_STOP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", sec, int((POLL_STOP - sec) * 1e6)))


class Responder:
    kind = ""  # "arp" or "ndp": thread name and metric label

    def __init__(self, ifname: str, index: int, mac: bytes, metrics: Metrics, sock: socket.socket,
                 on_foreign: ForeignCallback | None = None) -> None:
        self.ifname, self.index, self.mac, self.sock = ifname, index, mac, sock
        self.owned: frozenset[bytes] = frozenset()  # packed addresses we answer for
        # Leaving (SIGTERM): an IP whose successor is heard announcing it is dropped by this thread at once,
        # so no reply of ours can follow the successor's announcement on this socket.
        self.yielding = False
        self._on_foreign = on_foreign
        self._loop = asyncio.get_running_loop() if on_foreign else None
        self._answers = answer_limiter()  # used by _one, on this thread only
        self._reports = report_limiter()
        self._garps = metrics.garps.labels(ifname)
        self._errors = metrics.socket_errors.labels(ifname)
        self._limited = metrics.responder_limited.labels(ifname, self.kind)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, name=f"{self.kind}-{ifname}", daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def _one(self) -> int:
        """Receive one datagram (blocking, up to POLL_STOP) and handle it; SEEN, ANSWERED, LIMITED or ERROR."""
        raise NotImplementedError

    def _counters(self) -> tuple:
        """(seen, answered) metric children; seen may be None."""
        raise NotImplementedError

    def _serve(self) -> None:
        seen_c, answered_c = self._counters()
        counts = [0, 0, 0, 0]  # seen, answered, limited, errors
        one = self._one
        try:
            while not self._stop:
                try:
                    outcome = one()
                except (BlockingIOError, InterruptedError, TimeoutError):  # SO_RCVTIMEO: check _stop
                    outcome = -1
                except OSError:  # ENETDOWN while the link flaps; closed socket on shutdown
                    counts[ERROR] += 1
                    if self._stop:
                        break
                    time.sleep(0.05)
                    outcome = -1
                if outcome >= 0:
                    counts[SEEN] += 1
                    if outcome:
                        counts[outcome] += 1
                    if counts[SEEN] < FLUSH_EVERY:
                        continue
                if any(counts):
                    if seen_c is not None:
                        seen_c.inc(counts[SEEN])
                    answered_c.inc(counts[ANSWERED])
                    self._limited.inc(counts[LIMITED])
                    self._errors.inc(counts[ERROR])
                    counts[:] = [0, 0, 0, 0]
        finally:
            self.sock.close()

    def _foreign(self, claim: tuple[bytes, bytes] | None) -> None:
        """Another MAC announced or answered for an owned address (on this thread)."""
        if claim is None:
            return
        ip, mac = claim
        if self.yielding:
            self.owned = self.owned - {ip}
        # A flood of foreign claims must not flood the event loop.
        if not self._reports.allow(claim, time.monotonic()):
            return
        if self._loop is not None and self._on_foreign is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_foreign, self.ifname, ip, mac)
            except RuntimeError:  # the loop closed while we were shutting down
                pass

    def release(self, ip: bytes) -> None:
        self.set_owned(self.owned - {ip})

    def set_owned(self, owned: frozenset[bytes]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop answering now; the thread closes the socket within POLL_STOP."""
        self.owned = frozenset()
        self._stop = True
