""""Alone among many": a speaker that suddenly stops hearing most of its peers suspects itself first.

Seen at scale (issue 9): a speaker whose heartbeat thread fell behind timed every peer out at once, saw
itself alone among 201 speakers and claimed all 5,000 IPs; every client on the segment then got two ARP
answers. Peers do not vanish by the hundred; a speaker that loses most of them in one go is far more
likely cut off (a starved thread, a dead NIC, a filtered port) than surrounded by a rack failure. So:

- trigger: more than half of the peers heard within the last RECENT_S (2 s: "at once") are gone, and at
  least MIN_LOST = 3 (two of a three-node cluster failing together is an ordinary failover, never held);
- while holding, the speaker keeps the IPs it already announces and claims no new one (it still lets go of
  IPs a live peer now ranks first: releasing never hurts);
- the hold ends as soon as the shortfall heals (the missing peers are heard again, or fewer than half of
  them are still missing), or the missing peers are confirmed gone: their Leases have lapsed (the peer
  census's registered set no longer names them), or the hold ran out.

Peers that vanish together do not expire together: their deadlines are spread by their beacons' phases
over about one interval, and each expiry is its own re-election. So a second loss while the first is recent
makes the speaker a suspect for SUSPECT_INTERVALS beacon intervals: it claims nothing new meanwhile (as in a
hold, but without a warning), long enough for the rest of a mass expiry to land and trigger the hold. One
node failing is never delayed; only the addresses of the second and later ones of a double failure wait
that moment.

How long the bounded hold is, and why:
- HOLD_S = max(3 s, 4 x dead_after) by default. A false mass expiry heals within about one dead_after of
  the heartbeat path catching up (the next echoing beacon of each peer makes it live again); 3 s covers a
  drained receive queue and several beacon rounds at every preset, while a genuine rack failure still
  fails over in dead_after + HOLD_S (~3.5 s with the default timing) instead of never. This is the whole
  answer in --static-config mode (no Leases) and when some peers are still heard (survivors of a rack that
  still hear each other are the likely story then).
- Alone (no peer heard at all) with Kubernetes: the Leases are the tie-breaker nobody on the wire can
  forge by silence. The hold lasts while the census still counts the missing peers as registered, at most
  ALONE_HOLD_S = LEASE_DURATION_S + RENEW_S (a dead peer's Lease has lapsed, and a census has seen it,
  by then), so even a census that cannot reach the API server cannot hold announcements forever.

Pure: the shell passes the live set, the census's registered set (None without Kubernetes) and a
monotonic clock, and applies `Verdict.holding`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .status import LEASE_DURATION_S, RENEW_S

RECENT_S = 2.0  # "at once": a false mass expiry lands within a beacon interval or two; rolling restarts are slower
HOLD_MIN_S = 3.0
SUSPECT_INTERVALS = 1.5  # the spread of simultaneous expiries (one interval of phases) and some slack
MIN_LOST = 3  # a 3-node cluster losing two nodes is a plausible failure, never held; a starved receiver loses many
ALONE_HOLD_S = float(LEASE_DURATION_S + RENEW_S)


def hold_for(dead_after: float) -> float:
    return max(HOLD_MIN_S, 4 * dead_after)


@dataclass(frozen=True)
class Verdict:
    holding: bool  # claim nothing new (a hold, or a moment of suspicion)
    suspect: bool = False  # a moment of suspicion, not (yet) a hold: no warning, no metric
    started: bool = False  # this call began a hold: warn once
    ended: str | None = None  # this call ended a hold: why ("peers heard", "peers gone", "hold expired")
    missing: frozenset[str] = frozenset()  # recent peers not heard, while holding
    until: float | None = None  # when the hold runs out unless something changes first (wake up then)


class IsolationGuard:
    def __init__(self, self_name: str, hold_s: float = HOLD_MIN_S, alone_hold_s: float = ALONE_HOLD_S,
                 recent_s: float = RECENT_S, suspect_s: float = 0.0) -> None:
        self.self_name, self.hold_s, self.alone_hold_s, self.recent_s = self_name, hold_s, alone_hold_s, recent_s
        self.suspect_s = suspect_s  # 0: never suspect (the shell passes SUSPECT_INTERVALS x its interval)
        self._suspect_since: float | None = None
        self._seen: dict[str, float] = {}  # peer -> last time it was live
        self._prev: set[str] = set()  # peers at the last check: live until this one (checks follow every change)
        self._since: float | None = None
        self._recent: frozenset[str] = frozenset()  # recent peers when the hold began
        self._missing: frozenset[str] = frozenset()

    @property
    def holding(self) -> bool:
        return self._since is not None

    def check(self, live: set[str], registered: frozenset[str] | None, now: float) -> Verdict:
        peers = live - {self.self_name}
        for p in self._prev:
            self._seen[p] = now
        if self._since is None:
            recent = {p for p, t in self._seen.items() if now - t <= self.recent_s} | peers
            lost = recent - peers
            if len(lost) >= MIN_LOST and 2 * len(lost) > len(recent):
                self._since, self._recent, self._missing = now, frozenset(recent), frozenset(lost)
                self._suspect_since = None
                self._note(peers, now)
                return self._holding(peers, registered, now, started=True)
            self._note(peers, now)
            if len(lost) < 2:
                self._suspect_since = None
                return Verdict(False)
            if self._suspect_since is None:
                self._suspect_since = now
            until = self._suspect_since + self.suspect_s
            return Verdict(True, suspect=True, until=until) if now < until else Verdict(False)
        self._note(peers, now)
        return self._holding(peers, registered, now)

    def _note(self, peers: set[str], now: float) -> None:
        self._prev = set(peers)
        for p in peers:
            self._seen[p] = now
        if len(self._seen) > 2 * len(peers) + 64:  # bounded: forget peers not heard for a long time
            self._seen = {p: t for p, t in self._seen.items() if now - t <= self.recent_s}

    def _holding(self, peers: set[str], registered: frozenset[str] | None, now: float,
                 started: bool = False) -> Verdict:
        assert self._since is not None
        unheard = self._missing - peers
        if self._healed(unheard):
            return self._end("peers heard", frozenset())
        still = unheard & registered if registered is not None else unheard  # a lapsed Lease: that peer is gone
        if self._healed(still):
            return self._end("peers gone", unheard)
        limit = self.alone_hold_s if not peers and registered is not None else self.hold_s
        if now - self._since >= limit:
            return self._end("hold expired", unheard)
        return Verdict(True, started=started, missing=frozenset(still), until=self._since + limit)

    def _healed(self, missing: frozenset[str]) -> bool:
        return len(missing) < MIN_LOST or 2 * len(missing) <= len(self._recent)

    def _end(self, reason: str, given_up: frozenset[str]) -> Verdict:
        for p in given_up:  # gone for good as far as we know: they must not trigger the next hold
            self._seen.pop(p, None)
        self._since, self._recent, self._missing = None, frozenset(), frozenset()
        return Verdict(False, ended=reason)
