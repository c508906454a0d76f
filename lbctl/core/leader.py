"""Leader election on a coordination.k8s.io/v1 Lease, as pure decisions (the shell is controller/leader.py).

Expiry is judged on the candidate's own monotonic clock, never on the wall-clock times in the record (as
client-go does): a record counts as live for `leaseDurationSeconds` after this process first saw it change.
Clock skew or steps between machines therefore cannot shorten a lease.

Safety ("never two writers") rests on three numbers: a leader trusts itself only until `renew_deadline` after
it *sent* its last successful renewal (the Fence), while others wait `lease_duration` after they *saw* that
renewal, which is later. The gap (lease_duration - renew_deadline) covers a write that passed the fence check
and is still on its way to the server, and clocks that tick at slightly different rates.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .timestamps import rfc3339


@dataclass(frozen=True)
class Timing:
    # Worst-case takeover after a leader dies = lease_duration + retry_period (how late a standby may have seen
    # the last renewal) + one round trip: 12 + 2 s keeps it under 15 s.
    lease_duration: float = 12.0
    renew_deadline: float = 8.0
    retry_period: float = 2.0

    def problems(self) -> list[str]:
        out = []
        if not self.retry_period > 0:
            out.append(f"retry period {self.retry_period} s must be > 0")
        if not self.renew_deadline > self.retry_period:
            out.append(f"renew deadline {self.renew_deadline} s must be > retry period {self.retry_period} s")
        if not self.lease_duration > self.renew_deadline:
            out.append(f"lease duration {self.lease_duration} s must be > renew deadline {self.renew_deadline} s")
        return out


@dataclass(frozen=True)
class LeaseRecord:
    holder: str  # "" = released
    duration_s: float
    acquire_time: str | None
    transitions: int
    resource_version: str


def read_lease(obj: Mapping[str, Any]) -> LeaseRecord:
    spec = obj.get("spec") or {}
    try:
        duration = float(spec.get("leaseDurationSeconds") or 0)
    except (TypeError, ValueError):
        duration = 0.0
    try:
        transitions = int(spec.get("leaseTransitions") or 0)
    except (TypeError, ValueError):
        transitions = 0
    return LeaseRecord(holder=str(spec.get("holderIdentity") or ""), duration_s=duration,
                       acquire_time=spec.get("acquireTime"), transitions=transitions,
                       resource_version=str((obj.get("metadata") or {}).get("resourceVersion") or ""))


@dataclass(frozen=True)
class Observation:
    """When (monotonic, this process) the current version of the record was first seen."""

    resource_version: str
    seen_at: float


def observe(prev: Observation | None, record: LeaseRecord | None, now: float) -> Observation | None:
    """Every write to the Lease changes its resourceVersion: a renewal restarts the clock, nothing else does."""
    if record is None:
        return None
    if prev is not None and prev.resource_version == record.resource_version:
        return prev
    return Observation(record.resource_version, now)


@dataclass(frozen=True)
class Resume:
    """What a leader that gave up hands to the process it re-executes as (same PID, so never both at once).

    Its Lease, if it still names it as holder (nobody took it since; a late renewal of its own may have landed),
    may be taken back without waiting for it to expire, once no write of the old process can still reach the
    server: `quiet_at` (monotonic; -inf when none was left without an answer)
    plus the same margin (lease_duration - renew_deadline) every other replica leaves after the fence."""

    identity: str
    resource_version: str  # the version it last wrote itself: for the log (a late renewal may have followed it)
    quiet_at: float

    def encode(self) -> str:
        return json.dumps([self.identity, self.resource_version, self.quiet_at])

    @classmethod
    def decode(cls, text: str | None) -> Resume | None:
        """None for anything but what encode() wrote (no resume is always safe: the Lease then expires)."""
        try:
            identity, rv, quiet = json.loads(text or "")
            return cls(str(identity), str(rv), float(quiet)) if identity and rv else None
        except (TypeError, ValueError):
            return None


class Action(enum.Enum):
    CREATE = "create"    # no Lease yet
    ACQUIRE = "acquire"  # released, or expired: replace it with us as holder (optimistic, by resourceVersion)
    RENEW = "renew"      # ours: replace it with a fresh renewTime
    WAIT = "wait"        # someone else holds a live lease


@dataclass(frozen=True)
class Decision:
    action: Action
    wait_s: float  # when to look again if this attempt does not make us leader


def decide(record: LeaseRecord | None, seen: Observation | None, now: float, identity: str,
           timing: Timing, resume: Resume | None = None) -> Decision:
    if record is None:
        return Decision(Action.CREATE, timing.retry_period)
    if resume is not None and record.holder == resume.identity:
        # Our own record: back at once, unless a write of ours may still be on its way. Its resourceVersion may
        # have moved on: a renewal of ours whose answer was lost (an attempt timed out during an API server
        # restart) landed anyway. Only a process with our identity writes us as holder, and the old one is gone
        # (re-executed, same PID); anyone else who took it would be the holder instead.
        left = resume.quiet_at + (timing.lease_duration - timing.renew_deadline) - now
        if left <= 0:
            return Decision(Action.RENEW if record.holder == identity else Action.ACQUIRE, timing.retry_period)
        return Decision(Action.WAIT, min(timing.retry_period, left))
    if record.holder == identity and resume is None:
        # Ours, also from a previous incarnation with the same identity (a pod name survives only a container
        # restart, and the kubelet starts the new container after the old one is gone).
        return Decision(Action.RENEW, timing.retry_period)
    if not record.holder:
        return Decision(Action.ACQUIRE, timing.retry_period)
    # The holder's own promise counts (it may run with other flags during an upgrade); a record without one
    # gets ours. Waiting longer is always safe, shorter never is.
    duration = record.duration_s if record.duration_s > 0 else timing.lease_duration
    assert seen is not None and seen.resource_version == record.resource_version, "observe() the record first"
    left = seen.seen_at + duration - now
    if left <= 0:
        return Decision(Action.ACQUIRE, timing.retry_period)
    # Look again at the retry period, or right when it would expire (so takeover does not lose a period).
    return Decision(Action.WAIT, min(timing.retry_period, left))


def lease_spec(record: LeaseRecord | None, identity: str, timing: Timing, wall: dt.datetime) -> dict[str, Any]:
    """The spec to write for CREATE, ACQUIRE or RENEW (a leader keeps its acquireTime; a new one counts a transition)."""
    now = micro_time(wall)
    ours = record is not None and record.holder == identity
    transitions = (record.transitions if record else 0) + (0 if ours or record is None else 1)
    return {"holderIdentity": identity, "leaseDurationSeconds": max(1, int(round(timing.lease_duration))),
            "acquireTime": (record.acquire_time if ours and record and record.acquire_time else now),
            "renewTime": now, "leaseTransitions": transitions}


def released_spec(record: LeaseRecord, wall: dt.datetime) -> dict[str, Any]:
    """Given up on a clean stop: no holder, so the next candidate takes it at its next look."""
    now = micro_time(wall)
    return {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now,
            "leaseTransitions": record.transitions}


def micro_time(wall: dt.datetime) -> str:
    """Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return rfc3339(wall, micro=True)


class Fence:
    """May this process write? Only until renew_deadline after it sent the last renewal the server accepted.

    `sent_at` is taken before the request leaves, so the server's copy is never older than we assume. Once
    lapsed it stays lapsed: a process that lost leadership never resumes writing (it exits; see the shell).
    """

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.valid_until = float("-inf")
        self.lapsed = False

    def renewed(self, sent_at: float, now: float) -> None:
        if self.valid(now) or self.valid_until == float("-inf"):  # first acquisition, or still within the deadline
            self.valid_until = max(self.valid_until, sent_at + self.timing.renew_deadline)

    def valid(self, now: float) -> bool:
        if not self.lapsed and self.valid_until != float("-inf") and now >= self.valid_until:
            self.lapsed = True
        return not self.lapsed and now < self.valid_until

    def remaining(self, now: float) -> float:
        return max(0.0, self.valid_until - now) if self.valid(now) else 0.0

    def give_up(self) -> None:
        self.lapsed = True
