"""Cluster state for the election, fed by informers (or a static file in test/debug mode).

When the API server is unreachable the informers yield ERROR and retry; the model keeps the last
known state, so speakers keep electing among live peers through an outage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from lbctl import log
from lbctl.core.announce import IpIntent, ServiceRef, static_intents
from lbctl.core.election import NodeInfo
from lbctl.core.intent_index import IntentIndex
from lbctl.kube.client import ApiError, Kube
from lbctl.kube.resources import IPPOOLS, NODES, SERVICES
from lbctl.kube.watch_health import WatchHealth

logger = log.get(__name__)
SLICES_V1 = "/apis/discovery.k8s.io/v1/endpointslices"
SLICES_V1BETA1 = "/apis/discovery.k8s.io/v1beta1/endpointslices"


class KubeState:
    """Intents kept up to date per event (lbctl/core/intent_index.py): a Service or EndpointSlice change
    anywhere in the cluster costs the IPs of that one Service, not a rebuild of every IP's state."""

    def __init__(self, kube: Kube, lb_class: str | None, on_change: Callable[[], None]) -> None:
        self.kube, self.lb_class, self.on_change = kube, lb_class, on_change
        self.index = IntentIndex(lb_class)
        self.model = self.index.model
        self._synced: set[str] = set()
        self.health = WatchHealth()

    @property
    def synced(self) -> bool:
        return len(self._synced) == 4

    def intents(self) -> dict[str, IpIntent]:
        """Updated in place: see take_changes() for which entries changed."""
        return self.index.intents

    def take_changes(self) -> set[str] | None:
        return self.index.take_changes()

    def nodes(self) -> dict[str, NodeInfo]:
        return self.model.nodes

    def withheld(self) -> dict[str, tuple[str, tuple[ServiceRef, ...]]]:
        return self.index.withheld

    def tasks(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._watch("Service", SERVICES), name="watch-services"),
                asyncio.create_task(self._watch("Node", NODES), name="watch-nodes"),
                asyncio.create_task(self._watch("IPPool", IPPOOLS), name="watch-ippools"),
                asyncio.create_task(self._slices(), name="watch-endpointslices")]

    async def _slices(self) -> None:
        try:
            await self._watch("EndpointSlice", SLICES_V1, fallback_on_404=True)
        except _NotServed:
            logger.info("endpointslices_v1beta1", reason="discovery.k8s.io/v1 is not served (Kubernetes < 1.21)")
            await self._watch("EndpointSlice", SLICES_V1BETA1)

    async def _watch(self, kind: str, path: str, fallback_on_404: bool = False) -> None:
        async for event, obj in self.kube.informer(path):
            if event == "ERROR":
                if fallback_on_404 and isinstance(obj, ApiError) and obj.status == 404:
                    raise _NotServed()
                if self.health.failed(kind):  # once per outage, not per retry
                    logger.warning("watch_failed", kind=kind, error=str(obj), keeping="last known state")
                continue
            down = self.health.recovered(kind)
            if down is not None:
                logger.info("watch_recovered", kind=kind, failed_seconds=round(down, 1))
            try:
                changed = self.index.apply(kind, event, obj)
            except Exception as exc:  # an odd object must not end the watch
                logger.warning("object_ignored", kind=kind, error=repr(exc))
                continue
            if event == "SYNC":
                self._synced.add(kind)
            if changed:
                self.on_change()


class _NotServed(Exception):
    pass


class StaticState:
    """--static-config: a JSON file instead of the cluster. For tests and debugging only.

    {"nodes": ["node1", {"name": "node2", "labels": {...}, "networkUnavailable": false}],
     "ips": {"198.18.0.50": {"services": ["default/web"], "pool": "p", "etp_local": false,
                             "ready_nodes": ["node1"], "node_selector": {...} | [...],
                             "interfaces": ["eth0"]}}}
    """

    synced = True

    def __init__(self, path: str) -> None:
        self.path = path
        self._intents: dict[str, IpIntent] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._reloaded = True
        self.load()

    def load(self) -> None:
        """Raises OSError/ValueError on a bad file; the previous state stays in place then."""
        with open(self.path) as f:
            doc: Any = json.load(f)
        self._intents, self._nodes = static_intents(doc)
        self._reloaded = True

    def intents(self) -> dict[str, IpIntent]:
        return self._intents

    def take_changes(self) -> set[str] | None:
        """None (any IP) after a (re)load, else nothing."""
        reloaded, self._reloaded = self._reloaded, False
        return None if reloaded else set()

    def nodes(self) -> dict[str, NodeInfo]:
        return self._nodes

    def withheld(self) -> dict[str, tuple[str, tuple[ServiceRef, ...]]]:
        return {}  # a static file is trusted: it is the test's own
