"""Rolling upgrades as a client sees them (issue 13, item 4): failed connections and the longest gap per VIP.

    sudo .venv/bin/python -m benchmarks.upgrade [--rounds 3] [--baseline-s 3] [--settle-s 2] [--control S]
                                                [--create-every 2] [--node-events] [--keep]

Brings up its own real-cluster lab (3 workers, 2 controller replicas; torn down in `finally`, also on errors and
SIGTERM), creates Services until 3 VIPs are answered by 3 different nodes, and runs lbctl.lab.connprobe in the
client namespace: a NEW TCP connection to each VIP every 10 ms (1 s timeout), each answered by a backend pod.

1. Baseline: --baseline-s of probing with nothing rolling (the same VIPs, the same prober).
2. The roll (--rounds in a row), with the prober running from --settle-s before it to --settle-s after:
   `helm upgrade --reuse-values --set image.tag=T` (the same image under another tag), which rolls the speaker
   DaemonSet node by node and the controller Deployment, while a Service is created every --create-every
   seconds; a poll loop records each speaker step, the controller Lease's holders and the Services.
3. Node events (--node-events): cordon + drain of one VIP's owner, then a node shut down (benchmarks.upgrade_nodes).
--control S: instead of rolling, probe S seconds while creating Services (the control for the churn).

Prints the steps, the per-VIP table (lbctl.core.connsummary) for the baseline and the roll, the failures per
step, and `FIGURE upgrade_<figure>=value unit` lines (target: 0 failed connections). Benchmarks report,
tests assert: the exit status is non-zero only when the harness failed, never for a missed target.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from benchmarks import upgrade_nodes
from benchmarks.lab_bench import HarnessError, log
from lbctl.core.connsummary import Run, TargetSummary, overall, render, summarise
from lbctl.lab import cluster, connprobe, images, lifecycle, probes, realcluster, rollout
from lbctl.lab.api import LabApi, wait_for
from lbctl.lab.topology import CLIENT_NS, Topology
from lbctl.tables import table

NS = "default"
SERVICES = f"/api/v1/namespaces/{NS}/services"
SPEAKER_DS = f"/apis/apps/v1/namespaces/{cluster.NAMESPACE}/daemonsets/{cluster.RELEASE}-speaker"


@dataclass
class LabHandle:
    """What a roll gets: the lab's layout, its API (calls run inside the control-plane namespace), a logger."""
    topo: Topology
    api: LabApi
    say: Callable[[str], None] = log


@dataclass
class Step:
    node: str
    started: float  # monotonic: the roll began on this node
    stopped: float  # old instance gone
    ready: float  # new instance ready




# --- rolls ----------------------------------------------------------------------------------------


SPEAKER_SEL = "app.kubernetes.io/component=speaker"
CONTROLLER_SEL = "app.kubernetes.io/component=controller"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{cluster.NAMESPACE}/leases/{cluster.RELEASE}-controller"
PODS = f"/api/v1/namespaces/{cluster.NAMESPACE}/pods"


@dataclass
class Watch:
    """What the poll loop saw during a helm roll (monotonic times)."""
    holders: list[tuple[float, str]]  # (first seen, Lease holder) at each change
    leader_leaving: dict[str, float]  # controller pod -> first seen terminating or gone
    speaker_steps: list[Step]
    services: list[str]  # created during the roll


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or [])


