"""Data-plane benchmarks on the real-cluster `lbctl lab`: ARP latency and throughput, failover, speaker footprint.

    sudo .venv/bin/python -m benchmarks.lab_bench [--trials 10] [--only arp,blast,failover,footprint]

One run brings the real cluster up (kubelets, containerd, kube-proxy in iptables mode, the chart's speaker
DaemonSet in runc containers; speaker.restartHold 0, so a stopped speaker hands over at once), measures, and
brings it down again (in `finally`, also on errors and ^C). Services select the lab's backend (`web-<node>`)
with externalTrafficPolicy Local, so an HTTP answer names the node owning the address; the control plane is
excluded from external load balancers and owns none. Every figure comes with a baseline measured in the same
run on the same bridge:

1. ARP reply RTT (median, p99 over --rtt-count probes) for a LoadBalancer IP answered by the speaker vs
   a node's own address answered by its kernel, and vs the floor: a minimal blocking Python responder on
   AF_PACKET (`lab_arp respond`, the speaker's filter and codec) in the owner's namespace beside the
   speaker; probes alternate between the three to cancel drift.
2. ARP requests answered per second for --blast-s seconds with a window of outstanding requests, and
   the loss, for the speaker and for the kernel.
3. Failover: --trials each of SIGKILL of the owner's speaker (its kubelet stopped first, so nothing restarts
   it during the trial; lbctl.lab.realspeakers) and of cutting the owner's link (its port on the lab bridge),
   timed from the break to the first HTTP reply from another node, as a client sending a request every 20 ms
   (100 ms timeout) sees it. The client's neighbour table is never flushed: only the new owner's gratuitous
   ARP can move it, and `ip monitor neigh` tells whether a trial recovered through the client's own
   re-resolution (neighbour timeout) instead.
4. Speaker RSS and idle CPU (the container's process) with 500 announced IPs (a /23 pool added to the lab,
   500 Services), measured once kube-proxy's nat rules hold every address on every node.

Every client runs inside a lab namespace (`ip netns exec lbctl-client ...`, API calls in lbctl-cp);
nothing here dials a lab address from the root namespace. Benchmarks report, tests assert: the exit
status is non-zero only when the harness itself failed, never for a missed target.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lbctl.core.heartbeat import TIMING_PRESETS
from lbctl.lab import lifecycle, probes, processes, prober, realcluster, realspeakers
from lbctl.lab.api import LabApi, wait_for
from lbctl.lab.topology import BRIDGE_NS, CLIENT_NS, PREFIX, Topology

NS = "default"
SERVICES = f"/api/v1/namespaces/{NS}/services"
IPPOOLS = "/apis/lbctl.io/v1alpha1/ippools"
SPEAKERSTATUSES = "/apis/lbctl.io/v1alpha1/speakerstatuses"
POOL_ANNOTATION = "lbctl.io/address-pool"
BIG_POOL = "198.18.2.0/23"  # 512 addresses off the nodes' /24 (announced on eth0 by pool interfaces)
FLOOR_IP = "198.18.0.4"  # the minimal responder's address: on no interface, so only it answers
BLAST_SPA = "198.18.0.160"  # blaster slot k asks as .160+k: unused lab addresses, their neighbour entries bother nobody
PY = sys.executable
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HarnessError(RuntimeError):
    pass


def run_reported(run: Callable[[Report], None], after: Callable[[], bool] = lambda: True) -> int:
    """Run a benchmark and print its report whatever happens: 0, 2 for a harness error (or `after` failing:
    the lab's teardown), 130 when interrupted (SIGTERM too, so `finally` tears the lab down on `kill`)."""
    def _term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)
    report = Report()
    rc = 0
    try:
        run(report)
    except (HarnessError, RuntimeError, TimeoutError, OSError, subprocess.SubprocessError, ValueError) as exc:
        log(f"HARNESS ERROR: {type(exc).__name__}: {exc}")
        rc = 2
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    finally:
        if not after():
            rc = rc or 2
        report.print()
    return rc


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    value: str
    target: str
    ok: bool | None  # None: informational


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, metric: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append(Row(metric, value, target, ok))

    def print(self) -> None:
        heads = ["METRIC", "VALUE", "TARGET", "RESULT"]
        cells = [[r.metric, r.value, r.target or "-", {True: "PASS", False: "FAIL", None: "info"}[r.ok]]
                 for r in self.rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
        line = "  ".join("{:<%d}" % w for w in widths)
        print()
        print("=" * (sum(widths) + 6))
        print(line.format(*heads))
        for c in cells:
            print(line.format(*c))
        print("=" * (sum(widths) + 6), flush=True)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


# --- processes we start: always reaped --------------------------------------------------------


@contextmanager
def child(argv: list[str], **kw: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(argv, text=True, **kw)
    try:
        yield proc
    finally:
        processes.terminate(proc, 3)


def in_client(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", "netns", "exec", CLIENT_NS, *argv], capture_output=True, text=True, timeout=timeout,
                         cwd=HERE)
    return res


# --- the lab ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, topo: Topology, args: argparse.Namespace, report: Report) -> None:
        self.topo, self.args, self.report = topo, args, report
        self.api = LabApi()
        self.client = topo.host("client")

    # API (runs apicall inside lbctl-cp)
    def service(self, name: str, pool: str | None = None) -> str:
        self.api.create(SERVICES, service_body(name, pool))
        svc = wait_for(lambda: (s := self.api.get(f"{SERVICES}/{name}")) and ipv4s(s) and s, 30,
                       f"an IPv4 ingress IP on Service {name}", interval=0.2)
        return ipv4s(svc)[0]

    # the client's view
    def arp_owners(self, ip: str) -> set[str]:
        return {self.topo.node_by_mac(m) or m for m in probes.arping(ip, count=1, timeout=1)}

    def settle(self, ip: str, timeout: float = 30, stable_s: float = 1.5) -> str:
        """Wait for one ARP owner, unchanged for stable_s, that the client's HTTP requests reach too."""
        deadline = time.monotonic() + timeout
        last: Any = None
        since, owner = time.monotonic(), None
        while time.monotonic() < deadline:
            owners = self.arp_owners(ip)
            now = time.monotonic()
            if len(owners) != 1 or next(iter(owners)) != owner:
                owner = next(iter(owners)) if len(owners) == 1 else None
                since = now
            elif now - since >= stable_s and probes.node_answering(ip, 0.5) == owner:
                return owner
            last = owners
            time.sleep(0.2)
        raise HarnessError(f"{ip}: no single settled owner after {timeout:.0f}s (last ARP owners: {last}, "
                           f"HTTP answered by {probes.node_answering(ip, 0.5)})")

    def link(self, node: str, up: bool) -> None:
        port = self.topo.host(node).port
        subprocess.run(["ip", "-n", BRIDGE_NS, "link", "set", port, "up" if up else "down"], check=True,
                       capture_output=True)

    # --- 1. ARP RTT ---------------------------------------------------------------------------
    def arp_rtt(self, lb_ip: str, kernel_ip: str, owner: str) -> None:
        a = self.args
        h = self.topo.host(owner)
        log(f"ARP RTT: {a.rtt_count} probes each, alternating {lb_ip} (speaker on {owner}), {kernel_ip} (kernel) "
            f"and {FLOOR_IP} (minimal responder beside the speaker)")
        with child(["ip", "netns", "exec", h.netns, PY, "-m", "benchmarks.lab_arp", "respond", "--iface", "eth0",
                    "--mac", h.mac, "--ip", FLOOR_IP], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   cwd=HERE) as floor:
            ready = floor.stdout.readline() if floor.stdout else ""
            if '"ready"' not in ready:
                raise HarnessError(f"lab_arp respond did not start: {floor.stderr.read() if floor.stderr else ''}")
            res = in_client(PY, "-m", "benchmarks.lab_arp", "rtt", "--mac", self.client.mac, "--ip", self.client.ip4,
                            "--targets", f"{lb_ip},{kernel_ip},{FLOOR_IP}", "--count", str(a.rtt_count),
                            "--gap-ms", "1", timeout=300)
        if res.returncode:
            raise HarnessError(f"lab_arp rtt failed: {res.stderr.strip()[-2000:]}")
        out = json.loads(res.stdout)
        stats = {}
        for ip, samples, lost in zip(out["targets"], out["rtt_ns"], out["lost"]):
            if not samples:
                raise HarnessError(f"no ARP reply at all from {ip}")
            us = [s / 1000 for s in samples]
            stats[ip] = (statistics.median(us), pct(us, 99), lost)
            log(f"  {ip}: median {stats[ip][0]:.1f} us, p99 {stats[ip][1]:.1f} us, lost {lost}/{a.rtt_count}")
        (lm, lp, ll), (km, kp, kl), (fm, fp, fl) = stats[lb_ip], stats[kernel_ip], stats[FLOOR_IP]
        r = self.report
        r.add("ARP RTT median, speaker (LB IP)", f"{lm:.1f} us", "", None)
        r.add("ARP RTT median, kernel (node IP)", f"{km:.1f} us", "", None)
        r.add("ARP RTT median, minimal responder (floor)", f"{fm:.1f} us", "", None)
        r.add("ARP RTT median ratio speaker/kernel", f"{lm / km:.2f}x", "<= 1.20x", lm / km <= 1.2)
        r.add("ARP RTT median ratio speaker/floor", f"{lm / fm:.2f}x", "", None)
        r.add("ARP RTT p99 speaker / kernel / floor", f"{lp:.1f} / {kp:.1f} / {fp:.1f} us "
              f"({lp / kp:.2f}x, {lp / fp:.2f}x)", "", None)
        r.add("ARP RTT probes lost speaker / kernel / floor", f"{ll} / {kl} / {fl} of {a.rtt_count}", "", None)

    # --- 2. ARP throughput --------------------------------------------------------------------
    def arp_blast(self, lb_ip: str, kernel_ip: str) -> None:
        a = self.args
        results = {}
        for who, ip in (("speaker", lb_ip), ("kernel", kernel_ip)):
            log(f"ARP blast: {who} ({ip}) for {a.blast_s:.0f}s, window {a.window}")
            res = in_client(PY, "-m", "benchmarks.lab_arp", "blast", "--ip", BLAST_SPA,
                            "--target", ip, "--duration", str(a.blast_s), "--window", str(a.window),
                            timeout=a.blast_s + 60)
            if res.returncode:
                raise HarnessError(f"lab_arp blast failed: {res.stderr.strip()[-2000:]}")
            out = results[who] = json.loads(res.stdout)
            log(f"  {out['rate_per_s']:.0f}/s answered, {out['sent']} sent, {out['lost']} lost "
                f"({out['loss_pct']:.4f} %), {out['late']} late, mean RTT {out['mean_rtt_us']} us")
        s, k = results["speaker"], results["kernel"]
        r = self.report
        r.add("ARP answered/s, speaker", f"{s['rate_per_s']:.0f}/s", ">= 20000/s", s["rate_per_s"] >= 20000)
        r.add("ARP loss, speaker", f"{s['loss_pct']:.3f} %", "<= 0.1 %", s["loss_pct"] <= 0.1)
        r.add("ARP answered/s, kernel (baseline)", f"{k['rate_per_s']:.0f}/s, loss {k['loss_pct']:.3f} %", "", None)
        r.add("ARP rate ratio speaker/kernel", f"{s['rate_per_s'] / max(k['rate_per_s'], 1):.2f}x", "", None)

    # --- 3. failover --------------------------------------------------------------------------
    def failover(self, mode: str, ip: str) -> None:
        a = self.args
        log(f"failover ({mode}): {a.trials} trials on {ip}")
        times: list[float] = []
        notes: list[str] = []
        for n in range(1, a.trials + 1):
            for attempt in range(3):
                owner = self.settle(ip)
                t = self.one_trial(mode, ip, owner)
                self.restore(mode, owner)
                if t["valid"]:
                    break
                log(f"  trial {n:2d}: discarded ({t['note']}), again")
                notes.append(f"trial {n}: attempt {attempt + 1} discarded: {t['note']}")
            else:
                raise HarnessError(f"trial {n}: the client never talked to the ARP owner before the break")
            sw = t["switch_s"]
            times.append(sw if sw is not None else float("inf"))
            line = (f"  trial {n:2d}: {owner} -> {t['after'] or '-'}  "
                    + (f"{sw * 1000:7.0f} ms" if sw is not None else "   none  ")
                    + f"  failed requests {t['failures']}/{t['total']}, longest gap {t['gap_s'] * 1000:.0f} ms"
                    + (f"  [{t['note']}]" if t["note"] else ""))
            log(line)
            if t["note"]:
                notes.append(f"trial {n}: {t['note']}")
        finite = [x for x in times if x != float("inf")]
        p50 = statistics.median(times)
        mx = max(times)
        fmt = lambda x: "none" if x == float("inf") else f"{x * 1000:.0f} ms"  # noqa: E731
        label = {"kill": "speaker SIGKILL", "link": "link cut"}[mode]
        log(f"  {label}: p50 {fmt(p50)}, max {fmt(mx)}, recovered {len(finite)}/{len(times)}")
        r = self.report
        r.add(f"failover p50, {label}", fmt(p50), "<= 1000 ms", p50 <= 1.0)
        r.add(f"failover max, {label}", fmt(mx), "<= 2000 ms", mx <= 2.0)
        if notes:
            r.add(f"failover notes, {label}", f"{len(notes)}, first: {notes[0]}"[:110], "", None)

    def restore(self, mode: str, owner: str) -> None:
        """Put the owner back; the IP returns to it by rendezvous hashing (settle() waits for that)."""
        if mode == "kill":
            realspeakers.restore(self.api, self.topo)
        else:
            self.link(owner, True)

    def one_trial(self, mode: str, ip: str, owner: str) -> dict[str, Any]:
        a = self.args
        pre, post = 1.5, a.failover_window
        note = ""
        if mode == "kill":
            # The owner's kubelet goes before the timed window (realspeakers.kill would stop it first anyway):
            # the break is the signal alone, and nothing restarts the speaker until restore().
            realspeakers.node(owner).stop_kubelet()
        with child(["ip", "netns", "exec", CLIENT_NS, "ip", "monitor", "neigh", "dev", "eth0"],
                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as mon, \
                child(["ip", "netns", "exec", CLIENT_NS, PY, "-m", "lbctl.lab.prober", ip, "--interval", "0.02",
                       "--duration", str(pre + post), "--timeout", "0.1"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=HERE) as run:
            time.sleep(pre)
            t_break = time.monotonic()
            if mode == "kill":
                realspeakers.kill(owner, signal.SIGKILL)
            else:
                self.link(owner, False)
            out, err = run.communicate(timeout=pre + post + 30)
            mon.terminate()
            mon_out, _ = mon.communicate(timeout=5)
        if run.returncode:
            raise HarnessError(f"prober failed ({run.returncode}): {err.strip()[-1000:]}")
        result = prober.analyse(prober.read_probes(out), t_break)
        switch = result.switch_s
        if result.before != owner:
            return {"valid": False, "note": f"client was talking to {result.before}, not to the ARP owner {owner}, "
                    "before the break"}
        if switch is None:
            # No recovery in the window: find out whether and when the client gets there on its own
            # (neighbour entry timing out and being re-resolved), up to --slow-window seconds.
            late = self.wait_recovery(ip, owner, t_break, a.slow_window)
            if late is not None:
                note = f"recovered only after {late:.1f}s (client re-resolved; GARP missed?)"
            else:
                note = f"no recovery within {a.slow_window:.0f}s"
        via = neigh_path(mon_out, ip, self.topo.host(owner).mac)
        if via == "re-resolution":
            note = (note + "; " if note else "") + "client's neighbour entry moved via its own ARP " \
                "(PROBE/INCOMPLETE), not via GARP"
        elif via == "unchanged" and switch is not None:
            note = (note + "; " if note else "") + "neighbour entry change not seen by ip monitor"
        return {"valid": True, "switch_s": switch, "after": result.after, "failures": result.failures, "total": result.total,
                "gap_s": result.gap_s, "note": note}

    def wait_recovery(self, ip: str, old: str, t_break: float, window: float) -> float | None:
        deadline = t_break + window
        while time.monotonic() < deadline:
            got = probes.node_answering(ip, 0.2)
            if got and got != old:
                return time.monotonic() - t_break
            time.sleep(0.3)
        return None

    # --- 4. footprint -------------------------------------------------------------------------
    def footprint(self, count: int) -> None:
        a = self.args
        before = {h.name: rss_kib(self.speaker_pid(h.name)) for h in self.topo.node_hosts}
        log(f"footprint: idle CPU baseline with the few IPs so far ({a.idle_s:.0f}s)")
        cpu_before = self.idle_cpu(a.idle_s)
        log(f"footprint: pool bench-big ({BIG_POOL}) and {count} Services")
        self.api.apply(IPPOOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool",
                                 "metadata": {"name": "bench-big"},
                                 "spec": {"addresses": [BIG_POOL], "autoAssign": False,
                                          "layer2": {"interfaces": ["eth0"]}}})
        names = [f"bench-rss-{i:03d}" for i in range(count)]
        started = time.monotonic()
        for chunk in range(0, count, 100):
            calls = [{"method": "APPLY", "path": SERVICES, "body": service_body(name, "bench-big")}
                     for name in names[chunk:chunk + 100]]
            bad = [r for r in self.api.batch(calls, timeout=120) if not 200 <= r["status"] < 300]
            if bad:
                raise HarnessError(f"creating Services: HTTP {bad[0]['status']}: {bad[0]['body']}")
        big = ipaddress.ip_network(BIG_POOL)

        def assigned() -> int:
            items = self.api.get(SERVICES).get("items") or []
            return sum(1 for s in items if s["metadata"]["name"].startswith("bench-rss-")
                       and any(ipaddress.ip_address(i) in big for i in ipv4s(s)))

        def announced() -> set[str]:
            return announced_in(self.api, big)

        wait_for(lambda: assigned() >= count, a.footprint_timeout, f"{count} Services with an IP from {BIG_POOL}",
                 interval=2)
        log(f"  {count} IPs assigned after {time.monotonic() - started:.1f}s")
        wait_for(lambda: len(announced()) >= count, a.footprint_timeout, f"{count} IPs announced (SpeakerStatus)",
                 interval=2)
        log(f"  {count} IPs announced after {time.monotonic() - started:.1f}s")
        # kube-proxy (iptables mode) rewrites its nat table for every new Service; let it finish so the idle
        # measurement is idle.
        wait_for(lambda: all(nat_count(h.netns, big) >= count for h in self.topo.node_hosts), a.footprint_timeout,
                 "kube-proxy's nat rules to hold every address on every node", interval=2)
        sample = sorted(announced())[:: max(1, count // 5)][:5]
        for ip in sample:
            owners = self.arp_owners(ip)
            if len(owners) != 1:
                log(f"  WARNING: {ip} answered by {owners or 'nobody'}")
        log(f"  spot check: {len(sample)} IPs answer ARP from one node each; settling {a.settle_s:.0f}s")
        time.sleep(a.settle_s)
        cpu = self.idle_cpu(a.idle_s)
        rss = {h.name: rss_kib(self.speaker_pid(h.name)) for h in self.topo.node_hosts}
        for n in rss:
            log(f"  speaker-{n}: RSS {rss[n] / 1024:.1f} MiB (was {before[n] / 1024:.1f} MiB with the few "
                f"earlier IPs), CPU {cpu[n]:.2f} % over {a.idle_s:.0f}s idle (was {cpu_before[n]:.2f} %)")
        worst_rss, worst_cpu = max(rss.values()) / 1024, max(cpu.values())
        r = self.report
        r.add(f"speaker RSS with {count} IPs (max of nodes)", f"{worst_rss:.1f} MiB", "<= 80 MiB", worst_rss <= 80)
        r.add("speaker RSS before (max of nodes)", f"{max(before.values()) / 1024:.1f} MiB", "", None)
        r.add(f"speaker idle CPU with {count} IPs (max)", f"{worst_cpu:.2f} %", "< 1 %", worst_cpu < 1.0)
        r.add("speaker idle CPU before (max of nodes)", f"{max(cpu_before.values()):.2f} %", "", None)

    def idle_cpu(self, seconds: float) -> dict[str, float]:
        """CPU % of each speaker (all its threads, children not included) over `seconds` of doing nothing."""
        pids = {h.name: self.speaker_pid(h.name) for h in self.topo.node_hosts}
        t0, c0 = time.monotonic(), {n: cpu_seconds(p) for n, p in pids.items()}
        time.sleep(seconds)
        t1, c1 = time.monotonic(), {n: cpu_seconds(p) for n, p in pids.items()}
        return {n: 100.0 * (c1[n] - c0[n]) / (t1 - t0) for n in pids}

    def speaker_pid(self, node: str) -> int:
        pid = realspeakers.pid(node)
        if not pid:
            raise HarnessError(f"the speaker on {node} is not running")
        return pid


def announced_in(api: LabApi, net: ipaddress.IPv4Network) -> set[str]:
    """The IPv4 addresses of `net` the speakers report announcing (SpeakerStatus); empty while one is announced
    twice (not settled yet)."""
    out: list[str] = []
    for s in api.get(SPEAKERSTATUSES).get("items") or []:
        out += [x["ip"] for x in ((s.get("status") or {}).get("announced") or [])
                if ":" not in x["ip"] and ipaddress.ip_address(x["ip"]) in net]
    return set() if len(out) != len(set(out)) else set(out)


def service_body(name: str, pool: str | None) -> dict[str, Any]:
    """A LoadBalancer Service for the lab's backend on every worker, externalTrafficPolicy Local: the owner's own
    backend answers, so an HTTP reply names the owner (as tests/e2e make them)."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "annotations": {POOL_ANNOTATION: pool} if pool else {}},
            "spec": {"type": "LoadBalancer", "selector": {"app": realcluster.BACKEND},
                     "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "targetPort": realcluster.BACKEND_PORT,
                                "protocol": "TCP"}]}}


def ipv4s(svc: dict[str, Any]) -> list[str]:
    ing = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ing if "ip" in i and ":" not in i["ip"]]


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise HarnessError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """On-CPU time of all threads, from the scheduler's ns counters (schedstat), else from tick samples.

    utime/stime are sampled at clock ticks: a process that wakes briefly and often is charged whole
    ticks or nothing, so at well under 1 % the tick figure is mostly noise."""
    if not os.path.exists("/proc/self/schedstat"):  # kernel without CONFIG_SCHED_INFO
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except FileNotFoundError:
            pass  # the thread ended meanwhile
    return total / 1e9


def nat_count(netns: str, net: ipaddress.IPv4Network) -> int:
    """Addresses of `net` that kube-proxy's nat table in `netns` sends somewhere (`-d IP/32` rules)."""
    res = subprocess.run(["ip", "netns", "exec", netns, "iptables-save", "-t", "nat"], capture_output=True,
                         text=True, timeout=60)
    found = {m.group(1) for m in re.finditer(r"-d (\d+\.\d+\.\d+\.\d+)/32", res.stdout)}
    return sum(1 for ip in found if ipaddress.ip_address(ip) in net)


def neigh_path(monitor: str, ip: str, old_mac: str) -> str:
    """How the client's neighbour entry for ip left old_mac: "garp" (straight to a new lladdr),
    "re-resolution" (PROBE/INCOMPLETE/FAILED first: the kernel's own timeout path) or "unchanged"."""
    seen_probe = False
    for line in monitor.splitlines():
        parts = line.split()
        if not parts or parts[0] != ip:
            continue
        if any(s in parts for s in ("PROBE", "INCOMPLETE", "FAILED")):
            seen_probe = True
        if "lladdr" in parts:
            mac = parts[parts.index("lladdr") + 1].lower()
            if mac != old_mac.lower():
                return "re-resolution" if seen_probe else "garp"
    return "unchanged"


def other_lab_users() -> list[str]:
    """Processes that bring labs up and down on their own (e2e tests, `lbctl lab ...`) with our lab's names
    (LBCTL_LAB_PREFIX): between two test modules there is briefly no lab at all, and starting ours then would
    collide with theirs. Labs under another prefix are not ours to collide with."""
    mine, pid = set(), os.getpid()
    while pid > 1:  # us and our ancestors (the shell that started us names lab_bench too)
        mine.add(pid)
        try:
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        cmd = " ".join(a.decode(errors="replace") for a in argv if a)
        if lab_prefix(int(entry)) not in (PREFIX, None):
            continue
        if ("pytest" in cmd and "e2e" in cmd) or "lbctl.cli lab" in cmd or " lab up" in cmd or " lab demo" in cmd \
                or ("lab_bench" in cmd and "python" in cmd):
            found.append(f"pid {entry}: {cmd[:120]}")
    return found


def lab_prefix(pid: int) -> str | None:
    """The LBCTL_LAB_PREFIX process `pid` runs with (the default when unset), None when unreadable."""
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for var in env:
        if var.startswith(b"LBCTL_LAB_PREFIX="):
            return var.split(b"=", 1)[1].decode(errors="replace")
    return "lbctl-"


# --- main -------------------------------------------------------------------------------------


def run(args: argparse.Namespace, report: Report, state: dict[str, bool]) -> None:
    if os.geteuid() != 0:
        raise HarnessError("needs root (network namespaces)")
    if lifecycle.is_up() or lifecycle.leftovers():
        raise HarnessError("a lab (or its leftovers) exists already; this benchmark brings up and tears down "
                           "its own lab and will not take over someone else's: run `lbctl lab down` first")
    busy = other_lab_users()
    if busy:
        raise HarnessError("another lab user seems to be running (the lab is a singleton: fixed namespace names and "
                           f"state dir), refusing to start: {'; '.join(busy)[:300]}")
    if not 1 <= args.window <= 90:
        raise HarnessError("--window must be 1..90 (slot k uses sender IP 198.18.0.160+k)")
    only = set(args.only.split(",")) if args.only else {"arp", "blast", "failover", "footprint"}
    log("lab up")
    state["owns_lab"] = True  # from here on, whatever happens, the lab is ours to tear down
    topo, warnings = lifecycle.up(nodes=3, say=lambda m: log(f"  {m}"), timing=args.timing,
                                  restart_hold=0)
    if args.timing:
        log(f"speakers' heartbeat timing preset: {args.timing}")
    if warnings or not all(realspeakers.pid(h.name) for h in topo.node_hosts):
        raise HarnessError(f"lab has no speakers: {warnings}")
    b = Bench(topo, args, report)
    kernel_ip = args.kernel_ip or topo.node_hosts[0].ip4
    if only & {"arp", "blast"}:
        lb_ip = b.service("bench-arp")
        owner = b.settle(lb_ip)
        log(f"Service bench-arp: {lb_ip}, answered by {owner}; kernel baseline {kernel_ip}")
        if "arp" in only:
            b.arp_rtt(lb_ip, kernel_ip, owner)
        if "blast" in only:
            b.arp_blast(lb_ip, kernel_ip)
    if "failover" in only:
        for mode in ("kill", "link"):
            ip = b.service(f"bench-fo-{mode}")
            b.failover(mode, ip)
    if "footprint" in only:
        b.footprint(args.services)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.lab_bench", description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated subset of arp,blast,failover,footprint")
    p.add_argument("--rtt-count", type=int, default=1000)
    p.add_argument("--blast-s", type=float, default=10.0)
    p.add_argument("--window", type=int, default=64, help="outstanding ARP requests in the blast (at most 90)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--failover-window", type=float, default=4.0, help="seconds of probing after each break")
    p.add_argument("--slow-window", type=float, default=60.0,
                   help="how long to keep checking for a late recovery when a trial missed the window")
    p.add_argument("--services", type=int, default=500)
    p.add_argument("--footprint-timeout", type=float, default=300.0)
    p.add_argument("--settle-s", type=float, default=5.0)
    p.add_argument("--idle-s", type=float, default=10.0)
    p.add_argument("--kernel-ip", help="node address for the kernel baseline (default: node1's)")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards (for debugging)")
    p.add_argument("--timing", choices=sorted(TIMING_PRESETS), help="speakers' heartbeat timing preset")
    args = p.parse_args(argv)
    state = {"owns_lab": False}

    def down() -> bool:
        if not state["owns_lab"] or args.keep:
            return True
        log("lab down")
        try:
            lifecycle.down(say=lambda m: log(f"  {m}"))
        except Exception as exc:  # noqa: BLE001 - report, and make the run fail
            log(f"lab down failed: {exc}")
            return False
        return True
    return run_reported(lambda report: run(args, report, state), down)

if __name__ == "__main__":
    sys.exit(main())
