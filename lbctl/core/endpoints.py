"""EndpointSlices, reduced to what L2 election needs: which nodes host a ready endpoint of a Service.

Handles discovery.k8s.io/v1 (`nodeName`) and v1beta1 (`topology["kubernetes.io/hostname"]`, the only
form on Kubernetes <= 1.20).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"


def slice_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def slice_service(obj: Mapping[str, Any]) -> str | None:
    """The "namespace/name" of the Service that owns the slice, or None for unowned slices."""
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{meta.get('namespace', 'default')}/{name}" if name else None


def ready_nodes(obj: Mapping[str, Any]) -> frozenset[str]:
    """Nodes with at least one ready endpoint in this slice. Never raises on odd input."""
    out: set[str] = set()
    endpoints = obj.get("endpoints") if isinstance(obj, Mapping) else None
    for ep in endpoints if isinstance(endpoints, list) else []:
        if not isinstance(ep, Mapping):
            continue
        cond = ep.get("conditions")
        # The API says a nil `ready` means unknown and consumers should treat it as ready.
        if isinstance(cond, Mapping) and cond.get("ready") is False:
            continue
        topo = ep.get("topology")
        node = ep.get("nodeName") or (topo.get(HOSTNAME_TOPOLOGY) if isinstance(topo, Mapping) else None)
        if isinstance(node, str) and node:
            out.add(node)
    return frozenset(out)
