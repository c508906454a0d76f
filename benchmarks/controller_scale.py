"""The controller at scale, against the real test control plane (etcd + kube-apiserver on loopback).

100 IPPools (a /24 each in 198.18.0.0/17), 10,000 Services spread over them, every pool chosen by a different
rule: a namespace list, a namespace selector, the address-pool annotation (autoAssign off) or a Service
selector. Prints, in one run:
  bulk     10,000 Services created (bounded concurrency) -> all assigned
  rss      controller RSS with 10,000 assigned (target <= 200 MiB)
  restart  time until a restarted controller is ready, then its first pass over every Service, and what it
           changed: status writes in its log, IPs and resourceVersions that differ (targets <= 10 s, 0)
  baseline while the controller is down for that restart, the same churn with the benchmark writing each
           status itself as soon as its create returns: the API server's floor for any controller
  churn    a paced 50 creates + 50 deletes per second for --churn seconds while the 10,000 stay; time-to-IP
           per created Service from its create request to its status write seen on a watch (p99 <= 200 ms),
           split into the create request and the rest; the controller's, API server's and own CPU meanwhile
CPU-dependent figures (times, CPU) are indicative on a shared machine. Benchmarks report; they do not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.controller_bench import bounded, pct, snapshot
from lbctl.lab.controlplane import ControlPlane
from lbctl.kube import config
from lbctl.kube.client import Kube
from lbctl.kube.resources import apply
from tests.figures import figure
from tests.procs import ControllerProcess

POOLS = 100
CONCURRENCY = 32
CHURN_LABEL = "lbctl-bench-churn"


def pool(p: int) -> dict[str, Any]:
    """Pool p: 198.18.p.0/24, selected by one of four rules (p's place decides which)."""
    spec: dict[str, Any] = {"addresses": [f"198.18.{p}.0/24"], "avoidBuggyIPs": p % 2 == 0}
    if p < 40:
        spec["serviceAllocation"] = {"namespaces": [namespace(p)], "priority": p}
    elif p < 70:
        spec["serviceAllocation"] = {"namespaceSelector": {"matchLabels": {"bench-pool": str(p)}}}
    elif p < 90:
        spec["autoAssign"] = False  # only Services that name it
    else:
        spec["serviceAllocation"] = {"serviceSelector": {"matchLabels": {"bench-pool": str(p)}}}
    return {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": f"bench-{p:02d}"},
            "spec": spec}


def namespace(p: int) -> str:
    return f"scale-{p:02d}"


def service(name: str, p: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace(p), "labels": dict(labels or {})}
    if 70 <= p < 90:
        meta["annotations"] = {"lbctl.io/address-pool": f"bench-{p:02d}"}
    if p >= 90:
        meta["labels"]["bench-pool"] = str(p)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]}}


def has_ip(obj: dict[str, Any]) -> bool:
    return bool(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"))


async def setup(kube: Kube) -> None:
    await apply(kube, [{"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": namespace(p), "labels": {"bench-pool": str(p)}}} for p in range(POOLS)])
    await apply(kube, [pool(p) for p in range(POOLS)])


async def stall_watch(ctl: ControllerProcess, progress: Any, py_spy: str | None) -> None:
    """Say so when no progress is seen for 15 s: the controller's state, CPU, and its stacks if py-spy is given."""
    assert ctl.proc
    last, since = progress(), time.monotonic()
    while True:
        await asyncio.sleep(1)
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 15:
            pid = ctl.proc.pid
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            print(f"stall     no progress for 15 s at {now}: controller state {state}, CPU {cpu_seconds(pid):.1f} s",
                  flush=True)
            if py_spy:
                proc = await asyncio.create_subprocess_exec(py_spy, "dump", "--pid", str(pid))
                await proc.wait()
            since = time.monotonic()


