"""Controller benchmark against the real test control plane (etcd + kube-apiserver on loopback).

Prints, in one run:
  bulk     N Services created -> all assigned, controller vs a raw baseline that creates the same Services
           and patches their status itself with the same client and concurrency (target <= 1.5x)
  single   time-to-IP p50/p99 over 100 Services created one at a time (targets 50 ms / 200 ms)
  restart  time until a restarted controller is ready with N assigned, and how many IPs changed (<= 10 s, 0)
  rss      controller RSS at N and at 5000 Services (target <= 150 MiB at 5000)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lbctl.lab.controlplane import ControlPlane
from lbctl.core.service import ingress_status
from lbctl.kube import config
from lbctl.kube.client import Kube
from lbctl.kube.resources import IPPOOLS, apply
from tests.procs import ControllerProcess

CONCURRENCY = 32


def service(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]}}


async def bounded(n: int, fn) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with sem:
            await fn(i)
    await asyncio.gather(*(one(i) for i in range(n)))


async def ensure_ns(kube: Kube, ns: str) -> None:
    await apply(kube, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}])


async def wait_assigned(kube: Kube, ns: str, count: int, rv: str, timeout: float = 300) -> float:
    """Follow a watch until `count` Services in `ns` have an ingress IP; returns the monotonic end time."""
    done: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(done) < count and time.monotonic() < deadline:
        async for kind, obj in kube.watch(f"/api/v1/namespaces/{ns}/services", rv, timeout_seconds=60):
            rv = obj["metadata"].get("resourceVersion", rv)
            if kind in ("ADDED", "MODIFIED") and (obj.get("status", {}).get("loadBalancer") or {}).get("ingress"):
                done.add(obj["metadata"]["name"])
                if len(done) >= count:
                    break
    if len(done) < count:
        raise RuntimeError(f"only {len(done)} of {count} Services assigned")
    return time.monotonic()


async def delete_all(kube: Kube, ns: str, n: int) -> None:
    await bounded(n, lambda i: kube.delete(f"/api/v1/namespaces/{ns}/services/s{i}"))


async def baseline(kube: Kube, n: int) -> float:
    ns = "bench-baseline"
    await ensure_ns(kube, ns)
    start = time.monotonic()

    async def create_and_patch(i: int) -> None:
        await kube.create(f"/api/v1/namespaces/{ns}/services", service(f"s{i}", ns))
        ip = f"198.18.200.{i % 250 + 1}"  # outside every pool; nothing else reads these
        await kube.patch(f"/api/v1/namespaces/{ns}/services/s{i}/status", {"status": {"loadBalancer": ingress_status([ip])}})
    await bounded(n, create_and_patch)
    took = time.monotonic() - start
    await delete_all(kube, ns, n)
    return took


async def bulk(kube: Kube, n: int, ns: str = "bench-bulk") -> float:
    await ensure_ns(kube, ns)
    rv = (await kube.get(f"/api/v1/namespaces/{ns}/services"))["metadata"]["resourceVersion"]
    waiter = asyncio.create_task(wait_assigned(kube, ns, n, rv))
    start = time.monotonic()
    await bounded(n, lambda i: kube.create(f"/api/v1/namespaces/{ns}/services", service(f"s{i}", ns)))
    return await waiter - start


async def single(kube: Kube, n: int) -> list[float]:
    ns = "bench-single"
    await ensure_ns(kube, ns)
    out = []
    for i in range(n):
        rv = (await kube.get(f"/api/v1/namespaces/{ns}/services", limit=1))["metadata"]["resourceVersion"]
        waiter = asyncio.create_task(wait_assigned_one(kube, ns, f"s{i}", rv))
        start = time.monotonic()
        await kube.create(f"/api/v1/namespaces/{ns}/services", service(f"s{i}", ns))
        out.append(await waiter - start)
    return out


async def wait_assigned_one(kube: Kube, ns: str, name: str, rv: str) -> float:
    async for kind, obj in kube.watch(f"/api/v1/namespaces/{ns}/services", rv, timeout_seconds=30,
                                      fieldSelector=f"metadata.name={name}"):
        if (obj.get("status", {}).get("loadBalancer") or {}).get("ingress"):
            return time.monotonic()
    raise RuntimeError(f"{name} got no IP in 30 s")


async def snapshot(kube: Kube) -> dict[str, tuple[tuple[str, ...], str]]:
    items = (await kube.get("/api/v1/services"))["items"]
    return {f"{s['metadata']['namespace']}/{s['metadata']['name']}":
            (tuple(i["ip"] for i in (s["status"].get("loadBalancer") or {}).get("ingress") or []),
             s["metadata"]["resourceVersion"]) for s in items if s["spec"]["type"] == "LoadBalancer"}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def main_async(cp: ControlPlane, ctl: ControllerProcess, n: int, big: int) -> None:
    cp.install_chart()  # CRDs, and the ServiceAccount and RBAC the controller runs under
    async with Kube(config.load(str(cp.kubeconfig())), concurrency=CONCURRENCY) as kube:
        await apply(kube, [{"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "bench"},
                            "spec": {"addresses": ["198.18.64.0/18"]}}])

        base = await baseline(kube, n)
        print(f"baseline  create+patch {n} Services directly: {base:6.2f} s ({n / base:6.0f}/s)")
        ctl.start()
        took = await bulk(kube, n)
        print(f"bulk      create {n} Services -> all assigned by the controller: {took:6.2f} s ({n / took:6.0f}/s)")
        print(f"          ratio controller/baseline: {took / base:.2f}x (target <= 1.5x)")
        rss_n = ctl.rss_mib()

        lat = [x * 1000 for x in await single(kube, 100)]
        print(f"single    time-to-IP over 100 Services: p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms, "
              f"max {max(lat):.1f} ms (targets 50 / 200 ms)")

        before = await snapshot(kube)
        ctl.stop()
        ready = ctl.start(timeout=120)
        await asyncio.sleep(3)  # let any (wrong) rewrites land before comparing
        after = await snapshot(kube)
        changed_ips = sum(1 for k, v in before.items() if after.get(k, ((), ""))[0] != v[0])
        rewritten = sum(1 for k, v in before.items() if after.get(k, ((), ""))[1] != v[1])
        print(f"restart   {len(before)} assigned Services: ready after {ready:.2f} s; changed IPs: {changed_ips}; "
              f"status rewrites: {rewritten} (targets <= 10 s, 0 changes)")

        more = big - len(before)
        if more > 0:
            took = await bulk(kube, more, ns="bench-big")
        await asyncio.sleep(1)
        print(f"rss       controller RSS at {n} Services: {rss_n:.1f} MiB; at {len(before) + max(more, 0)} Services: "
              f"{ctl.rss_mib():.1f} MiB (target <= 150 MiB at 5000)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=2000)
    p.add_argument("--big", type=int, default=5000)
    args = p.parse_args(argv)
    cp = ControlPlane()
    with tempfile.TemporaryDirectory(prefix="lbctl-bench-") as d:
        ctl = ControllerProcess(cp, Path(d))
        try:
            cp.start()
            asyncio.run(main_async(cp, ctl, args.services, args.big))
        finally:
            ctl.stop()
            cp.cleanup()


if __name__ == "__main__":
    main()
