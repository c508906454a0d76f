"""BGP failover on the lab router's kernel table (issue 14): a node crash and a link cut, with BFD and without.

    sudo .venv/bin/python -m benchmarks.bgp_failover [--trials 5] [--hold 9] [--only crash,link,graceful,roll]
                                                     [--keep]

Brings up its own real-cluster lab in BGP mode (`lifecycle.up(bgp=True)`: FRR on the bridge peering with every
node's BIRD sidecar, the lab's BFD profile `lab`, 100 ms x 3; the client behind the router), creates a Service
(externalTrafficPolicy Cluster: every node advertises it, so the router has one ECMP next hop per node), and
polls the router's kernel route for its address (`ip -n <router> -j route show ADDR`, one exec per poll, a few
ms apart: the figures' resolution).

1. With BFD (the lab's default peers), --trials each, the victim rotating over the nodes:
   - crash: the victim's kubelet stopped first (outside the timed window, as lbctl.lab.realspeakers.kill does,
     so nothing restarts the pod), then its BIRD, speaker and sidecar wrapper SIGKILLed at t0: time until the
     router's route for the address has lost the victim's next hop. The kernel closes the killed BIRD's TCP
     session, so the router hears of it at once: this measures the crash of the processes, not of the machine.
   - link: the victim's port on the lab bridge set down at t0 (a machine that vanishes: nothing is sent);
     time until its next hop is gone. This is the case BFD is for.
2. Graceful (BFD peers): lbctl.lab.connprobe in the client, a NEW TCP connection to each of 3 VIPs every 10 ms
   (1 s timeout) through the router, (a) around a SIGTERM of each node's speaker in turn (kubelet stopped,
   then started again: withdrawal, then the routes coming back) and (b) around a `helm upgrade` to another
   image tag, which rolls the speaker DaemonSet (speaker and BIRD sidecar) node by node. Baseline: the same
   prober for --baseline-s with nothing happening. Target: 0 failed connections.
3. Baseline, same run: the lab's BGPPeers patched to no bfdProfile and holdTime --hold s (default 9 s; BGP's
   and BIRD's default is 90 s, which only lengthens this baseline), then the same crash and link trials: the
   hold timer is what removes a silent node.

Prints per-trial lines, a table of figures with targets (BFD: p50 <= 0.5 s, max <= 1 s; graceful: 0 failed)
and ratios against the baseline. The exit status is non-zero only when the harness failed, never for a missed
target. Every client runs inside a lab namespace; nothing dials a lab address from the root namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.lab_bench import HarnessError, Report, run_reported, log
from benchmarks.upgrade import LabHandle, helm_roll, probe_around
from lbctl.core.connsummary import Run, overall, render, summarise
from lbctl.lab import connprobe, images, lifecycle, probes, realcluster, realspeakers, router
from lbctl.lab.api import LabApi, wait_for
from lbctl.lab.topology import BRIDGE_NS, CLIENT_NS, ROUTER_NS, Topology

NS = "default"
SERVICES = f"/api/v1/namespaces/{NS}/services"
BGPPEERS = "/apis/lbctl.io/v1alpha1/bgppeers"
BFD_TARGET_P50_S, BFD_TARGET_MAX_S = 0.5, 1.0
_STAMP = re.compile(r"\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\]\s*(.*)")


# --- the router's view ----------------------------------------------------------------------------


def hops(ip: str) -> list[str]:
    """Next hops of the router's kernel route for exactly ip/32 (one exec: `ip -n` enters the namespace)."""
    res = subprocess.run(["ip", "-n", ROUTER_NS, "-j", "-4", "route", "show", f"{ip}/32"], capture_output=True,
                         text=True, timeout=10)
    out: list[str] = []
    for r in json.loads(res.stdout or "[]"):
        out += [h["gateway"] for h in r.get("nexthops") or [] if h.get("gateway")]
        if r.get("gateway"):
            out.append(r["gateway"])
    return out


