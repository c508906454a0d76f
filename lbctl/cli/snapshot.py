"""One read of what the status/explain commands show: one LIST per kind, concurrently, no per-object calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..core.status import LEASE_SELECTOR
from ..kube.client import ApiError, Kube
from ..kube.resources import IPPOOLS, NAMESPACES, NODES, SERVICES
from .cluster import api_failure

SPEAKERS = "/apis/lbctl.io/v1alpha1/speakerstatuses"
BGPPEERS = "/apis/lbctl.io/v1alpha1/bgppeers"
LEASES = "/apis/coordination.k8s.io/v1/leases"
SLICES = ("/apis/discovery.k8s.io/v1/endpointslices", "/apis/discovery.k8s.io/v1beta1/endpointslices")
# field -> (path, query, what to call it in an error)
LISTS: dict[str, tuple[str, dict[str, str], str]] = {
    "services": (SERVICES, {}, "Services"),
    "pools": (IPPOOLS, {}, "IPPools (lbctl.io)"),
    "speakers": (SPEAKERS, {}, "SpeakerStatuses (lbctl.io)"),
    "leases": (LEASES, {"labelSelector": LEASE_SELECTOR}, "speaker Leases (coordination.k8s.io/v1, all namespaces)"),
    "namespaces": (NAMESPACES, {}, "Namespaces"),
    "nodes": (NODES, {}, "Nodes"),
    "bgppeers": (BGPPEERS, {}, "BGPPeers (lbctl.io)"),
}
OPTIONAL = frozenset({"bgppeers"})  # kinds a cluster without BGP's CRDs (an older chart) does not serve: empty


@dataclass
class Snapshot:
    services: list[dict[str, Any]] = field(default_factory=list)
    pools: list[dict[str, Any]] = field(default_factory=list)
    speakers: list[dict[str, Any]] = field(default_factory=list)
    leases: list[dict[str, Any]] = field(default_factory=list)
    namespaces: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)
    bgppeers: list[dict[str, Any]] = field(default_factory=list)


async def _list(kube: Kube, name: str) -> list[dict[str, Any]]:
    path, query, what = LISTS[name]
    try:
        return (await kube.get(path, **query)).get("items") or []
    except ApiError as exc:
        if exc.status == 404 and name in OPTIONAL:
            return []
        raise api_failure(exc, f"cannot list {what}", kube.cfg) from None


async def _slices(kube: Kube) -> list[dict[str, Any]]:
    for path in SLICES:
        try:
            return (await kube.get(path)).get("items") or []
        except ApiError as exc:
            if exc.status != 404:
                raise api_failure(exc, "cannot list EndpointSlices", kube.cfg) from None
    return []


async def take(kube: Kube, *kinds: str) -> Snapshot:
    """List `kinds` (Snapshot field names) at once; any failure ends the command with exit code 2."""
    snap = Snapshot()
    jobs = {k: (_slices(kube) if k == "slices" else _list(kube, k)) for k in kinds}
    for name, items in zip(jobs, await asyncio.gather(*jobs.values())):
        setattr(snap, name, items)
    return snap


async def events_for(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    items = (await kube.get(f"/api/v1/namespaces/{namespace}/events",
                            fieldSelector=f"involvedObject.name={name}")).get("items") or []
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
