"""The launcher's (and the e2e tests') view of the lab API server: each batch runs apicall in lbctl-cp.

The API server listens on a lab address, which must never be dialled from the root namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .processes import STATE
from .topology import CP_NS

T = TypeVar("T")
MERGE = "application/merge-patch+json"


class ApiError(RuntimeError):
    def __init__(self, status: int, body: Any, what: str) -> None:
        msg = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{what}: HTTP {status}: {msg}")
        self.status, self.body = status, body


@dataclass
class LabApi:
    kubeconfig: Path = STATE / "cp" / "kubeconfig-admin"
    netns: str = CP_NS
    python: str = sys.executable

    def batch(self, calls: list[dict[str, Any]], timeout: float = 60) -> list[dict[str, Any]]:
        res = subprocess.run(["ip", "netns", "exec", self.netns, self.python, "-m", "lbctl.lab.apicall",
                              str(self.kubeconfig)], input=json.dumps(calls), capture_output=True, text=True,
                             timeout=timeout)
        if res.returncode:
            raise RuntimeError(f"apicall failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        return json.loads(res.stdout)

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (), **extra: Any) -> Any:
        [r] = self.batch([{"method": method, "path": path, "body": body, **extra}])
        if r["status"] >= 300 and r["status"] not in ok or r["status"] == 0:
            raise ApiError(r["status"], r["body"], f"{method} {path}")
        return r["body"]

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params or None)

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("POST", path, body)

    def apply(self, collection: str, body: dict[str, Any]) -> Any:
        return self.call("APPLY", collection, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body, content_type=MERGE)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path, ok=(404,))


def wait_for(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll until fn() is truthy; raise TimeoutError naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
