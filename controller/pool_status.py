"""Writes IPPool status (usage per family, Ready condition) and posts an Event when a verdict changes.

Writes are debounced and skipped when nothing changed, so 2000 allocations cost a handful of patches.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from lbctl import log
from lbctl.core.allocator import Allocator
from lbctl.core.pools import READY
from lbctl.kube.client import ApiError, Kube
from lbctl.kube.events import EventRecorder
from lbctl.kube.resources import ippool_path

from .metrics import Metrics

logger = log.get(__name__)
DEBOUNCE = 0.5


class PoolStatusWriter:
    def __init__(self, kube: Kube, events: EventRecorder, metrics: Metrics) -> None:
        self.kube, self.events, self.metrics = kube, events, metrics
        self._written: dict[str, dict[str, Any]] = {}
        self._verdicts: dict[str, tuple[bool, str, str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._alloc: Allocator | None = None
        self._since_cache: dict[str, tuple[tuple[bool, str, str], str]] = {}

    def update(self, alloc: Allocator) -> None:
        self._alloc = alloc
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(DEBOUNCE)
        assert self._alloc is not None
        await self.flush(self._alloc)

    async def flush(self, alloc: Allocator) -> None:
        usage = alloc.usage()
        for name in set(self._written) - set(alloc.pools):
            self._written.pop(name, None)
            self._verdicts.pop(name, None)
            for gauge in (self.metrics.pool_ready,):
                try:
                    gauge.remove(name)
                except KeyError:
                    pass
        for name, pool in alloc.pools.items():
            verdict = alloc.verdicts[name]
            u = usage[name]
            families: dict[str, Any] = {}
            for fam in sorted(pool.families):
                families[f"ipv{fam}"] = {"capacity": str(u.capacity[fam]), "assigned": u.assigned[fam],
                                         "available": str(u.available(fam))}
                self.metrics.capacity.labels(name, f"ipv{fam}").set(u.capacity[fam])
                self.metrics.assigned.labels(name, f"ipv{fam}").set(u.assigned[fam])
            self.metrics.pool_ready.labels(name).set(1 if verdict.ready else 0)
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
            if self._written.get(name) == status:
                continue
            try:
                await self.kube.patch(ippool_path(name, "status"), {"status": status})
                self._written[name] = status
            except (ApiError, OSError, asyncio.TimeoutError) as exc:
                logger.warning("pool_status_failed", pool=name, error=str(exc))

    def _since(self, name: str, key: tuple[bool, str, str]) -> str:
        cached = self._since_cache.get(name)
        if cached and cached[0][:2] == key[:2]:
            return cached[1]
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._since_cache[name] = (key, now)
        return now