def helm_roll(tags: list[str], timeout: float = 600.0, create_every_s: float = 2.0) -> Callable[[LabHandle], Watch]:
    """The real cluster's roll: `helm upgrade` to each tag in turn (the same image under two tags), the chart's
    update strategies do the rest: the speaker DaemonSet node by node (maxUnavailable 1), the controller
    Deployment surge-first (maxSurge 1, maxUnavailable 0). Meanwhile one poll loop (a batch of API reads every
    ~0.3 s) follows the speaker pods per node, the leader Lease's holder and the controller pods, and creates a
    Service every `create_every_s`."""
    def roll(lab: LabHandle) -> Watch:
        w = Watch([], {}, [], [])
        step_open: dict[str, Step] = {}
        next_create = time.monotonic()
        for tag in tags:
            before = {p["spec"].get("nodeName"): p["metadata"]["uid"] for p in lab.api.get(PODS, labelSelector=SPEAKER_SEL)["items"]}
            rollout.upgrade({"image": {"tag": tag}})
            lab.say(f"  helm upgrade: image.tag={tag}")
            deadline = time.monotonic() + timeout
            while True:
                now = time.monotonic()
                if create_every_s and now >= next_create:
                    name = f"roll-{len(w.services)}"
                    lab.api.create(SERVICES, _service(name))
                    w.services.append(name)
                    next_create = now + create_every_s
                speakers, controllers, lease, ds, dep = (r["body"] for r in lab.api.batch([
                    {"method": "GET", "path": PODS, "params": {"labelSelector": SPEAKER_SEL}},
                    {"method": "GET", "path": PODS, "params": {"labelSelector": CONTROLLER_SEL}},
                    {"method": "GET", "path": LEASE},
                    {"method": "GET", "path": f"{rollout.APPS}/daemonsets/{cluster.RELEASE}-speaker"},
                    {"method": "GET", "path": f"{rollout.APPS}/deployments/{cluster.RELEASE}-controller"}]))
                t = time.monotonic()
                holder = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
                if not w.holders or w.holders[-1][1] != holder:
                    w.holders.append((t, holder))
                live = {p["metadata"]["name"] for p in controllers.get("items", []) if not p["metadata"].get("deletionTimestamp")}
                for name in [h for _, h in w.holders if h and h not in live]:
                    w.leader_leaving.setdefault(name, t)
                by_node = {}
                for p in speakers.get("items", []):
                    by_node.setdefault(p["spec"].get("nodeName"), []).append(p)
                for node, uid in before.items():
                    pods = by_node.get(node, [])
                    old = next((p for p in pods if p["metadata"]["uid"] == uid), None)
                    if node not in step_open and (old is None or old["metadata"].get("deletionTimestamp")):
                        step_open[node] = Step(node, t, 0.0, 0.0)
                    st = step_open.get(node)
                    if st and not st.stopped and old is None:
                        st.stopped = t
                    if st and st.stopped and not st.ready and any(p["metadata"]["uid"] != uid and _ready(p) for p in pods):
                        st.ready = t
                        w.speaker_steps.append(st)
                        lab.say(f"  {node}: speaker replaced, old pod gone after {(st.stopped - st.started) * 1000:.0f} ms,"
                                f" new one Ready {st.ready - st.stopped:.1f} s later")
                for obj, kind in ((ds, "DaemonSet"), (dep, "Deployment")):
                    obj.setdefault("kind", kind)
                if rollout.rolled_out(ds) and rollout.rolled_out(dep) and all(n in step_open and step_open[n].ready for n in before):
                    break
                if t > deadline:
                    raise HarnessError(f"the roll to {tag} did not finish in {timeout:.0f} s: "
                                       f"{realcluster.pod_problems(lab.api, cluster.NAMESPACE)}")
                time.sleep(0.3)
            step_open.clear()
        return w
    return roll


