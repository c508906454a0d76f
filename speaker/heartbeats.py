"""Speaker-to-speaker liveness: signed UDP broadcasts on every announcing interface's IPv4 subnet, or on
an IPv6-only interface to a link-local multicast group (speaker/interfaces.py HEARTBEAT_GROUP6).

One socket per interface (SO_BINDTODEVICE, SO_BROADCAST or the joined group, shared port via SO_REUSEADDR)
both sends and receives. A peer is live only while we keep hearing it; we are always live ourselves.

Beacons are sent and received by one dedicated thread that wakes once per interval: it drains what
arrived (dated by kernel receive timestamps, so deadlines stay exact), sends its own beacon, and
also wakes at the next peer's deadline. The event loop is only woken when the live set *changes* (a
new peer, a goodbye, an expiry), so an idle speaker costs one thread wake-up per interval, whatever
the number of peers. A goodbye is noticed within one interval; the leaver keeps answering longer.

Segments (docs/reliability.md, "Which segment is alive"): besides the one table that drives identity
and echoes, each interface keeps its own PeerTable fed only by its own socket, so the election can ask
who is live on the segment an IP is announced on. A multi-NIC peer whose VIP NIC died still beacons on
its other NICs, but not on that segment, and loses that segment's IPs.

Identity (docs/reliability.md): the incarnation is random, never the clock, so a clock step changes
nothing. Peers count us live only on beacons echoing our incarnation; if a peer we keep hearing stops
echoing us (it refuses our incarnation, e.g. after a forged goodbye), we take a new one.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping

from lbctl import log
from lbctl.core.heartbeat import Heartbeat, Keyring, PeerTable, decode, encode, incarnation_bytes

from .metrics import Metrics

logger = log.get(__name__)
LEAVE_REPEAT = 3
LEAVE_GAP = 0.02
EXPIRY_SLACK = 0.001  # PeerTable counts a peer live *at* its deadline; look just after
RX_AGE_SLACK = 0.01
SO_TIMESTAMPNS = 35  # asm-generic; SCM_TIMESTAMPNS has the same value
_TIMESPEC = struct.Struct("@qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def new_incarnation() -> int:
    return int.from_bytes(os.urandom(8), "big")


def open_heartbeat_socket(ifname: str, port: int, group6: str | None = None) -> socket.socket:
    """IPv4 broadcast socket, or with `group6` an IPv6 one joined to that link-local group on `ifname`."""
    sock = socket.socket(socket.AF_INET6 if group6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if group6:
            index = socket.if_nametoindex(ifname)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                            socket.inet_pton(socket.AF_INET6, group6) + struct.pack("@I", index))
            sock.bind(("::", port))
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind(("", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _group6(targets: tuple[str, ...]) -> str | None:
    """The IPv6 group of an IPv6 interface's targets (first; unicast peers may follow), else None (IPv4)."""
    return targets[0] if targets and targets[0].startswith("ff02:") else None


def _destinations(ifname: str, targets: tuple[str, ...], port: int) -> tuple[tuple, ...]:
    """Socket addresses to send to; a link-local group needs the interface as its scope."""
    if _group6(targets):
        index = socket.if_nametoindex(ifname)
        return tuple((t, port, 0, index if t.startswith(("ff02:", "fe80:")) else 0) for t in targets)
    return tuple((t, port) for t in targets)


