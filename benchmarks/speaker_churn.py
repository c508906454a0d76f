"""One real speaker with its real API watches under API churn for Services it does not own (issue 12, acc. 4).

    python -m benchmarks.speaker_churn [--services 10000] [--rate 100] [--duration 30] [--timing fast]

Needs root. Builds its own namespaces (named $LBCTL_LAB_PREFIX + churn-*, never the lab's) on one bridge:

    br (br0) -- spk  198.18.0.2/16  the real `python -m lbctl.speaker` (Kubernetes mode, the chart's ServiceAccount)
             -- cli  198.18.0.3/16  etcd + kube-apiserver (lbctl/lab/controlplane.py) on 198.18.0.3, and this
                                    benchmark itself (re-run inside with --inside): the API client making the
                                    churn, ARP probes (benchmarks.lab_arp rtt), beacon capture, /metrics scrapes

The cluster: two IPPools, `mine` (198.18.64.0/24, any node) with --mine Services the speaker announces, and
`others` (198.18.128.0/17, nodeSelector bench-role=other: Nodes that never beacon) with the rest, up to
--services Services, each with one EndpointSlice. The speaker starts once all are in place.

Then, in one run, two phases of --duration seconds each against the same speaker:
  idle   no API writes at all
  churn  --rate updates per second, alternately a Service label change and an EndpointSlice readiness flip,
         each on a Service of the `others` pool (round robin): every one reaches the speaker's watches
and per phase: the speaker's CPU (utime+stime of every thread, /proc/PID/stat) as % of one core; event-loop
lag (p99 from lbctl_speaker_loop_lag_seconds, the upper bound of its bucket); heartbeat send jitter (the
speaker's beacons captured in cli with kernel receive timestamps, SO_TIMESTAMPNS: |gap - interval|); ARP
RTT (lab_arp rtt to the `mine` addresses). Targets: jitter p99 <= 20 ms, ARP RTT p99 <= 1.5x idle's, CPU
<= 10 % of a core. Interleaved with the speaker's probes, the same client times two references on the same
bed in the same moments: a minimal Python responder (lab_arp respond, its own process in spk, BASE_IP) and
the kernel (spk's own SPK_IP): what the churn costs any user-space answer on this machine (the API server,
etcd and the churn client share its cores) against what it costs the speaker's. --pin gives the responders
CPU 0, where the prober runs too (so the whole ARP path, softirqs included, is there), and the API side (etcd,
kube-apiserver, the churn client) the other CPUs (taskset), as when the API server runs on other nodes. Prints FIGURE lines (tests/figures.py) and a table. Reports, does not assert.
Everything it started (processes by PID, namespaces by name) is removed in `finally`, also on ^C.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.controller_bench import bounded, pct
from lbctl.lab.controlplane import RELEASE, SA_NS, ControlPlane
from lbctl.core.heartbeat import TIMING_PRESETS
from lbctl.kube import config
from lbctl.kube.client import ApiError, Kube
from lbctl.kube.resources import apply
from lbctl.tables import table
from tests.figures import figure

from .speaker_scale import TICK, Child, build_namespaces, clean_namespaces, cpu_ticks, metric

ROOT = Path(__file__).resolve().parents[1]
PREFIX = os.environ.get("LBCTL_LAB_PREFIX", "lbctl-") + "churn-"
BR_NS, SPK_NS, CLI_NS = f"{PREFIX}br", f"{PREFIX}spk", f"{PREFIX}cli"
NAMESPACES = (BR_NS, SPK_NS, CLI_NS)
SPK_IP, CLI_IP = "198.18.0.2", "198.18.0.3"  # on speaker_scale's /16
SPK_MAC, CLI_MAC = "02:18:5e:00:01:02", "02:18:5e:00:01:03"
BASE_IP = "198.18.0.4"  # the baseline responder's address: on no interface, so only it answers
MINE_NET, OTHERS_NET = "198.18.64.0/24", "198.18.128.0/17"
NODE, OTHER_NODES = "churn-speaker", ("churn-other-1", "churn-other-2", "churn-other-3")
NS = "churn"
HB_PORT, HTTP_PORT = 7946, 7473
CONCURRENCY = 32
ARP_GAP_MS = 5.0
ARP_TARGETS = 4
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python 3.11 lacks the name
READY_TIMEOUT = 300.0


# --- the cluster (inside cli) -----------------------------------------------------------------------

def addresses(n: int, net: str) -> list[str]:
    first = ipaddress.ip_network(net).network_address + 1
    return [str(first + i) for i in range(n)]


def pools() -> list[dict[str, Any]]:
    def pool(name: str, net: str, layer2: dict[str, Any] | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"addresses": [net]}
        if layer2:
            spec["layer2"] = layer2
        return {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": name}, "spec": spec}
    return [pool("churn-mine", MINE_NET),
            pool("churn-others", OTHERS_NET, {"nodeSelector": {"matchLabels": {"bench-role": "other"}}})]


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]}}


def endpoint_slice(version: str, name: str, ready: bool, n: int) -> dict[str, Any]:
    node = OTHER_NODES[n % len(OTHER_NODES)]
    ep: dict[str, Any] = {"addresses": [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"],
                          "conditions": {"ready": ready}}
    if version == "v1":
        ep["nodeName"] = node
    else:
        ep["topology"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": f"discovery.k8s.io/{version}", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-x", "namespace": NS, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": [ep], "ports": [{"name": "", "port": 80, "protocol": "TCP"}]}


async def slices_version(kube: Kube) -> str:
    try:
        await kube.get("/apis/discovery.k8s.io/v1")
        return "v1"
    except ApiError as exc:
        if exc.status == 404:
            return "v1beta1"  # the test API server is 1.20
        raise


async def populate(kube: Kube, names: list[str], ips: list[str], version: str) -> None:
    await apply(kube, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    await apply(kube, pools())
    for node in (NODE, *OTHER_NODES):
        labels = {} if node == NODE else {"bench-role": "other"}
        await apply(kube, [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": labels}}])
    svcs = f"/api/v1/namespaces/{NS}/services"

    async def one(i: int) -> None:
        await kube.create(svcs, service(names[i]))
        # No controller runs: the status is written as the controller would have.
        await kube.patch(f"{svcs}/{names[i]}/status", {"status": {"loadBalancer": {"ingress": [{"ip": ips[i]}]}}})
        await kube.create(f"/apis/discovery.k8s.io/{version}/namespaces/{NS}/endpointslices",
                          endpoint_slice(version, names[i], True, i))

    t0 = time.monotonic()
    await bounded(len(names), one)
    print(f"setup     {len(names)} Services with an address and an EndpointSlice in {time.monotonic() - t0:.0f} s",
          flush=True)


# --- measurements -------------------------------------------------------------------------------

class BeaconClock(threading.Thread):
    """Kernel receive times of the speaker's beacons (broadcast to the segment), read on a thread."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("", HB_PORT))
        self.sock.settimeout(0.2)
        self.times: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                _, anc, _, addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            for level, kind, data in anc:
                if addr[0] == SPK_IP and level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", data[:16])
                    self.times.append(sec + nsec / 1e9)

    def take(self) -> list[float]:
        times, self.times = self.times, []
        return times

    def close(self) -> None:
        self.stopped.set()
        self.join(2)
        self.sock.close()


