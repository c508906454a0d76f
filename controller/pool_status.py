"""Writes IPPool status (usage per family, Ready condition) and posts an Event when a verdict changes.

Writes are debounced and skipped when nothing changed. A change of the Ready condition (and a pool's first
status) is written at once. Count-only changes are for people (`kubectl get ipp`); monitoring reads the gauges,
which are current every round. So a pool's counts are written at most every COUNTS_INTERVAL seconds, and all
pools' count writes together at most COUNTS_RATE per second (a token bucket of COUNTS_BURST), longest-unwritten
first: a quiet cluster sees a change at once, a steady churn over 100 pools costs 1 write/s instead of 17.6.
Why it matters: an IPPool status patch allocates about 0.5 MiB in a 1.20 API server (a Service create 0.27 MiB,
an Event 0.05 MiB: custom resources go through unstructured JSON, schema validation and managedFields), and
17.6/s of them raised its allocation by a quarter; its GC cycles, each holding every create up for 0.3-0.4 s,
came that much more often (measured with `python -m benchmarks.controller_scale --gctrace`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from lbctl import log
from lbctl.core.allocator import Allocator
from lbctl.core.pools import READY
from lbctl.core.timestamps import rfc3339
from lbctl.kube.client import Kube, KubeError
from lbctl.kube.events import EventRecorder
from lbctl.kube.resources import ippool_path

from .metrics import Metrics

logger = log.get(__name__)
DEBOUNCE = 0.5
COUNTS_INTERVAL = 5.0
COUNTS_RATE = 1.0  # count-only writes per second, all pools together
COUNTS_BURST = 10
DRAIN_TIMEOUT = 5.0


class PoolStatusWriter:
    def __init__(self, kube: Kube, events: EventRecorder, metrics: Metrics,
                 clock: Callable[[], float] | None = None) -> None:
        self.kube, self.events, self.metrics = kube, events, metrics
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._written: dict[str, dict[str, Any]] = {}
        self._verdicts: dict[str, tuple[bool, str, str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._alloc: Allocator | None = None
        self._since_cache: dict[str, tuple[tuple[bool, str, str], str]] = {}
        self._written_at: dict[str, float] = {}  # loop time of each pool's last status write
        self._gauged: set[str] = set()  # pools with metrics, removed when the pool goes (written or not)
        self._dirty = False  # an update() came while a round was running: run another
        self._tokens, self._refilled = float(COUNTS_BURST), None  # the count writes' bucket

    def observed(self, statuses: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Statuses as the API server holds them (a listing): a restart rewrites none that it would leave equal,
        and a Ready condition keeps its lastTransitionTime."""
        for name, status in statuses.items():
            if not isinstance(status, Mapping) or not status:
                continue
            self._written[name] = _normal(status)
            cond = next((c for c in status.get("conditions") or [] if c.get("type") == READY), None)
            if cond and cond.get("lastTransitionTime"):
                key = (cond.get("status") == "True", str(cond.get("reason") or ""), str(cond.get("message") or ""))
                self._since_cache[name] = (key, str(cond["lastTransitionTime"]))

    def update(self, alloc: Allocator) -> None:
        self._alloc = alloc
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(DEBOUNCE)
        while True:  # changes arriving during a round (update() sees us running) get another round
            assert self._alloc is not None
            self._dirty = False
            wait = await self.flush(self._alloc)
            if wait is None and not self._dirty:
                return
            await asyncio.sleep(min(wait or DEBOUNCE, DEBOUNCE))  # a Ready change still goes out within DEBOUNCE

    async def drain(self) -> None:
        """At shutdown: write the counts still deferred, so the next controller finds them right (bounded: an
        unreachable API server must not hold the exit up)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._alloc is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.flush(self._alloc, defer=False), DRAIN_TIMEOUT)

    async def flush(self, alloc: Allocator, defer: bool = True) -> float | None:
        """Write what changed; returns in how many seconds deferred count-only changes are due (None: none)."""
        now = self._clock()
        if self._refilled is not None:
            self._tokens = min(float(COUNTS_BURST), self._tokens + (now - self._refilled) * COUNTS_RATE)
        self._refilled = now
        due: float | None = None
        usage = alloc.usage()
        for name in (set(self._written) | self._gauged) - set(alloc.pools):
            self._written.pop(name, None)
            self._written_at.pop(name, None)
            self._verdicts.pop(name, None)
            self._gauged.discard(name)
            for gauge, labels in ((self.metrics.pool_ready, (name,)), (self.metrics.capacity, (name, "ipv4")),
                                  (self.metrics.capacity, (name, "ipv6")), (self.metrics.assigned, (name, "ipv4")),
                                  (self.metrics.assigned, (name, "ipv6"))):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        for name in sorted(alloc.pools, key=lambda n: self._written_at.get(n, float("-inf"))):
            pool, verdict, u = alloc.pools.get(name), alloc.verdicts.get(name), usage.get(name)
            if pool is None or verdict is None or u is None:
                continue  # deleted while an earlier write of this round was in flight: the next round drops it
            families: dict[str, Any] = {}
            for fam in sorted(pool.families):
                families[f"ipv{fam}"] = {"capacity": str(u.capacity[fam]), "assigned": u.assigned[fam],
                                         "available": str(u.available(fam))}
                self.metrics.capacity.labels(name, f"ipv{fam}").set(u.capacity[fam])
                self.metrics.assigned.labels(name, f"ipv{fam}").set(u.assigned[fam])
            self.metrics.pool_ready.labels(name).set(1 if verdict.ready else 0)
            self._gauged.add(name)
            available = ", ".join(f"{v['available']}/IPv{k[-1]}" for k, v in families.items()) if verdict.ready else "0"
            status = {"assigned": sum(v["assigned"] for v in families.values()), "available": available,
                      "ipv4": families.get("ipv4"), "ipv6": families.get("ipv6")}
            key = (verdict.ready, verdict.reason, verdict.message)
            previous = self._verdicts.get(name)
            if previous != key:
                self._verdicts[name] = key
                if previous is not None or not verdict.ready:
                    self.events.emit({"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "name": name,
                                      "namespace": "default"}, "Normal" if verdict.ready else "Warning",
                                     verdict.reason, verdict.message)
            status["conditions"] = [{
                "type": READY, "status": "True" if verdict.ready else "False", "reason": verdict.reason,
                "message": verdict.message, "lastTransitionTime": self._since(name, key),
            }]
            status = _normal(status)
            written = self._written.get(name)
            if written == status:
                continue
            if defer and written is not None and written.get("conditions") == status["conditions"]:
                wait = self._written_at.get(name, -COUNTS_INTERVAL) + COUNTS_INTERVAL - now
                if wait <= 0 and self._tokens < 1:
                    wait = (1 - self._tokens) / COUNTS_RATE  # the bucket is empty: the next token
                if wait > 0:  # only the counts changed: this pool's, or all pools' share, was written a moment ago
                    due = wait if due is None else min(due, wait)
                    continue
                self._tokens -= 1
            try:
                await self.kube.patch(ippool_path(name, "status"), {"status": status})
                self._written[name] = status
                self._written_at[name] = now
            except KubeError as exc:
                logger.warning("pool_status_failed", pool=name, error=str(exc))
        return due

    def _since(self, name: str, key: tuple[bool, str, str]) -> str:
        cached = self._since_cache.get(name)
        if cached and cached[0][:2] == key[:2]:
            return cached[1]
        now = rfc3339(dt.datetime.now(dt.timezone.utc))
        self._since_cache[name] = (key, now)
        return now


def _normal(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status as the server keeps it after a merge patch: fields set to None are absent."""
    return {k: v for k, v in status.items() if v is not None}
