"""A tiny synchronous client for tests: plain HTTP against the real API server, as the admin user."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests

T = TypeVar("T")


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status, self.body = status, body


class Kube:
    def __init__(self, server: str, token: str, ca_file: str) -> None:
        self.server = server
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {token}"
        self.s.verify = ca_file
        self.s.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
             **params: Any) -> dict[str, Any]:
        headers = {"Content-Type": content_type} if body is not None else {}
        r = self.s.request(method, self.server + path, json=body, params=params or None, headers=headers, timeout=30)
        if r.status_code >= 400:
            raise ApiError(r.status_code, r.text)
        return r.json() if r.text else {}

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.call("GET", path, **params)

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", path, body)

    def patch(self, path: str, body: Any) -> dict[str, Any]:
        return self.call("PATCH", path, body, "application/merge-patch+json")

    def delete(self, path: str) -> None:
        try:
            self.call("DELETE", path)
        except ApiError as exc:
            if exc.status != 404:
                raise

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise


def wait_for(fn: Callable[[], T], timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll until fn() returns something truthy; the last value is in the failure message."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
