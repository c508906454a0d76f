"""The kopf shell: IPPools and Namespaces through kopf indexes, event handlers poke the reconciler.

Services are not handled by kopf: its per-object workers and index-readiness toggles made startup
quadratic (12 s for 2000 Services); the reconciler runs one list-watch for them instead (see
ServiceInformer). Only stateless kopf handlers are used, so nothing is written onto watched objects.
"""

from __future__ import annotations

import dataclasses
import ssl
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Connection(kopf.ConnectionInfo):
    """kopf's ConnectionInfo with our TLS context: kopf would write embedded client keys to temp files."""

    cfg: KubeConfig | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    def as_ssl_context(self) -> ssl.SSLContext:
        ctx = self.cfg.ssl_context() if self.cfg else False
        return ctx if isinstance(ctx, ssl.SSLContext) else ssl.create_default_context()


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
        token = cfg.bearer()  # exec plugins: kopf logs in again at `expiration` and on 401
        return _Connection(
            server=cfg.server, token=token, scheme="Bearer" if token else None, username=cfg.username,
            password=cfg.password, expiration=cfg.expires(), cfg=cfg,
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
