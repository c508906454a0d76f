"""One read of everything the status/explain commands show, through the async client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..kube import config
from ..kube.client import ApiError, Kube
from ..kube.resources import IPPOOLS, NAMESPACES, NODES, SERVICES

SPEAKERS = "/apis/lbctl.io/v1alpha1/speakerstatuses"
SLICES = ("/apis/discovery.k8s.io/v1/endpointslices", "/apis/discovery.k8s.io/v1beta1/endpointslices")


@dataclass
class Snapshot:
    services: list[dict[str, Any]] = field(default_factory=list)
    pools: list[dict[str, Any]] = field(default_factory=list)
    namespaces: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    speakers: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def owners(self) -> dict[str, str]:
        """ip -> node, as the speakers report it."""
        out: dict[str, str] = {}
        for sp in self.speakers:
            for a in (sp.get("status") or {}).get("announced") or []:
                out[a.get("ip", "")] = sp["metadata"]["name"]
        return out


async def _items(kube: Kube, path: str, snap: Snapshot, what: str) -> list[dict[str, Any]]:
    try:
        return (await kube.get(path)).get("items") or []
    except ApiError as exc:
        snap.problems.append(f"cannot list {what}: {exc}")
        return []


async def take(kubeconfig: str | None) -> Snapshot:
    snap = Snapshot()
    async with Kube(config.load(kubeconfig), user_agent="lbctl-cli") as kube:
        snap.services, snap.pools, snap.namespaces, snap.nodes, snap.speakers = await asyncio.gather(
            _items(kube, SERVICES, snap, "Services"), _items(kube, IPPOOLS, snap, "IPPools"),
            _items(kube, NAMESPACES, snap, "Namespaces"), _items(kube, NODES, snap, "Nodes"),
            _items(kube, SPEAKERS, snap, "SpeakerStatuses"))
        for path in SLICES:
            try:
                snap.slices = (await kube.get(path)).get("items") or []
                break
            except ApiError as exc:
                if exc.status != 404:
                    snap.problems.append(f"cannot list EndpointSlices: {exc}")
                    break
    return snap


async def events_for(kubeconfig: str | None, namespace: str, name: str) -> list[dict[str, Any]]:
    async with Kube(config.load(kubeconfig), user_agent="lbctl-cli") as kube:
        items = (await kube.get(f"/api/v1/namespaces/{namespace}/events",
                                fieldSelector=f"involvedObject.name={name}")).get("items") or []
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
