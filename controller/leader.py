"""Leader election for controller replicas: a coordination.k8s.io/v1 Lease, polled (decisions: lbctl/core/leader.py).

Only the leader runs the reconciler (the only writer of Service status, IPPool status and Events); a standby
keeps its list-watches (Services, Namespaces, IPPools) warm, so on takeover the table is rebuilt from memory. Every write
goes through FencedKube, which checks the Fence (monotonic clock) just before the request: a leader that
could not renew within the renew deadline stops writing before anyone else may consider the lease expired.

On losing leadership (LeadershipLost) the process starts over: it re-executes itself and comes back as a
standby (controller/main.py says why neither an in-process step-down nor an exit).
Lease RBAC in the release namespace: get, create, update (optimistic concurrency by resourceVersion, so two
candidates can never both acquire: the second update gets 409 Conflict).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from lbctl import log
from lbctl.core.leader import (Action, Fence, LeaseRecord, Observation, Resume, Timing, decide, lease_spec,
                               observe, read_lease, released_spec)
from lbctl.kube.client import ApiError, Kube, KubeError, Unreachable
from lbctl.kube.lease import LeaseClient

logger = log.get(__name__)


class LeadershipLost(Exception):
    """This process may no longer write: it starts over as a fresh process (a standby)."""


class NotLeader(ApiError):
    """A write refused by the fence (handled like any failed write by the callers; nothing is sent)."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(503, "NotLeader", f"{method} {path} refused: not the leader (or the lease could not be "
                         "renewed in time)")


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, timing: Timing,
                 registry: CollectorRegistry, resume: Resume | None = None) -> None:
        self.kube, self.identity, self.timing = kube, identity, timing
        self.resume = resume  # from the process we re-executed from, until we lead (lbctl/core/leader.py)
        self.lease = f"{namespace}/{name}"
        self.leases = LeaseClient(kube, namespace, name)
        self.fence = Fence(timing)
        self.leading = asyncio.Event()
        self.decided = False  # first round done: we lead, or know who does
        self._record: LeaseRecord | None = None
        self._seen: Observation | None = None
        self._holder = ""
        self.gauge = Gauge("lbctl_controller_leader", "1 while this controller replica is the leader (the only "
                           "writer)", registry=registry)
        self.transitions = Counter("lbctl_controller_leader_acquisitions_total",
                                   "Times this replica became the leader", registry=registry)
        self.abandoned = Counter("lbctl_controller_writes_abandoned_total", "Writes given up without an answer "
                                 "because the fence ran out while they were on the wire", registry=registry)

    def may_write(self) -> bool:
        return self.fence.valid(time.monotonic())

    def write_budget(self) -> float:
        """Seconds a write sent now may take: the fence's time left (0: may not write)."""
        return self.fence.remaining(time.monotonic())

    def handover(self, quiet_at: float) -> Resume | None:
        """For the process we re-execute as: our Lease as we last wrote it (None if we never held it)."""
        rec = self._record
        if rec is None or rec.holder != self.identity:
            return None
        return Resume(self.identity, rec.resource_version, quiet_at)

    async def run(self) -> None:
        """Acquire, then renew every retry period; raises LeadershipLost once leadership is gone."""
        while True:
            wait = self.timing.retry_period
            try:
                bound = self.fence.remaining(time.monotonic()) if self.leading.is_set() else self.timing.renew_deadline
                wait = await asyncio.wait_for(self._attempt(), timeout=max(0.1, bound))
            except (KubeError, asyncio.TimeoutError) as exc:  # TimeoutError: the attempt's own bound
                logger.warning("lease_attempt_failed", lease=self.lease, error=str(exc) or type(exc).__name__)
            self.decided = self.decided or self.leading.is_set() or bool(self._holder)
            if self.leading.is_set() and not self.may_write():
                self.fence.give_up()
                self.gauge.set(0)
                logger.error("leadership_lost", lease=self.lease, identity=self.identity, holder=self._holder,
                             why="not renewed within the renew deadline" if self._holder == self.identity
                             else "another replica holds the lease")
                raise LeadershipLost(f"lease {self.lease} lost")
            await asyncio.sleep(wait)

    async def _attempt(self) -> float:
        sent_at = time.monotonic()  # before the GET: a renewal based on it is never older than we think
        current = await self.leases.get()
        record = read_lease(current) if current is not None else None
        self._seen = observe(self._seen, record, sent_at)
        self._holder = record.holder if record else ""
        decision = decide(record, self._seen, sent_at, self.identity, self.timing, self.resume)
        if decision.action is Action.WAIT:
            if self.leading.is_set():
                self.fence.give_up()  # someone else took it: we are no longer allowed to write, now
            return decision.wait_s
        if self.fence.lapsed:
            return decision.wait_s  # a process that lost leadership never takes it back
        spec = lease_spec(record, self.identity, self.timing, dt.datetime.now(dt.timezone.utc))
        try:
            if record is None:
                written = await self.leases.create(spec)
            else:
                written = await self.leases.replace(spec, record.resource_version)
        except ApiError as exc:
            if exc.status == 409:  # another candidate wrote first (create or update): look again soon
                logger.info("lease_conflict", lease=self.lease, action=decision.action.value)
                return min(decision.wait_s, 0.2)
            raise
        self._record = read_lease(written)
        self.resume = None  # ours again by a write of this process: from now on plain renewals
        self._seen = observe(self._seen, self._record, sent_at)
        self._holder = self.identity
        self.fence.renewed(sent_at, time.monotonic())
        if not self.leading.is_set() and self.fence.valid(time.monotonic()):
            self.leading.set()
            self.gauge.set(1)
            self.transitions.inc()
            logger.info("leader_elected", lease=self.lease, identity=self.identity, action=decision.action.value,
                        transitions=self._record.transitions)
        return decision.wait_s

    async def release(self) -> None:
        """On a clean stop, after the writers stopped: hand the lease over at once instead of letting it expire."""
        if not self.leading.is_set() or self._record is None:
            return
        self.fence.give_up()
        self.gauge.set(0)
        try:
            got = await self.leases.get()
            current = read_lease(got) if got is not None else None
            if current is None or current.holder != self.identity:
                return
            await self.leases.replace(released_spec(current, dt.datetime.now(dt.timezone.utc)),
                                      current.resource_version)
            logger.info("lease_released", lease=self.lease, identity=self.identity)
        except KubeError as exc:  # it expires on its own
            logger.warning("lease_release_failed", lease=self.lease, error=str(exc))


