"""The controller's list-watches (Services, Namespaces, IPPools; BGPPeers and BFDProfiles for their status) on
lbctl's informer, and their health.

All three feed one Reconciler, which decides nothing before every one of them has listed (one synced
barrier). lbctl's informer relists after any failure, so a watch never ends on its own; `WatchHealth`
(lbctl/kube/watch_health.py, shared with the speaker) says how long each has been failing for /healthz.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from lbctl import log
from lbctl.core.pools import parse_pool
from lbctl.core.service import read_service
from lbctl.kube.client import ApiError, Kube, KubeError
from lbctl.kube.resources import IPPOOLS, NAMESPACES, SERVICES
from lbctl.kube.watch_health import WatchHealth

from .bgp_status import KINDS as BGP_KINDS, BgpStatusWriter
from .reconciler import Reconciler

logger = log.get(__name__)


def _name(obj: Any) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _namespace_labels(obj: Any) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _pool(obj: Any) -> Any:
    meta = obj.get("metadata") or {}
    return parse_pool(_name(obj), obj.get("spec"), meta.get("creationTimestamp") or "")


def _each(kind: str, items: list[Any], convert: Callable[[Any], Any]) -> list[Any]:
    """Converted objects; one that cannot be read is logged and skipped, never the end of the listing."""
    out = []
    for obj in items:
        try:
            out.append(convert(obj))
        except Exception as exc:
            logger.warning("object_ignored", kind=kind, name=_name(obj) if isinstance(obj, dict) else "",
                           error=repr(exc))
    return out


async def _watch(kube: Kube, kind: str, path: str, health: WatchHealth, on_list: Callable[[list[Any]], None],
                 on_event: Callable[[str, Any], None], optional: bool = False) -> None:
    missing = False
    async for event, obj in kube.informer(path):
        if event == "ERROR" and optional and isinstance(obj, ApiError) and obj.status == 404:
            # the kind's CRD is not installed (`helm upgrade` does not add CRDs): the server answers, so the
            # watch is not failing
            health.recovered(kind)
            if not missing:
                logger.warning("kind_not_served", kind=kind, path=path, retrying=True)
            missing = True
            continue
        missing = False
        if event == "ERROR":
            if health.failed(kind):
                logger.warning("watch_failed", kind=kind, error=str(obj) or repr(obj), retrying=True)
            continue
        down = health.recovered(kind)
        if down is not None:
            logger.info("watch_recovered", kind=kind, failed_seconds=round(down, 1))
        if event == "SYNC":
            on_list(obj)
            continue
        try:
            on_event(event, obj)
        except Exception as exc:  # an object we cannot read must not end the watch
            logger.warning("object_ignored", kind=kind, name=_name(obj) if isinstance(obj, dict) else "",
                           error=repr(exc))


async def watch_services(kube: Kube, reconciler: Reconciler, health: WatchHealth) -> None:
    def event(kind: str, obj: Any) -> None:
        if kind == "DELETED":
            meta = obj.get("metadata") or {}
            reconciler.service_gone(f"{meta.get('namespace')}/{meta.get('name')}")
        else:
            reconciler.service_seen(read_service(obj))
    await _watch(kube, "Service", SERVICES, health, lambda items: reconciler.services_listed(
        _each("Service", items, read_service)), event)


async def watch_namespaces(kube: Kube, reconciler: Reconciler, health: WatchHealth) -> None:
    def event(kind: str, obj: Any) -> None:
        reconciler.namespace_seen(_name(obj), None if kind == "DELETED" else _namespace_labels(obj))
    await _watch(kube, "Namespace", NAMESPACES, health, lambda items: reconciler.namespaces_listed(
        dict(_each("Namespace", items, lambda o: (_name(o), _namespace_labels(o))))), event)


async def watch_pools(kube: Kube, reconciler: Reconciler, health: WatchHealth) -> None:
    def event(kind: str, obj: Any) -> None:
        if kind != "DELETED":
            reconciler.pool_status_seen(_name(obj), obj.get("status"))
        reconciler.pool_seen(_name(obj), None if kind == "DELETED" else _pool(obj))
    def listed(items: list[Any]) -> None:
        reconciler.pool_statuses_listed({_name(o): o.get("status") for o in items if isinstance(o, dict)})
        reconciler.pools_listed(dict(_each("IPPool", items, lambda o: (_name(o), _pool(o)))))
    await _watch(kube, "IPPool", IPPOOLS, health, listed, event)


async def watch_bgp(kube: Kube, kind: str, writer: BgpStatusWriter, health: WatchHealth) -> None:
    """BGPPeers or BFDProfiles, for their Valid condition (the allocator does not need them)."""
    await _watch(kube, kind, BGP_KINDS[kind], health, lambda items: writer.listed(kind, items),
                 lambda event, obj: writer.seen(kind, event, obj), optional=True)


async def fresh_services(kube: Kube, reconciler: Reconciler) -> None:
    """One listing of every Service read from etcd (no resourceVersion: a quorum read, never the watch cache),
    retried until it succeeds; the watch's later events that are older than it are ignored (service_seen)."""
    backoff = 0.2
    while True:
        try:
            items = await kube.list(SERVICES)
        except KubeError as exc:
            logger.warning("fresh_list_failed", kind="Service", error=str(exc), retry_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        reconciler.services_listed(_each("Service", items, read_service))
        logger.info("fresh_list", kind="Service", items=len(items))
        return
