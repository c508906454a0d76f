"""Speaker-to-speaker liveness: signed UDP broadcasts on every announcing interface's IPv4 subnet, or on
an IPv6-only interface to a link-local multicast group (speaker/interfaces.py HEARTBEAT_GROUP6).

One socket per interface (SO_BINDTODEVICE, SO_BROADCAST or the joined group, shared port via SO_REUSEADDR)
both sends and receives. A peer is live only while we keep hearing it; we are always live ourselves.

Beacons are sent and received by one dedicated thread. It sleeps until a socket is readable, its next
beacon is due or a peer's deadline passes, but drains the sockets at most every MIN_GAP intervals, so
beacons are taken in batches (speaker/recvmmsg.py: one call per batch, without releasing the GIL per
datagram), dated by kernel receive timestamps so deadlines stay exact. The receive queue is sized for
the peers heard, and its kernel drops are counted. The live sets are recomputed only when a beacon may
have changed them or a deadline passed; the thread *publishes* them, and `live()`/`live_on()` return
that published snapshot: the event loop, woken when it changes, elects on exactly what woke it (before,
live() recomputed at call time and could disagree with the thread's sample, so after a stall no
re-election came). A goodbye is noticed within one gap (at most an interval); the leaver keeps answering longer.

Segments (docs/reliability.md, "Which segment is alive"): besides the one table that drives identity
and echoes, each interface keeps its own PeerTable fed only by its own socket, so the election can ask
who is live on the segment an IP is announced on. A multi-NIC peer whose VIP NIC died still beacons on
its other NICs, but not on that segment, and loses that segment's IPs.

Identity (docs/reliability.md): the incarnation is random, never the clock, so a clock step changes
nothing. Peers count us live only once a beacon echoed their incarnation, and only while we keep echoing
it; if a peer we keep hearing stops echoing us (it refuses our incarnation, e.g. after a forged goodbye),
we take a new one.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from lbctl import log
from lbctl.core.heartbeat import LEAVE, RESTART, Decoder, Heartbeat, Keyring, PeerTable, encode, incarnation_bytes

from .metrics import Metrics
from .recvmmsg import BatchReceiver, enable_rx_metadata, size_receive_buffer

logger = log.get(__name__)
LEAVE_REPEAT = 3
LEAVE_GAP = 0.02
EXPIRY_SLACK = 0.001  # PeerTable counts a peer live *at* its deadline; look just after
RX_AGE_SLACK = 0.01
# Least time between two drains, in intervals: batches, since each wake-up costs 50-100 us. As long as the
# receive queue holds twice what arrives meanwhile (the more peers, the shorter), within these bounds.
MIN_GAP = 0.1
MAX_GAP = 1.0  # a small segment: one wake-up per interval, drained when our own beacon is due
RCVBUF_HOLD = 0.5  # seconds of every peer's beacons the receive queue must hold (a stall of the thread)
RCVBUF_TRUESIZE = 2048  # kernel accounting per queued beacon (its buffer, not its ~0.1-1.4 KB payload)
RCVBUF_MIN_PEERS = 8
# Beacons decoded between two hand-overs of the GIL (~5 us each): the drain holds the GIL throughout (so the
# event loop cannot starve it), and an ARP/NDP thread woken meanwhile would wait for the whole batch.
YIELD_EVERY = 16


def new_incarnation() -> int:
    return int.from_bytes(os.urandom(8), "big")


def open_heartbeat_socket(ifname: str, port: int, group6: str | None = None) -> socket.socket:
    """IPv4 broadcast socket, or with `group6` an IPv6 one joined to that link-local group on `ifname`."""
    sock = socket.socket(socket.AF_INET6 if group6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        enable_rx_metadata(sock)
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


def receive_buffer_for(peers: int, interval: float) -> int:
    """Receive queue (kernel bytes) that holds RCVBUF_HOLD seconds of beacons from `peers` speakers."""
    return int(max(peers, RCVBUF_MIN_PEERS) * RCVBUF_HOLD / interval * RCVBUF_TRUESIZE)


class Heartbeats:
    def __init__(self, node: str, keys: Keyring, port: int, interval: float, dead_after: float,
                 on_change: Callable[[], None], metrics: Metrics, restart_hold: float = 0.0) -> None:
        self.node, self.keys, self.port, self.interval = node, keys, port, interval
        self.dead_after, self.restart_hold = dead_after, restart_hold
        self.peers = PeerTable(node, dead_after, restart_hold=restart_hold)  # identity, echoes, the overall live set
        self.segments: dict[str, PeerTable] = {}  # interface -> who is heard on it (guarded by _lock)
        self.on_change = on_change  # called on the event loop's thread
        self.metrics = metrics
        self.incarnation = new_incarnation()  # random: a restart starts a new sequence space, whatever the clock
        self._decoder = Decoder(keys, (incarnation_bytes(self.incarnation),))  # .mine: echoes that count as us
        self._previous_until = 0.0  # the incarnation before a reincarnation still counts until then
        self._next_reincarnation = 0.0
        self._seq = 0
        self._lock = threading.Lock()  # guards peers, segments, _socks, _seq
        self._socks: dict[str, tuple[socket.socket, tuple[tuple, ...]]] = {}  # interface -> (socket, sockaddrs)
        self._socks_version = 0  # bumped when a socket opens or closes: the thread re-registers its poller
        self._drops: dict[int, int] = {}  # socket fd -> kernel drop counter last seen
        self._rcvbuf_peers = 0  # the peer count the receive queues were last sized for
        self._rcvbuf: int | None = None  # the smallest receive queue granted
        self._gap = MIN_GAP * interval
        self._warned_rcvbuf = False
        self._rx = BatchReceiver()
        self._published: tuple[frozenset[str], dict[str, frozenset[str]]] = (frozenset((node,)), {})
        self._published_for = -1  # the socket version the published segments are for
        self._sending = True
        self._stop = False
        self._warned_alone = False
        self._known_nodes: set[str] = set()  # as of the last nodes_known()
        self._send_failing: dict[str, int] = {}  # interface -> beacons failed since its outage began
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._loop = asyncio.get_running_loop()
        self._thread: threading.Thread | None = None
        self.ended: asyncio.Future[None] = self._loop.create_future()  # done if the thread dies early

    @property
    def _mine(self) -> tuple[bytes, ...]:
        return self._decoder.mine

    # --- interfaces (event loop thread) -------------------------------------------------------
    def set_targets(self, targets: Mapping[str, tuple[str, ...]]) -> None:
        """Interface -> IPv4 broadcast addresses, or (IPv6 group,); opens and closes sockets to match."""
        changed = False
        with self._lock:
            for name in list(self._socks):
                family = socket.AF_INET6 if _group6(targets.get(name, ())) else socket.AF_INET
                if name not in targets or self._socks[name][0].family != family:  # gone, or IPv4 came/went
                    sock = self._socks.pop(name)[0]
                    self._drops.pop(sock.fileno(), None)
                    sock.close()
                    self.segments.pop(name, None)
                    changed = True
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
                self._size_rcvbuf(sock, self.peers.peer_count())  # at least what the others were sized for
                # Heard afresh from now on; echoes are checked by self.peers, which every segment's set is within.
                self.segments[name] = PeerTable(self.node, self.dead_after, require_echo=False,
                                                restart_hold=self.restart_hold)
                self._warned_alone = False
                changed = True
            if changed:
                self._socks_version += 1
            empty = not self._socks
        if changed:
            self._poke()  # the thread polls the new sockets and publishes the new segments
        if empty and not self._warned_alone:
            self._warned_alone = True
            logger.warning("no_heartbeat_interface", hint="no usable interface with an IPv4 broadcast address "
                                                          "or IPv6; this speaker cannot see its peers")

    def nodes_known(self, nodes: Iterable[str]) -> None:
        """The Nodes the API server lists now (event loop): peers of Nodes deleted since are forgotten. A
        name never listed is kept (a new Node's speaker may be heard before our watch shows the Node)."""
        nodes = set(nodes)
        gone = self._known_nodes - nodes
        self._known_nodes = nodes
        if not gone:
            return
        with self._lock:
            for name in gone:
                self.peers.forget(name)
                for table in self.segments.values():
                    table.forget(name)
        self._poke()  # the thread publishes the smaller live set

    def live(self, now: float) -> set[str]:
        """Live speakers, ourselves included: the set the heartbeat thread last published (and woke the
        event loop for). `now` is kept for the interface; the thread applies the deadlines."""
        live = set(self._published[0])
        self.metrics.live_peers.set(len(live))
        return live

    def unverified(self, now: float) -> set[str]:
        """Peers heard that have not echoed our incarnation yet (PeerTable.unverified)."""
        with self._lock:
            return self.peers.unverified(now)

    def live_on(self, now: float) -> dict[str, set[str]]:
        """Interface -> speakers live on it (ourselves included while its socket is open), as published."""
        return {name: set(s) for name, s in self._published[1].items()}

    def _publish(self, now: float) -> bool:
        """Apply deadlines and what was heard; publish new live sets. True if they changed."""
        with self._lock:
            changed = self.peers.refresh(now)
            for table in self.segments.values():
                changed = table.refresh(now) or changed
            if not changed and self._published_for == self._socks_version:
                return False
            self._published_for = self._socks_version
            live = self.peers.live_set
            # Never more than the overall table says: its identity checks (retired incarnations) hold here too.
            snap = (live, {name: t.live_set & live for name, t in self.segments.items()})
            if snap == self._published:
                return False
            self._published = snap
        return True

    def _due(self) -> float:
        """Earliest deadline of any table: when the live sets may change without a beacon."""
        with self._lock:
            return min([self.peers.due, *(t.due for t in self.segments.values())])

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

    def _pollers(self) -> tuple[select.epoll, select.epoll, int]:
        """(wake pipe only, wake pipe and every socket, socket version they were built for)."""
        idle, rx = select.epoll(), select.epoll()
        idle.register(self._wake_r, select.EPOLLIN)
        rx.register(self._wake_r, select.EPOLLIN)
        with self._lock:
            version = self._socks_version
            for sock, _ in self._socks.values():
                rx.register(sock.fileno(), select.EPOLLIN)
        return idle, rx, version

    def _wait(self, poller: select.epoll, until: float) -> None:
        timeout = until - time.monotonic()
        try:
            if poller.poll(max(timeout, 0.0)):
                try:
                    os.read(self._wake_r, 512)
                except BlockingIOError:
                    pass  # readable socket, not the pipe
        except InterruptedError:
            pass

    def _beat(self) -> None:
        idle, rx, version = self._pollers()
        now = next_send = last_drain = time.monotonic()
        next_deaf = now + self.dead_after
        busy = False  # the last drain got beacons: after the gap, drain again without polling first
        try:
            while not self._stop:
                wake_at = min(next_send if self._sending else now + 1.0, self._due() + EXPIRY_SLACK)
                # Batching: within `gap` of the last drain only a deadline or a poke wakes us; after it,
                # a readable socket does too.
                gap = self._gap
                if now < last_drain + gap and now < wake_at:
                    self._wait(idle, min(last_drain + gap, wake_at))
                    now = time.monotonic()
                if version != self._socks_version:
                    for p in (idle, rx):
                        p.close()
                    idle, rx, version = self._pollers()
                if now < wake_at and not self._stop and not busy:
                    self._wait(rx, wake_at)
                now = time.monotonic()
                busy = self._drain(now, last_drain) > 0
                last_drain = now
                if now >= next_deaf:
                    self._check_heard(now)
                    next_deaf = now + min(self.dead_after, 10 * self.interval)
                if self._sending and now >= next_send:
                    self._send(0)
                    # Keep the cadence; after a stall (suspend, CPU starvation) resume rather than burst.
                    next_send = max(next_send + self.interval, now)
                if self._publish(now):
                    try:
                        self._loop.call_soon_threadsafe(self.on_change)
                    except RuntimeError:  # loop closed during shutdown
                        return
        finally:
            idle.close()
            rx.close()

    def _check_heard(self, now: float) -> None:
        """Take a new incarnation when peers we hear keep refusing ours (rate-limited); size the queues."""
        if len(self._mine) > 1 and now >= self._previous_until:
            self._decoder.mine = self._mine[:1]
        with self._lock:
            self.peers.forget_silent(now)  # departed peers leave the scans and the queue sizing
            for table in self.segments.values():
                table.forget_silent(now)
            deaf = self.peers.deaf(now)
            peers = self.peers.peer_count()
            if peers > self._rcvbuf_peers:
                for sock, _ in self._socks.values():
                    self._size_rcvbuf(sock, peers)
            if self._rcvbuf:
                arriving = max(peers, 1) / self.interval * RCVBUF_TRUESIZE  # bytes/s
                self._gap = min(max(self._rcvbuf / 2 / arriving, MIN_GAP * self.interval), MAX_GAP * self.interval)
        if not deaf or now < self._next_reincarnation:
            return
        old = self.incarnation
        with self._lock:
            self.incarnation, self._seq = new_incarnation(), 0
            self.peers.echo_everyone_soon()
        # Echoes of the old incarnation still count until peers have heard the new one: no gap.
        self._decoder.mine = (incarnation_bytes(self.incarnation), incarnation_bytes(old))
        self._previous_until = now + 2 * self.dead_after
        self._next_reincarnation = now + 4 * self.dead_after
        self.metrics.heartbeat_reincarnations.inc()
        logger.warning("heartbeat_not_heard_by_peers", peers=sorted(deaf),
                       action="new incarnation", hint="they refuse our beacons (a forged goodbye or sequence "
                                                      "under our incarnation, or a one-way link)")

    def _size_rcvbuf(self, sock: socket.socket, peers: int) -> None:
        """Grow a socket's receive queue for `peers` (called with _lock held); warn once when capped."""
        # Steps of 1.5x: a growing segment resizes a few times, not per new peer.
        peers = max(peers, RCVBUF_MIN_PEERS)
        target = max(peers * 3 // 2, self._rcvbuf_peers)
        want = receive_buffer_for(target, self.interval)
        try:
            got = size_receive_buffer(sock, want)
        except OSError:
            return
        self._rcvbuf_peers = target
        self._note_rcvbuf()
        if got < receive_buffer_for(peers, self.interval) and not self._warned_rcvbuf:
            self._warned_rcvbuf = True
            logger.warning("heartbeat_receive_buffer_small", peers=peers, wanted_bytes=want, granted_bytes=got,
                           hint=f"beacons may be dropped under load; raise net.core.rmem_max on the node, e.g. "
                                f"sysctl -w net.core.rmem_max={want // 2}")

    def _note_rcvbuf(self) -> None:
        """The smallest receive queue of our sockets (called with _lock held): the gauge and the gap."""
        sizes = []
        for sock, _ in self._socks.values():
            try:
                sizes.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
            except OSError:
                pass
        self._rcvbuf = min(sizes, default=None)
        if self._rcvbuf is not None:
            self.metrics.heartbeat_receive_buffer.set(self._rcvbuf)

    def _drain(self, now: float, last_drain: float) -> int:
        """Take every queued beacon into the tables; how many datagrams there were."""
        with self._lock:
            socks = [(s, self.segments.get(name)) for name, (s, _) in self._socks.items()]
        wall = time.time()
        oldest = now - last_drain + RX_AGE_SLACK  # no beacon can be older than our last drain
        rx, node, peers = self._rx, self.node, self.peers
        fields, buf, view, sizes, stamps, truncated = (self._decoder.fields, rx.buf, rx.view, rx.sizes, rx.stamps,
                                                       rx.truncated)
        slot = len(buf) // rx.batch
        rejected = previous_key = total = 0
        for sock, segment in socks:
            for _ in range(64):  # bounded: a flood cannot hold the thread (and our own beacons) forever
                try:
                    n = rx.recv(sock)
                except OSError:  # closed by set_targets meanwhile, or the link went away
                    break
                if rx.dropped is not None:
                    self._count_drops(sock, rx.dropped)
                if not n:
                    break
                total += n
                for first in range(0, n, YIELD_EVERY):
                    if first:
                        os.sched_yield()  # hand the GIL over: an ARP/NDP answer waits at most one chunk
                    with self._lock:
                        for i in range(first, min(first + YIELD_EVERY, n)):
                            got = None if truncated[i] else fields(buf, i * slot, sizes[i], view)
                            if got is None:
                                rejected += 1
                                continue
                            name, inc, seq, interval_ms, leaving, echoes, key_index = got
                            if key_index:
                                previous_key += 1
                            if name == node:
                                continue  # our own broadcast looped back (or a forgery of our name: changes nothing)
                            # Kernel timestamps are wall-clock: turn them into an age, bounded so a clock step
                            # can neither date a beacon in the future nor before our previous drain.
                            stamp = stamps[i]
                            age = min(max(wall - stamp, 0.0), oldest) if stamp else oldest
                            t = now - age
                            peers.observe_fields(name, inc, seq, leaving, echoes, t, interval_ms)  # replays refused
                            if segment is not None:  # the same beacon sent on two NICs counts once per segment
                                segment.observe_fields(name, inc, seq, leaving, echoes, t, interval_ms)
                if n < rx.batch:
                    break
        if rejected:
            self.metrics.heartbeats_rejected.inc(rejected)
        if previous_key:
            self.metrics.heartbeats_previous_key.inc(previous_key)
        return total

    def _count_drops(self, sock: socket.socket, counter: int) -> None:
        fd = sock.fileno()
        last = self._drops.get(fd, 0)
        if counter > last:
            self.metrics.heartbeat_drops.inc(counter - last)
        self._drops[fd] = counter

    def _send(self, leaving: int) -> None:
        with self._lock:
            self._seq += 1
            seq, inc = self._seq, self.incarnation
            targets = list(self._socks.items())
            echo = self.peers.heard(time.monotonic())
        data = encode(Heartbeat(self.node, inc, seq, int(self.interval * 1000), leaving), self.keys, echo)
        for name, (sock, dests) in targets:
            for dest in dests:
                try:
                    sock.sendto(data, dest)
                except OSError as exc:  # link down, no route right now, or closed meanwhile; the next beat retries
                    self._send_failed(name, exc)
                else:
                    if name in self._send_failing:
                        self._send_recovered(name)

    def _send_failed(self, name: str, exc: OSError) -> None:
        """Count every failed beacon; log once per outage of an interface (the next success ends it)."""
        error = errno.errorcode.get(exc.errno or 0, "unknown")
        self.metrics.heartbeat_send_errors.labels(name, error).inc()
        failing = self._send_failing.get(name)
        if failing is None:
            self._send_failing[name] = 1
            logger.warning("heartbeat_send_failed", interface=name, error=error, detail=str(exc),
                           note="peers stop hearing us on this interface while it lasts; logged once per outage")
        else:
            self._send_failing[name] = failing + 1

    def _send_recovered(self, name: str) -> None:
        failed = self._send_failing.pop(name, 0)
        logger.info("heartbeat_send_recovered", interface=name, failed_beacons=failed)

    # --- shutdown (event loop thread) -----------------------------------------------------------
    async def leave(self, restarting: bool = False) -> None:
        """Tell peers we are going so they take over now rather than after dead_after; or, `restarting`, that
        they hold our addresses until our next incarnation is live (their --restart-hold at most)."""
        self._sending = False
        self._poke()
        for _ in range(LEAVE_REPEAT):
            self._send(RESTART if restarting else LEAVE)
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
