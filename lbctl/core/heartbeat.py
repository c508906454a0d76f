"""Speaker-to-speaker heartbeats on the L2 segment: wire format, keyring and the peer liveness table.

Kubernetes Leases are too slow for sub-second failover, so speakers beacon each other over UDP.
Wire format (big-endian), authenticated with HMAC-SHA256 under a cluster-wide key:

    magic "LBHB" | version u8 (2) | flags u8 | incarnation u64 | sequence u64 | interval_ms u32
    | name_len u8 | echo_count u8 | name (utf-8, 1..253 bytes) | echo: incarnation u64 * echo_count
    | hmac (32 bytes over everything before it)

Identity without clocks (docs/reliability.md, "Heartbeats: identity, replay, keys"): the incarnation is
random per process start and carries no order; within one incarnation the sequence only grows. The echo
lists the incarnations the sender has heard lately, and a receiver counts a peer live only on beacons
that echo one of its *own* incarnations: a beacon captured before the receiver's current incarnation
existed can never make a peer live, whatever the clocks say. Pure: the shell owns the socket, the
randomness and the clock and passes `now` (monotonic seconds) in.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAGIC = b"LBHB"
VERSION = 2
FLAG_LEAVING = 0x01  # graceful shutdown: "I am about to go quiet", fail over now
MAX_NAME = 253  # a DNS subdomain, the longest Kubernetes node name
MAC_LEN = 32
MAX_ECHO = 140  # longest beacon (253-byte name) stays under a 1500-byte MTU: no IP fragments
MAX_KEYS = 4
DEFAULT_INTERVAL = 0.1
DEFAULT_DEAD_AFTER = 0.45  # 4.5 intervals: survives 3 lost beacons, keeps failover well under 1 s
INCARNATIONS_PER_PEER = 4  # a restart, a forgery or two; the least recently heard is retired beyond that
RETIRED_PER_PEER = 64  # retired incarnations refused for good (bounded memory)

_HEAD = struct.Struct("!4sBBQQIBB")
_U64 = 1 << 64
_INC = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    node: str
    incarnation: int
    sequence: int
    interval_ms: int = int(DEFAULT_INTERVAL * 1000)
    leaving: bool = False
    echoes_us: bool = True  # set by decode: the sender has heard one of the receiver's incarnations
    key_index: int = 0  # set by decode: which key of the ring verified it (0 = the signing key)


class Keyring:
    """Heartbeat keys: sign with the first, accept any (rotation without failover)."""

    __slots__ = ("keys",)

    def __init__(self, keys: Iterable[bytes]) -> None:
        self.keys = tuple(keys)
        if not 1 <= len(self.keys) <= MAX_KEYS:
            raise ValueError(f"a heartbeat keyring holds 1..{MAX_KEYS} keys, got {len(self.keys)}")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("the same heartbeat key is listed twice")


def _ring(keys: Keyring | bytes) -> tuple[bytes, ...]:
    return (keys,) if isinstance(keys, bytes) else keys.keys


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
    flags = FLAG_LEAVING if hb.leaving else 0
    body = (_HEAD.pack(MAGIC, VERSION, flags, hb.incarnation, hb.sequence, hb.interval_ms, len(name), len(echo))
            + name + struct.pack(f"!{len(echo)}Q", *echo))
    return body + hmac.digest(_ring(keys)[0], body, hashlib.sha256)


def decode(data: bytes | bytearray | memoryview, keys: Keyring | bytes,
           mine: Sequence[bytes] = ()) -> Heartbeat | None:
    """Verify and parse; None for anything not a well-formed heartbeat signed with one of `keys`.

    `mine`: the receiver's own incarnations (incarnation_bytes); echoes_us says whether one is echoed.
    """
    try:
        data = bytes(data)
        if len(data) < _HEAD.size + 1 + MAC_LEN:
            return None
        magic, version, flags, inc, seq, interval, nlen, ecount = _HEAD.unpack_from(data)
        if magic != MAGIC or version != VERSION or not 0 < nlen <= MAX_NAME or ecount > MAX_ECHO:
            return None
        names = _HEAD.size + nlen
        end = names + 8 * ecount
        if len(data) != end + MAC_LEN:
            return None
        # Authenticate before trusting any field further; constant time against forgery probing. The
        # signing key is tried first, so a settled ring costs one HMAC per beacon.
        for index, key in enumerate(_ring(keys)):
            if hmac.compare_digest(data[end:], hmac.digest(key, data[:end], hashlib.sha256)):
                break
        else:
            return None
        name = data[_HEAD.size : names].decode()
    except (struct.error, TypeError, ValueError):  # includes UnicodeDecodeError
        return None
    echoes = False
    for me in mine:  # aligned search, no per-entry objects
        at = data.find(me, names, end)
        while at >= 0 and (at - names) % 8:
            at = data.find(me, at + 1, end)
        if at >= 0:
            echoes = True
            break
    # Unknown flag bits are ignored so a later minor addition does not need a version bump.
    return Heartbeat(name, inc, seq, interval, bool(flags & FLAG_LEAVING), echoes, index)


@dataclass(slots=True)
class _Inc:
    sequence: int
    first_seen: float
    last_seen: float  # last accepted beacon: we echo this incarnation while it is recent
    last_echo: float  # last accepted beacon that echoed us: liveness
    left: bool


@dataclass(slots=True)
class _Peer:
    incs: dict[int, _Inc]
    retired: dict[int, None]  # insertion-ordered set


_NEVER = float("-inf")


class PeerTable:
    """Who is alive, from the heartbeats seen so far.

    Per peer, a few incarnations are tracked at once (a restarted process overlaps its predecessor's
    expiry; a forged incarnation is just one more, which expires). A peer is live while any of its
    incarnations, not left, sent a beacon echoing us within dead_after. Incarnations pushed out of the
    table or that said goodbye are refused for good (bounded), so their replays cannot revive them.
    """

    def __init__(self, self_name: str, dead_after: float = DEFAULT_DEAD_AFTER) -> None:
        self.self_name = self_name
        self.dead_after = dead_after
        self._peers: dict[str, _Peer] = {}

    def observe(self, hb: Heartbeat, now: float) -> bool:
        """Record a verified heartbeat; False if it was stale (a replay, reordered, retired) or our own."""
        if hb.node == self.self_name:  # our broadcast looped back
            return False
        peer = self._peers.get(hb.node)
        if peer is None:
            peer = self._peers[hb.node] = _Peer({}, {})
        rec = peer.incs.get(hb.incarnation)
        if rec is None:
            if hb.incarnation in peer.retired:
                return False
            if len(peer.incs) >= INCARNATIONS_PER_PEER:
                self._retire(peer, min(peer.incs, key=lambda i: peer.incs[i].last_seen))
            peer.incs[hb.incarnation] = _Inc(hb.sequence, now, now, now if hb.echoes_us else _NEVER, hb.leaving)
            return True
        if rec.left or hb.sequence <= rec.sequence:
            return False
        rec.sequence, rec.last_seen, rec.left = hb.sequence, now, hb.leaving
        if hb.echoes_us:
            rec.last_echo = now
        return True

    @staticmethod
    def _retire(peer: _Peer, inc: int) -> None:
        del peer.incs[inc]
        peer.retired[inc] = None
        if len(peer.retired) > RETIRED_PER_PEER:
            del peer.retired[next(iter(peer.retired))]

    def _alive(self, r: _Inc, now: float) -> bool:
        return not r.left and now - r.last_echo <= self.dead_after

    def live(self, now: float) -> set[str]:
        out = {n for n, p in self._peers.items() if any(self._alive(r, now) for r in p.incs.values())}
        out.add(self.self_name)
        return out

    def next_expiry(self, now: float) -> float | None:
        """Earliest time a currently live incarnation would turn dead; when the shell should recompute."""
        times = [r.last_echo + self.dead_after for p in self._peers.values() for r in p.incs.values()
                 if self._alive(r, now)]
        return min(times, default=None)

    def heard(self, now: float) -> list[int]:
        """Incarnations to echo in our next beacon: heard within dead_after and not left, newest first."""
        recent = [(r.last_seen, inc) for p in self._peers.values() for inc, r in p.incs.items()
                  if not r.left and now - r.last_seen <= self.dead_after]
        recent.sort(reverse=True)
        return [inc for _, inc in recent[:MAX_ECHO]]

    def deaf(self, now: float) -> list[str]:
        """Peers we keep hearing that have not echoed us for longer than dead_after: they refuse our
        incarnation (a forged goodbye or sequence under it, say); the shell then takes a new one."""
        out = []
        for name, p in self._peers.items():
            heard = [r for r in p.incs.values() if not r.left and now - r.last_seen <= self.dead_after]
            if heard and all(now - max(r.last_echo, r.first_seen) > self.dead_after for r in heard):
                out.append(name)
        return out

    def forget(self, node: str) -> None:
        """Drop all state for a node deleted from the cluster (bounds memory)."""
        self._peers.pop(node, None)
