"""Shared fixtures. The control plane is real: etcd + kube-apiserver (RBAC on), started once per session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lbctl.controlplane import ControlPlane
from tests.kube import Kube
from tests.procs import ControllerProcess  # noqa: F401  (re-exported for test modules)


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
        # The chart as a user installs it, without pools: CRDs, and the ServiceAccounts and RBAC the
        # controller and speaker run under in every test (release lbctl in lbctl-system).
        cp.install_chart(values={"pools": []})
        wait_crd(admin_client(cp))
        yield cp
    finally:
        cp.cleanup()


def admin_client(cp: ControlPlane) -> Kube:
    assert cp.workdir
    return Kube(cp.url, cp.tokens["admin"], str(cp.workdir / "apiserver.crt"))


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
