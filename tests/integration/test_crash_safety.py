"""Crash safety: the controller SIGKILLed at random points 20 times while Services are created, changed and
deleted, and the API server restarted twice. At the end: no address held twice, none leaked, none moved.

An observer lists the Services every few hundred milliseconds throughout and remembers the first address each
Service (by uid) was given; a later, different address is a move. Leaks are checked by filling the pool to the
last address: every free address must be handed out, and one Service more must stay pending.
"""

from __future__ import annotations

import ipaddress
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lbctl.lab.controlplane import ControlPlane
from lbctl.kube.sync import SyncKube
from tests.conftest import admin_client
from tests.figures import figure
from tests.procs import ControllerProcess
from tests.wait import wait_for

POOLS = "/apis/lbctl.io/v1alpha1/ippools"
POOL = "crash-pool"
NET = ipaddress.ip_network("198.18.200.0/23")  # 512 addresses, in no other test's pools
NS = "crash-safety"
SVCS = f"/api/v1/namespaces/{NS}/services"
KILLS, OUTAGES_AT = 20, (7, 14)
INITIAL = 500


def _ip(svc: dict[str, Any]) -> str | None:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return ingress[0]["ip"] if ingress else None


def _body(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"type": "LoadBalancer", "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}


class Record:
    """Everything the observer saw: first address per uid, moves and duplicates."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[str, str]] = {}  # uid -> (name, ip)
        self.moves: list[str] = []
        self.duplicates: list[str] = []
        self.snapshots = 0

    def observe(self, items: list[dict[str, Any]]) -> None:
        self.snapshots += 1
        holders: dict[str, str] = {}
        for s in items:
            ip, uid, name = _ip(s), s["metadata"]["uid"], s["metadata"]["name"]
            if ip is None:
                continue
            if ip in holders:
                self.duplicates.append(f"{ip}: {holders[ip]} and {name}")
            holders[ip] = name
            first = self.first.setdefault(uid, (name, ip))
            if first[1] != ip:
                self.moves.append(f"{name}: {first[1]} -> {ip}")


def _forever(stop: threading.Event, fn: Any, interval: float) -> None:
    while not stop.is_set():
        try:
            fn()
        except Exception:  # noqa: BLE001 - the API server is down for a moment: try again
            pass
        stop.wait(interval)


@pytest.fixture
def crash_kube(control_plane: ControlPlane) -> Iterator[SyncKube]:
    with admin_client(control_plane) as k:
        k.create("/api/v1/namespaces", {"metadata": {"name": NS}})
        k.create(POOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": POOL},
                         "spec": {"addresses": [str(NET)], "autoAssign": False}})
        try:
            yield k
        finally:
            for s in k.list(SVCS):
                k.delete(f"{SVCS}/{s['metadata']['name']}")
            k.delete(f"{POOLS}/{POOL}")
            k.delete(f"/api/v1/namespaces/{NS}")


def test_sigkills_and_api_restarts_lose_and_move_nothing(control_plane: ControlPlane, crash_kube: SyncKube) -> None:
    kube = crash_kube
    rnd = random.Random(7)
    record, stop = Record(), threading.Event()
    created = iter(range(100_000))
    live: list[str] = []

    def create(n: int) -> None:
        for _ in range(n):
            name = f"s{next(created)}"
            body = _body(name)
            body["metadata"]["annotations"] = {"lbctl.io/address-pool": POOL}
            kube.create(SVCS, body)
            live.append(name)

    def churn() -> None:
        if len(live) < INITIAL:
            create(min(20, INITIAL - len(live)))
            return
        for name in rnd.sample(live, 5):  # a change that must not move the address
            kube.patch(f"{SVCS}/{name}", {"metadata": {"labels": {"touched": str(rnd.randint(0, 9))}}})
        for name in rnd.sample(live, 3):
            live.remove(name)
            kube.delete(f"{SVCS}/{name}")
        create(3)

    with admin_client(control_plane) as observer_kube, tempfile.TemporaryDirectory(prefix="lbctl-crash-") as d:
        observer = threading.Thread(target=_forever, args=(stop, lambda: record.observe(observer_kube.list(SVCS)),
                                                           0.25), daemon=True)
        worker = threading.Thread(target=_forever, args=(stop, churn, 0.05), daemon=True)
        ctl = ControllerProcess(control_plane, Path(d))
        ctl.start()
        observer.start()
        worker.start()
        restarts = []
        try:
            for k in range(1, KILLS + 1):
                time.sleep(rnd.uniform(0.3, 1.5))
                assert ctl.proc is not None
                ctl.proc.kill()  # SIGKILL: no cleanup, mid-batch
                ctl.proc.wait()
                if k in OUTAGES_AT:
                    control_plane.outage(2)
                restarts.append(ctl.start(timeout=90))
            stop.set()
            worker.join(30)
            observer.join(30)
            # Steady state: every live Service has an address and the record sees it.
            wait_for(lambda: all(_ip(s) for s in kube.list(SVCS)), 120, 0.5, "every Service to have an address")
            record.observe(kube.list(SVCS))
            items = kube.list(SVCS)
            assigned = {_ip(s) for s in items}
            assert not record.duplicates, record.duplicates[:10]
            assert not record.moves, record.moves[:10]
            assert len(assigned) == len(items)
            assert all(ipaddress.ip_address(ip) in NET for ip in assigned)
            # No leak: exactly the free addresses can still be handed out, then the pool is full.
            free = NET.num_addresses - len(items)
            create(free)
            wait_for(lambda: all(_ip(s) for s in kube.list(SVCS)), 120, 0.5, f"{free} more Services to fill the pool")
            create(1)
            time.sleep(2)
            pending = [s["metadata"]["name"] for s in kube.list(SVCS) if not _ip(s)]
            assert pending == [live[-1]], pending
            record.observe(kube.list(SVCS))
            assert not record.duplicates and not record.moves
            print(f"crash safety: {KILLS} SIGKILLs, {len(OUTAGES_AT)} API server restarts, {record.snapshots} "
                  f"snapshots, {len(record.first)} Services seen; restart-to-ready median "
                  f"{sorted(restarts)[len(restarts) // 2]:.2f} s; duplicates 0, moved 0, leaked 0")
            figure("crash_sigkills", KILLS, "count")
            figure("crash_apiserver_restarts", len(OUTAGES_AT), "count")
            figure("crash_services_seen", len(record.first), "count")
            figure("crash_duplicate_ips", len(record.duplicates), "count")
            figure("crash_moved_ips", len(record.moves), "count")
            figure("crash_leaked_ips", len(set(pending) - {live[-1]}), "count")
            figure("crash_restart_to_ready_median_s", sorted(restarts)[len(restarts) // 2], "s")
        finally:
            stop.set()
            ctl.stop()
