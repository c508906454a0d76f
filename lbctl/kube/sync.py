"""Blocking calls on the one Kubernetes client, for tests, benchmarks and scripts.

`SyncKube` runs one event loop in a daemon thread and hands each call to `lbctl.kube.client.Kube`
there, so synchronous code gets the same HTTP stack, auth, TLS and ApiError (with `.status`) as the
daemons. Daemons stay async and use `Kube` directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from .client import MERGE, ApiError, Kube
from .config import KubeConfig

T = TypeVar("T")

__all__ = ["ApiError", "SyncKube"]


class SyncKube:
    def __init__(self, cfg: KubeConfig, *, user_agent: str = "lbctl", timeout: float = 30.0,
                 concurrency: int = 32) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lbctl-kube", daemon=True)
        self._thread.start()
        self.kube = Kube(cfg, user_agent=user_agent, timeout=timeout, concurrency=concurrency)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop (e.g. one using `self.kube`) and wait for its result."""
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("SyncKube is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str = "application/json") -> dict[str, Any]:
        return self.run(self.kube.request(method, path, params=params, body=body, content_type=content_type))

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.run(self.kube.get(path, **params))

    def list(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return self.run(self.kube.list(path, **params))

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.run(self.kube.create(path, body))

    def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.run(self.kube.replace(path, body))

    def patch(self, path: str, body: Any, content_type: str = MERGE) -> dict[str, Any]:
        return self.run(self.kube.patch(path, body, content_type))

    def delete(self, path: str, **params: Any) -> dict[str, Any]:
        """Deletes; an object already gone is not an error (returns {})."""
        return self.run(self.kube.delete(path, **params))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.run(self.kube.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> SyncKube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
