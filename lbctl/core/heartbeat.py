"""Speaker-to-speaker heartbeats on the L2 segment: wire format and the peer liveness table.

Kubernetes Leases are too slow for sub-second failover, so speakers beacon each other over UDP.
Wire format (big-endian), authenticated with HMAC-SHA256 under a cluster-wide key:

    magic "LBHB" | version u8 | flags u8 | incarnation u64 | sequence u64 | interval_ms u32
    | name_len u8 | name (utf-8, 1..253 bytes) | hmac (32 bytes over everything before it)

incarnation changes on every restart (e.g. start time in ns) so a restarted peer's sequence can
begin again at 0; (incarnation, sequence) only ever grows, which rejects replays. Pure: the shell
owns the socket and the clock and passes `now` (monotonic seconds) in.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

MAGIC = b"LBHB"
VERSION = 1
FLAG_LEAVING = 0x01  # graceful shutdown: "I am about to go quiet", fail over now
MAX_NAME = 253  # a DNS subdomain, the longest Kubernetes node name
MAC_LEN = 32
DEFAULT_INTERVAL = 0.1
DEFAULT_DEAD_AFTER = 0.45  # 4.5 intervals: survives 3 lost beacons, keeps failover well under 1 s

_HEAD = struct.Struct("!4sBBQQIB")
_U64 = 1 << 64


@dataclass(frozen=True, slots=True)
class Heartbeat:
    node: str
    incarnation: int
    sequence: int
    interval_ms: int = int(DEFAULT_INTERVAL * 1000)
    leaving: bool = False


def encode(hb: Heartbeat, key: bytes) -> bytes:
    """Serialise and sign; ValueError for a heartbeat that cannot be represented."""
    name = hb.node.encode()
    if not 0 < len(name) <= MAX_NAME:
        raise ValueError(f"node name must be 1..{MAX_NAME} utf-8 bytes")
    if not (0 <= hb.incarnation < _U64 and 0 <= hb.sequence < _U64 and 0 <= hb.interval_ms < 1 << 32):
        raise ValueError("incarnation/sequence must fit u64 and interval_ms u32")
    flags = FLAG_LEAVING if hb.leaving else 0
    body = _HEAD.pack(MAGIC, VERSION, flags, hb.incarnation, hb.sequence, hb.interval_ms, len(name)) + name
    return body + hmac.digest(key, body, hashlib.sha256)


def decode(data: bytes | bytearray | memoryview, key: bytes) -> Heartbeat | None:
    """Verify and parse; None for anything not a well-formed heartbeat signed with `key`."""
    try:
        data = bytes(data)
        if len(data) < _HEAD.size + 1 + MAC_LEN:
            return None
        magic, version, flags, inc, seq, interval, nlen = _HEAD.unpack_from(data)
        if magic != MAGIC or version != VERSION or not 0 < nlen <= MAX_NAME:
            return None
        end = _HEAD.size + nlen
        if len(data) != end + MAC_LEN:
            return None
        # Authenticate before trusting any field further; constant time against forgery probing.
        if not hmac.compare_digest(data[end:], hmac.digest(key, data[:end], hashlib.sha256)):
            return None
        name = data[_HEAD.size : end].decode()
    except (struct.error, TypeError, ValueError):  # includes UnicodeDecodeError
        return None
    # Unknown flag bits are ignored so a later minor addition does not need a version bump.
    return Heartbeat(name, inc, seq, interval, bool(flags & FLAG_LEAVING))


@dataclass(slots=True)
class _Peer:
    incarnation: int
    sequence: int
    last_seen: float
    interval_ms: int
    left: bool


class PeerTable:
    """Who is alive, from the heartbeats seen so far.

    Records are kept after a peer leaves or times out, so a replayed old heartbeat cannot revive
    it. Limitation: a table that starts empty (we restarted) accepts one replay of a captured
    heartbeat per peer, which at worst keeps a dead peer "live" for one dead_after.
    """

    def __init__(self, self_name: str, dead_after: float = DEFAULT_DEAD_AFTER) -> None:
        self.self_name = self_name
        self.dead_after = dead_after
        self._peers: dict[str, _Peer] = {}

    def observe(self, hb: Heartbeat, now: float) -> bool:
        """Record a verified heartbeat; False if it was stale (a replay or reordered) or our own."""
        if hb.node == self.self_name:  # our broadcast looped back
            return False
        p = self._peers.get(hb.node)
        if p is not None and (hb.incarnation, hb.sequence) <= (p.incarnation, p.sequence):
            return False
        self._peers[hb.node] = _Peer(hb.incarnation, hb.sequence, now, hb.interval_ms, hb.leaving)
        return True

    def _alive(self, p: _Peer, now: float) -> bool:
        return not p.left and now - p.last_seen <= self.dead_after

    def live(self, now: float) -> set[str]:
        out = {n for n, p in self._peers.items() if self._alive(p, now)}
        out.add(self.self_name)
        return out

    def next_expiry(self, now: float) -> float | None:
        """Earliest time a currently live peer would turn dead; when the shell should recompute."""
        times = [p.last_seen + self.dead_after for p in self._peers.values() if self._alive(p, now)]
        return min(times, default=None)

    def forget(self, node: str) -> None:
        """Drop all state for a node deleted from the cluster (bounds memory)."""
        self._peers.pop(node, None)
