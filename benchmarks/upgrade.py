"""Rolling upgrades as a client sees them (issue 13, item 4): failed connections and the longest gap per VIP.

    sudo .venv/bin/python -m benchmarks.upgrade [--roll speaker-restart|speaker-kill|helm-upgrade --tag T]
                                                [--rounds 3] [--baseline-s 3] [--settle-s 2] [--keep]

Brings up its own lab (3 nodes; torn down in `finally`, also on errors and SIGTERM), creates Services until
3 VIPs are answered by 3 different nodes, and runs lbctl.lab.connprobe in the client namespace: a NEW TCP
connection to each VIP every 10 ms (1 s timeout), each answered by the owner node's httpd with its name.

1. Baseline: --baseline-s of probing with nothing rolling (the same VIPs, the same prober).
2. The roll (--rounds times in a row), with the prober running from --settle-s before it to --settle-s after. A roll is a function
   taking the lab handle and returning, when the roll is done, one Step per node it rolled:
   - speaker-restart (today's lab): node by node as the chart's DaemonSet (RollingUpdate, maxUnavailable 1)
     would, i.e. SIGTERM the node's speaker, wait for it to exit (SIGKILL after the pod's 30 s grace),
     start it again from its pod spec and wait for its readiness probe before the next node.
   - speaker-kill: the same with SIGKILL, i.e. without the speaker's graceful handover (a crash mid-roll, or
     a grace period cut short): the comparison that shows what the handover buys.
   - helm-upgrade --tag T (the real-kubelet lab): `helm upgrade --reuse-values --set image.tag=T`, then wait
     for the speaker DaemonSet's rollout in its status. Today's lab runs no DaemonSet controller, so this
     roll times out there, saying so.

Prints the steps, the per-VIP table (lbctl.core.connsummary) for the baseline and the roll, the failures per
step, and `FIGURE upgrade_<roll>_<figure>=value unit` lines (target: 0 failed connections). Benchmarks report,
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

from benchmarks.lab_bench import HarnessError, log
from lbctl import assets
from lbctl.core.connsummary import Run, TargetSummary, overall, render, summarise
from lbctl.lab import cluster, connprobe, k8sbin, lifecycle, probes, processes
from lbctl.lab.api import LabApi, wait_for
from lbctl.lab.topology import CLIENT_NS, CP_NS, Topology
from lbctl.tables import table

NS = "default"
SERVICES = f"/api/v1/namespaces/{NS}/services"
SPEAKER_DS = f"/apis/apps/v1/namespaces/{cluster.NAMESPACE}/daemonsets/{cluster.RELEASE}-speaker"
GRACE_S = 30.0  # the pod's terminationGracePeriodSeconds (the chart leaves Kubernetes' default)
READY_TIMEOUT_S = 60.0


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


Roll = Callable[[LabHandle], list[Step]]


# --- rolls ----------------------------------------------------------------------------------------


def speaker_restart_roll(lab: LabHandle, sig: signal.Signals = signal.SIGTERM) -> list[Step]:
    """Today's lab: what the DaemonSet controller and kubelet do per node, with the lab's pod runner. With
    SIGKILL it is a roll without the graceful handover (a crash, or a grace period cut short)."""
    steps = []
    for h in lab.topo.node_hosts:
        name = f"speaker-{h.name}"
        pid = processes.pid_of(name)
        if not processes.alive(pid):
            raise HarnessError(f"{name} is not running before its turn")
        started = time.monotonic()
        processes.kill(name, sig)
        try:
            wait_for(lambda: not processes.alive(pid), GRACE_S, f"{name} to exit after SIGTERM", interval=0.02)
        except TimeoutError:
            lab.say(f"  {name} still running after {GRACE_S:.0f} s: SIGKILL, as the kubelet would")
            processes.kill(name, signal.SIGKILL)
            wait_for(lambda: not processes.alive(pid), 5, f"{name} to die", interval=0.02)
        stopped = time.monotonic()
        cluster.restart_speaker(h.name)
        url = cluster.speaker_ready_url(h.name)
        wait_for(lambda: cluster.http_ok(h.netns, url, timeout=0.5), READY_TIMEOUT_S, f"{name} ready", interval=0.1)
        ready = time.monotonic()
        lab.say(f"  {h.name}: {sig.name} -> exited {(stopped - started) * 1000:.0f} ms, start -> ready "
                f"{ready - stopped:.1f} s")
        steps.append(Step(h.name, started, stopped, ready))
    return steps


def helm_upgrade_roll(tag: str, timeout: float = 600.0) -> Roll:
    """The real cluster's roll: a new image tag, the chart's update strategy does the rest. Steps are read off the
    speaker pods' start times by the caller's lab, so this returns one Step for the whole roll."""
    def roll(lab: LabHandle) -> list[Step]:
        started = time.monotonic()
        before = lab.api.get(SPEAKER_DS)["metadata"].get("generation", 0)
        res = subprocess.run(["ip", "netns", "exec", CP_NS, str(k8sbin.helm()), "upgrade", cluster.RELEASE,
                              "--namespace", cluster.NAMESPACE, "--reuse-values", "--set", f"image.tag={tag}",
                              "--kubeconfig", str(cluster.ADMIN_KUBECONFIG), str(assets.chart_dir())],
                             capture_output=True, text=True, timeout=120)
        if res.returncode:
            raise HarnessError(f"helm upgrade: {res.stderr.strip()[-1000:]}")

        def rolled() -> bool:
            ds = lab.api.get(SPEAKER_DS)
            st, gen = ds.get("status") or {}, ds["metadata"].get("generation", 0)
            want = st.get("desiredNumberScheduled", -1)
            return (gen > before and st.get("observedGeneration", 0) >= gen
                    and st.get("updatedNumberScheduled") == want == st.get("numberAvailable"))
        try:
            wait_for(rolled, timeout, "the speaker DaemonSet to roll out", interval=0.5)
        except TimeoutError as exc:
            raise HarnessError(f"{exc} (a lab without the DaemonSet controller never rolls: needs the "
                               "real-kubelet lab)") from exc
        done = time.monotonic()
        return [Step("all", started, started, done)]
    return roll


ROLLS: dict[str, Callable[[argparse.Namespace], Roll]] = {
    "speaker-restart": lambda _: speaker_restart_roll,
    "speaker-kill": lambda _: lambda lab: speaker_restart_roll(lab, signal.SIGKILL),
    "helm-upgrade": lambda args: helm_upgrade_roll(args.tag, args.roll_timeout),
}


# --- the lab's VIPs -------------------------------------------------------------------------------


def owner(topo: Topology, ip: str) -> str | None:
    owners = {topo.node_by_mac(m) or m for m in probes.arping(ip, count=1, timeout=1)}
    return owners.pop() if len(owners) == 1 else None


def vips_on_distinct_owners(lab: LabHandle, count: int, tries: int = 12) -> dict[str, str]:
    """owner node -> VIP, creating Services upgrade-0.. until `count` nodes each answer one."""
    owners: dict[str, str] = {}
    for i in range(tries):
        name = f"upgrade-{i}"
        lab.api.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
                                  "spec": {"type": "LoadBalancer",
                                           "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})

        def ipv4() -> str | None:
            ingress = ((lab.api.get(f"{SERVICES}/{name}").get("status") or {}).get("loadBalancer") or {}).get(
                "ingress") or []
            return next((i["ip"] for i in ingress if ":" not in i.get("ip", ":")), None)
        ip = wait_for(ipv4, 30, f"an IPv4 address on Service {name}")
        node = wait_for(lambda: owner(lab.topo, ip), 15, f"one node answering ARP for {ip}", interval=0.05)
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
        topo, warnings = lifecycle.up(nodes=3, say=lambda m: log(f"  {m}"))  # cleans up after itself on failure
        up_s = time.monotonic() - t_up
        if warnings:
            raise HarnessError(f"lab not usable: {warnings}")
        yield LabHandle(topo, LabApi()), up_s
    finally:
        if not keep and lifecycle.leftovers():
            log("lab down")
            lifecycle.down(say=lambda m: log(f"  {m}"))


def run(args: argparse.Namespace) -> None:
    roll = ROLLS[args.roll](args)
    with own_lab(args.keep) as (lab, up_s):
        measure(args, lab, roll, up_s)


def measure(args: argparse.Namespace, lab: LabHandle, roll: Roll, up_s: float) -> None:
    owners = vips_on_distinct_owners(lab, args.vips)
    targets = {f"{ip}:80": node for node, ip in sorted(owners.items())}
    names = {t: f"vip{k}" for k, t in enumerate(targets, start=1)}
    labels = {t: f"{names[t]} {t.rsplit(':', 1)[0]} ({node})" for t, node in targets.items()}
    log("VIPs: " + ", ".join(labels.values()))

    log(f"baseline: {args.baseline_s:g} s of probing, nothing rolling")
    base = connprobe.finish(connprobe.launch(CLIENT_NS, list(targets), args.interval, args.timeout,
                                             duration=args.baseline_s))
    base_sum = summarise(base.attempts, base.targets, base.started, base.stopped)

    log(f"roll: {args.roll}, {args.rounds} time(s) in a row")
    rolled, steps, t0, t1 = probe_around(list(targets), lambda: [s for _ in range(args.rounds) for s in roll(lab)],
                                         args.settle_s, args.interval, args.timeout)
    roll_sum = summarise(rolled.attempts, rolled.targets, rolled.started, rolled.stopped)
    prefix = "upgrade_" + args.roll.replace("-", "_")

    print(f"\nroll steps ({args.roll}, {args.rounds} round(s)):")
    print(table(["NODE", "STOP->EXITED (ms)", "START->READY (s)", "FAILED", "FAILED BY VIP:KIND"],
                failures_by_step(rolled, steps, names)))
    failed_rows = failure_rows(rolled, steps, names)
    if failed_rows:
        print(f"\nfailed connections (the first {len(failed_rows)}; times in s after the step's start):")
        print(table(["STEP", "AT", "EXITED/READY AT", "VIP", "KIND", "MS", "ANSWERED BEFORE", "ANSWERED AFTER"],
                    failed_rows))
    print(f"\nbaseline ({base.stopped - base.started:.1f} s, late ticks {base.late_ticks}):")
    print(render(base_sum, labels))
    print(f"\nduring the roll ({t1 - t0:.1f} s, probing {rolled.stopped - rolled.started:.1f} s, "
          f"late ticks {rolled.late_ticks}):")
    print(render(roll_sum, labels))
    base_gap, roll_gap = overall(base_sum).longest_gap_ms, overall(roll_sum).longest_gap_ms
    lines = [*figures(prefix, roll_sum, names),
             f"FIGURE {prefix}_rounds={args.rounds} count",
             f"FIGURE {prefix}_duration_s={t1 - t0:.1f} s",
             f"FIGURE upgrade_baseline_failed_connections={overall(base_sum).failed} count",
             f"FIGURE upgrade_baseline_longest_gap_ms={base_gap:g} ms",
             f"FIGURE {prefix}_gap_vs_baseline={roll_gap / base_gap if base_gap else 0:.1f} x",
             f"FIGURE upgrade_lab_up_s={up_s:.1f} s"]
    print()
    print("\n".join(lines), flush=True)
    failed = overall(roll_sum).failed
    log(f"{args.roll}: {failed} failed connection(s) of {overall(roll_sum).attempts} (target 0); longest gap "
        f"{roll_gap:.0f} ms (baseline {base_gap:.0f} ms)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.upgrade", description=__doc__.splitlines()[0])
    p.add_argument("--roll", choices=sorted(ROLLS), default="speaker-restart")
    p.add_argument("--rounds", type=int, default=3, help="rolls in a row, all within one probing window")
    p.add_argument("--tag", help="helm-upgrade: the image tag to roll to")
    p.add_argument("--roll-timeout", type=float, default=600.0, help="helm-upgrade: seconds to wait for the rollout")
    p.add_argument("--vips", type=int, default=3, help="VIPs, each answered by a different node (<= nodes)")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between connections to each VIP")
    p.add_argument("--timeout", type=float, default=1.0, help="per-connection timeout (s)")
    p.add_argument("--baseline-s", type=float, default=3.0)
    p.add_argument("--settle-s", type=float, default=2.0, help="probing before and after the roll (s)")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards (for debugging)")
    args = p.parse_args(argv)
    if args.roll == "helm-upgrade" and not args.tag:
        p.error("--roll helm-upgrade needs --tag")
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
