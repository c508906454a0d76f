"""API outages and garbage input: the controller neither crashes nor loses or moves anything."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from tests.figures import figure
from tests.integration.conftest import Lab
from tests.procs import ControllerProcess
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


@pytest.mark.parametrize("identity", ["given", "generated"])
def test_leader_serves_again_soon_after_an_outage_longer_than_the_renew_deadline(
        kube, control_plane, controller, identity, record_property) -> None:
    """Refused connections for 10 s: the leader gives up (renew deadline 8 s) and starts over. Its Lease still
    holds its own record, unchanged: it takes it back at once rather than waiting for it to expire."""
    controller.stop()  # the module's controller would be the leader: this test's own one is alone (restarted below)
    with tempfile.TemporaryDirectory(prefix="lbctl-outage-") as d:
        ctl = ControllerProcess(control_plane, Path(d), identity=None if identity == "given" else "")
        lab = Lab(kube, None)
        try:
            ctl.start()
            lab.pool("long", ["198.18.17.0/28"])
            lab.service("a")
            before = lab.wait_ips("a")
            control_plane.outage(10)
            back = time.monotonic()
            lab.service("b")
            got = wait_for(lambda: lab.ips("b"), 40, 0.05, "b assigned after the outage")
            took = time.monotonic() - back
            record_property("api_back_to_served_s", round(took, 2))
            print(f"\nAPI back after a 10 s outage ({identity} identity) -> next Service served: {took:.2f} s")
            figure(f"outage_10s_back_to_served_{identity}_id_s", took, "s")
            assert ctl.proc.poll() is None and "leadership_lost" in ctl.log()
            assert got == ["198.18.17.1"] and lab.ips("a") == before
            assert took <= 5.0, took
        except BaseException:
            Path(f"/tmp/client-outage-{identity}.log").write_text(ctl.log() + "\n---\n" + controller.log())
            raise
        finally:
            lab.cleanup()
            ctl.stop()
            controller.start()