def lag_p99(before: str, after: str) -> tuple[float | None, int]:
    """(upper bound of the bucket holding the 99th percentile, samples) of the loop-lag histogram between two
    scrapes; None when the speaker has no such histogram."""
    name = "lbctl_speaker_loop_lag_seconds_bucket"

    def buckets(text: str) -> dict[float, float]:
        out = {}
        for line in text.splitlines():
            if line.startswith(name + "{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[float(le)] = float(line.rsplit(" ", 1)[1])
        return out
    a, b = buckets(before), buckets(after)
    if not b:
        return None, 0
    cum = sorted((le, b[le] - a.get(le, 0.0)) for le in b)
    total = cum[-1][1]
    return next((le for le, c in cum if c >= 0.99 * total), None) if total else None, int(total)


def scrape() -> str:
    with urllib.request.urlopen(f"http://{SPK_IP}:{HTTP_PORT}/metrics", timeout=15) as r:
        return r.read().decode()


class Phase:
    def __init__(self, label: str) -> None:
        self.label = label
        self.cpu = 0.0
        self.lag99: float | None = None
        self.lag_samples = 0
        self.jitter: list[float] = []
        self.rtt: list[float] = []
        self.refs: dict[str, list[float]] = {"baseline": [], "kernel": []}  # same probes, other responders
        self.lost = 0
        self.updates = 0
        self.update_p99 = 0.0


async def churn(kube: Kube, names: list[str], version: str, rate: int, seconds: float, phase: Phase) -> None:
    """`rate` updates per second, paced, alternately a Service label and an EndpointSlice readiness flip."""
    svcs = f"/api/v1/namespaces/{NS}/services"
    slices = f"/apis/discovery.k8s.io/{version}/namespaces/{NS}/endpointslices"
    sem = asyncio.Semaphore(CONCURRENCY)
    lat: list[float] = []
    tasks: list[asyncio.Task[None]] = []

    async def update(i: int) -> None:
        n = (i // 2) % len(names)
        async with sem:
            t0 = time.monotonic()
            if i % 2 == 0:
                await kube.patch(f"{svcs}/{names[n]}", {"metadata": {"labels": {"churn": str(i)}}})
            else:
                ready = (i // 2 // len(names)) % 2 == 1  # flips on each pass over the Services
                await kube.patch(f"{slices}/{names[n]}-x", {"endpoints": endpoint_slice(version, names[n], ready,
                                                                                        n)["endpoints"]})
            lat.append(time.monotonic() - t0)

    start = time.monotonic()
    i = 0
    while (now := time.monotonic()) < start + seconds:
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        tasks.append(asyncio.create_task(update(i)))
        i += 1
    await asyncio.gather(*tasks)
    phase.updates = i
    phase.update_p99 = pct(lat, 0.99) * 1000 if lat else 0.0


async def measure(kube: Kube, spk: Child, clock: BeaconClock, label: str, seconds: float, interval: float,
                  targets: list[str], churn_args: tuple[list[str], str, int] | None,
                  py_spy: str | None = None, py_spy_out: str = "", pin: tuple[str, ...] = ()) -> Phase:
    phase = Phase(label)
    count = max(10, int(seconds * 1000 / ARP_GAP_MS / (len(targets) + 2)))
    arp = await asyncio.create_subprocess_exec(
        *pin, sys.executable, "-m", "benchmarks.lab_arp", "rtt", "--iface", "eth0", "--mac", CLI_MAC, "--ip", CLI_IP,
        "--targets", ",".join([*targets, BASE_IP, SPK_IP]), "--count", str(count), "--warmup", "5", "--gap-ms", str(ARP_GAP_MS),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    before = await asyncio.to_thread(scrape)
    clock.take()
    t0, c0 = time.monotonic(), cpu_ticks(spk.pid)
    spy = None
    if py_spy:  # where the speaker spends its time in this phase (a folded-stacks file, for flame graphs)
        spy = await asyncio.create_subprocess_exec(py_spy, "record", "--pid", str(spk.pid), "--duration",
                                                   str(int(seconds)), "--format", "raw", "--threads", "--nonblocking",
                                                   "-o", f"{py_spy_out}-{label}.txt",
                                                   stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    if churn_args:
        names, version, rate = churn_args
        await churn(kube, names, version, rate, seconds, phase)
    else:
        await asyncio.sleep(seconds)
    wall, ticks = time.monotonic() - t0, cpu_ticks(spk.pid) - c0
    beacons = clock.take()
    after = await asyncio.to_thread(scrape)
    out, _ = await arp.communicate()
    if spy:
        await spy.wait()
    phase.cpu = 100 * ticks / TICK / wall
    phase.lag99, phase.lag_samples = lag_p99(before, after)
    phase.jitter = [abs(b - a - interval) for a, b in zip(beacons, beacons[1:])]
    res = json.loads(out)
    per_target = [[ns / 1e6 for ns in per] for per in res["rtt_ns"]]
    phase.rtt = [ms for per in per_target[:-2] for ms in per]
    phase.refs = {"baseline": per_target[-2], "kernel": per_target[-1]}
    phase.lost = sum(res["lost"][:-2])
    return phase


def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report(idle: Phase, busy: Phase, rate: int) -> None:
    rows = []
    for p in (idle, busy):
        rows.append([p.label, str(p.updates), fmt(p.cpu, 1),
                     fmt(None if p.lag99 is None else p.lag99 * 1000, 0),
                     fmt(pct(p.jitter, .99) * 1000 if p.jitter else None, 1), str(len(p.jitter)),
                     fmt(pct(p.rtt, .5) if p.rtt else None, 3), fmt(pct(p.rtt, .99) if p.rtt else None, 3),
                     str(p.lost)])
        tag = f"speaker_churn_{p.label}"
        figure(f"{tag}_cpu", p.cpu, "%")
        if p.lag99 is not None:
            figure(f"{tag}_loop_lag_p99", p.lag99 * 1000, "ms")
        if p.jitter:
            figure(f"{tag}_heartbeat_jitter_p99", pct(p.jitter, .99) * 1000, "ms")
        if p.rtt:
            figure(f"{tag}_arp_rtt_p99", pct(p.rtt, .99), "ms")
    print(table(["phase", "updates", "CPU %", "loop lag p99 ms (<=)", "beacon jitter p99 ms", "gaps",
                 "ARP RTT p50 ms", "ARP RTT p99 ms", "ARP lost"], rows))
    ratio = pct(busy.rtt, .99) / pct(idle.rtt, .99) if busy.rtt and idle.rtt else None
    if ratio is not None:
        figure("speaker_churn_arp_rtt_p99_ratio", ratio, "x")
    refs = []
    for who in ("baseline", "kernel"):
        a, b = idle.refs[who], busy.refs[who]
        if a and b:
            refs.append([who, fmt(pct(a, .5), 3), fmt(pct(a, .99), 3), fmt(pct(b, .5), 3), fmt(pct(b, .99), 3),
                         fmt(pct(b, .99) / pct(a, .99))])
            figure(f"speaker_churn_{who}_arp_rtt_p99_ratio", pct(b, .99) / pct(a, .99), "x")
    if busy.rtt and idle.rtt:
        refs.insert(0, ["speaker", fmt(pct(idle.rtt, .5), 3), fmt(pct(idle.rtt, .99), 3), fmt(pct(busy.rtt, .5), 3),
                        fmt(pct(busy.rtt, .99), 3), fmt(ratio)])
    print(table(["ARP responder", "idle p50 ms", "idle p99 ms", "churn p50 ms", "churn p99 ms", "p99 churn/idle"],
                refs))
    if busy.rtt and busy.refs["baseline"]:
        figure("speaker_churn_arp_rtt_p99_vs_baseline", pct(busy.rtt, .99) / pct(busy.refs["baseline"], .99), "x")
    print(f"churn     {busy.updates} updates at {rate}/s asked (API write p99 {busy.update_p99:.1f} ms)")
    jit = pct(busy.jitter, .99) * 1000 if busy.jitter else None
    print(f"targets   under churn: heartbeat jitter p99 {fmt(jit, 1)} ms (<= 20), ARP RTT p99 "
          f"{fmt(ratio)}x idle (<= 1.5), CPU {busy.cpu:.1f} % of a core (<= 10)")


async def inside_async(cp: ControlPlane, args: argparse.Namespace, workdir: Path) -> None:
    cp.install_chart()  # CRDs, and the ServiceAccount and RBAC the speaker runs under
    interval = TIMING_PRESETS[args.timing][0]
    names = [f"mine-{i}" for i in range(args.mine)] + [f"other-{i}" for i in range(args.services - args.mine)]
    ips = addresses(args.mine, MINE_NET) + addresses(args.services - args.mine, OTHERS_NET)
    async with Kube(config.load(str(cp.kubeconfig())), concurrency=CONCURRENCY) as kube:
        version = await slices_version(kube)
        await populate(kube, names, ips, version)
        key = workdir / "key"
        key.write_text(os.urandom(32).hex())
        kubeconfig = cp.service_account_kubeconfig(SA_NS, f"{RELEASE}-speaker")
        spk = Child("speaker", SPK_NS, [*pinned(args), sys.executable, "-m", "lbctl.speaker", "--node-name", NODE, "--kubeconfig",
                                        str(kubeconfig), "--lease-namespace", SA_NS, "--heartbeat-key-file", str(key),
                                        "--timing", args.timing, "--http-host", "0.0.0.0", "--http-port",
                                        str(HTTP_PORT), "--log-format", "json"],
                    dict(os.environ, PYTHONUNBUFFERED="1"), logs=True, on_event=lambda _t, e: False)
        clock = BeaconClock()
        clock.start()
        base: Child | None = None
        try:
            t0 = time.monotonic()
            while True:  # ready, and announcing every address of its own pool
                if not spk.alive():
                    raise RuntimeError("speaker exited: " + " | ".join(spk.tail[-8:]))
                try:
                    text = await asyncio.to_thread(scrape)
                except OSError:
                    text = ""
                if metric(text, "lbctl_speaker_announced_ips") == args.mine:
                    break
                if time.monotonic() - t0 > READY_TIMEOUT:
                    raise RuntimeError(f"speaker not announcing {args.mine} addresses after {READY_TIMEOUT:.0f} s")
                await asyncio.sleep(0.5)
            print(f"speaker   announcing its {args.mine} addresses {time.monotonic() - t0:.1f} s after its start "
                  f"(watching {args.services} Services and EndpointSlices)", flush=True)
            await asyncio.sleep(2)
            targets = ips[:min(ARP_TARGETS, args.mine)]
            spy = (args.py_spy, args.py_spy_out)
            base = Child("baseline", SPK_NS, [*pinned(args), sys.executable, "-m", "benchmarks.lab_arp", "respond", "--iface",
                                              "eth0", "--mac", SPK_MAC, "--ip", BASE_IP], dict(os.environ))
            base.next_event("ready", 0, 20)
            pin = tuple(pinned(args))
            idle = await measure(kube, spk, clock, "idle", args.duration, interval, targets, None, *spy, pin)
            busy = await measure(kube, spk, clock, "churn", args.duration, interval, targets,
                                 (names[args.mine:], version, args.rate), *spy, pin)
            if not spk.alive():
                raise RuntimeError("speaker exited during the run: " + " | ".join(spk.tail[-8:]))
            report(idle, busy, args.rate)
        finally:
            clock.close()
            spk.stop()
            if base is not None:
                base.stop(grace=5)


def pinned(args: argparse.Namespace) -> list[str]:
    """The ARP path's command prefix (speaker, baseline responder, prober): their own CPU when --pin."""
    return ["taskset", "-c", str(args.responder_cpu)] if args.responder_cpu is not None else []


def inside(args: argparse.Namespace) -> None:
    cp = ControlPlane(host=CLI_IP)  # started from inside cli: etcd and the API server live there
    with tempfile.TemporaryDirectory(prefix="lbctl-churn-") as d:
        try:
            cp.start()
            asyncio.run(inside_async(cp, args, Path(d)))
        finally:
            cp.cleanup()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speaker_churn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=10_000, help="Services (and EndpointSlices) in the cluster")
    p.add_argument("--mine", type=int, default=20, help="of which in the pool the speaker announces")
    p.add_argument("--rate", type=int, default=100, help="Service/EndpointSlice updates per second in the churn")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    p.add_argument("--timing", choices=list(TIMING_PRESETS), default="fast",
                   help="the speaker's heartbeat preset (fast: 0.1 s, many beacons to time)")
    p.add_argument("--py-spy", metavar="PATH", help="py-spy binary: record the speaker in each phase")
    p.add_argument("--py-spy-out", metavar="PREFIX", default="speaker-churn-profile",
                   help="py-spy's folded stacks go to PREFIX-idle.txt and PREFIX-churn.txt")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=False,
                   help="give the ARP path (speaker, baseline responder, prober) a CPU of its own and the API side "
                        "(etcd, kube-apiserver, churn client) the others, as when the API server runs on other "
                        "nodes; --no-pin shares every CPU (a control-plane node)")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)  # the part run in the cli namespace
    p.add_argument("--responder-cpu", type=int, help=argparse.SUPPRESS)  # the part run in the cli namespace
    args = p.parse_args(argv)
    if not 0 < args.mine < args.services:
        p.error("need 0 < --mine < --services")
    if args.inside:
        inside(args)
        return
    if os.geteuid() != 0:
        raise SystemExit("speaker_churn needs root (network namespaces, raw sockets)")
    hosts = ((SPK_NS, "v-spk", SPK_IP, SPK_MAC), (CLI_NS, "v-cli", CLI_IP, CLI_MAC))
    clean_namespaces(NAMESPACES)  # a crashed earlier run's leftovers: only ever our own names
    try:
        build_namespaces(BR_NS, hosts)
        cpus = sorted(os.sched_getaffinity(0))
        pin: list[str] = []
        if args.pin and len(cpus) >= 2:  # the responders on the first CPU, the API side on the others
            pin = ["taskset", "-c", ",".join(map(str, cpus[1:]))]
            print(f"pinned    speaker, baseline responder and ARP prober on CPU {cpus[0]}; etcd, kube-apiserver "
                  f"and the churn client on CPU {','.join(map(str, cpus[1:]))}", flush=True)
        rc = subprocess.run([*pin, "ip", "netns", "exec", CLI_NS, sys.executable, "-m", "benchmarks.speaker_churn",
                             "--inside", *(argv if argv is not None else sys.argv[1:]),
                             *(["--responder-cpu", str(cpus[0])] if pin else [])], cwd=ROOT).returncode
        if rc:
            raise SystemExit(rc)
    finally:
        clean_namespaces(NAMESPACES)


if __name__ == "__main__":
    main()