def wait_hop(ip: str, hop: str, present: bool, t0: float, timeout: float) -> float:
    """Seconds from t0 until `hop` is (present) or is no longer (not present) a next hop of ip's route."""
    deadline = t0 + timeout
    while True:
        now_hops = hops(ip)
        t = time.monotonic()
        if (hop in now_hops) == present:
            return t - t0
        if t > deadline:
            raise TimeoutError(f"{ip}: next hop {hop} still {'absent' if present else 'there'} after {timeout:.0f} s "
                               f"(hops {now_hops})")
        time.sleep(0.002)


def hold_time_s(peer: str) -> float | None:
    """The hold time the router negotiated with `peer` (FRR's `show bgp neighbors json`)."""
    try:
        data = json.loads(router.vtysh(f"show bgp neighbors {peer} json"))
    except (router.RouterError, json.JSONDecodeError):
        return None
    ms = (data.get(peer) or {}).get("bgpTimerHoldTimeMsecs")
    return ms / 1000 if ms is not None else None


def bfd_up(peers: list[str]) -> int:
    return sum(1 for p in router.bfd_peers() if p.get("peer") in peers and p.get("status") == "up")


# --- the nodes ------------------------------------------------------------------------------------


def pod_pids(node: str) -> dict[str, int]:
    """The speaker pod's processes on `node`: speaker, the sidecar's wrapper (bgpd) and its BIRD."""
    out: dict[str, int] = {}
    for p in realspeakers.node(node).pids_in_cgroup():
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"bird":
            out["bird"] = p
        elif b"lbctl.speaker.bgpd" in argv:
            out["bgpd"] = p
        elif any(realspeakers.COMMAND in a for a in argv):
            out["speaker"] = p
    return out