class Heartbeats:
    def __init__(self, node: str, keys: Keyring, port: int, interval: float, dead_after: float,
                 on_change: Callable[[], None], metrics: Metrics) -> None:
        self.node, self.keys, self.port, self.interval = node, keys, port, interval
        self.dead_after = dead_after
        self.peers = PeerTable(node, dead_after)  # identity, echoes and the overall live set
        self.segments: dict[str, PeerTable] = {}  # interface -> who is heard on it (guarded by _lock)
        self.on_change = on_change  # called on the event loop's thread
        self.metrics = metrics
        self.incarnation = new_incarnation()  # random: a restart starts a new sequence space, whatever the clock
        self._mine: tuple[bytes, ...] = (incarnation_bytes(self.incarnation),)  # echoes that count as us
        self._previous_until = 0.0  # the incarnation before a reincarnation still counts until then
        self._next_reincarnation = 0.0
        self._seq = 0
        self._lock = threading.Lock()  # guards peers, _socks, _seq
        self._socks: dict[str, tuple[socket.socket, tuple[tuple, ...]]] = {}  # interface -> (socket, sockaddrs)
        self._sending = True
        self._stop = False
        self._warned_alone = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._loop = asyncio.get_running_loop()
        self._thread: threading.Thread | None = None
        self.ended: asyncio.Future[None] = self._loop.create_future()  # done if the thread dies early

    # --- interfaces (event loop thread) -------------------------------------------------------
    def set_targets(self, targets: Mapping[str, tuple[str, ...]]) -> None:
        """Interface -> IPv4 broadcast addresses, or (IPv6 group,); opens and closes sockets to match."""
        with self._lock:
            for name in list(self._socks):
                family = socket.AF_INET6 if _group6(targets.get(name, ())) else socket.AF_INET
                if name not in targets or self._socks[name][0].family != family:  # gone, or IPv4 came/went
                    self._socks.pop(name)[0].close()
                    self.segments.pop(name, None)
            for name, brds in targets.items():
                try:
                    dests = _destinations(name, brds, self.port)
                    if name in self._socks:
                        self._socks[name] = (self._socks[name][0], dests)
                        continue
                    sock = open_heartbeat_socket(name, self.port, _group6(brds))
                except OSError as exc:
                    logger.warning("heartbeat_socket_failed", interface=name, error=str(exc))
                    continue
                self._socks[name] = (sock, dests)
                self.segments[name] = PeerTable(self.node, self.dead_after)  # heard afresh from now on
                self._warned_alone = False
            empty = not self._socks
        if empty and not self._warned_alone:
            self._warned_alone = True
            logger.warning("no_heartbeat_interface", hint="no usable interface with an IPv4 broadcast address "
                                                          "or IPv6; this speaker cannot see its peers")

    def live(self, now: float) -> set[str]:
        """Live speakers now, ourselves included."""
        with self._lock:
            live = self.peers.live(now)
        self.metrics.live_peers.set(len(live))
        return live

    def live_on(self, now: float) -> dict[str, set[str]]:
        """Interface -> speakers live on it (ourselves included while its socket is open)."""
        return self._snapshot(now)[1]

    def _snapshot(self, now: float) -> tuple[set[str], dict[str, set[str]]]:
        with self._lock:
            live = self.peers.live(now)
            # Never more than the overall table says: its identity checks (retired incarnations) hold here too.
            return live, {name: t.live(now) & live for name, t in self.segments.items()}

    # --- the thread -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="heartbeats", daemon=True)
        self._thread.start()

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # pipe full: a wake-up is pending anyway

    def _serve(self) -> None:
        try:
            self._beat()
        except BaseException as exc:  # silence towards peers while still announcing would be worst
            if not self._stop:
                logger.exception("heartbeat_thread_died")
                self._loop.call_soon_threadsafe(self._ended, exc)
            raise

    def _ended(self, exc: BaseException) -> None:
        if not self.ended.done():
            self.ended.set_exception(exc)

    def _beat(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        now = next_send = last_drain = time.monotonic()
        last_live = self._snapshot(now)
        while not self._stop:
            with self._lock:
                expiry = self.peers.next_expiry(now)
                for table in self.segments.values():
                    t = table.next_expiry(now)
                    if t is not None and (expiry is None or t < expiry):
                        expiry = t
            times = [t for t in (next_send if self._sending else None, expiry) if t is not None]
            wake_at = min(times, default=now + 1.0)
            timeout_ms = max(0, int((wake_at - now + EXPIRY_SLACK) * 1000) + 1)
            try:
                if poller.poll(timeout_ms):
                    os.read(self._wake_r, 512)
            except (InterruptedError, BlockingIOError):
                pass
            # Drain every beacon queued since the last tick in one go, dated by the kernel's receive
            # timestamp: one wake-up per interval however many peers there are, and the liveness
            # deadlines stay exact.
            now = time.monotonic()
            self._drain(now, last_drain)
            last_drain = now
            self._check_heard(now)
            if self._sending and now >= next_send:
                self._send(False)
                # Keep the cadence; after a stall (suspend, CPU starvation) resume rather than burst.
                next_send = max(next_send + self.interval, now)
            live = self._snapshot(now)
            if live != last_live:
                last_live = live
                try:
                    self._loop.call_soon_threadsafe(self.on_change)
                except RuntimeError:  # loop closed during shutdown
                    return

    def _check_heard(self, now: float) -> None:
        """Take a new incarnation when peers we hear keep refusing ours (rate-limited)."""
        if len(self._mine) > 1 and now >= self._previous_until:
            self._mine = self._mine[:1]
        with self._lock:
            deaf = self.peers.deaf(now)
        if not deaf or now < self._next_reincarnation:
            return
        old = self.incarnation
        with self._lock:
            self.incarnation, self._seq = new_incarnation(), 0
        # Echoes of the old incarnation still count until peers have heard the new one: no gap.
        self._mine = (incarnation_bytes(self.incarnation), incarnation_bytes(old))
        self._previous_until = now + 2 * self.dead_after
        self._next_reincarnation = now + 4 * self.dead_after
        self.metrics.heartbeat_reincarnations.inc()
        logger.warning("heartbeat_not_heard_by_peers", peers=sorted(deaf),
                       action="new incarnation", hint="they refuse our beacons (a forged goodbye or sequence "
                                                      "under our incarnation, or a one-way link)")

    def _drain(self, now: float, last_drain: float) -> None:
        with self._lock:
            socks = [(s, self.segments.get(name)) for name, (s, _) in self._socks.items()]
        wall = time.time()
        oldest = now - last_drain + RX_AGE_SLACK  # no beacon can be older than our last drain
        for sock, segment in socks:
            for _ in range(1024):
                try:
                    data, anc, _flags, _addr = sock.recvmsg(2048, _CMSG_SPACE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # closed by set_targets meanwhile, or the link went away
                    break
                hb = decode(data, self.keys, self._mine)
                if hb is None:
                    self.metrics.heartbeats_rejected.inc()
                    continue
                if hb.key_index:
                    self.metrics.heartbeats_previous_key.inc()
                if hb.node == self.node:
                    continue  # our own broadcast, looped back (or a forgery of our name, which changes nothing)
                # Kernel timestamps are wall-clock: turn them into an age, bounded so a clock step
                # can neither date a beacon in the future nor before our previous drain.
                age = oldest
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                        sec, nsec = _TIMESPEC.unpack_from(value)
                        age = min(max(wall - (sec + nsec / 1e9), 0.0), oldest)
                with self._lock:
                    self.peers.observe(hb, now - age)  # replays and duplicates are refused inside
                    if segment is not None:  # the same beacon sent on two NICs counts once per segment
                        segment.observe(hb, now - age)

    def _send(self, leaving: bool) -> None:
        with self._lock:
            self._seq += 1
            seq, inc = self._seq, self.incarnation
            targets = list(self._socks.values())
            echo = self.peers.heard(time.monotonic())
        data = encode(Heartbeat(self.node, inc, seq, int(self.interval * 1000), leaving), self.keys, echo)
        for sock, dests in targets:
            for dest in dests:
                try:
                    sock.sendto(data, dest)
                except OSError:
                    pass  # link down, no route right now, or closed meanwhile; the next beat retries

    # --- shutdown (event loop thread) -----------------------------------------------------------
    async def leave(self) -> None:
        """Tell peers we are going so they take over now rather than after dead_after."""
        self._sending = False
        self._poke()
        for _ in range(LEAVE_REPEAT):
            self._send(True)
            await asyncio.sleep(LEAVE_GAP)

    def close(self) -> None:
        self._stop = True
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            for sock, _ in self._socks.values():
                sock.close()
            self._socks.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
