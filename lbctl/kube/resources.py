"""REST paths for the kinds lbctl reads and writes, and a minimal `apply` for manifests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .client import ApiError, Kube

GROUP = "lbctl.io"
VERSION = "v1alpha1"
IPPOOLS = f"/apis/{GROUP}/{VERSION}/ippools"
SERVICES = "/api/v1/services"
NAMESPACES = "/api/v1/namespaces"
NODES = "/api/v1/nodes"

# kind -> (plural, namespaced)
KINDS: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False),
    "Service": ("services", True),
    "Secret": ("secrets", True),
    "ConfigMap": ("configmaps", True),
    "ServiceAccount": ("serviceaccounts", True),
    "Node": ("nodes", False),
    "Event": ("events", True),
    "EndpointSlice": ("endpointslices", True),
    "Lease": ("leases", True),
    "CustomResourceDefinition": ("customresourcedefinitions", False),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "IPPool": ("ippools", False),
    "SpeakerStatus": ("speakerstatuses", False),
}


def path(api_version: str, kind: str, name: str | None = None, namespace: str | None = None) -> str:
    plural, namespaced = KINDS[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespaced and namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    return f"{base}/{name}" if name else base


def service_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/services/{name}" + (f"/{sub}" if sub else "")


def ippool_path(name: str, sub: str = "") -> str:
    return f"{IPPOOLS}/{name}" + (f"/{sub}" if sub else "")


async def apply(kube: Kube, docs: Iterable[Mapping[str, Any]]) -> None:
    """Create each object, or replace it when it exists (keeping its resourceVersion)."""
    for doc in docs:
        if not doc:
            continue
        meta = doc["metadata"]
        ns = meta.get("namespace") or ("default" if KINDS[doc["kind"]][1] else None)
        coll = path(doc["apiVersion"], doc["kind"], namespace=ns)
        try:
            await kube.create(coll, doc)
        except ApiError as exc:
            if exc.status != 409:
                raise
            current = await kube.get(f"{coll}/{meta['name']}")
            body = dict(doc)
            body["metadata"] = dict(meta, resourceVersion=current["metadata"]["resourceVersion"])
            await kube.replace(f"{coll}/{meta['name']}", body)
