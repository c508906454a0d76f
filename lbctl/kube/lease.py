"""The one writer of coordination.k8s.io/v1 Leases: the controller's leader election (get, then create or
replace by resourceVersion) and the speaker's liveness Lease (merge patch, created on first use)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .client import ApiError, Kube

GROUP_VERSION = "coordination.k8s.io/v1"


class LeaseClient:
    def __init__(self, kube: Kube, namespace: str, name: str, labels: Mapping[str, str] | None = None) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.labels = dict(labels or {})
        self.collection = f"/apis/{GROUP_VERSION}/namespaces/{namespace}/leases"
        self.path = f"{self.collection}/{name}"

    async def get(self) -> dict[str, Any] | None:
        """The Lease, or None when there is none."""
        try:
            return await self.kube.get(self.path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None

    async def create(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return await self.kube.create(self.collection, self.body(spec))

    async def replace(self, spec: Mapping[str, Any], resource_version: str) -> dict[str, Any]:
        """Optimistic: 409 Conflict if anyone wrote the Lease since `resource_version`."""
        return await self.kube.replace(self.path, self.body(spec, resource_version))

    async def patch_or_create(self, spec: Mapping[str, Any], create_extra: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch the spec; when there is no Lease yet, create it with `create_extra` added to the spec."""
        try:
            return await self.kube.patch(self.path, {"spec": dict(spec)})
        except ApiError as exc:
            if exc.status != 404:
                raise
        return await self.create({**spec, **create_extra})

    def body(self, spec: Mapping[str, Any], resource_version: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            meta["labels"] = dict(self.labels)
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": GROUP_VERSION, "kind": "Lease", "metadata": meta, "spec": dict(spec)}
