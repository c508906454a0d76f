"""A replica deciding from a stale view never overwrites a status written meanwhile (real API server).

Found by the random run (tests/random_run.py, seed 2, step 1014): the leader lost its Lease during an API server
restart right after writing two statuses; the new leader's watches were still reconnecting, so it built its
table without those writes and gave both Services other addresses. Every status write now carries the
resourceVersion it was decided on, so the API server refuses one decided on an older version (409) and the
Service is decided again on the version that the watch brings.
"""

from __future__ import annotations

import asyncio

from lbctl.controller.metrics import Metrics
from lbctl.controller.reconciler import Reconciler
from lbctl.core.pools import parse_pool
from lbctl.core.service import read_service
from lbctl.kube import config
from lbctl.kube.client import Kube
from lbctl.kube.events import EventRecorder
from lbctl.lab.controlplane import ControlPlane
from lbctl.kube.sync import SyncKube


def test_a_decision_on_a_stale_view_does_not_overwrite_a_newer_status(control_plane: ControlPlane,
                                                                       kube: SyncKube) -> None:
    ns = "stale-view"
    kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    try:
        svc = kube.create(f"/api/v1/namespaces/{ns}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}})
        stale = read_service(svc)  # what a replica whose watch is behind still holds: no address yet
        # The previous leader's last write, which the stale replica never saw: the pool's second address.
        kube.patch(f"/api/v1/namespaces/{ns}/services/web/status",
                   {"status": {"loadBalancer": {"ingress": [{"ip": "198.18.77.1"}]}}})
        pools = {"p": parse_pool("p", {"addresses": ["198.18.77.0-198.18.77.3"]})}

        async def decide_from_the_stale_view() -> None:
            async with Kube(config.from_kubeconfig(control_plane.kubeconfig("admin"))) as api:
                r = Reconciler(api, EventRecorder(api, "test"), Metrics())
                task = asyncio.create_task(r.run())
                r.pools_listed(pools)
                r.namespaces_listed({ns: {}})
                r.services_listed([stale])
                await asyncio.wait_for(r.ready.wait(), 10)
                await asyncio.sleep(1.5)  # its write, and a retry, have had their chance
                # The watch catches up: the replica takes the newer status as it is and writes nothing.
                r.service_seen(read_service(await api.get(f"/api/v1/namespaces/{ns}/services/web")))
                await asyncio.sleep(1.5)
                held.extend(r.alloc.ips_of(f"{ns}/web"))
                task.cancel()

        held: list[str] = []

        asyncio.run(decide_from_the_stale_view())
        ingress = kube.get(f"/api/v1/namespaces/{ns}/services/web")["status"]["loadBalancer"]["ingress"]
        assert [i["ip"] for i in ingress] == ["198.18.77.1"], "a decision on a stale view overwrote a newer status"
        assert held == ["198.18.77.1"], f"the table holds {held} once the view caught up"
    finally:
        kube.delete(f"/api/v1/namespaces/{ns}")
