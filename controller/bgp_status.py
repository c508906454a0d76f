"""Writes the `Valid` condition of every BGPPeer and BFDProfile (lbctl/core/bgp_conditions.py decides), and an
Event on the object when a verdict turns Invalid or back.

Fed by two list-watches (controller/informer.py); writes only as leader, through the fenced client, and only
what differs from the status the server holds, so a restart or a relist writes nothing. A peer's verdict
depends on the BFDProfiles (one named but missing, or Invalid) and on the other peers (duplicates), so every
change judges them all: a few dozen objects, no I/O.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from lbctl import log
from lbctl.core.bgp_conditions import Obj, bfd_conditions, event_for, peer_conditions, status_update
from lbctl.core.timestamps import rfc3339
from lbctl.kube.client import ApiError, Kube, KubeError
from lbctl.kube.events import EventRecorder
from lbctl.kube.resources import GROUP, VERSION

from .metrics import Metrics
from .reconciler import _older

logger = log.get(__name__)
API_VERSION = f"{GROUP}/{VERSION}"
BGPPEERS = f"/apis/{API_VERSION}/bgppeers"
BFDPROFILES = f"/apis/{API_VERSION}/bfdprofiles"
KINDS = {"BGPPeer": BGPPEERS, "BFDProfile": BFDPROFILES}
DEBOUNCE = 0.2  # a burst of applies (helm install) is judged once
RETRY = 5.0  # a failed write is tried again after this long (the next change tries it sooner)


class BgpStatusWriter:
    def __init__(self, kube: Kube, events: EventRecorder, metrics: Metrics,
                 now: Callable[[], str] | None = None) -> None:
        self.kube, self.events, self.metrics = kube, events, metrics
        self._now = now or (lambda: rfc3339(dt.datetime.now(dt.timezone.utc)))
        self.objects: dict[str, dict[str, Obj]] = {kind: {} for kind in KINDS}
        self._versions: dict[tuple[str, str], str] = {}  # (kind, name) -> resourceVersion of what we hold
        self._listed: set[str] = set()
        self._wake = asyncio.Event()

    # ----- inputs (watch handlers; cheap, never block) --------------------------------------------------------
    def listed(self, kind: str, items: list[Any]) -> None:
        fresh: dict[str, Obj] = {}
        self._versions = {k: v for k, v in self._versions.items() if k[0] != kind}
        for obj in items:
            if isinstance(obj, Mapping) and (name := _name(obj)):
                fresh[name] = _obj(obj)
                self._versions[(kind, name)] = _version(obj)
        self.objects[kind] = fresh
        self._listed.add(kind)
        self._wake.set()

    def seen(self, kind: str, event: str, obj: Any) -> None:
        name = _name(obj)
        if not name:
            return
        if event == "DELETED":
            self.objects[kind].pop(name, None)
            self._versions.pop((kind, name), None)
        else:
            held = self._versions.get((kind, name), "")
            if _older(_version(obj), held):
                return  # older than the answer to our own status write: the watch catching up
            self.objects[kind][name] = _obj(obj)
            self._versions[(kind, name)] = _version(obj)
        self._wake.set()

    # ----- the writer (leader only) ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Judge and write after every change, once both kinds have listed. Runs forever."""
        while True:
            await self._wake.wait()
            if self._listed != set(KINDS):
                self._wake.clear()
                continue
            await asyncio.sleep(DEBOUNCE)
            self._wake.clear()
            if await self.flush():
                try:  # something failed: try again later, or at the next change
                    await asyncio.wait_for(self._wake.wait(), RETRY)
                except asyncio.TimeoutError:
                    self._wake.set()

    async def flush(self) -> int:
        """Write every status that differs from the server's; returns how many writes failed."""
        peers, profiles = self.objects["BGPPeer"], self.objects["BFDProfile"]
        verdicts = {"BFDProfile": bfd_conditions({n: o.spec for n, o in profiles.items()}),
                    "BGPPeer": peer_conditions({n: o.spec for n, o in peers.items()},
                                               {n: o.spec for n, o in profiles.items()})}
        failed = 0
        for kind in ("BFDProfile", "BGPPeer"):
            for name, cond in sorted(verdicts[kind].items()):
                obj = self.objects[kind].get(name)
                if obj is None:
                    continue
                status = status_update(cond, obj, self._now())
                if status is None:
                    continue
                event = event_for(cond, obj)
                try:
                    answer = await self.kube.patch(f"{KINDS[kind]}/{name}/status", {"status": status})
                except ApiError as exc:
                    if exc.status != 404:  # 404: deleted meanwhile, the watch says so next
                        failed += 1
                        logger.warning("bgp_status_failed", kind=kind, name=name, error=str(exc))
                    continue
                except KubeError as exc:
                    failed += 1
                    logger.warning("bgp_status_failed", kind=kind, name=name, error=str(exc))
                    continue
                self.metrics.bgp_status_writes.labels(kind).inc()
                if _name(answer) == name:
                    self.objects[kind][name] = _obj(answer)
                    self._versions[(kind, name)] = _version(answer)
                logger.info("bgp_status", kind=kind, name=name, valid=cond.valid, message=cond.message)
                if event is not None:
                    self.events.emit({"apiVersion": API_VERSION, "kind": kind, "name": name, "namespace": "default",
                                      "uid": str((answer.get("metadata") or {}).get("uid") or "")}, *event)
        return failed


def _name(obj: Any) -> str:
    return str(((obj.get("metadata") or {}) if isinstance(obj, Mapping) else {}).get("name") or "")


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _obj(obj: Mapping[str, Any]) -> Obj:
    generation = (obj.get("metadata") or {}).get("generation")
    status = obj.get("status")
    return Obj(obj.get("spec"), generation if isinstance(generation, int) else 0,
               status if isinstance(status, Mapping) else None)

