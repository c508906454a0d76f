"""Speaker-to-speaker liveness: signed UDP broadcasts on every announcing interface's IPv4 subnet.

One socket per interface (SO_BINDTODEVICE, SO_BROADCAST, shared port via SO_REUSEADDR) both sends and
receives. A peer is live only while we keep hearing it; we are always live ourselves. Only liveness
*changes* wake the election, not every beacon.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Mapping

from lbctl import log
from lbctl.core.heartbeat import Heartbeat, PeerTable, decode, encode

from .metrics import Metrics

logger = log.get(__name__)
LEAVE_REPEAT = 3
LEAVE_GAP = 0.02


def open_heartbeat_socket(ifname: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.bind(("", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Heartbeats:
    def __init__(self, node: str, key: bytes, port: int, interval: float, dead_after: float,
                 on_change: Callable[[], None], metrics: Metrics) -> None:
        self.node, self.key, self.port, self.interval = node, key, port, interval
        self.peers = PeerTable(node, dead_after)
        self.on_change = on_change
        self.metrics = metrics
        self.incarnation = time.time_ns()  # a restart starts a new sequence space
        self._seq = 0
        self._socks: dict[str, tuple[socket.socket, tuple[str, ...]]] = {}
        self._live: set[str] = {node}
        self._sending = True
        self._warned_alone = False
        self._loop = asyncio.get_running_loop()

    # --- interfaces ---------------------------------------------------------------------------
    def set_targets(self, targets: Mapping[str, tuple[str, ...]]) -> None:
        """Interface -> broadcast addresses; opens and closes sockets to match."""
        for name in list(self._socks):
            if name not in targets:
                self._close(name)
        for name, brds in targets.items():
            if name in self._socks:
                self._socks[name] = (self._socks[name][0], brds)
                continue
            try:
                sock = open_heartbeat_socket(name, self.port)
            except OSError as exc:
                logger.warning("heartbeat_socket_failed", interface=name, error=str(exc))
                continue
            self._socks[name] = (sock, brds)
            self._warned_alone = False
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)
        if not self._socks and not self._warned_alone:
            self._warned_alone = True
            logger.warning("no_heartbeat_interface", hint="no usable interface with an IPv4 broadcast address; "
                                                          "this speaker cannot see its peers")

    def _close(self, name: str) -> None:
        sock, _ = self._socks.pop(name)
        try:
            self._loop.remove_reader(sock.fileno())
        except (ValueError, OSError):
            pass
        sock.close()

    def close(self) -> None:
        for name in list(self._socks):
            self._close(name)

    # --- receive ------------------------------------------------------------------------------
    def _on_readable(self, sock: socket.socket) -> None:
        changed = False
        for _ in range(256):
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                break
            except OSError:
                break
            hb = decode(data, self.key)
            if hb is None:
                self.metrics.heartbeats_rejected.inc()
                continue
            if hb.node == self.node:
                continue  # our own broadcast, looped back (or a forgery of our name, which changes nothing)
            if not self.peers.observe(hb, time.monotonic()):
                continue  # a replay, or the same beacon heard on a second interface
            if (hb.node in self._live) == hb.leaving:
                changed = True  # a new peer, or a live one saying goodbye
        if changed:
            self.on_change()

    def live(self, now: float) -> set[str]:
        """Live speakers now; the election calls this and it becomes the "before" for change detection."""
        self._live = self.peers.live(now)
        self.metrics.live_peers.set(len(self._live))
        return self._live

    # --- send ---------------------------------------------------------------------------------
    def _send(self, leaving: bool) -> None:
        self._seq += 1
        data = encode(Heartbeat(self.node, self.incarnation, self._seq, int(self.interval * 1000), leaving),
                      self.key)
        for sock, brds in list(self._socks.values()):
            for brd in brds:
                try:
                    sock.sendto(data, (brd, self.port))
                except OSError:
                    pass  # link down or no route right now; the next beat retries

    async def run(self) -> None:
        while self._sending:
            self._send(False)
            await asyncio.sleep(self.interval)

    async def leave(self) -> None:
        """Tell peers we are going so they take over now rather than after dead_after."""
        self._sending = False
        for _ in range(LEAVE_REPEAT):
            self._send(True)
            await asyncio.sleep(LEAVE_GAP)
