"""Posting core/v1 Events, fire-and-forget: a failed Event must never block or crash a daemon, and a repeated
one must not flood the API server (aggregated and rate-limited as client-go does: lbctl/core/events.py).

A write that did not complete, or met 403/429/5xx, is tried again (as client-go's recorder does, up to 12 tries):
callers post each warning once, so an Event lost to an API server restart would leave a pending Service
without a reason."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from .. import log
from ..core.events import Correlator, Write
from ..core.timestamps import rfc3339
from .client import ApiError, Kube, KubeError, Unreachable

logger = log.get(__name__)
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0) + (10.0,) * 7  # seconds before each further try: 12 tries over ~95 s
# 403 too: a restarted API server refuses every ServiceAccount until its RBAC cache is filled (seen for seconds)
AGAIN_STATUS = frozenset({403, 429, 500, 502, 503, 504})
_AGAIN = "\0again"  # _post's answer for a failure worth another try (never an Event's name)


def ref(obj: Mapping[str, Any], api_version: str, kind: str) -> dict[str, str]:
    meta = obj.get("metadata") or obj
    return {"apiVersion": api_version, "kind": kind, "name": meta.get("name", ""),
            "namespace": meta.get("namespace") or "", "uid": meta.get("uid", "")}


class EventRecorder:
    """Posts Events through the correlator (lbctl/core/events.py): repeats raise a count, a flapping object
    cannot flood the API server. An Event's writes run one at a time, in one task."""

    def __init__(self, kube: Kube, component: str, instance: str = "", correlator: Correlator | None = None,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self.kube, self.component, self.instance = kube, component, instance
        self.retry_delays = retry_delays
        self._closing = asyncio.Event()  # set by close(): no more tries, so shutdown never waits them out
        self.correlator = correlator or Correlator()
        self._tasks: set[asyncio.Task[None]] = set()
        self.writes = 0  # creates and patches sent
        self.failed = 0

    def emit(self, involved: Mapping[str, str], type_: str, reason: str, message: str) -> None:
        obj = dict(involved)
        key = "/".join((obj.get("kind", ""), obj.get("namespace") or "", obj.get("name", ""), obj.get("uid", "")))
        write = self.correlator.emit(key, type_, reason, message[:1024], time.monotonic())
        if write is None:
            return
        task = asyncio.create_task(self._run(write, obj))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, write: Write | None, involved: dict[str, str]) -> None:
        while write is not None:  # the write, then one patch for what was emitted meanwhile
            name = await self._post(write, involved)
            for delay in self.retry_delays:
                if name is not _AGAIN:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                if self._closing.is_set():
                    break
                name = await self._post(write, involved)
            write = self.correlator.done(write, None if name is _AGAIN else name, time.monotonic())

    async def _post(self, write: Write, involved: dict[str, str]) -> str | None:
        """The Event's name once the server holds `write.count`; _AGAIN if the request did not complete or the
        server was unavailable (worth another try), None if it refused."""
        _, type_, reason, message = write.key
        ns = involved.get("namespace") or "default"
        now = rfc3339(dt.datetime.now(dt.timezone.utc))
        self.writes += 1
        try:
            if write.name is not None:
                await self.kube.patch(f"/api/v1/namespaces/{ns}/events/{write.name}",
                                      {"count": write.count, "lastTimestamp": now})
                return write.name
            body = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{involved['name']}.", "namespace": ns},
                "involvedObject": involved, "type": type_, "reason": reason, "message": message,
                "source": {"component": self.component, "host": self.instance or None},
                "reportingComponent": self.component, "reportingInstance": self.instance or self.component,
                "firstTimestamp": now, "lastTimestamp": now, "count": write.count,
            }
            created = await self.kube.create(f"/api/v1/namespaces/{ns}/events", body)
            return str((created.get("metadata") or {}).get("name") or "") or None
        except KubeError as exc:
            self.failed += 1
            logger.warning("event_post_failed", reason=reason, object=involved.get("name"), error=str(exc))
            if isinstance(exc, Unreachable) or (isinstance(exc, ApiError) and exc.status in AGAIN_STATUS):
                return _AGAIN
            return None

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Shutting down: writes on their way finish, failed ones are not tried again."""
        self._closing.set()
        await self.drain()