def service(name: str) -> dict[str, Any]:
    """ETP Cluster: every eligible node advertises it (one ECMP next hop per node on the router)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"type": "LoadBalancer", "selector": {"app": realcluster.BACKEND},
                     "ports": [{"name": "http", "port": 80, "targetPort": realcluster.BACKEND_PORT,
                                "protocol": "TCP"}]}}


class Bench:
    def __init__(self, topo: Topology, args: argparse.Namespace, report: Report) -> None:
        self.topo, self.args, self.report = topo, args, report
        self.api = LabApi()
        self.nodes = [h.name for h in topo.node_hosts]

    def ip4(self, node: str) -> str:
        return self.topo.host(node).ip4

    def vip(self, name: str) -> str:
        self.api.create(SERVICES, service(name))

        def ipv4() -> str | None:
            ing = ((self.api.get(f"{SERVICES}/{name}").get("status") or {}).get("loadBalancer") or {}).get(
                "ingress") or []
            return next((i["ip"] for i in ing if ":" not in i.get("ip", ":")), None)
        ip = wait_for(ipv4, 30, f"an IPv4 address on Service {name}", interval=0.2)
        self.all_hops(ip, 60)
        wait_for(lambda: probes.curl(ip, timeout=1) is not None, 30, f"HTTP through {ip}", interval=0.1)
        return ip

    def all_hops(self, ip: str, timeout: float) -> None:
        want = sorted(self.ip4(n) for n in self.nodes)
        wait_for(lambda: sorted(hops(ip)) == want, timeout, f"{ip} on the router with next hops {want}",
                 interval=0.05)

    def link(self, node: str, up: bool) -> None:
        subprocess.run(["ip", "-n", BRIDGE_NS, "link", "set", self.topo.host(node).port, "up" if up else "down"],
                       check=True, capture_output=True)

    # --- 1 and 3: crash and link cut -------------------------------------------------------------

    def trials(self, mode: str, ip: str, label: str, timeout: float) -> list[float]:
        out = []
        for n in range(self.args.trials):
            victim = self.nodes[n % len(self.nodes)]
            hop = self.ip4(victim)
            self.all_hops(ip, 90)
            seen = len(router.notifications_sent().get(hop, []))
            if mode == "crash":
                realspeakers.node(victim).stop_kubelet()  # outside the timed window: nothing restarts the pod
                pids = pod_pids(victim)
                if set(pids) != {"speaker", "bgpd", "bird"}:
                    raise HarnessError(f"{victim}'s speaker pod: found {pids}, want speaker, bgpd and bird")
                t0 = time.monotonic()
                for what in ("bird", "speaker", "bgpd"):  # BIRD first: no withdrawal can leave before it dies
                    try:
                        os.kill(pids[what], signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            else:
                t0 = time.monotonic()
                self.link(victim, False)
            try:
                took = wait_hop(ip, hop, False, t0, timeout)
            except TimeoutError as e:
                log(f"  trial {n + 1}: {e}")
                took = float("inf")
            rest = sorted(router.node_of(self.topo, h) or h for h in hops(ip))
            why = router.notifications_sent().get(hop, [])[seen:]  # this trial's: the router's reason
            log(f"  {label} trial {n + 1}: {victim} gone from the router's route in {took * 1000:7.0f} ms; "
                f"left {', '.join(rest) or 'none'}" + (f" (router sent: {why[0]})" if why else " (router sent no notification)"))
            out.append(took)
            t_back = time.monotonic()
            if mode == "crash":
                realspeakers.restore(self.api, self.topo)
            else:
                self.link(victim, True)
            back = wait_hop(ip, hop, True, t_back, 120)
            log(f"    restored: {victim}'s next hop back {back:.1f} s after the {'kubelet start' if mode == 'crash' else 'link up'}")
        return out

    def failover(self, tag: str, timeout: float) -> dict[str, list[float]]:
        ip = self.vip(f"bgp-fo-{tag}")
        res: dict[str, list[float]] = {}
        for mode in ("crash", "link"):
            if mode in self.args.only:
                log(f"{tag}: {mode}, {self.args.trials} trials on {ip}")
                res[mode] = self.trials(mode, ip, f"{tag} {mode}", timeout)
        return res

    def without_bfd(self) -> None:
        """The baseline's peers: no BFD, a short hold timer (BIRD proposes it, FRR takes the smaller one)."""
        hold = self.args.hold
        for name in router.peer_names(self.topo):
            self.api.patch(f"{BGPPEERS}/{name}", {"spec": {"bfdProfile": None, "holdTime": f"{hold}s"}})
        peers = [self.ip4(n) for n in self.nodes]
        wait_for(lambda: all(hold_time_s(p) == hold for p in peers), 90,
                 f"every node's session with a {hold} s hold time", interval=0.5)
        # The router's BFD session for each node goes down when BIRD stops BFD, and takes the BGP session along
        # once: wait until every session has been up a while before timing anything.
        wait_for(lambda: all((s := router.sessions().get(p)) and s.state == "Established" and s.uptime_s >= 3
                             for p in peers), 90, "sessions Established for 3 s", interval=0.5)
        log(f"baseline peers: no BFD, holdTime {hold} s negotiated with every node; BFD sessions up: "
            f"{bfd_up(peers)}")

    # --- 2: graceful --------------------------------------------------------------------------

    def graceful(self) -> None:
        a, r = self.args, self.report
        vips = [self.vip(f"bgp-g{k}") for k in range(3)]
        targets = [f"{ip}:80" for ip in vips]
        labels = {t: f"vip{k + 1} {t}" for k, t in enumerate(targets)}
        log(f"graceful: VIPs {', '.join(vips)}; baseline {a.baseline_s:g} s of probing, nothing happening")
        base = connprobe.finish(connprobe.launch(CLIENT_NS, targets, 0.01, 1.0, duration=a.baseline_s),
                                wait=a.baseline_s + 30)
        base_sum = summarise(base.attempts, base.targets, base.started, base.stopped)
        print(render(base_sum, labels))
        r.add("graceful baseline: failed connections", f"{overall(base_sum).failed} of {overall(base_sum).attempts}",
              "", None)
        if "graceful" in a.only:
            total, attempts = 0, 0
            for node in self.nodes:
                hop = self.ip4(node)

                def sigterm(node: str = node, hop: str = hop) -> tuple[float, float]:
                    t0 = time.monotonic()
                    realspeakers.kill(node, signal.SIGTERM)
                    gone = max(wait_hop(ip, hop, False, t0, 30) for ip in vips)
                    time.sleep(1.0)
                    t1 = time.monotonic()
                    realspeakers.restore(self.api, self.topo)
                    back = max(wait_hop(ip, hop, True, t1, 60) for ip in vips)
                    return gone, back
                with route_changes() as changes:
                    run, (gone, back), _, _ = probe_around(targets, sigterm, a.settle_s, 0.01, 1.0)
                s = summarise(run.attempts, run.targets, run.started, run.stopped)
                log(f"  SIGTERM {node}: withdrawn from all 3 routes in {gone * 1000:.0f} ms, back {back:.1f} s after "
                    f"the kubelet start; {overall(s).failed} failed of {overall(s).attempts}")
                print(render(s, labels))
                total, attempts = total + overall(s).failed, attempts + overall(s).attempts
                self.show_failures(run, changes)
            r.add("graceful: speaker SIGTERM on each node, failed connections", f"{total} of {attempts}", "0",
                  total == 0)
        if "roll" in a.only:
            tag = images.LBCTL_NEXT_TAG.rsplit(":", 1)[1]
            log(f"graceful: helm upgrade to image tag {tag} (the speaker DaemonSet rolls, sidecar included)")
            with route_changes() as changes:
                run, watch, t0, t1 = probe_around(
                    targets, lambda: helm_roll([tag], 600, create_every_s=0)(LabHandle(self.topo, self.api)),
                    a.settle_s, 0.01, 1.0)
            s = summarise(run.attempts, run.targets, run.started, run.stopped)
            print(render(s, labels))
            self.show_failures(run, changes)
            r.add(f"graceful: helm roll ({len(watch.speaker_steps)} nodes, {t1 - t0:.0f} s), failed connections",
                  f"{overall(s).failed} of {overall(s).attempts}", "0", overall(s).failed == 0)
            r.add("graceful: helm roll, longest gap (one VIP)", f"{overall(s).longest_gap_ms:.0f} ms "
                  f"(baseline {overall(base_sum).longest_gap_ms:.0f} ms)", "", None)

    def show_failures(self, run: Run, changes: list[tuple[float, str]]) -> None:
        """Each failed connection with the nearest change of its VIP's route on the router: a failure at a
        change is the router moving flows between next hops; one far from any is the data path's own."""
        for at in [x for x in run.attempts if not x.ok][:10]:
            ip = at.target.rsplit(":", 1)[0]
            near = min(((t - at.t, what) for t, what in changes if _concerns(what, ip)),
                       key=lambda c: abs(c[0]), default=None)
            log(f"    failed: {at.target} {at.outcome} at +{at.t - run.started:.3f} s ({at.ms:.0f} ms); "
                + (f"nearest route change {near[0] * 1000:+.0f} ms: {near[1]}" if near else "no route change"))


