"""Allocation against the real API server, through the real controller process (RBAC on)."""

from __future__ import annotations

from tests.kube import wait_for


def test_service_gets_lowest_free_ip_and_event(lab):
    lab.pool("a", ["198.18.1.10-198.18.1.12"])
    lab.service("web")
    assert lab.wait_ips("web") == ["198.18.1.10"]
    ev = lab.wait_event("web", "IPAllocated")
    assert "198.18.1.10" in ev["message"] and ev["type"] == "Normal"
    lab.service("api")
    assert lab.wait_ips("api") == ["198.18.1.11"]
    svc = lab.svc("web")
    # No kopf bookkeeping and no finalizers on Services.
    assert not [k for k in svc["metadata"].get("annotations", {}) if "kopf" in k]
    assert not svc["metadata"].get("finalizers")
