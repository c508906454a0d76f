"""Posting core/v1 Events, fire-and-forget: a failed Event must never block or crash a daemon."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

from .. import log
from .client import Kube, KubeError

logger = log.get(__name__)


def ref(obj: Mapping[str, Any], api_version: str, kind: str) -> dict[str, str]:
    meta = obj.get("metadata") or obj
    return {"apiVersion": api_version, "kind": kind, "name": meta.get("name", ""),
            "namespace": meta.get("namespace") or "", "uid": meta.get("uid", "")}


class EventRecorder:
    def __init__(self, kube: Kube, component: str, instance: str = "") -> None:
        self.kube, self.component, self.instance = kube, component, instance
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, involved: Mapping[str, str], type_: str, reason: str, message: str) -> None:
        task = asyncio.create_task(self._post(dict(involved), type_, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, involved: dict[str, str], type_: str, reason: str, message: str) -> None:
        ns = involved.get("namespace") or "default"
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": ns},
            "involvedObject": involved, "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": self.component, "host": self.instance or None},
            "reportingComponent": self.component, "reportingInstance": self.instance or self.component,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self.kube.create(f"/api/v1/namespaces/{ns}/events", body)
        except KubeError as exc:
            logger.warning("event_post_failed", reason=reason, object=involved.get("name"), error=str(exc))

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
