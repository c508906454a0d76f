"""Visibility: the node's SpeakerStatus object and Events on Services this node takes over.

The status object is written at most once a second and only when its content changed; failures are
logged and retried on the next change, never fatal. Events fire on ownership transitions only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from lbctl import log
from lbctl.core.announce import IpIntent, ServiceRef
from lbctl.core.conflicts import Conflict
from lbctl.core.timestamps import rfc3339
from lbctl.kube.client import ApiError, Kube, KubeError
from lbctl.kube.events import EventRecorder

from .announcer import Announcement

logger = log.get(__name__)
GROUP_VERSION = "lbctl.io/v1alpha1"
COLLECTION = f"/apis/{GROUP_VERSION}/speakerstatuses"
MIN_GAP = 1.0
JSON_PATCH = "application/json-patch+json"


def status_body(node: str, announcements: Iterable[Announcement], live: Iterable[str],
                conflicts: Iterable[Conflict] = (), bgp: dict[str, Any] | None = None) -> dict[str, Any]:
    """`bgp` (BGP mode only): {"sessions": [...], "advertised": [...], "skipped": {...}} (speaker/bgp.py)."""
    anns = sorted(announcements, key=lambda a: (a.ip, a.interface))
    peers = sorted(live)
    wall, mono = time.time(), time.monotonic()  # conflicts keep monotonic times; the object wants wall clock
    body = {
        "node": node,
        "announcedCount": len({a.ip for a in anns}),
        "announced": [{"ip": a.ip, "interface": a.interface, "mac": a.mac, "since": a.since,
                       "lastGARP": a.last_garp, "services": list(a.services)} for a in anns],
        "livePeerCount": len(peers),
        "livePeers": peers,
        "conflicts": [{"ip": c.ip, "interface": c.interface, "foreignMAC": c.mac,
                       "since": iso(wall - (mono - c.first_seen))}
                      for c in sorted(conflicts, key=lambda c: c.ip)],
    }
    if bgp is not None:
        body["bgp"] = bgp
    return body


def iso(t: float) -> str:
    return rfc3339(t)


class StatusWriter:
    def __init__(self, kube: Kube, node: str) -> None:
        self.kube, self.node = kube, node
        self._want: dict[str, Any] | None = None
        self._written: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._exists = False

    def update(self, body: dict[str, Any]) -> None:
        if body != self._want:
            self._want = body
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            await self.flush()
            await asyncio.sleep(max(0.0, MIN_GAP - (time.monotonic() - started)))

    async def flush(self) -> None:
        want = self._want
        if want is None or want == self._written:
            return
        try:
            if not self._exists:
                await self._ensure()
            # Replaces the whole status: a merge patch would keep map keys that are gone (bgp.skipped entries).
            await self.kube.patch(f"{COLLECTION}/{self.node}/status", [{"op": "add", "path": "/status", "value": want}],
                                  JSON_PATCH)
            self._written = want
        except KubeError as exc:
            if isinstance(exc, ApiError) and exc.status == 404:
                self._exists = False
            logger.warning("status_write_failed", error=str(exc))
            self._wake.set()  # retry after the gap
        except Exception as exc:  # a bug here too: visibility must never kill us
            logger.warning("status_write_failed", error=repr(exc))
            self._wake.set()

    async def _ensure(self) -> None:
        try:
            await self.kube.create(COLLECTION, {"apiVersion": GROUP_VERSION, "kind": "SpeakerStatus",
                                                "metadata": {"name": self.node}, "spec": {"node": self.node}})
        except ApiError as exc:
            if exc.status != 409:
                raise
        self._exists = True


class TakeoverEvents:
    """Posts "announcing IP from NODE" on each Service whose address moved to this node."""

    def __init__(self, recorder: EventRecorder, node: str) -> None:
        self.recorder, self.node = recorder, node
        self._owned: set[tuple[str, str]] = set()  # (ip, service key)

    def update(self, mine: dict[str, IpIntent], announcements: Iterable[Announcement]) -> None:
        where: dict[str, Announcement] = {}
        for a in announcements:
            where.setdefault(a.ip, a)
        now: set[tuple[str, str]] = set()
        for ip, intent in mine.items():
            ann = where.get(ip)
            if ann is None:
                continue  # not actually announced (no interface): no claim
            for ref in intent.services:
                now.add((ip, ref.key))
                if (ip, ref.key) not in self._owned:
                    self.recorder.emit({"apiVersion": "v1", "kind": "Service", "name": ref.name,
                                        "namespace": ref.namespace, "uid": ref.uid}, "Normal", "Announcing",
                                       f"announcing {ip} from {self.node} ({ann.interface}, {ann.mac})")
        self._owned = now


def service_object(ref: ServiceRef) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "Service", "name": ref.name, "namespace": ref.namespace, "uid": ref.uid}


class ConflictEvents:
    """Warning `IPConflict` on each Service of an address another MAC claims; Normal `IPConflictResolved`
    once that host has gone quiet. One Event per opening, not per frame."""

    def __init__(self, recorder: EventRecorder, node: str) -> None:
        self.recorder, self.node = recorder, node

    def opened(self, c: Conflict, services: Iterable[ServiceRef], defended: bool) -> None:
        for ref in services:
            self.recorder.emit(service_object(ref), "Warning", "IPConflict",
                               f"{c.ip} is also claimed by MAC {c.mac} on {c.interface} (seen by {self.node}); "
                               + ("re-announced it" if defended else "defended recently, not re-announcing yet"))

    def cleared(self, c: Conflict, services: Iterable[ServiceRef]) -> None:
        for ref in services:
            self.recorder.emit(service_object(ref), "Normal", "IPConflictResolved",
                               f"MAC {c.mac} has stopped claiming {c.ip} (seen by {self.node})")