class FencedKube(Kube):
    """The one client, for the writers: a write is sent only while the fence holds, and is bounded by the time the
    fence has left (abandoned, counted, and raised as Unreachable when that runs out); reads pass through.

    `quiet_at` (monotonic) is when the last write that may have reached the server without us seeing the answer
    ended (-inf: none): a write refused at connect never left, one cut or abandoned mid-way may still be applied.
    Shares the wrapped client's session and credentials (it forwards `send`, which every verb goes through).
    """

    def __init__(self, inner: Kube, budget: Callable[[], float], abandoned: Counter | None = None) -> None:
        # no super().__init__: nothing of its own to hold
        self.inner, self.cfg, self._budget, self._abandoned = inner, inner.cfg, budget, abandoned
        self.quiet_at = float("-inf")

    async def send(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                   body: Any = None, content_type: str = "application/json",
                   timeout: float | None = None) -> tuple[int, str]:
        if method == "GET":
            return await self.inner.send(method, path, params=params, body=body, content_type=content_type,
                                         timeout=timeout)
        budget = self._budget()
        if budget <= 0:
            logger.warning("write_fenced", method=method, path=path)
            raise NotLeader(method, path)
        answered = False
        try:
            out = await self.inner.send(method, path, params=params, body=body, content_type=content_type,
                                        timeout=budget if timeout is None else min(timeout, budget))
            answered = True
            return out
        except Unreachable as exc:
            if isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                answered = True  # never connected: nothing was sent
            elif self._budget() <= 0:
                if self._abandoned is not None:
                    self._abandoned.inc()
                logger.warning("write_abandoned", method=method, path=path, after_s=round(budget, 3))
            raise
        finally:
            if not answered:  # cut, abandoned or cancelled on the wire: the server may still apply it
                self.quiet_at = max(self.quiet_at, time.monotonic())

    async def close(self) -> None:
        pass  # the inner client owns the session
