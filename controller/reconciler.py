"""The controller's single writer: turns watch events into allocator calls and API writes.

One asyncio task owns the Allocator, so decisions are sequential and race-free; only the resulting
status patches run concurrently. Services, Namespaces and IPPools come from three list-watches
(controller/informer.py). Nothing is decided before all three have listed (one synced barrier), and a
Service whose Namespace is not known yet waits for it: its pool may depend on the Namespace's labels.
A failure deciding one Service is logged, counted and retried; it never costs the rest of the batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lbctl import log
from lbctl.core.allocator import Allocator, Outcome, to_addr
from lbctl.core.pools import PoolSpec
from lbctl.core.service import ServiceRequest, ingress_status
from lbctl.kube.client import ApiError, Kube, KubeError
from lbctl.kube.events import EventRecorder
from lbctl.kube.resources import service_path

from .metrics import Metrics
from .pool_status import PoolStatusWriter

logger = log.get(__name__)


RETRY_FAILED = 5.0  # seconds before a Service whose decision raised is tried again
LISTS = frozenset({"Service", "Namespace", "IPPool"})


@dataclass
class _Notice:
    reason: str
    message: str


class Reconciler:
    def __init__(self, kube: Kube, events: EventRecorder, metrics: Metrics, lb_class: str | None = None) -> None:
        self.kube, self.events, self.metrics, self.lb_class = kube, events, metrics, lb_class
        self.alloc = Allocator()
        self.services: dict[str, ServiceRequest] = {}
        self.pools: dict[str, PoolSpec] = {}
        self.namespaces: dict[str, Mapping[str, str]] = {}
        self._listed: set[str] = set()  # which of LISTS have listed at least once
        self._waiting: dict[str, set[str]] = {}  # namespace not known yet -> Services waiting for it
        self.ready = asyncio.Event()
        self._dirty: set[str] = set()
        self._pools_dirty = False
        self._wake = asyncio.Event()
        self._pending: dict[str, str] = {}  # key -> why it has no address
        # Holding addresses while its request cannot be met now ("cannot move"): looked at again whenever an
        # address is freed, like the pending ones, so the move happens then, not at the next restart.
        self._unmet: set[str] = set()
        self._notices: dict[str, _Notice] = {}  # last warning per Service, to post each once
        # Services whose status write was refused because the status changed since our view of it: when the
        # watch brings a newer version, the table takes that status as a restart would, not our unwritten decision.
        self._stale: dict[str, str] = {}  # key -> the resourceVersion the refused decision was taken on
        self._pool_status = PoolStatusWriter(kube, events, metrics)

    # ----- inputs (called from watch handlers; cheap, never block) -------------------------
    def services_listed(self, items: Iterable[ServiceRequest]) -> None:
        """A full (re)list: replace the cache; everything present or vanished gets a look."""
        fresh = {r.key: r for r in items}
        self._dirty.update(self.services.keys() - fresh.keys())
        self._dirty.update(fresh)
        self.services = fresh
        self._listed.add("Service")
        self._wake.set()

    def service_seen(self, req: ServiceRequest) -> None:
        old = self.services.get(req.key)
        if old is not None and _older(req.resource_version, old.resource_version):
            return  # a watch replaying what a fresher listing already gave us (a takeover's own list)
        self.services[req.key] = req
        self.service_changed(req.key)

    def service_gone(self, key: str) -> None:
        self.services.pop(key, None)
        self.service_changed(key)

    def service_changed(self, key: str) -> None:
        self._dirty.add(key)
        self._wake.set()

    def pools_listed(self, pools: Mapping[str, PoolSpec]) -> None:
        self.pools = dict(pools)
        self._listed.add("IPPool")
        self.pools_changed()

    def pool_statuses_listed(self, statuses: Mapping[str, Mapping[str, Any] | None]) -> None:
        """What the IPPools' status says now (a listing), so a restart rewrites none that is still right."""
        self._pool_status.observed(statuses)

    def pool_status_seen(self, name: str, status: Mapping[str, Any] | None) -> None:
        """An IPPool's status as the watch shows it. Usually our own write coming back; but a write abandoned
        on the wire (a stalled connection) may land after a newer one: then the writer sees it and writes again."""
        self._pool_status.observed({name: status} if status else {})
        if self.ready.is_set():
            self._pool_status.update(self.alloc)

    def pool_seen(self, name: str, pool: PoolSpec | None) -> None:
        """pool None: deleted."""
        if pool is None:
            self.pools.pop(name, None)
        elif self.pools.get(name) == pool:
            # Our own status writes come back as MODIFIED events; with the spec unchanged there is nothing to
            # decide, and revisiting every assigned Service (10,000s) on each one would stall the loop.
            return
        else:
            self.pools[name] = pool
        self.pools_changed()

    def pools_changed(self) -> None:
        self._pools_dirty = True
        self._wake.set()

    def namespaces_listed(self, namespaces: Mapping[str, Mapping[str, str]]) -> None:
        changed = {n for n in self.namespaces.keys() | namespaces.keys()
                   if self.namespaces.get(n) != namespaces.get(n)}
        self.namespaces = dict(namespaces)
        self._listed.add("Namespace")
        for name in changed:
            self.namespace_changed(name)
        self._wake.set()

    def namespace_seen(self, name: str, labels: Mapping[str, str] | None) -> None:
        """labels None: deleted."""
        if labels is None:
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = labels
        self.namespace_changed(name)

    def namespace_changed(self, name: str) -> None:
        # Labels decide which pools admit a Service: not only a pending one may now get an address, one that
        # holds an address while asking for another may now move (what a restart would decide at once).
        self._dirty.update(self._waiting.pop(name, ()))
        self._dirty.update(k for k in self.services if k.startswith(name + "/"))
        self._wake.set()

    @property
    def synced(self) -> bool:
        return self._listed >= LISTS

    # ----- the loop ----------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.synced:
                continue
            first = not self.ready.is_set()
            try:
                if first:
                    started = time.monotonic()
                    self._bootstrap()
                if self._pools_dirty:
                    self._pools_dirty = False
                    self._apply_pools()
            except Exception:  # the pools as a whole: nothing sensible to decide against, try again soon
                logger.exception("reconcile_failed")
                self.metrics.decision_errors.inc()
                await asyncio.sleep(1)
                self._wake.set()
                continue
            batch, self._dirty = self._dirty, set()
            writes = [(k, w) for k, w in ((k, self._decide_isolated(k)) for k in sorted(batch)) if w is not None]
            results = await asyncio.gather(*(w for _, w in writes), return_exceptions=True)
            for (key, _), result in zip(writes, results):
                if isinstance(result, Exception):
                    self._failed(key, result)
            if first:  # restart cost, end to end: rebuilt table, every Service looked at, writes done
                logger.info("initial_pass", services=len(batch), writes=len(writes),
                            seconds=round(time.monotonic() - started, 3))
            self.metrics.pending.set(len(self._pending) + sum(map(len, self._waiting.values())))
            self._pool_status.update(self.alloc)

    def _decide_isolated(self, key: str) -> Any:
        try:
            return self._decide(key)
        except Exception as exc:  # one Service's failure must not cost the others their turn
            self._failed(key, exc)
            return None

    def _failed(self, key: str, exc: BaseException) -> None:
        self.metrics.decision_errors.inc()
        logger.error("decision_failed", service=key, error=repr(exc), retry_in=RETRY_FAILED, exc_info=exc)
        asyncio.get_running_loop().call_later(RETRY_FAILED, self.service_changed, key)

    def _bootstrap(self) -> None:
        """Rebuild the table from Service statuses before deciding anything (restart safety)."""
        started = time.monotonic()
        self.alloc.set_pools(self.pools.values())
        restored = 0
        for req in sorted(self.services.values(), key=lambda r: (r.created, r.key)):
            # Whatever the Service asks for now (a request with a typo, another class, another type): what its
            # status holds stays reserved for it until its status lets go.
            if req.current_ips:
                try:
                    outcome = self.alloc.restore(req, self.lb_class)
                except Exception as exc:
                    self._failed(req.key, exc)
                    continue
                if outcome.error:
                    self._warn(req, "IPConflict", outcome.error + "; it keeps the address until one of them "
                               "lets go of it (delete it, or change its request)")
                restored += 1
            self._dirty.add(req.key)
        self._pools_dirty = False
        self.ready.set()
        logger.info("bootstrapped", services=restored, pools=len(self.alloc.pools),
                    seconds=round(time.monotonic() - started, 3))

    def _apply_pools(self) -> None:
        self.alloc.set_pools(self.pools.values())
        # New or freed capacity, or pools that stopped covering addresses: revisit everyone affected.
        self._dirty.update(self._pending)
        self._dirty.update(self.alloc.holding())  # also statuses we do not decide: a pool may now cover them

    def _decide(self, key: str) -> Any:
        req = self.services.get(key)
        if req is None:  # deleted
            released = self.alloc.release(key)
            self._forget(key)
            if released:
                self.metrics.releases.inc()
                logger.info("released", service=key, ips=list(released), why="deleted")
                self._retry_pending()
            return None
        labels = self.namespaces.get(req.namespace)
        if labels is None and req.wants(self.lb_class):
            # Listed or watched before its Namespace: the pool may depend on the Namespace's labels, and an
            # address once given stays. Decided when the Namespace arrives (it exists: the API server checked).
            self._waiting.setdefault(req.namespace, set()).add(key)
            return None
        if key in self._stale and self._stale[key] != req.resource_version:
            del self._stale[key]
            self._adopt_status(req)
        outcome = self.alloc.sync(req, labels, self.lb_class)
        if outcome.released:
            self._retry_pending()
        if not req.wants(self.lb_class):
            self._forget(key)
            if outcome.changed or (not req.is_lb and req.current_ips and self._ours(req.current_ips)):
                self.metrics.releases.inc()
                return self._write(req, outcome, "IPReleased",
                                   f"Released {', '.join(req.current_ips)}: no longer a LoadBalancer of this class")
            return None
        if outcome.error and not outcome.ips:
            self._pending[key] = outcome.error
            self.metrics.failures.inc()
            if req.current_ips:  # its status shows addresses it was never given (written by hand): it lets go
                self._notices[key] = _Notice("AllocationFailed", outcome.error)
                return self._write(req, outcome, "AllocationFailed", f"{outcome.error}; released "
                                   f"{', '.join(req.current_ips)} from its status: not its own", "Warning")
            self._warn(req, "AllocationFailed", outcome.error)
            return None
        self._pending.pop(key, None)
        (self._unmet.add if outcome.error else self._unmet.discard)(key)
        if outcome.error:
            self._warn(req, "AllocationFailed", outcome.error)
        elif outcome.retained:
            self._warn(req, "IPRetained", f"{', '.join(outcome.retained)} is no longer in any usable IPPool; "
                       "the Service keeps it. Recreate the Service to move it to a pool address.")
        else:
            self._notices.pop(key, None)
        if outcome.changed:
            self.metrics.allocations.inc()
            verb = "Moved to" if req.current_ips else "Assigned"
            pool = f" from IPPool {outcome.pool}" if outcome.pool else ""
            return self._write(req, outcome, "IPAllocated", f"{verb} {', '.join(outcome.ips)}{pool}")
        return None

    async def _write(self, req: ServiceRequest, outcome: Outcome, reason: str, message: str,
                     type_: str = "Normal") -> None:
        # Preconditions: never write to a recreated namesake (uid), nor over a version this decision did not see
        # (resourceVersion: another writer's status that our watch has not delivered yet).
        meta = {"uid": req.uid, **({"resourceVersion": req.resource_version} if req.resource_version else {})}
        body = {"metadata": meta,
                "status": {"loadBalancer": ingress_status(outcome.ips) if outcome.ips else {"ingress": None}}}
        ns, name = req.key.split("/", 1)
        started = time.monotonic()
        try:
            await self.kube.patch(service_path(ns, name, "status"), body)
        except KubeError as exc:
            self.metrics.patch_errors.inc()
            if isinstance(exc, ApiError) and exc.status == 404:
                return  # gone; its own events will follow
            if isinstance(exc, ApiError) and exc.status == 409:
                # Replaced (uid) or changed since we read it: decided again on the version the watch brings; the
                # later look covers a watch that is itself behind (reconnecting) and delivers nothing new soon.
                logger.info("status_patch_conflict", service=req.key, error=str(exc))
                if req.resource_version:
                    self._stale[req.key] = req.resource_version
                asyncio.get_running_loop().call_later(1.0, self.service_changed, req.key)
                return
            logger.warning("status_patch_failed", service=req.key, error=str(exc))
            asyncio.get_running_loop().call_later(1.0, self.service_changed, req.key)
            return
        self.metrics.patch_seconds.observe(time.monotonic() - started)
        logger.info("status_written", service=req.key, ips=list(outcome.ips), reason=reason)
        self.events.emit(_service_ref(req), type_, reason, message)

    def _adopt_status(self, req: ServiceRequest) -> None:
        """Our last decision for it never landed and its status changed meanwhile (another writer, e.g. the
        previous leader, seen late): the table takes the status as it is now, exactly as a restart would."""
        self.alloc.release(req.key)
        if req.current_ips:
            outcome = self.alloc.restore(req, self.lb_class)
            if outcome.error:
                self._warn(req, "IPConflict", outcome.error + "; it keeps the address until one of them "
                           "lets go of it (delete it, or change its request)")
        logger.info("status_adopted", service=req.key, ips=list(req.current_ips))

    def _warn(self, req: ServiceRequest, reason: str, message: str) -> None:
        notice = _Notice(reason, message)
        if self._notices.get(req.key) == notice:
            return
        self._notices[req.key] = notice
        logger.warning(reason, service=req.key, message=message)
        self.events.emit(_service_ref(req), "Warning", reason, message)

    def _forget(self, key: str) -> None:
        ns = key.split("/", 1)[0]
        if ns in self._waiting:
            self._waiting[ns].discard(key)
            if not self._waiting[ns]:
                del self._waiting[ns]
        self._pending.pop(key, None)
        self._unmet.discard(key)
        self._notices.pop(key, None)
        self._stale.pop(key, None)

    def _retry_pending(self) -> None:
        self._dirty.update(self._pending)
        self._dirty.update(self._unmet)
        self._wake.set()

    def _ours(self, ips: Iterable[str]) -> bool:
        for ip in ips:
            try:
                if self.alloc.pool_of(to_addr(ip)):
                    return True
            except ValueError:
                continue
        return False

    async def drain(self) -> None:
        """Stopping: IPPool counts still deferred are written now (the caller checks we may still write)."""
        if self.ready.is_set():
            await self._pool_status.drain()

    def pending(self) -> dict[str, str]:
        return dict(self._pending)


def _older(version: str, than: str) -> bool:
    """resourceVersions are opaque, but etcd's are increasing integers: compare only what both parse as such."""
    return version.isdigit() and than.isdigit() and int(version) < int(than)


def _service_ref(req: ServiceRequest) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "Service", "namespace": req.namespace, "name": req.name, "uid": req.uid}
