"""Which Event writes to make, as client-go's EventCorrelator decides (the I/O is lbctl/kube/events.py).

- The same type, reason and message on the same object within WINDOW_S is one Event whose `count` is raised
  (a patch), not a new Event.
- Each object has a token bucket (client-go's spam filter: burst 25, one token per 5 minutes): a write, create
  or patch, takes a token; with none left the emit is counted but not written. A flapping condition therefore
  costs the API server at most 25 writes per object at once and one per 5 minutes after that.
- While a write for an Event is on its way, further emits only raise its count; when the write is done, one
  patch carries them all (`done` returns it).
Both tables are bounded (least recently used out), as client-go's LRU caches are.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

WINDOW_S = 600.0  # client-go: defaultAggregateIntervalInSeconds
BURST = 25  # client-go: defaultSpamBurst
REFILL_S = 300.0  # client-go: defaultSpamQPS = 1/300
MAX_KEYS = 4096  # client-go: maxLruCacheEntries

Key = tuple[str, str, str, str]  # (object, type, reason, message)


@dataclass(frozen=True)
class Write:
    key: Key
    name: str | None  # the Event to patch; None: create a new one
    count: int


@dataclass
class _Entry:
    name: str | None
    count: int  # emits so far
    written: int  # count the API server has
    last: float  # last emit
    busy: bool  # a write is on its way


@dataclass
class _Bucket:
    tokens: float
    at: float


class Correlator:
    def __init__(self, burst: int = BURST, refill_s: float = REFILL_S, window_s: float = WINDOW_S,
                 max_keys: int = MAX_KEYS) -> None:
        self.burst, self.refill_s, self.window_s, self.max_keys = burst, refill_s, window_s, max_keys
        self._events: OrderedDict[Key, _Entry] = OrderedDict()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.dropped = 0  # emits not written for want of a token (their count may ride on a later patch)

    def emit(self, obj: str, type_: str, reason: str, message: str, now: float) -> Write | None:
        key = (obj, type_, reason, message)
        entry = self._events.get(key)
        if entry is not None and not entry.busy and now - entry.last > self.window_s:
            del self._events[key]  # a repeat long after: a new Event, as client-go starts a new one
            entry = None
        if entry is None:
            if not self._take(obj, now):
                self.dropped += 1
                return None
            self._remember(key, _Entry(None, 1, 0, now, True))
            return Write(key, None, 1)
        self._events.move_to_end(key)
        entry.count, entry.last = entry.count + 1, now
        if entry.busy:
            return None  # the write on its way is followed by one patch with the total (done)
        return self._patch(key, entry, now)

    def done(self, write: Write, name: str | None, now: float) -> Write | None:
        """`write` ended: `name` is the Event the server now holds with `write.count`, None if the write failed
        or the Event is gone (the next emit creates one again). Returns the patch for emits that came meanwhile."""
        entry = self._events.get(write.key)
        if entry is None:
            return None
        entry.busy = False
        if name is None:
            del self._events[write.key]
            return None
        entry.name, entry.written = name, max(entry.written, write.count)
        return self._patch(write.key, entry, now) if entry.count > entry.written else None

    def _patch(self, key: Key, entry: _Entry, now: float) -> Write | None:
        if not self._take(key[0], now):
            self.dropped += 1
            return None
        entry.busy = True
        return Write(key, entry.name, entry.count)

    def _take(self, obj: str, now: float) -> bool:
        b = self._buckets.get(obj)
        if b is None:
            b = _Bucket(float(self.burst), now)
            self._buckets[obj] = b
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(obj)
            b.tokens = min(float(self.burst), b.tokens + max(0.0, now - b.at) / self.refill_s)
            b.at = now
        if b.tokens < 1:
            return False
        b.tokens -= 1
        return True

    def _remember(self, key: Key, entry: _Entry) -> None:
        self._events[key] = entry
        if len(self._events) > self.max_keys:  # the oldest whose write is not on its way
            old = next((k for k, e in self._events.items() if not e.busy), None)
            if old is not None:
                del self._events[old]
