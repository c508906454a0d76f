"""Flood limits: a token bucket per key, in a bounded table. Pure: the caller passes `now` (monotonic seconds).

Both responders (speaker/arp_socket.py, speaker/ndp_socket.py) use it twice: answers per requester and owned
address (a host asks for an address a few times a second at most; a flood from one source is answered at the
rate below, the rest dropped unanswered), and reports of a foreign claim to the event loop per (address, MAC).
"""

from __future__ import annotations

from collections.abc import Hashable

ANSWER_RATE = 2000.0  # answers per second to one requester for one address (benchmarks ask ~1,000/s per key)
ANSWER_BURST = 100.0
REPORT_GAP = 0.1  # seconds between two reports of the same foreign claim to the event loop
MAX_KEYS = 4096  # the table is cleared when full: many keys means a spread-out flood, which no key limit stops


class KeyedLimiter:
    """At most `burst` events at once per key, then `rate` per second."""

    __slots__ = ("rate", "burst", "max_keys", "_buckets")

    def __init__(self, rate: float, burst: float = 1.0, max_keys: int = MAX_KEYS) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("a limiter needs rate > 0, burst >= 1 and room for at least one key")
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[Hashable, list[float]] = {}  # key -> [tokens, as of]

    def allow(self, key: Hashable, now: float) -> bool:
        """Take one token for `key` if it has one."""
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()
            self._buckets[key] = [self.burst - 1, now]
            return True
        tokens = min(self.burst, b[0] + max(now - b[1], 0.0) * self.rate)
        b[1] = now
        if tokens < 1:
            b[0] = tokens
            return False
        b[0] = tokens - 1
        return True

    def __len__(self) -> int:
        return len(self._buckets)


def answer_limiter() -> KeyedLimiter:
    return KeyedLimiter(ANSWER_RATE, ANSWER_BURST)


def report_limiter() -> KeyedLimiter:
    return KeyedLimiter(1 / REPORT_GAP, 1)