async def bulk(kube: Kube, ctl: ControllerProcess, n: int, py_spy: str | None) -> float:
    """Create n Services (Service i in pool i % 100) and follow one watch until all have an IP."""
    rv = (await kube.get("/api/v1/services", limit=1))["metadata"]["resourceVersion"]
    done: set[str] = set()

    async def follow() -> float:
        nonlocal rv
        while len(done) < n:
            async for kind, obj in kube.watch("/api/v1/services", rv, timeout_seconds=120):
                rv = obj["metadata"].get("resourceVersion", rv)
                if kind in ("ADDED", "MODIFIED") and has_ip(obj) and obj["metadata"]["name"].startswith("s"):
                    done.add(obj["metadata"]["name"])
                    if len(done) >= n:
                        return time.monotonic()
        return time.monotonic()

    waiter = asyncio.create_task(follow())
    stalls = asyncio.create_task(stall_watch(ctl, lambda: len(done), py_spy))
    start = time.monotonic()
    await bounded(n, lambda i: kube.create(f"/api/v1/namespaces/{namespace(i % POOLS)}/services",
                                            service(f"s{i}", i % POOLS)))
    created = time.monotonic() - start
    end = await asyncio.wait_for(waiter, 600)
    stalls.cancel()
    print(f"bulk      created {n} Services in {created:.1f} s; all assigned after {end - start:.1f} s "
          f"({n / (end - start):.0f}/s)")
    return end - start


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_events(ctl: ControllerProcess, name: str) -> list[dict[str, Any]]:
    out = []
    for line in ctl.log().splitlines():
        if f'"{name}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return [e for e in out if e.get("event") == name]


async def count_pool_writes(kube: Kube, count: list[int]) -> None:
    """Count IPPool MODIFIED events (the controller's status writes) into count[0] until cancelled."""
    rv = (await kube.get("/apis/lbctl.io/v1alpha1/ippools", limit=1))["metadata"]["resourceVersion"]
    while True:
        async for kind, obj in kube.watch("/apis/lbctl.io/v1alpha1/ippools", rv, timeout_seconds=120):
            rv = obj["metadata"].get("resourceVersion", rv)
            count[0] += kind == "MODIFIED"


async def restart(kube: Kube, ctl: ControllerProcess, while_down: Any = None) -> None:
    before = await snapshot(kube)
    ctl.stop()  # it writes the IPPool counts it still deferred as it stops: not the restarted one's doing
    if while_down is not None:
        await while_down()
        await asyncio.sleep(1)  # its deletions settle; the restart lists what stays
    pool_writes = [0]
    pools_watcher = asyncio.create_task(count_pool_writes(kube, pool_writes))
    await asyncio.sleep(0.5)
    ready = ctl.start(timeout=120)
    passed = None
    for _ in range(300):  # the first pass after the rebuild (every Service looked at once)
        if first := log_events(ctl, "initial_pass"):
            passed = first[0]
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # let any (wrong) rewrites land before comparing
    after = await snapshot(kube)
    pools_watcher.cancel()
    changed_ips = sum(1 for k, v in before.items() if after.get(k, ((), ""))[0] != v[0])
    rewritten = sum(1 for k, v in before.items() if after.get(k, ((), ""))[1] != v[1])
    writes = len(log_events(ctl, "status_written"))
    boot = log_events(ctl, "bootstrapped")
    first_pass = f"{passed['seconds']:.2f} s" if passed else "not logged"
    print(f"restart   {len(before)} assigned Services: ready after {ready:.2f} s (table rebuilt in "
          f"{boot[0]['seconds'] if boot else '?'} s, first pass over all Services {first_pass}); status writes "
          f"logged: {writes}; changed IPs: {changed_ips}; changed resourceVersions: {rewritten} "
          f"(targets <= 10 s, 0 changes); IPPool status writes: {pool_writes[0]}")
    figure("controller_scale_restart_ready", ready, "s")
    figure("controller_scale_restart_changes", changed_ips + rewritten + writes + pool_writes[0], "changes")


