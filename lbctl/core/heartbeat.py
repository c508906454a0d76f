"""Speaker-to-speaker heartbeats on the L2 segment: wire format, keyring and the peer liveness table.

Kubernetes Leases are too slow for sub-second failover, so speakers beacon each other over UDP.
Wire format (big-endian), authenticated with HMAC-SHA256 under a cluster-wide key:

    magic "LBHB" | version u8 (2) | flags u8 | incarnation u64 | sequence u64 | interval_ms u32
    | name_len u8 | echo_count u8 | name (utf-8, 1..253 bytes) | echo: incarnation u64 * echo_count
    | hmac (32 bytes over everything before it)

Identity without clocks (docs/reliability.md, "Heartbeats: identity, replay, keys"): the incarnation is
random per process start and carries no order; within one incarnation the sequence only grows. The echo
lists incarnations the sender hears: every new one (first heard within dead_after) in each beacon, the
others in turn, a few per beacon, so all are echoed every ECHO_ROTATION beacons whatever the segment's
size. A receiver counts a peer incarnation live once one of its beacons echoed one of the receiver's *own*
incarnations (verified); each newer beacon of it then keeps it live, as long as it echoed us again within
dead_after + ECHO_WINDOW of its intervals. A beacon captured before the receiver's current incarnation
existed can never make a peer live, whatever the clocks say. Pure: the shell owns the socket, the
randomness and the clock and passes `now` (monotonic seconds) in.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hmac import compare_digest

MAGIC = b"LBHB"
VERSION = 2
FLAG_LEAVING = 0x01  # graceful shutdown: "I am about to go quiet", fail over now
# With FLAG_LEAVING: "I am restarting (a rolling update): hold my addresses" (PeerTable.restart_hold). Speakers
# that predate it see a plain goodbye and fail over, as before.
FLAG_RESTART = 0x02
LEAVE, RESTART = FLAG_LEAVING, FLAG_LEAVING | FLAG_RESTART  # the `leaving` values a beacon can carry
MAX_NAME = 253  # a DNS subdomain, the longest Kubernetes node name
MAC_LEN = 32
MAX_ECHO = 140  # longest beacon (253-byte name) stays under a 1500-byte MTU: no IP fragments
MAX_KEYS = 4
DEFAULT_INTERVAL = 0.1
DEFAULT_DEAD_AFTER = 0.45  # 4.5 intervals: survives 3 lost beacons, keeps failover well under 1 s
# --timing presets, (interval, dead_after) seconds; docs/reliability.md has their failover and CPU figures.
TIMING_PRESETS = {
    "default": (DEFAULT_INTERVAL, DEFAULT_DEAD_AFTER),
    "fast": (0.1, 0.3),  # like keepalived with 0.1 s adverts: 3 intervals, survives 2 lost beacons
    "relaxed": (0.25, 1.0),  # large segments: 2.5x fewer beacons to send and receive, failover ~1 s
}
INCARNATIONS_PER_PEER = 4  # a restart, a forgery or two; the least recently heard is retired beyond that
RETIRED_PER_PEER = 64  # retired incarnations refused for good (bounded memory)
ECHO_SLOTS = 32  # rotating echoes per beacon at least (besides new incarnations): small beacons
ECHO_ROTATION = 10  # every heard incarnation is echoed at least once per this many beacons
ECHO_WINDOW = 32  # a verified peer must echo us again within dead_after + this many of its intervals
MAX_WINDOW_INTERVAL_MS = 2000  # bound on the interval a beacon claims, for the echo window
NAME_CACHE = 4096  # node-name bytes -> str, cleared when full (a key holder could invent names)
FORGET_MIN_S = 60.0  # a peer silent this long (or 100 dead_after, if longer) leaves the table
GHOSTS = 1024  # forgotten peers whose incarnations stay refused (bounded); the oldest are dropped beyond

_HEAD = struct.Struct("!4sBBQQIBB")
_U64 = 1 << 64
_INC = struct.Struct("!Q")
_MIN_LEN = _HEAD.size + 1 + MAC_LEN
_NEVER = float("-inf")
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    node: str
    incarnation: int
    sequence: int
    interval_ms: int = int(DEFAULT_INTERVAL * 1000)
    leaving: int = 0  # 0, LEAVE (fail over now) or RESTART (hold my addresses); True means LEAVE
    echoes_us: bool = True  # set by decode: the sender has heard one of the receiver's incarnations
    key_index: int = 0  # set by decode: which key of the ring verified it (0 = the signing key)


class Keyring:
    """Heartbeat keys: sign with the first, accept any (rotation without failover)."""

    __slots__ = ("keys", "macs")

    def __init__(self, keys: Iterable[bytes]) -> None:
        self.keys = tuple(keys)
        if not 1 <= len(self.keys) <= MAX_KEYS:
            raise ValueError(f"a heartbeat keyring holds 1..{MAX_KEYS} keys, got {len(self.keys)}")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("the same heartbeat key is listed twice")
        self.macs = tuple(_Mac(k) for k in self.keys)


class _Mac:
    """HMAC-SHA256 under one key with the padded-key states precomputed (RFC 2104): per message two
    SHA-256 state copies instead of a key schedule, about half the cost of hmac.digest here."""

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, msg: bytes | bytearray | memoryview) -> bytes:
        inner = self.inner.copy()
        inner.update(msg)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _macs(keys: Keyring | bytes) -> tuple[_Mac, ...]:
    if isinstance(keys, Keyring):
        return keys.macs
    if not isinstance(keys, (bytes, bytearray)):
        raise TypeError("a heartbeat key is bytes")
    return (_Mac(bytes(keys)),)


def incarnation_bytes(incarnation: int) -> bytes:
    """What decode compares echoes against; the shell precomputes it once per incarnation."""
    return _INC.pack(incarnation)


def encode(hb: Heartbeat, keys: Keyring | bytes, echo: Sequence[int] = ()) -> bytes:
    """Serialise and sign with the first key; ValueError for a heartbeat that cannot be represented."""
    name = hb.node.encode()
    if not 0 < len(name) <= MAX_NAME:
        raise ValueError(f"node name must be 1..{MAX_NAME} utf-8 bytes")
    if not (0 <= hb.incarnation < _U64 and 0 <= hb.sequence < _U64 and 0 <= hb.interval_ms < 1 << 32):
        raise ValueError("incarnation/sequence must fit u64 and interval_ms u32")
    if len(echo) > MAX_ECHO:
        raise ValueError(f"at most {MAX_ECHO} echoed incarnations")
    flags = int(hb.leaving) & RESTART if hb.leaving else 0
    body = (_HEAD.pack(MAGIC, VERSION, flags, hb.incarnation, hb.sequence, hb.interval_ms, len(name), len(echo))
            + name + struct.pack(f"!{len(echo)}Q", *echo))
    return body + _macs(keys)[0].digest(body)


class Decoder:
    """The receive path: verify and parse a beacon in place, in a receive buffer, without building objects.

    `mine`: the receiver's own incarnations (incarnation_bytes), updated by the shell on reincarnation.
    """

    __slots__ = ("macs", "mine", "_names")

    def __init__(self, keys: Keyring | bytes, mine: Sequence[bytes] = ()) -> None:
        self.macs = _macs(keys)
        self.mine = tuple(mine)
        self._names: dict[bytes, str] = {}

    def fields(self, buf: bytes | bytearray, off: int = 0, n: int | None = None,
               view: memoryview | None = None) -> tuple[str, int, int, int, int, bool, int] | None:
        """(node, incarnation, sequence, interval_ms, leaving (0, LEAVE, RESTART), echoes_us, key_index) of the datagram at
        buf[off:off+n], or None for anything not a well-formed heartbeat signed with one of the keys.
        `view`: memoryview(buf), passed by a caller that decodes many datagrams out of one buffer."""
        if n is None:
            n = len(buf) - off
        if n < _MIN_LEN or off + n > len(buf):
            return None
        try:
            magic, version, flags, inc, seq, interval, nlen, ecount = _HEAD.unpack_from(buf, off)
        except (struct.error, TypeError):
            return None
        if magic != MAGIC or version != VERSION or not 0 < nlen <= MAX_NAME or ecount > MAX_ECHO:
            return None
        names = off + _HEAD.size
        echo = names + nlen
        end = echo + 8 * ecount
        if off + n != end + MAC_LEN:
            return None
        mv = memoryview(buf) if view is None else view
        # Authenticate before trusting any field further; constant time against forgery probing. The
        # signing key is tried first, so a settled ring costs one HMAC per beacon (inlined _Mac.digest).
        index = 0
        body, sig = mv[off:end], mv[end:end + MAC_LEN]
        for mac in self.macs:
            inner = mac.inner.copy()
            inner.update(body)
            outer = mac.outer.copy()
            outer.update(inner.digest())
            if compare_digest(sig, outer.digest()):
                break
            index += 1
        else:
            return None
        raw = bytes(mv[names:echo])
        name = self._names.get(raw)
        if name is None:
            try:
                name = raw.decode()
            except UnicodeDecodeError:
                return None
            if len(self._names) >= NAME_CACHE:
                self._names.clear()
            self._names[raw] = name
        echoes = False
        for me in self.mine:  # aligned search, no per-entry objects
            at = buf.find(me, echo, end)
            while at >= 0 and (at - echo) % 8:
                at = buf.find(me, at + 1, end)
            if at >= 0:
                echoes = True
                break
        # Unknown flag bits are ignored so a later minor addition does not need a version bump.
        return name, inc, seq, interval, flags & RESTART if flags & FLAG_LEAVING else 0, echoes, index


def forget_after(dead_after: float) -> float:
    """Silence after which a peer leaves the table (PeerTable.forget_silent)."""
    return max(FORGET_MIN_S, 100 * dead_after)


def decode(data: bytes | bytearray | memoryview, keys: Keyring | bytes,
           mine: Sequence[bytes] = ()) -> Heartbeat | None:
    """Verify and parse; None for anything not a well-formed heartbeat signed with one of `keys`.

    `mine`: the receiver's own incarnations (incarnation_bytes); echoes_us says whether one is echoed.
    """
    if not isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data)
        except TypeError:
            return None
    try:
        got = Decoder(keys, mine).fields(data)
    except TypeError:
        return None
    return None if got is None else Heartbeat(*got)


class _Inc:
    __slots__ = ("inc", "sequence", "first_seen", "last_seen", "last_echo", "window", "left", "gone", "echoed")

    def __init__(self, inc: int, sequence: int, now: float, echoed: bool, window: float, left: bool) -> None:
        self.inc, self.sequence, self.first_seen, self.last_seen = inc, sequence, now, now
        self.last_echo = now if echoed else _NEVER  # last accepted beacon that echoed us; -inf: unverified
        self.window = window  # how long after an echo the next one must come: dead_after + ECHO_WINDOW intervals
        self.left = left
        self.gone = False  # retired or forgotten: skipped by the echo rotation
        self.echoed = 0  # beacons of ours that echoed it while it was new


@dataclass(slots=True)
class _Peer:
    incs: dict[int, _Inc]
    retired: dict[int, None]  # insertion-ordered set
    held_until: float = _NEVER  # restarting: live until then, or until another incarnation of it is
    held_inc: int = -1  # the incarnation that asked for the hold


class PeerTable:
    """Who is alive, from the heartbeats seen so far.

    Per peer, a few incarnations are tracked at once (a restarted process overlaps its predecessor's
    expiry; a forged incarnation is just one more, which expires). A peer is live while any of its
    incarnations, not left, is verified (echoed us once), was heard within dead_after and echoed us within
    its echo window. Incarnations pushed out of the table or that said goodbye are refused for good
    (bounded), so their replays cannot revive them.

    The shell's fast path: observe_fields per beacon, then refresh(now) per wake-up, which recomputes
    the live set only when a beacon may have changed it or the earliest deadline (`due`) has passed.

    `require_echo=False` (the per-interface tables): live = heard within dead_after, not left; the echo
    rules are enforced by intersecting with the table that requires them.

    Departed peers: a peer silent for forget_after, or whose Node
    was deleted, leaves the table, so it is no longer scanned, counted in peer_count() or echoed. Its
    record moves to a bounded set of ghosts (GHOSTS, oldest dropped first), restored as it was if the
    node is heard again: a replay of a forgotten incarnation stays refused, and forgetting never changes
    who is live while the ghost is kept.
    """

    def __init__(self, self_name: str, dead_after: float = DEFAULT_DEAD_AFTER, require_echo: bool = True,
                 restart_hold: float = 0.0) -> None:
        self.self_name = self_name
        self.dead_after = dead_after
        self.restart_hold = restart_hold  # seconds a restarting peer stays live after its goodbye; 0: none
        self.require_echo = require_echo
        self._burst = 0  # 1, 2: a round of echoes at MAX_ECHO per beacon is about to start, under way
        self._peers: dict[str, _Peer] = {}
        self.live_set: frozenset[str] = frozenset((self_name,))  # as of the last refresh
        self.due = _INF  # no live incarnation expires before this (a lower bound); refresh then
        self._dirty = False
        self._fresh: deque[_Inc] = deque()  # incarnations in the order first heard, the last dead_after
        self._ring: list[_Inc] = []  # echo rotation, rebuilt each time round
        self._rotating = False  # more incarnations heard than fit in a beacon
        self._cursor = 0
        self.forget_after = forget_after(dead_after)
        self.ghosts_max = GHOSTS
        self._ghosts: dict[str, _Peer] = {}  # forgotten peers, oldest first
        self._next_forget = 0.0

    def observe(self, hb: Heartbeat, now: float) -> bool:
        """Record a verified heartbeat; False if it was stale (a replay, reordered, retired) or our own."""
        return self.observe_fields(hb.node, hb.incarnation, hb.sequence, hb.leaving, hb.echoes_us, now,
                                   hb.interval_ms)

    def observe_fields(self, node: str, inc: int, seq: int, leaving: int, echoes_us: bool, now: float,
                       interval_ms: int = int(DEFAULT_INTERVAL * 1000)) -> bool:
        """observe() without a Heartbeat: what the receive path calls per beacon."""
        if node == self.self_name:  # our broadcast looped back
            return False
        echoes_us = echoes_us or not self.require_echo
        peer = self._peers.get(node)
        if peer is None:
            peer = self._ghosts.get(node)
            if peer is None:
                peer = self._peers[node] = _Peer({}, {})
            else:  # forgotten: back in the table only on a beacon its record accepts (a replay stays out)
                old = peer.incs.get(inc)
                if inc in peer.retired or (old is not None and (old.left or seq <= old.sequence)):
                    return False
                self._peers[node] = self._ghosts.pop(node)
                for r in peer.incs.values():
                    r.gone = False
        rec = peer.incs.get(inc)
        window = self.dead_after + ECHO_WINDOW * min(interval_ms, MAX_WINDOW_INTERVAL_MS) / 1000
        if rec is None:
            if inc in peer.retired:
                return False
            if len(peer.incs) >= INCARNATIONS_PER_PEER:
                self._retire(peer, min(peer.incs, key=lambda i: peer.incs[i].last_seen))
            rec = peer.incs[inc] = _Inc(inc, seq, now, echoes_us, window, bool(leaving))
            self._fresh.append(rec)
        else:
            if rec.left or seq <= rec.sequence:
                return False
            rec.sequence, rec.last_seen, rec.left, rec.window = seq, now, bool(leaving), window
            if echoes_us:
                rec.last_echo = now
        if peer.held_until != _NEVER and (inc != peer.held_inc and self._alive(rec, now) or leaving == LEAVE):
            peer.held_until, peer.held_inc = _NEVER, -1  # its next incarnation is live, or it left for good
            self._dirty = True
        if leaving == RESTART and self.restart_hold > 0 and node in self.live_set:
            # Only a live peer's restart is held: a goodbye must not revive a peer we had taken for dead.
            peer.held_until, peer.held_inc = now + self.restart_hold, inc
        if leaving:
            self._dirty = self._dirty or node in self.live_set
        elif node not in self.live_set and self._alive(rec, now):
            self._dirty = True
        return True

    def _retire(self, peer: _Peer, inc: int) -> None:
        rec = peer.incs.pop(inc)
        rec.gone = True
        self._dirty = True
        peer.retired[inc] = None
        if len(peer.retired) > RETIRED_PER_PEER:
            del peer.retired[next(iter(peer.retired))]

    def _alive(self, r: _Inc, now: float) -> bool:
        return not r.left and now - r.last_seen <= self.dead_after and now - r.last_echo <= r.window

    def _expiry(self, r: _Inc) -> float:
        return min(r.last_seen + self.dead_after, r.last_echo + r.window)

    def live(self, now: float) -> set[str]:
        out = {n for n, p in self._peers.items() if now < p.held_until or any(self._alive(r, now) for r in p.incs.values())}
        out.add(self.self_name)
        return out

    def next_expiry(self, now: float) -> float | None:
        """Earliest time a currently live incarnation would turn dead; when the shell should recompute."""
        best = _INF
        for p in self._peers.values():
            if now < p.held_until < best:
                best = p.held_until
            for r in p.incs.values():
                if self._alive(r, now):
                    t = self._expiry(r)
                    if t < best:
                        best = t
        return None if best == _INF else best

    def refresh(self, now: float) -> bool:
        """Bring live_set and due up to date, cheaply when nothing can have changed; True if live_set did."""
        if not self._dirty and now < self.due:
            return False
        self._dirty = False
        live, due = {self.self_name}, _INF
        for name, p in self._peers.items():
            if now < p.held_until:
                live.add(name)
                due = min(due, p.held_until)
            for r in p.incs.values():
                if self._alive(r, now):
                    live.add(name)
                    t = self._expiry(r)
                    if t < due:
                        due = t
        self.due = due
        self._prune_fresh(now)
        if live == self.live_set:
            return False
        self.live_set = frozenset(live)
        return True

    def _prune_fresh(self, now: float) -> None:
        fresh = self._fresh
        while fresh and (fresh[0].gone or now - fresh[0].first_seen > self.dead_after):
            fresh.popleft()

    def _echoable(self, r: _Inc, now: float) -> bool:
        return not r.gone and not r.left and now - r.last_seen <= self.dead_after

    def heard(self, now: float) -> list[int]:
        """Incarnations to echo in our next beacon: those heard within dead_after and not left. All of them
        while they fit in a beacon (as speakers before the rotation did, and need: they count a peer live
        only on beacons that echo them). Beyond MAX_ECHO, new ones (first heard within dead_after) go in
        every beacon, so a starting peer is verified within one interval, and the others take turns,
        ECHO_SLOTS or more per beacon, each at least once per ECHO_ROTATION beacons (the newest MAX_ECHO
        would starve the rest)."""
        self._prune_fresh(now)
        if not self._rotating:
            everyone = [r.inc for p in self._peers.values() for r in p.incs.values() if self._echoable(r, now)]
            if len(everyone) <= MAX_ECHO:
                return everyone
            self._rotating = True
            self._cursor = len(self._ring)  # start a round
        n = len(self._ring)
        slots = MAX_ECHO if self._burst else min(MAX_ECHO, max(ECHO_SLOTS, -(-n // ECHO_ROTATION)))
        out: list[int] = []
        chosen: set[int] = set()
        fresh = [r for r in reversed(self._fresh) if self._echoable(r, now)]
        if len(fresh) > MAX_ECHO - slots:  # many new at once (we just started): least echoed first
            fresh.sort(key=lambda r: r.echoed)
        for r in fresh[:MAX_ECHO - slots]:
            if r.inc not in chosen:
                r.echoed += 1
                out.append(r.inc)
                chosen.add(r.inc)
        taken, rebuilt = 0, False
        while taken < slots:
            if self._cursor >= len(self._ring):
                if rebuilt:
                    break
                self._burst = 2 if self._burst == 1 else 0  # a round starts, or one is complete
                self._ring = [r for p in self._peers.values() for r in p.incs.values() if self._echoable(r, now)]
                self._cursor, rebuilt = 0, True
                if len(self._ring) <= MAX_ECHO and not self._burst:
                    self._rotating = False  # fits in a beacon again: echo everyone from the next one
                continue
            r = self._ring[self._cursor]
            self._cursor += 1
            if self._echoable(r, now) and r.inc not in chosen:
                out.append(r.inc)
                chosen.add(r.inc)
                taken += 1
        return out

    def echo_everyone_soon(self) -> None:
        """We took a new incarnation: peers count it live only once we echo them, and the old one expires
        after dead_after, so start a round of echoes at MAX_ECHO per beacon (500 peers: 4 beacons)."""
        self._burst = 1
        self._cursor = len(self._ring)

    def unverified(self, now: float) -> set[str]:
        """Peers heard within dead_after (not left) of which no incarnation is live yet: they have not echoed us.
        To an election they look dead; a starting speaker waits for them (warm_up_done) before it elects."""
        out = set()
        for name, p in self._peers.items():
            heard = False
            for r in p.incs.values():
                if self._alive(r, now):
                    break
                heard = heard or (not r.left and now - r.last_seen <= self.dead_after)
            else:
                if heard:
                    out.add(name)
        return out

    def deaf(self, now: float) -> list[str]:
        """Peers we keep hearing that have not echoed us for longer than their echo window: they refuse our
        incarnation (a forged goodbye or sequence under it, say); the shell then takes a new one."""
        out = []
        for name, p in self._peers.items():
            heard = deaf = False
            for r in p.incs.values():
                if r.left or now - r.last_seen > self.dead_after:
                    continue
                heard = True
                if now - max(r.last_echo, r.first_seen) <= r.window:
                    break
            else:
                deaf = heard
            if deaf:
                out.append(name)
        return out

    def peer_count(self) -> int:
        """Node names tracked (heard at some point and not forgotten)."""
        return len(self._peers)

    def forget(self, node: str) -> None:
        """A node deleted from the cluster: out of the table (bounds memory and scans), into the ghosts."""
        peer = self._peers.pop(node, None)
        if peer is not None:
            self._bury(node, peer)
            self._dirty = True

    def forget_silent(self, now: float) -> int:
        """Forget peers silent for forget_after whose echo windows have lapsed too (so they cannot be live),
        scanning at most once a second. Returns how many were forgotten."""
        if now < self._next_forget:
            return 0
        self._next_forget = now + 1.0
        quiet = [name for name, p in self._peers.items()
                 if all(now - r.last_seen > self.forget_after and now - r.last_echo > r.window
                        for r in p.incs.values())]
        for name in quiet:
            self._bury(name, self._peers.pop(name))
        return len(quiet)

    def _bury(self, node: str, peer: _Peer) -> None:
        for r in peer.incs.values():
            r.gone = True
        self._ghosts.pop(node, None)
        self._ghosts[node] = peer
        while len(self._ghosts) > self.ghosts_max:
            del self._ghosts[next(iter(self._ghosts))]


WARM_UP_CAP = 10  # dead_afters: how long a starting speaker waits at most for the peers it hears to verify it


def warm_up_done(elapsed: float, dead_after: float, unverified: set[str]) -> bool:
    """Whether a starting speaker may elect: after one dead_after of listening (it has heard whoever is there),
    once every peer it hears has echoed it (else it would take them for dead and claim their addresses for
    a moment: two moves, each resetting the connections in flight), or after WARM_UP_CAP dead_afters (a peer
    that never echoes is handled as deaf, see PeerTable.deaf)."""
    if elapsed < dead_after:
        return False
    return not unverified or elapsed >= WARM_UP_CAP * dead_after