def _service(name: str) -> dict[str, Any]:
    """A LoadBalancer Service for the lab's backend (port 80 -> the backend's port, any node's pod)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"type": "LoadBalancer", "selector": {"app": realcluster.BACKEND},
                     "ports": [{"name": "http", "port": 80, "targetPort": realcluster.BACKEND_PORT, "protocol": "TCP"}]}}


# --- the lab's VIPs -------------------------------------------------------------------------------


def owner(topo: Topology, ip: str) -> str | None:
    owners = {topo.node_by_mac(m) or m for m in probes.arping(ip, count=1, timeout=1)}
    return owners.pop() if len(owners) == 1 else None


def vips_on_distinct_owners(lab: LabHandle, count: int, tries: int = 12) -> dict[str, str]:
    """owner node -> VIP, creating Services upgrade-0.. until `count` nodes each answer one."""
    owners: dict[str, str] = {}
    for i in range(tries):
        name = f"upgrade-{i}"
        lab.api.create(SERVICES, _service(name))

        def ipv4() -> str | None:
            ingress = ((lab.api.get(f"{SERVICES}/{name}").get("status") or {}).get("loadBalancer") or {}).get(
                "ingress") or []
            return next((i["ip"] for i in ingress if ":" not in i.get("ip", ":")), None)
        ip = wait_for(ipv4, 30, f"an IPv4 address on Service {name}")
        node = wait_for(lambda: owner(lab.topo, ip), 15, f"one node answering ARP for {ip}", interval=0.05)
        # The speaker may announce before the owner's kube-proxy has the Service's rules (~0.7 s measured):
        # the baseline starts once traffic flows.
        wait_for(lambda: probes.curl(ip, timeout=1) is not None, 30, f"HTTP through {ip}", interval=0.1)
        owners.setdefault(node, ip)
        if len(owners) == count:
            return owners
    raise HarnessError(f"{tries} Services did not land on {count} different nodes: {owners}")


# --- measuring ------------------------------------------------------------------------------------


def probe_around(vips: list[str], action: Callable[[], Any], settle_s: float, interval: float,
                 timeout: float) -> tuple[Run, Any, float, float]:
    """The prober from `settle_s` before `action` to `settle_s` after it; returns the run, what action returned,
    and when it started and ended."""
    proc = connprobe.launch(CLIENT_NS, vips, interval, timeout)
    try:
        time.sleep(settle_s)
        t0 = time.monotonic()
        out = action()
        t1 = time.monotonic()
        time.sleep(settle_s)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return connprobe.finish(proc), out, t0, t1


def failures_by_step(run: Run, steps: list[Step], labels: dict[str, str]) -> list[list[str]]:
    """Failed attempts per step: from the step's start to the next one's (the last one to the run's end)."""
    rows = []
    for k, s in enumerate(steps):
        end = steps[k + 1].started if k + 1 < len(steps) else run.stopped
        failed = [a for a in run.attempts if not a.ok and s.started <= a.t < end]
        kinds: dict[str, int] = {}
        for a in failed:
            key = f"{labels.get(a.target, a.target)}:{a.outcome}"
            kinds[key] = kinds.get(key, 0) + 1
        rows.append([s.node, f"{(s.stopped - s.started) * 1000:.0f}", f"{s.ready - s.stopped:.1f}", str(len(failed)),
                     ",".join(f"{k}={v}" for k, v in kinds.items()) or "-"])
    return rows


def failure_rows(run: Run, steps: list[Step], names: dict[str, str], limit: int = 50) -> list[list[str]]:
    """Each failed attempt: the step it fell in, when (after that step's start; the old instance gone at `stopped`,
    the new one ready at `ready`), and which backend answered that VIP just before and just after: a failure
    at the move away (old -> successor) reads differently from one at the move back."""
    rows = []
    for a in sorted((a for a in run.attempts if not a.ok), key=lambda a: a.t)[:limit]:
        step = next((s for s in reversed(steps) if s.started <= a.t), None)
        same = [b for b in run.attempts if b.target == a.target and b.ok]
        before = max((b for b in same if b.t < a.t), key=lambda b: b.t, default=None)
        after = min((b for b in same if b.t > a.t), key=lambda b: b.t, default=None)
        rows.append([step.node if step else "-", f"{a.t - step.started:.3f}" if step else "-",
                     f"{step.stopped - step.started:.3f}/{step.ready - step.started:.3f}" if step else "-",
                     names.get(a.target, a.target), a.outcome, f"{a.ms:.1f}", (before.body or "?") if before else "-",
                     (after.body or "?") if after else "-"])
    return rows


def figures(prefix: str, summaries: list[TargetSummary], vip_names: dict[str, str]) -> list[str]:
    total = overall(summaries)
    out = [f"FIGURE {prefix}_failed_connections={total.failed} count",
           f"FIGURE {prefix}_longest_gap_ms={total.longest_gap_ms:g} ms",
           f"FIGURE {prefix}_attempts={total.attempts} count"]
    for s in summaries:
        v = vip_names[s.target]
        out += [f"FIGURE {prefix}_{v}_failed_connections={s.failed} count",
                f"FIGURE {prefix}_{v}_longest_gap_ms={s.longest_gap_ms:g} ms",
                f"FIGURE {prefix}_{v}_attempts={s.attempts} count"]
    return out


@contextmanager
def own_lab(keep: bool) -> Iterator[tuple[LabHandle, float]]:
    """A lab of our own (3 nodes) and how long it took to come up; torn down on the way out unless `keep`."""
    if os.geteuid() != 0:
        raise HarnessError("needs root (network namespaces)")
    if lifecycle.is_up() or lifecycle.leftovers():
        raise HarnessError("a lab (or its leftovers) exists already; this benchmark brings up and tears down its own "
                           "lab: run `lbctl lab down` first (or set LBCTL_LAB_PREFIX/LBCTL_LAB_STATE)")
    log("lab up")
    t_up = time.monotonic()
    try:
        # Two controller replicas on the real cluster: the roll hands the leader Lease over.
        topo, warnings = lifecycle.up(nodes=3, say=lambda m: log(f"  {m}"), controllers=2)
        up_s = time.monotonic() - t_up
        if warnings:
            raise HarnessError(f"lab not usable: {warnings}")
        yield LabHandle(topo, LabApi()), up_s
    finally:
        if not keep and lifecycle.leftovers():
            log("lab down")
            lifecycle.down(say=lambda m: log(f"  {m}"))


def run(args: argparse.Namespace) -> None:
    with own_lab(args.keep) as (lab, up_s):
        measure_real(args, lab, up_s)


@dataclass
class Setup:
    targets: dict[str, str]  # "ip:80" -> owner node
    names: dict[str, str]  # target -> vip1..
    labels: dict[str, str]  # target -> "vip1 ip (node)"
    base: Run
    base_sum: list[TargetSummary]


def setup(args: argparse.Namespace, lab: LabHandle) -> Setup:
    """VIPs owned by distinct nodes, and the baseline: the prober with nothing rolling."""
    owners = vips_on_distinct_owners(lab, args.vips)
    targets = {f"{ip}:80": node for node, ip in sorted(owners.items())}
    names = {t: f"vip{k}" for k, t in enumerate(targets, start=1)}
    labels = {t: f"{names[t]} {t.rsplit(':', 1)[0]} ({node})" for t, node in targets.items()}
    log("VIPs: " + ", ".join(labels.values()))
    log(f"baseline: {args.baseline_s:g} s of probing, nothing rolling")
    base = connprobe.finish(connprobe.launch(CLIENT_NS, list(targets), args.interval, args.timeout,
                                             duration=args.baseline_s))
    return Setup(targets, names, labels, base, summarise(base.attempts, base.targets, base.started, base.stopped))


def measure_real(args: argparse.Namespace, lab: LabHandle, up_s: float) -> None:
    su = setup(args, lab)
    targets, names, labels, base, base_sum = su.targets, su.names, su.labels, su.base, su.base_sum
    if args.control:
        return control(args, lab, targets, labels)
    tags = [images.LBCTL_NEXT_TAG.rsplit(":", 1)[1], images.LBCTL_TAG.rsplit(":", 1)[1]] * args.rounds
    log(f"roll: helm upgrade to image tags {', '.join(tags[:args.rounds])} (same image, another tag)")
    rolled, watch, t0, t1 = probe_around(list(targets), lambda: helm_roll(tags[:args.rounds], args.roll_timeout, args.create_every)(lab),
                                         args.settle_s, args.interval, args.timeout)
    roll_sum = summarise(rolled.attempts, rolled.targets, rolled.started, rolled.stopped)
    print("\nspeaker roll steps:")
    print(table(["NODE", "STOP->GONE (ms)", "GONE->READY (s)", "FAILED", "FAILED BY VIP:KIND"],
                failures_by_step(rolled, watch.speaker_steps, names)))
    failed_rows = failure_rows(rolled, watch.speaker_steps, names)
    if failed_rows:
        print(f"\nfailed connections (the first {len(failed_rows)}; times in s after the step's start):")
        print(table(["STEP", "AT", "GONE/READY AT", "VIP", "KIND", "MS", "ANSWERED BEFORE", "ANSWERED AFTER"],
                    failed_rows))
    print(f"\nbaseline ({base.stopped - base.started:.1f} s):")
    print(render(base_sum, labels))
    print(f"\nduring the roll ({t1 - t0:.1f} s):")
    print(render(roll_sum, labels))
    handovers = leader_handovers(watch)
    print("\ncontroller leader Lease:")
    print(table(["SEEN AT (s)", "HOLDER"], [[f"{t - t0:.1f}", h or "(none)"] for t, h in watch.holders]))
    addressed, duplicates = services_outcome(lab, watch.services)
    base_gap, roll_gap = overall(base_sum).longest_gap_ms, overall(roll_sum).longest_gap_ms
    lines = [*figures("upgrade_speaker_roll", roll_sum, names),
             f"FIGURE upgrade_rounds={args.rounds} count",
             f"FIGURE upgrade_roll_duration_s={t1 - t0:.1f} s",
             f"FIGURE upgrade_baseline_failed_connections={overall(base_sum).failed} count",
             f"FIGURE upgrade_baseline_longest_gap_ms={base_gap:g} ms",
             f"FIGURE upgrade_controller_handovers={len(handovers)} count",
             f"FIGURE upgrade_controller_handover_max_s={max(handovers, default=0):.1f} s",
             f"FIGURE upgrade_services_created_during_roll={len(watch.services)} count",
             f"FIGURE upgrade_services_addressed={addressed} count",
             f"FIGURE upgrade_duplicate_addresses={duplicates} count",
             f"FIGURE upgrade_lab_up_s={up_s:.1f} s"]
    if args.node_events:
        lines += upgrade_nodes.node_events(lab.api, lab.topo, targets, args.interval, args.timeout)
    print()
    print("\n".join(lines), flush=True)
    log(f"helm roll: {overall(roll_sum).failed} failed connection(s) of {overall(roll_sum).attempts} (target 0), "
        f"longest gap {roll_gap:.0f} ms (baseline {base_gap:.0f} ms); leader handovers "
        f"{', '.join(f'{h:.1f} s' for h in handovers) or 'none'} (target <= 15 s); {addressed}/{len(watch.services)} "
        f"Services created during the roll addressed, {duplicates} duplicate addresses")


def control(args: argparse.Namespace, lab: LabHandle, targets: dict[str, str], labels: dict[str, str]) -> None:
    """The control for the roll: the same prober and the same Service creation, for --control seconds, with
    nothing rolling. Failures here are the data path's (kube-proxy resyncing its rules for each new Service,
    conntrack), not the speakers'."""
    created: list[str] = []

    def churn() -> None:
        end = time.monotonic() + args.control
        while time.monotonic() < end:
            name = f"control-{len(created)}"
            lab.api.create(SERVICES, _service(name))
            created.append(name)
            time.sleep(args.create_every or 2.0)
    run, _, t0, t1 = probe_around(list(targets), churn, args.settle_s, args.interval, args.timeout)
    summ = summarise(run.attempts, run.targets, run.started, run.stopped)
    print(f"\ncontrol: {len(created)} Services created in {t1 - t0:.0f} s, nothing rolling:")
    print(render(summ, labels))
    print(f"FIGURE upgrade_control_failed_connections={overall(summ).failed} count")
    print(f"FIGURE upgrade_control_attempts={overall(summ).attempts} count")
    print(f"FIGURE upgrade_control_longest_gap_ms={overall(summ).longest_gap_ms:g} ms", flush=True)


def leader_handovers(w: Watch) -> list[float]:
    """Per change of leader (the Lease's holder, possibly through a moment with none after the old leader released
    it on SIGTERM): from the old leader's pod first seen terminating or gone (else from when the Lease last showed
    it) to the new holder first seen."""
    out: list[float] = []
    leader, gone_at = "", None  # the last leader, and when the Lease first stopped naming it
    for t, holder in w.holders:  # change points only
        if leader and holder != leader and gone_at is None:
            gone_at = t
        if holder and holder != leader:
            if leader and gone_at is not None:
                out.append(t - min(w.leader_leaving.get(leader, gone_at), gone_at))
            leader, gone_at = holder, None
    return out


def services_outcome(lab: LabHandle, created: list[str], timeout: float = 30) -> tuple[int, int]:
    """How many Services created during the roll got an address (waiting up to `timeout`), and how many
    addresses are held by more than one LoadBalancer Service."""
    def addressed() -> int:
        items = lab.api.get(SERVICES)["items"]
        return sum(1 for s in items if s["metadata"]["name"] in created and
                   ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress"))
    deadline = time.monotonic() + timeout
    while (n := addressed()) < len(created) and time.monotonic() < deadline:
        time.sleep(0.5)
    seen: dict[str, int] = {}
    for svc in lab.api.get(SERVICES)["items"]:
        for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            seen[ing["ip"]] = seen.get(ing["ip"], 0) + 1
    return n, sum(1 for c in seen.values() if c > 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.upgrade", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="rolls in a row, all within one probing window")
    p.add_argument("--roll-timeout", type=float, default=600.0, help="seconds to wait for each rollout")
    p.add_argument("--vips", type=int, default=3, help="VIPs, each answered by a different node (<= nodes)")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between connections to each VIP")
    p.add_argument("--timeout", type=float, default=1.0, help="per-connection timeout (s)")
    p.add_argument("--baseline-s", type=float, default=3.0)
    p.add_argument("--settle-s", type=float, default=2.0, help="probing before and after the roll (s)")
    p.add_argument("--create-every", type=float, default=2.0,
                   help="seconds between Services created during the roll (0: none)")
    p.add_argument("--control", type=float, default=0.0,
                   help="instead of rolling, probe this many seconds while creating Services (the control)")
    p.add_argument("--node-events", action=argparse.BooleanOptionalAction, default=True,
                   help="after the roll, cordon+drain one VIP owner and shut another down (default on)")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards (for debugging)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if not 1 <= args.vips <= 3:
        p.error("--vips must be 1..3 (the lab has 3 nodes)")

    def _term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)  # so `finally` tears the lab down on `kill` too
    try:
        run(args)
    except (HarnessError, RuntimeError, TimeoutError, OSError, subprocess.SubprocessError, ValueError) as exc:
        log(f"HARNESS ERROR: {type(exc).__name__}: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