async def churn(kube: Kube, cp: ControlPlane, ctl: ControllerProcess | None, seconds: float, rate: int) -> None:
    """`rate` operations per second, alternating create and delete, paced on a clock (not on replies).

    ctl None: the baseline, with the controller down: the benchmark patches each status itself as soon as the
    create returns (the API server's floor for any controller: create, patch, watch delivery).
    """
    label = "baseline" if ctl is None else "churn"
    rv = (await kube.get("/api/v1/services", limit=1))["metadata"]["resourceVersion"]
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    live: list[tuple[str, int]] = []  # churn Services created, oldest first, to delete
    errors: list[str] = []
    early: set[str] = set()  # deleted before its IP was seen
    replied: dict[str, float] = {}  # create request -> reply, to tell the API server's share from ours

    restarts = 0

    async def follow() -> None:
        nonlocal rv, restarts
        while True:
            try:
                async for kind, obj in kube.watch("/api/v1/services", rv, timeout_seconds=120,
                                                  labelSelector=CHURN_LABEL):
                    rv = obj["metadata"].get("resourceVersion", rv)
                    name = obj["metadata"].get("name")  # BOOKMARKs carry none
                    if kind in ("ADDED", "MODIFIED") and has_ip(obj) and name not in seen:
                        seen[name] = time.monotonic()
            except Exception as exc:  # relist (a late timestamp for what it finds: never flattering)
                restarts += 1
                print(f"{label:9} watch failed ({exc!r}); relisting", flush=True)
                listing = await kube.get("/api/v1/services", labelSelector=CHURN_LABEL)
                rv = listing["metadata"]["resourceVersion"]
                for obj in listing["items"]:
                    if has_ip(obj) and obj["metadata"]["name"] not in seen:
                        seen[obj["metadata"]["name"]] = time.monotonic()

    async def create(name: str, p: int) -> None:
        sent[name] = time.monotonic()
        try:
            await kube.create(f"/api/v1/namespaces/{namespace(p)}/services", service(name, p, {CHURN_LABEL: "1"}))
            replied[name] = time.monotonic()
            if ctl is None:
                ip = f"198.18.200.{len(replied) % 250 + 1}"  # outside every pool; the controller is down
                await kube.patch(f"/api/v1/namespaces/{namespace(p)}/services/{name}/status",
                                 {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})
        except Exception as exc:
            errors.append(repr(exc))
            sent.pop(name, None)
            return
        live.append((name, p))

    async def delete(name: str, p: int) -> None:
        try:
            await kube.delete(f"/api/v1/namespaces/{namespace(p)}/services/{name}")
        except Exception as exc:
            errors.append(repr(exc))

    pool_writes = [0]
    watcher = asyncio.create_task(follow())
    pools_watcher = asyncio.create_task(count_pool_writes(kube, pool_writes))
    await asyncio.sleep(0.5)
    tasks: set[asyncio.Task[None]] = set()
    others = {"kube-apiserver+etcd": [p.pid for p in cp.procs], "this benchmark": [os.getpid()]}
    if ctl is not None:
        assert ctl.proc
        others["controller"] = [ctl.proc.pid]
    others0 = {k: sum(map(cpu_seconds, pids)) for k, pids in others.items()}
    t0 = time.monotonic()
    ops = int(seconds * rate)
    for k in range(ops):
        delay = t0 + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if k % 2 == 0:
            i = k // 2
            task = asyncio.create_task(create(f"c{i}", i % POOLS))
        elif len(live) > rate // 2:  # delete the oldest with an IP, keeping about a second's worth of Services
            victim = next((v for v in live if v[0] in seen), live[0])  # none with an IP: it counts as a miss
            live.remove(victim)
            if victim[0] not in seen:
                early.add(victim[0])
            task = asyncio.create_task(delete(*victim))
        else:
            continue
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    wall = time.monotonic() - t0
    others_cpu = {k: sum(map(cpu_seconds, pids)) - others0[k] for k, pids in others.items()}
    pool_rate = pool_writes[0] / wall
    await asyncio.gather(*tasks)
    deadline = time.monotonic() + 10
    while set(sent) - set(seen) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    watcher.cancel()
    pools_watcher.cancel()
    # A Service deleted or still waiting without an IP counts as infinitely late, never as left out.
    lat = [(seen[n] - sent[n]) * 1000 if n in seen else float("inf") for n in sent]
    missing = sorted(set(sent) - set(seen), key=sent.__getitem__)
    who = "the benchmark's own status patch, controller down" if ctl is None else "the controller"
    print(f"{label:9} {ops / wall:.0f} ops/s for {wall:.0f} s ({len(sent)} created, the rest deleted) beside the "
          f"10,000, IP by {who}: time-to-IP p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms, max "
          f"{max(lat):.1f} ms{'' if ctl is None else ' (target p99 <= 200 ms)'}; never assigned: {len(missing)} "
          f"({len(early - set(seen))} deleted first); API errors: {len(errors)}; watch relists: {restarts}")
    if missing:
        print("          never assigned (name@seconds into the churn): "
              + ", ".join(f"{n}@{sent[n] - t0:.1f}" for n in missing[:20]))
    api = [(replied[n] - sent[n]) * 1000 for n in sent if n in replied]
    own = [(seen[n] - replied[n]) * 1000 if n in seen else float("inf") for n in sent if n in replied]
    print(f"          the create request itself: p50 {pct(api, .5):.1f} ms, p99 {pct(api, .99):.1f} ms; from its reply "
          f"to the IP: p50 {pct(own, .5):.1f} ms, p99 {pct(own, .99):.1f} ms; "
          "CPU meanwhile: " + ", ".join(f"{k} {100 * v / wall:.0f} %" for k, v in others_cpu.items()) +
          f"; IPPool status writes {pool_rate:.1f}/s")
    slow = sorted(sent[n] - t0 for n in sent if n in replied and replied[n] - sent[n] > 0.2)
    if slow:  # when the API server was slow, to line it up with what else happened then
        print(f"          creates slower than 200 ms at (s into the {label}): "
              + " ".join(f"{t:.1f}" for t in slow[:40]))
    figure(f"controller_scale_{label}_p50", pct(lat, .5), "ms")
    figure(f"controller_scale_{label}_p99", pct(lat, .99), "ms")
    if ctl is not None:
        figure("controller_scale_churn_cpu", 100 * others_cpu["controller"] / wall, "%")
    for n, p in live:
        await delete(n, p)


