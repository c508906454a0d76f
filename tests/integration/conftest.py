from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lbctl.lab.controlplane import ControlPlane
from lbctl.kube.sync import SyncKube
from tests.conftest import ControllerProcess
from tests.wait import wait_for

POOLS = "/apis/lbctl.io/v1alpha1/ippools"
_ids = itertools.count()


@pytest.fixture(scope="module")
def controller(control_plane: ControlPlane) -> Iterator[ControllerProcess]:
    with tempfile.TemporaryDirectory(prefix="lbctl-ctl-") as d:
        ctl = ControllerProcess(control_plane, Path(d))
        ctl.start()
        try:
            yield ctl
        finally:
            ctl.stop()


class Lab:
    """Creates pools, namespaces and Services for one test and removes them afterwards."""

    def __init__(self, kube: SyncKube, controller: ControllerProcess | None = None) -> None:
        self.kube, self.controller = kube, controller
        self.pools: list[str] = []
        self.services: list[tuple[str, str]] = []
        self.ns = f"t{next(_ids)}-{id(self) % 100000}"
        kube.create("/api/v1/namespaces", {"metadata": {"name": self.ns}})

    def namespace(self, labels: dict[str, str] | None = None) -> str:
        name = f"{self.ns}-x{next(_ids)}"
        self.kube.create("/api/v1/namespaces", {"metadata": {"name": name, "labels": labels or {}}})
        return name

    def pool(self, name: str, addresses: list[str], **spec: Any) -> dict[str, Any]:
        name = f"{self.ns}-{name}"
        self.pools.append(name)
        return self.kube.create(POOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool",
                                        "metadata": {"name": name}, "spec": {"addresses": addresses, **spec}})

    def pool_name(self, short: str) -> str:
        return f"{self.ns}-{short}"

    def service(self, name: str, ns: str | None = None, annotations: dict[str, str] | None = None,
                labels: dict[str, str] | None = None, ports: list[int] | None = None, **spec: Any) -> dict[str, Any]:
        ns = ns or self.ns
        body = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}, "labels": labels or {}},
                "spec": {"type": "LoadBalancer", "selector": {"app": name},
                         "ports": [{"name": f"p{p}", "port": p, "protocol": "TCP"} for p in (ports or [80])], **spec}}
        self.services.append((ns, name))
        return self.kube.create(f"/api/v1/namespaces/{ns}/services", body)

    def svc(self, name: str, ns: str | None = None) -> dict[str, Any]:
        return self.kube.get(f"/api/v1/namespaces/{ns or self.ns}/services/{name}")

    def ips(self, name: str, ns: str | None = None) -> list[str]:
        ingress = (self.svc(name, ns).get("status", {}).get("loadBalancer") or {}).get("ingress") or []
        return [i["ip"] for i in ingress]

    def wait_ips(self, name: str, ns: str | None = None, timeout: float = 15) -> list[str]:
        return wait_for(lambda: self.ips(name, ns), timeout, what=f"an EXTERNAL-IP on {name}")

    def events(self, name: str, ns: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        items = self.kube.get(f"/api/v1/namespaces/{ns or self.ns}/events",
                              fieldSelector=f"involvedObject.name={name}")["items"]
        return [e for e in items if reason is None or e["reason"] == reason]

    def wait_event(self, name: str, reason: str, ns: str | None = None, contains: str = "") -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((e for e in self.events(name, ns, reason) if contains in e["message"]), None)
        return wait_for(find, 15, what=f"{reason} event on {name} containing {contains!r}")

    def pool_obj(self, short: str) -> dict[str, Any]:
        return self.kube.get(f"{POOLS}/{self.pool_name(short)}")

    def pool_ready(self, short: str) -> dict[str, Any] | None:
        conds = self.pool_obj(short).get("status", {}).get("conditions") or []
        return next((c for c in conds if c["type"] == "Ready"), None)

    def cleanup(self) -> None:
        for ns, name in self.services:
            self.kube.delete(f"/api/v1/namespaces/{ns}/services/{name}")
        for name in self.pools:
            self.kube.delete(f"{POOLS}/{name}")
        ctl = self.controller
        if self.pools and ctl and ctl.proc and ctl.proc.poll() is None:
            # The next test must not get addresses from these pools: wait until the controller dropped them.
            def dropped() -> bool:
                text = ctl.metrics()
                return not any(f'lbctl_pool_ready{{pool="{name}"}}' in text for name in self.pools)
            wait_for(dropped, what=f"the controller to drop deleted pools {self.pools}")


@pytest.fixture
def lab(kube: SyncKube, controller: ControllerProcess) -> Iterator[Lab]:
    lab = Lab(kube, controller)
    try:
        yield lab
    finally:
        lab.cleanup()
