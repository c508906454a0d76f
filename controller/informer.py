"""Feeds the reconciler from one list-watch on Services (relists on 410 and after outages)."""

from __future__ import annotations

import time

from lbctl import log
from lbctl.core.service import read_service
from lbctl.kube.client import Kube
from lbctl.kube.resources import SERVICES

from .reconciler import Reconciler

logger = log.get(__name__)


async def watch_services(kube: Kube, reconciler: Reconciler) -> None:
    last_error = 0.0
    async for kind, obj in kube.informer(SERVICES):
        if kind == "SYNC":
            reconciler.services_listed(read_service(o) for o in obj)
        elif kind in ("ADDED", "MODIFIED"):
            reconciler.service_seen(read_service(obj))
        elif kind == "DELETED":
            meta = obj.get("metadata") or {}
            reconciler.service_gone(f"{meta.get('namespace')}/{meta.get('name')}")
        elif kind == "ERROR" and time.monotonic() - last_error > 10:  # the API may be down for a while
            last_error = time.monotonic()
            logger.warning("service_watch_failed", error=str(obj))
