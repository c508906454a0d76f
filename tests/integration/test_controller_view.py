"""The controller decides each Service against a complete view: its Namespace's labels and every pool known.

GitOps tools create a Namespace and its Services back to back; the Service's watch event may arrive before
the Namespace's. A Service whose Namespace is not yet known waits; it is never decided against a fallback pool.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from lbctl.lab.controlplane import ControlPlane
from tests import httpget
from tests.conftest import ControllerProcess
from tests.wait import wait_for

PAIRS = int(__import__("os").environ.get("VIEW_PAIRS", "30"))


def test_namespace_and_service_back_to_back_land_in_the_namespaces_pool(lab, controller):
    lab.pool("gold", ["198.18.40.0/26"], serviceAllocation={"priority": 1,
                                                            "namespaceSelector": {"matchLabels": {"tier": "gold"}}})
    lab.pool("fallback", ["198.18.41.0/26"])
    gold = lab.pool_name("gold")
    wait_for(lambda: f'lbctl_pool_ready{{pool="{gold}"}} 1.0' in controller.metrics(), what="the gold pool known")
    namespaces = []
    for i in range(PAIRS):  # no wait between a Namespace and its Service, nor between pairs
        ns = lab.namespace({"tier": "gold"})
        namespaces.append(ns)
        lab.service(f"web{i}", ns=ns)
    ips = {ns: lab.wait_ips(f"web{i}", ns=ns, timeout=30) for i, ns in enumerate(namespaces)}
    wrong = {ns: ip for ns, ip in ips.items() if not ip[0].startswith("198.18.40.")}
    assert not wrong, f"{len(wrong)} of {PAIRS} Services got a fallback address: {wrong}"
    assert len({ip[0] for ip in ips.values()}) == PAIRS


def test_pairs_created_while_the_controller_starts(lab, control_plane):
    """The widest window: the controller lists Services and Namespaces at different moments while a GitOps
    sync creates pairs; a Service listed before its Namespace is known must wait, not take the fallback."""
    lab.pool("gold", ["198.18.43.0/26"], serviceAllocation={"priority": 1,
                                                            "namespaceSelector": {"matchLabels": {"tier": "gold"}}})
    lab.pool("fallback", ["198.18.44.0/26"])
    namespaces: list[str] = []

    def sync() -> None:
        for i in range(PAIRS):
            ns = lab.namespace({"tier": "gold"})
            namespaces.append(ns)
            lab.service(f"web{i}", ns=ns)

    with tempfile.TemporaryDirectory(prefix="lbctl-ctl-") as d:
        ctl = ControllerProcess(control_plane, Path(d))
        creator = threading.Thread(target=sync)
        creator.start()
        try:
            ctl.start()
        finally:
            creator.join()
        try:
            ips = {ns: lab.wait_ips(f"web{i}", ns=ns, timeout=30) for i, ns in enumerate(namespaces)}
        finally:
            ctl.stop()
    wrong = {ns: ip for ns, ip in ips.items() if not ip[0].startswith("198.18.43.")}
    assert not wrong, f"{len(wrong)} of {PAIRS} Services got a fallback address: {wrong}"


def test_healthz_reports_watches_failing_for_too_long(control_plane: ControlPlane):
    """During an API server outage longer than --unhealthy-after, /healthz says so; afterwards it is healthy
    again, and the controller's watches (all on lbctl's informer, which retries) see a pool created and one
    deleted after the restart (kopf used to stop watching IPPools after a 403 while RBAC warmed up)."""
    from tests.conftest import admin_client
    with tempfile.TemporaryDirectory(prefix="lbctl-ctl-") as d, admin_client(control_plane) as kube:
        ctl = ControllerProcess(control_plane, Path(d), "--unhealthy-after", "2", "--no-leader-elect")
        pool = f"view-after-outage-{int(time.time())}"
        ctl.start()
        try:
            health = lambda: httpget.get(f"http://127.0.0.1:{ctl.port}/healthz", timeout=2)[0]  # noqa: E731
            assert health() == 200
            outage = threading.Thread(target=control_plane.outage, args=(8,))
            outage.start()
            try:
                wait_for(lambda: health() == 503, 8, what="/healthz failing while the API server is down")
            finally:
                outage.join()
            wait_for(lambda: health() == 200, 30, what="/healthz healthy again after the outage")
            assert ctl.proc.poll() is None
            kube.create("/apis/lbctl.io/v1alpha1/ippools", {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool",
                                                            "metadata": {"name": pool},
                                                            "spec": {"addresses": ["198.18.46.0/30"],
                                                                     "autoAssign": False}})
            try:
                wait_for(lambda: f'lbctl_pool_ready{{pool="{pool}"}}' in ctl.metrics(), 20, what="the new pool seen")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{ctl.log()[-4000:]}") from None
            kube.delete(f"/apis/lbctl.io/v1alpha1/ippools/{pool}")
            wait_for(lambda: f'lbctl_pool_ready{{pool="{pool}"}}' not in ctl.metrics(), 20,
                     what="the deleted pool dropped")
        finally:
            ctl.stop()
            kube.delete(f"/apis/lbctl.io/v1alpha1/ippools/{pool}")
