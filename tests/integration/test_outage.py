"""API outages and garbage input: the controller neither crashes nor loses or moves anything."""

from __future__ import annotations

from tests.wait import wait_for


def test_garbage_requests_are_reported_and_others_still_served(lab, controller):
    lab.pool("junk", ["198.18.15.0/28"])
    lab.service("bad1", annotations={"lbctl.io/loadBalancerIPs": "not-an-ip"})
    lab.service("bad2", annotations={"lbctl.io/loadBalancerIPs": "198.18.15.1,198.18.15.2"})
    lab.service("good")
    assert lab.wait_ips("good") == ["198.18.15.0"]
    assert "requested address is invalid" in lab.wait_event("bad1", "AllocationFailed")["message"]
    assert "more than one address of a family" in lab.wait_event("bad2", "AllocationFailed")["message"]
    assert controller.proc.poll() is None


def test_api_outage_loses_nothing(lab, controller, control_plane):
    lab.pool("out", ["198.18.16.0/28"])
    for name in ("a", "b"):
        lab.service(name)
    before = {n: lab.wait_ips(n) for n in ("a", "b")}
    control_plane.outage(5)
    assert controller.proc.poll() is None  # survived the outage
    lab.service("c")
    assert lab.wait_ips("c", timeout=60) == ["198.18.16.2"]
    assert {n: lab.ips(n) for n in ("a", "b")} == before
    lab.kube.delete(f"/api/v1/namespaces/{lab.ns}/services/a")
    lab.service("d")
    assert wait_for(lambda: lab.ips("d"), 30, what="d assigned after the outage") == before["a"]
