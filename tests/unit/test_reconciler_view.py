"""The reconciler's decisions against its view, with a recording stand-in for the API (pure unit level).

- nothing is decided before Services, Namespaces and IPPools have all listed;
- a Service whose Namespace is not known waits for it instead of taking a fallback pool;
- a decision that raises costs only that Service (logged, counted, retried), not the rest of the batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lbctl.controller import reconciler as rec
from lbctl.controller.metrics import Metrics
from lbctl.controller.reconciler import Reconciler
from lbctl.core.pools import parse_pool
from lbctl.core.service import read_service
from lbctl.kube.events import EventRecorder


class RecordingKube:
    def __init__(self) -> None:
        self.status: dict[str, list[str]] = {}

    async def patch(self, path: str, body: Any, content_type: str = "") -> dict[str, Any]:
        if "/services/" in path:
            parts = path.split("/")
            ingress = body["status"]["loadBalancer"].get("ingress") or []
            self.status[f"{parts[4]}/{parts[6]}"] = [i["ip"] for i in ingress]
        return {}

    async def create(self, path: str, body: Any) -> dict[str, Any]:
        return {}


def svc(ns: str, name: str) -> Any:
    return read_service({"metadata": {"namespace": ns, "name": name, "uid": f"u-{ns}-{name}"},
                         "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}})


POOLS = {"gold": parse_pool("gold", {"addresses": ["198.18.50.0/29"], "serviceAllocation": {
             "priority": 1, "namespaceSelector": {"matchLabels": {"tier": "gold"}}}}),
         "fallback": parse_pool("fallback", {"addresses": ["198.18.51.0/29"]})}


def run_for(r: Reconciler, seconds: float, *steps: Any) -> None:
    async def main() -> None:
        task = asyncio.create_task(r.run())
        for step in steps:
            step()
            await asyncio.sleep(seconds)
        task.cancel()
    asyncio.run(main())


def make() -> tuple[Reconciler, RecordingKube, Metrics]:
    kube, metrics = RecordingKube(), Metrics()
    return Reconciler(kube, EventRecorder(kube, "test"), metrics), kube, metrics  # type: ignore[arg-type]


def test_nothing_is_decided_before_all_three_lists() -> None:
    r, kube, _ = make()
    run_for(r, 0.05, lambda: r.services_listed([svc("a", "web")]), lambda: r.pools_listed(POOLS))
    assert kube.status == {} and not r.ready.is_set()


def test_a_service_waits_for_its_namespace() -> None:
    r, kube, _ = make()
    run_for(r, 0.05,
            lambda: (r.pools_listed(POOLS), r.namespaces_listed({"other": {}}), r.services_listed([])),
            lambda: r.service_seen(svc("a", "web")),     # its Namespace's event has not arrived yet
            lambda: kube.status.setdefault("checked-before-namespace", list(kube.status)),
            lambda: r.namespace_seen("a", {"tier": "gold"}))
    assert kube.status["checked-before-namespace"] == []
    assert kube.status["a/web"] == ["198.18.50.0"]


def test_one_failing_decision_does_not_drop_the_batch(monkeypatch: Any) -> None:
    monkeypatch.setattr(rec, "RETRY_FAILED", 0.05)
    r, kube, metrics = make()
    real_sync, broken = r.alloc.sync, {"a/b"}

    def sync(req: Any, *args: Any) -> Any:
        if req.key in broken:
            raise RuntimeError("boom")
        return real_sync(req, *args)
    monkeypatch.setattr(r.alloc, "sync", sync)
    run_for(r, 0.05, lambda: (r.pools_listed(POOLS), r.namespaces_listed({"a": {}}),
                              r.services_listed([svc("a", n) for n in ("a", "b", "c")])),
            lambda: kube.status.setdefault("first-pass", sorted(kube.status)),
            lambda: broken.clear(), lambda: None)
    assert kube.status["first-pass"] == ["a/a", "a/c"]
    assert metrics.decision_errors._value.get() >= 1
    assert kube.status["a/b"]  # retried once it could be decided


def test_an_ippool_event_with_an_unchanged_spec_revisits_no_service(monkeypatch: Any) -> None:
    # The controller's own IPPool status writes come back as MODIFIED events; each must not cost a pass over
    # every assigned Service (with 10,000 of them that stalled the loop for most of a second).
    r, kube, _ = make()
    synced: list[str] = []
    real_sync = r.alloc.sync

    def sync(req: Any, *args: Any) -> Any:
        synced.append(req.key)
        return real_sync(req, *args)
    monkeypatch.setattr(r.alloc, "sync", sync)
    same = parse_pool("gold", {"addresses": ["198.18.50.0/29"], "serviceAllocation": {
        "priority": 1, "namespaceSelector": {"matchLabels": {"tier": "gold"}}}})
    grown = parse_pool("fallback", {"addresses": ["198.18.51.0/28"]})
    counts: list[int] = []
    run_for(r, 0.05, lambda: (r.pools_listed(POOLS), r.namespaces_listed({"a": {}}),
                              r.services_listed([svc("a", n) for n in ("x", "y")])),
            lambda: counts.append(len(synced)), lambda: r.pool_seen("gold", same),
            lambda: counts.append(len(synced)), lambda: r.pool_seen("fallback", grown),
            lambda: counts.append(len(synced)))
    assert kube.status == {"a/x": ["198.18.51.0"], "a/y": ["198.18.51.1"]}
    assert counts[1] == counts[0]  # same spec: nothing decided again
    assert counts[2] == counts[1] + 2  # changed spec: both assigned Services looked at again


def held(ns: str, name: str, ips: list[str], rv: str, **annotations: str) -> Any:
    return read_service({"metadata": {"namespace": ns, "name": name, "uid": f"u-{ns}-{name}", "resourceVersion": rv,
                                      "annotations": annotations},
                         "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
                         "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}})


def test_a_request_that_could_not_be_met_is_met_once_its_address_is_freed() -> None:
    # a/x asks for .1 while a/y holds it: it keeps .0 and is told it cannot move. When a/y goes, the leader must
    # move it now, as a restarted leader would (the random run, seed 4, step 894: only a SIGKILL of the leader
    # made the move, so a quiet restart rewrote a status).
    r, kube, _ = make()
    run_for(r, 0.05,
            lambda: (r.pools_listed(POOLS), r.namespaces_listed({"a": {}}),
                     r.services_listed([held("a", "x", ["198.18.51.0"], "1"), held("a", "y", ["198.18.51.1"], "2")])),
            lambda: r.service_seen(held("a", "x", ["198.18.51.0"], "3", **{"lbctl.io/loadBalancerIPs": "198.18.51.1"})),
            lambda: kube.status.setdefault("while-held", list(kube.status.get("a/x", []))),
            lambda: r.service_gone("a/y"))
    assert kube.status["while-held"] == []  # nothing written: it keeps .0 (and gets a warning)
    assert kube.status["a/x"] == ["198.18.51.1"]
