"""Shared fixtures. The control plane is real: etcd + kube-apiserver (RBAC on), started once per session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lbctl.controlplane import ControlPlane, manifests
from lbctl.kube import config
from lbctl.kube.client import ApiError
from lbctl.kube.resources import path
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
        with admin_client(cp) as kube:
            for doc in manifests("crds", "rbac"):
                apply_doc(kube, doc)
            wait_crd(kube)
        yield cp
    finally:
        cp.cleanup()


def admin_client(cp: ControlPlane) -> SyncKube:
    return SyncKube(config.from_kubeconfig(cp.kubeconfig("admin")), user_agent="lbctl-tests")


def apply_doc(kube: SyncKube, doc: dict) -> None:
    coll = path(doc["apiVersion"], doc["kind"], namespace=doc["metadata"].get("namespace"))
    if not kube.exists(f"{coll}/{doc['metadata']['name']}"):
        kube.create(coll, doc)


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