def _concerns(change: str, ip: str) -> bool:
    """A route line naming `ip` (added, replaced, "Deleted"), or a nexthop object's change (zebra moves ECMP
    routes between nexthop groups: such a line names no route)."""
    return ip in change.split() or change.startswith(("id ", "Deleted id "))


@contextmanager
def route_changes() -> Iterator[list[tuple[float, str]]]:
    """The router's kernel route and nexthop changes while inside, as (time.monotonic(), first line): `ip -ts monitor
    route` stamps them with the wall clock, mapped here by the offset between the two clocks."""
    out: list[tuple[float, str]] = []
    offset = time.time() - time.monotonic()
    mon = subprocess.Popen(["ip", "-n", ROUTER_NS, "-ts", "monitor", "route", "nexthop"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        yield out
    finally:
        mon.terminate()
        text, _ = mon.communicate(timeout=10)
        for line in text.splitlines():
            m = _STAMP.match(line)
            if m:
                when = datetime.fromisoformat(m.group(1)).timestamp() - offset
                out.append((when, m.group(2).strip()))


LABELS = {"crash": "crash (BIRD+speaker SIGKILL)", "link": "link cut"}


def _ms(x: float) -> str:
    return "none" if x == float("inf") else f"{x * 1000:.0f} ms"


def bfd_figures(report: Report, bfd: dict[str, list[float]]) -> None:
    """Added as soon as the BFD trials are done: a later harness error must not lose them."""
    for mode, b in bfd.items():
        p50, mx = statistics.median(b), max(b)
        report.add(f"failover p50, {LABELS[mode]}, BFD 100ms x3", _ms(p50), "<= 500 ms", p50 <= BFD_TARGET_P50_S)
        report.add(f"failover max, {LABELS[mode]}, BFD", _ms(mx), "<= 1000 ms", mx <= BFD_TARGET_MAX_S)
        report.add(f"failover trials, {LABELS[mode]}, BFD (ms)", " ".join(_ms(x).removesuffix(" ms") for x in b),
                   "", None)


def hold_figures(report: Report, bfd: dict[str, list[float]], hold: dict[str, list[float]], hold_s: int) -> None:
    for mode, h in hold.items():
        hp50, hmx = statistics.median(h), max(h)
        report.add(f"failover p50 / max, {LABELS[mode]}, no BFD, hold {hold_s} s (baseline)",
                   f"{_ms(hp50)} / {_ms(hmx)}", "", None)
        if mode in bfd:
            report.add(f"failover p50 ratio BFD/baseline, {LABELS[mode]}",
                       f"{statistics.median(bfd[mode]) / hp50:.3f}x", "", None)


@contextmanager
def own_lab(keep: bool) -> Iterator[Topology]:
    if os.geteuid() != 0:
        raise HarnessError("needs root (network namespaces)")
    if lifecycle.is_up() or lifecycle.leftovers():
        raise HarnessError("a lab (or its leftovers) exists already; this benchmark brings up and tears down its own "
                           "lab: run `lbctl lab down` first (or set LBCTL_LAB_PREFIX/LBCTL_LAB_STATE)")
    log("lab up (BGP mode)")
    try:
        topo, warnings = lifecycle.up(nodes=3, say=lambda m: log(f"  {m}"), bgp=True)
        if warnings:
            raise HarnessError(f"lab not usable: {warnings}")
        yield topo
    finally:
        if not keep and lifecycle.leftovers():
            log("lab down")
            lifecycle.down(say=lambda m: log(f"  {m}"))


def run(args: argparse.Namespace, report: Report) -> None:
    started = time.monotonic()
    with own_lab(args.keep) as topo:
        report.add("lab up (BGP mode)", f"{time.monotonic() - started:.1f} s", "", None)
        b = Bench(topo, args, report)
        peers = [b.ip4(n) for n in b.nodes]
        wait_for(lambda: bfd_up(peers) == len(peers), 60, "a BFD session up with every node", interval=0.2)
        log(f"BFD sessions up with {', '.join(b.nodes)}; hold time negotiated: {hold_time_s(peers[0])} s")
        bfd = b.failover("bfd", 2.0 + 5)
        bfd_figures(report, bfd)
        if args.only & {"graceful", "roll"}:
            b.graceful()
        hold: dict[str, list[float]] = {}
        if args.only & {"crash", "link"} and not args.no_baseline:
            b.without_bfd()
            hold = b.failover("hold", args.hold + 10)
        hold_figures(report, bfd, hold, args.hold)
        report.add("benchmark run time", f"{time.monotonic() - started:.0f} s", "", None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.bgp_failover", description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--hold", type=int, default=9, help="the baseline's holdTime in s (BGP's default: 90)")
    p.add_argument("--only", default="crash,link,graceful,roll", help="subset of crash,link,graceful,roll")
    p.add_argument("--no-baseline", action="store_true", help="skip the runs without BFD")
    p.add_argument("--baseline-s", type=float, default=30.0,
                   help="the graceful baseline's probing (30 s: 9,000 connections, to see the data path's own rate)")
    p.add_argument("--settle-s", type=float, default=2.0)
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards (for debugging)")
    args = p.parse_args(argv)
    args.only = set(args.only.split(","))
    if args.hold < 3:
        p.error("--hold: 3 s at least (BGP's minimum)")
    return run_reported(lambda report: run(args, report))


if __name__ == "__main__":
    sys.exit(main())
