"""Shared fixtures. The control plane is real: etcd + kube-apiserver (RBAC on), started once per session."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lbctl.controlplane import ControlPlane, free_port, manifests
from tests.kube import Kube


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    cp = ControlPlane()
    try:
        cp.start()
        kube = admin_client(cp)
        for doc in manifests("crds", "rbac"):
            apply_doc(kube, doc)
        wait_crd(kube)
        yield cp
    finally:
        cp.cleanup()


def admin_client(cp: ControlPlane) -> Kube:
    assert cp.workdir
    return Kube(cp.url, cp.tokens["admin"], str(cp.workdir / "apiserver.crt"))


def apply_doc(kube: Kube, doc: dict) -> None:
    from lbctl.kube.resources import path
    ns = doc["metadata"].get("namespace")
    coll = path(doc["apiVersion"], doc["kind"], namespace=ns)
    if not kube.exists(f"{coll}/{doc['metadata']['name']}"):
        kube.create(coll, doc)


def wait_crd(kube: Kube) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            kube.get("/apis/lbctl.io/v1alpha1/ippools")
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("IPPool CRD never became served")


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Kube:
    return admin_client(control_plane)


class ControllerProcess:
    """The real controller as a subprocess, authenticated as its service account (RBAC applies)."""

    def __init__(self, cp: ControlPlane, logdir: Path, *extra: str) -> None:
        self.cp, self.logdir, self.extra = cp, logdir, extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    def start(self, timeout: float = 30.0) -> float:
        self.port = free_port()
        self.starts += 1
        log = open(self.logdir / f"controller-{self.starts}.log", "wb")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "--kubeconfig", str(self.cp.kubeconfig("controller")),
             "--http-host", "127.0.0.1", "--http-port", str(self.port), "--log-format", "json", *self.extra],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"controller not ready in {timeout}s: {self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.logdir / f"controller-{self.starts}.log").read_text(errors="replace")

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def rss_mib(self) -> float:
        assert self.proc
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0
