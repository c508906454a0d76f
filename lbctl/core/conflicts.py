"""Address conflicts (RFC 5227 §2.4 style): another MAC claims an address this node announces.

Pure bookkeeping; the speaker feeds observations (ip, interface, foreign MAC, monotonic time) and acts on
the verdicts. A conflict opens on the first foreign claim, is refreshed by every later one and clears once
the foreign host has been quiet for `quiet_after`. Defence (one gratuitous announcement) is rate-limited per
address to one per `defend_every`, whatever the foreign host does: two defenders must never make a GARP storm.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEFEND_EVERY = 10.0  # RFC 5227 DEFEND_INTERVAL
QUIET_AFTER = 10.0  # the foreign host must be silent this long before the conflict clears


@dataclass
class Conflict:
    ip: str
    interface: str
    mac: str  # the foreign MAC last heard
    first_seen: float
    last_seen: float
    count: int = 1


@dataclass(frozen=True)
class Verdict:
    new: bool  # the conflict just opened (report it)
    defend: bool  # announce once now


class ConflictTable:
    def __init__(self, defend_every: float = DEFEND_EVERY, quiet_after: float = QUIET_AFTER) -> None:
        self.defend_every, self.quiet_after = defend_every, quiet_after
        self.active: dict[str, Conflict] = {}
        self._defended: dict[str, float] = {}  # ip -> last defence, kept past the conflict's end

    def observe(self, ip: str, interface: str, mac: str, now: float) -> Verdict:
        c = self.active.get(ip)
        new = c is None or c.mac != mac  # a second foreign MAC is a new conflict worth its own report
        if c is None:
            self.active[ip] = Conflict(ip, interface, mac, now, now)
        else:
            c.interface, c.mac, c.last_seen, c.count = interface, mac, now, c.count + 1
        last = self._defended.get(ip)
        defend = last is None or now - last >= self.defend_every
        if defend:
            self._defended[ip] = now
        return Verdict(new, defend)

    def expire(self, now: float) -> list[Conflict]:
        """Conflicts whose foreign host has been quiet long enough; they are removed."""
        gone = [c for c in self.active.values() if now - c.last_seen >= self.quiet_after]
        for c in gone:
            del self.active[c.ip]
        for ip in [ip for ip, t in self._defended.items() if now - t >= self.defend_every and ip not in self.active]:
            del self._defended[ip]
        return gone

    def keep_only(self, owned: Iterable[str]) -> list[Conflict]:
        """Forget conflicts on addresses we no longer announce: not ours to report any more."""
        keep = set(owned)
        gone = [c for ip, c in self.active.items() if ip not in keep]
        for c in gone:
            del self.active[c.ip]
        return gone

    def next_expiry(self) -> float | None:
        return min((c.last_seen + self.quiet_after for c in self.active.values()), default=None)
