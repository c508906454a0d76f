"""Allocation against the real API server, through the real controller process (RBAC on)."""

from __future__ import annotations

import pytest

from tests.wait import wait_for


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


def test_requested_ip_by_annotation_and_by_spec(lab):
    lab.pool("req", ["198.18.3.0/28"])
    lab.service("a", annotations={"lbctl.io/loadBalancerIPs": "198.18.3.7"})
    lab.service("b", loadBalancerIP="198.18.3.9")
    lab.service("c", annotations={"metallb.universe.tf/loadBalancerIPs": "198.18.3.11"})
    assert lab.wait_ips("a") == ["198.18.3.7"]
    assert lab.wait_ips("b") == ["198.18.3.9"]
    assert lab.wait_ips("c") == ["198.18.3.11"]


def test_impossible_requests_fail_with_exact_reason(lab):
    lab.pool("imp", ["198.18.3.16/28"])
    lab.service("taken", loadBalancerIP="198.18.3.20")
    lab.wait_ips("taken")
    lab.service("dup", loadBalancerIP="198.18.3.20")
    assert "in use by Service" in lab.wait_event("dup", "AllocationFailed")["message"]
    lab.service("outside", loadBalancerIP="198.18.99.1")
    assert "198.18.99.1 is not in any IPPool" in lab.wait_event("outside", "AllocationFailed")["message"]
    lab.service("fam", annotations={"lbctl.io/loadBalancerIPs": "2001:db8:3::1"})
    assert "is IPv6 but the Service's ipFamilies are IPv4" in lab.wait_event("fam", "AllocationFailed")["message"]
    assert lab.ips("dup") == [] and lab.ips("outside") == [] and lab.ips("fam") == []


def test_pool_annotation_selects_autoassign_false_pool(lab):
    lab.pool("auto", ["198.18.4.0/28"])
    lab.pool("manual", ["198.18.4.16/28"], autoAssign=False)
    lab.service("plain")
    lab.service("picked", annotations={"lbctl.io/address-pool": lab.pool_name("manual")})
    lab.service("legacy", annotations={"metallb.io/address-pool": lab.pool_name("manual")})
    assert lab.wait_ips("plain") == ["198.18.4.0"]
    # Services decided in one batch go in name order, not creation order: only the pool is asserted.
    assert sorted(lab.wait_ips("picked") + lab.wait_ips("legacy")) == ["198.18.4.16", "198.18.4.17"]
    lab.service("nopool", annotations={"lbctl.io/address-pool": "does-not-exist"})
    assert "IPPool does-not-exist does not exist" in lab.wait_event("nopool", "AllocationFailed")["message"]


def test_selectors_and_priority(lab):
    gold_ns = lab.namespace({"tier": "gold"})
    lab.pool("general", ["198.18.5.0/28"])
    lab.pool("gold", ["198.18.5.16/28"], serviceAllocation={"priority": 1, "namespaceSelector": {"matchLabels": {"tier": "gold"}}})
    lab.pool("gold2", ["198.18.5.32/28"], serviceAllocation={"priority": 5, "namespaceSelector": {"matchLabels": {"tier": "gold"}}})
    lab.pool("bylabel", ["198.18.5.48/28"], serviceAllocation={"serviceSelector": {"matchLabels": {"app": "special"}}})
    lab.service("vip", ns=gold_ns)
    lab.service("std")
    lab.service("spec", labels={"app": "special"})
    assert lab.wait_ips("vip", ns=gold_ns) == ["198.18.5.16"]
    assert lab.wait_ips("std") == ["198.18.5.0"]
    assert lab.wait_ips("spec") == ["198.18.5.48"]
    lab.service("sneaky", annotations={"lbctl.io/address-pool": lab.pool_name("gold")})
    assert "does not admit" in lab.wait_event("sneaky", "AllocationFailed")["message"]


def test_sharing(lab):
    lab.pool("share", ["198.18.6.0/28"])
    key = {"lbctl.io/allow-shared-ip": "web"}
    lab.service("http", annotations=key, ports=[80])
    lab.service("https", annotations=key, ports=[443])
    ip = lab.wait_ips("http")
    assert lab.wait_ips("https") == ip
    lab.service("clash", annotations=dict(key, **{"lbctl.io/loadBalancerIPs": ip[0]}), ports=[80])
    assert "already uses TCP/80" in lab.wait_event("clash", "AllocationFailed")["message"]
    lab.service("nokey", loadBalancerIP=ip[0], ports=[8080])
    assert "in use by Service" in lab.wait_event("nokey", "AllocationFailed")["message"]
    lab.service("local", annotations=key, ports=[8443], externalTrafficPolicy="Local")
    assert lab.wait_ips("local") != ip  # different policy: its own address


def test_class_filtering(lab):
    lab.pool("cls", ["198.18.7.0/28"])
    created = lab.service("foreign", loadBalancerClass="example.com/other")
    if "loadBalancerClass" not in created["spec"]:
        pytest.skip("this API server (Kubernetes 1.20) prunes spec.loadBalancerClass (added in 1.21); "
                    "the filter itself is covered by tests/unit/test_service.py::test_class_filter")
    lab.service("ours")
    lab.wait_ips("ours")
    assert lab.ips("foreign") == []


def test_dual_stack(lab):
    lab.pool("dual", ["198.18.8.0/28", "2001:db8:8::/124"])
    lab.service("both", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
    lab.service("six", ipFamilyPolicy="SingleStack", ipFamilies=["IPv6"])
    lab.service("prefer", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv6", "IPv4"])
    assert lab.wait_ips("both") == ["198.18.8.0", "2001:db8:8::"]
    assert lab.wait_ips("six") == ["2001:db8:8::1"]
    assert lab.wait_ips("prefer") == ["2001:db8:8::2", "198.18.8.1"]


def test_exhaustion_then_recovery(lab):
    lab.pool("tiny", ["198.18.9.1-198.18.9.2"])
    lab.service("a")
    lab.service("b")
    lab.wait_ips("a")
    lab.wait_ips("b")
    lab.service("c")
    ev = lab.wait_event("c", "AllocationFailed")
    assert "IPv4 exhausted (2 of 2 assigned)" in ev["message"] and ev["type"] == "Warning"
    freed = lab.ips("a")
    lab.kube.delete(f"/api/v1/namespaces/{lab.ns}/services/a")
    assert lab.wait_ips("c") == freed  # picked up automatically once an address frees


def test_release_on_type_change_and_delete(lab):
    lab.pool("rel", ["198.18.10.1"])
    lab.service("a")
    ip = lab.wait_ips("a")
    lab.kube.patch(f"/api/v1/namespaces/{lab.ns}/services/a", {"spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": None}]}})
    wait_for(lambda: lab.ips("a") == [], what="status cleared after type change")
    lab.service("b")
    assert lab.wait_ips("b") == ip
    lab.kube.delete(f"/api/v1/namespaces/{lab.ns}/services/b")
    lab.service("c")
    assert lab.wait_ips("c") == ip
