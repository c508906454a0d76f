"""The kopf shell: IPPools and Namespaces through kopf indexes, event handlers poke the reconciler.

Services are not handled by kopf: its per-object workers and index-readiness toggles made startup
quadratic (12 s for 2000 Services); the reconciler runs one list-watch for them instead (see
ServiceInformer). Only stateless kopf handlers are used, so nothing is written onto watched objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from lbctl.core.pools import PoolSpec, parse_pool
from lbctl.kube.config import KubeConfig
from lbctl.kube.resources import GROUP, VERSION

from .reconciler import Reconciler


class IndexSources:
    """Read access to kopf's indexes in the shape the reconciler wants."""

    def __init__(self, pools: kopf.Index, namespaces: kopf.Index) -> None:
        self._p, self._n = pools, namespaces

    def pools(self) -> Iterable[PoolSpec]:
        return [v for store in self._p.values() for v in store]

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        store = self._n.get(name)
        return next(iter(store), None) if store else None


def build_registry(reconciler: Reconciler, cfg: KubeConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # we post our own, deduplicated Events
        settings.watching.server_timeout = 600
        settings.networking.request_timeout = 30
        settings.persistence.finalizer = "lbctl.io/unused-finalizer"  # no handler needs one; be explicit

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=cfg.server, ca_data=cfg.ca_data, token=cfg.bearer(), insecure=cfg.insecure or None,
            certificate_path=cfg.cert_file, private_key_path=cfg.key_file, scheme="Bearer" if cfg.bearer() else None,
        )

    @kopf.index(GROUP, VERSION, "ippools", id="pools_idx", registry=registry)
    async def pools_idx(body: kopf.Body, name: str, **_: Any) -> dict[str, PoolSpec]:
        return {name: parse_pool(name, body.get("spec"), body.metadata.get("creationTimestamp") or "")}

    @kopf.index("v1", "namespaces", id="namespaces_idx", registry=registry)
    async def namespaces_idx(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
        return {name: dict(labels)}

    def sources(kw: Mapping[str, Any]) -> IndexSources:
        return IndexSources(kw["pools_idx"], kw["namespaces_idx"])

    @kopf.on.event(GROUP, VERSION, "ippools", registry=registry)
    async def pool_event(**kw: Any) -> None:
        reconciler.attach(sources(kw))
        reconciler.pools_changed()

    @kopf.on.event("v1", "namespaces", registry=registry)
    async def namespace_event(name: str, **kw: Any) -> None:
        reconciler.attach(sources(kw))
        reconciler.namespace_changed(name)

    return registry