async def main_async(cp: ControlPlane, ctl: ControllerProcess, n: int, seconds: float, rate: int,
                     baseline: float, py_spy: str | None) -> None:
    cp.install_chart()  # CRDs, and the ServiceAccount and RBAC the controller runs under
    async with Kube(config.load(str(cp.kubeconfig())), concurrency=CONCURRENCY) as kube:
        await setup(kube)
        ctl.start()
        started = time.monotonic()
        took = await bulk(kube, ctl, n, py_spy)
        figure("controller_scale_bulk", took, "s")
        await asyncio.sleep(2)
        rss = ctl.rss_mib()
        print(f"rss       controller RSS with {n} Services in {POOLS} pools: {rss:.1f} MiB (target <= 200 MiB)")
        figure("controller_scale_rss", rss, "MiB")
        # The baseline runs while the controller is down for its restart (it deletes all it creates).
        await restart(kube, ctl, (lambda: churn(kube, cp, None, baseline, rate)) if baseline else None)
        print(f"rss       after the restart: {ctl.rss_mib():.1f} MiB")
        await churn(kube, cp, ctl, seconds, rate)
        rss = ctl.rss_mib()
        print(f"rss       after the churn: {rss:.1f} MiB")
        figure("controller_scale_rss_after_churn", rss, "MiB")
        print(f"total     {time.monotonic() - started:.0f} s after the controller first started")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--churn", type=float, default=60.0, metavar="SECONDS")
    p.add_argument("--rate", type=int, default=100, help="creates + deletes per second during the churn")
    p.add_argument("--baseline", type=float, default=30.0, metavar="SECONDS",
                   help="the same churn with the controller down and the benchmark patching status (0: skip)")
    p.add_argument("--py-spy", metavar="PATH", help="py-spy binary: dump the controller's stacks if it stalls")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the controller logs here")
    args = p.parse_args(argv)
    cp = ControlPlane()
    with tempfile.TemporaryDirectory(prefix="lbctl-bench-") as d:
        ctl = ControllerProcess(cp, Path(d))
        try:
            cp.start()
            asyncio.run(main_async(cp, ctl, args.services, args.churn, args.rate, args.baseline,
                                   args.py_spy))
        finally:
            ctl.stop()
            cp.cleanup()
            if args.keep_logs:
                dest = Path(args.keep_logs)
                dest.mkdir(parents=True, exist_ok=True)
                for f in Path(d).glob("controller-*.log"):
                    (dest / f.name).write_bytes(f.read_bytes())


if __name__ == "__main__":
    main()
