"""Shared fixtures. The control plane is real: etcd + kube-apiserver (RBAC on), started once per session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lbctl.lab.controlplane import ControlPlane
from lbctl.kube import config
from lbctl.kube.client import ApiError
from lbctl.kube.sync import SyncKube
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
        with admin_client(cp) as kube:
            wait_crd(kube)
        yield cp
    finally:
        cp.cleanup()


def admin_client(cp: ControlPlane) -> SyncKube:
    return SyncKube(config.from_kubeconfig(cp.kubeconfig("admin")), user_agent="lbctl-tests")


def wait_crd(kube: SyncKube) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            kube.get("/apis/lbctl.io/v1alpha1/ippools")
            return
        except ApiError:  # 404 until the CRD is established
            time.sleep(0.2)
    raise RuntimeError("IPPool CRD never became served")


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Iterator[SyncKube]:
    with admin_client(control_plane) as k:
        yield k
