"""BGP at scale on the lab router (issue 14): 1,000 dual-stack Services x 3 nodes x 2 peers.

    sudo .venv/bin/python -m benchmarks.bgp_scale [--services 1000] [--trials 100] [--idle-s 10] [--keep]

Brings up its own real-cluster lab in BGP mode (FRR router, each node's speaker driving its BIRD sidecar, peers
`router` (IPv4) and `router-v6` (IPv6)) and adds a pool announced by BGP only: 198.18.8.0/21 and
2001:db8:8::/117 (off the lab's hosts 198.18.0.0/24, client 198.18.64.0/24 and pods 198.18.128.0/17). Every
Service is PreferDualStack, externalTrafficPolicy Cluster, in that pool: one IPv4 /32 to the IPv4 peer and one
IPv6 /128 to the IPv6 peer from each of the 3 nodes, so the router sees 2 x N prefixes, each with 3 next hops
(ECMP). The Services carry `service.kubernetes.io/service-proxy-name`, so kube-proxy leaves them alone: on this
2-core machine its iptables rewrites for 2,000 addresses on 3 nodes would take the CPU the figures are about (a
real cluster's nodes do that on their own CPUs). Routes are read from the router's kernel table.

1. Baseline (the floor of the daemon pair): a plain BIRD per node (the same BIRD 2 as the sidecar, in the
   node's namespace, from a second address on its eth0) with a static config of the same number of prefixes
   (198.18.16.0/21 and 2001:db8:16::/117), peering with the same router: time from starting the three BIRDs to
   every prefix on the router with 3 next hops; their RSS and idle CPU.
2. Bulk: N Services created in batches of 100; time to every prefix with 3 next hops (information).
3. Speakers starting with the Services present, two ways: (a) the 3 speaker processes SIGKILLed, the kubelet
   restarts them (each sidecar withdraws everything the moment its speaker's connection closes, and BIRD's
   sessions stay up); (b) the 3 speaker pods deleted, the DaemonSet makes new ones (new BIRDs, new sessions).
   Timed from the first (and from the last) new speaker process's start (/proc/PID/stat, 10 ms ticks) to the
   last prefix with 3 next hops on the router. Target <= 5 s.
4. One Service created -> its IPv4 route on the router with 3 next hops, --trials times (an address requested
   with lbctl.io/loadBalancerIPs, so the router can be watched from before the create; the clock starts just
   before the POST, in a creator process in the control plane's namespace). Target p99 <= 300 ms.
5. Footprint: speaker, sidecar wrapper and BIRD RSS (/proc/PID/status VmRSS) and idle CPU over --idle-s, before
   the Services and with them; against the baseline BIRD's.

The exit status is non-zero only when the harness failed, never for a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bgp_failover import own_lab, pod_pids, route_changes
from benchmarks.lab_bench import HarnessError, Report, run_reported, cpu_seconds, log, pct
from lbctl.lab import cluster, processes, realcluster, realspeakers, router
from lbctl.lab.api import LabApi, wait_for
from lbctl.lab.topology import CP_NS, NET4, NET6, ROUTER_IP4, ROUTER_IP6, Topology

NS = "default"
SERVICES = f"/api/v1/namespaces/{NS}/services"
IPPOOLS = "/apis/lbctl.io/v1alpha1/ippools"
PODS = f"/api/v1/namespaces/{cluster.NAMESPACE}/pods"
POOL = "bench-bgp-scale"
POOL4, POOL6 = ipaddress.ip_network("198.18.8.0/21"), ipaddress.ip_network("2001:db8:8::/117")
BASE4, BASE6 = ipaddress.ip_network("198.18.16.0/21"), ipaddress.ip_network("2001:db8:16::/117")
TRIAL4 = ipaddress.ip_network("198.18.15.0/24")  # the single-Service trials' addresses: the pool's last /24
BASE_HOST = 200  # the baseline BIRD on node k speaks from NET4.(200+k) / NET6:(200+k)
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def full_routes() -> tuple[dict[str, int], dict[str, int]]:
    """The router's IPv4 and IPv6 routes: destination -> next hop count."""
    return ({d: len(h) for d, h in router.routes(4).items()}, {d: len(h) for d, h in router.routes(6).items()})


def count_in(routes: dict[str, int], net: ipaddress._BaseNetwork, hops: int | None = 3) -> int:
    return sum(1 for d, n in routes.items()
               if (hops is None or n == hops) and ipaddress.ip_network(d).subnet_of(net))  # type: ignore[arg-type]


def wait_all(nets: tuple[Any, Any], want: int, t0: float, timeout: float) -> tuple[float, int]:
    """Seconds from t0 until both families of `nets` have `want` prefixes with 3 next hops on the router, and
    the fewest such prefixes seen on the way (did the routes really go?)."""
    fewest = 2 * want
    deadline = t0 + timeout
    while True:
        r4, r6 = full_routes()
        t = time.monotonic()
        n = count_in(r4, nets[0]) + count_in(r6, nets[1])
        fewest = min(fewest, n)
        if n == 2 * want:
            return t - t0, fewest
        if t > deadline:
            raise TimeoutError(f"{n} of {2 * want} prefixes with 3 next hops after {timeout:.0f} s")
        time.sleep(0.01)


def started_at(pid: int) -> float:
    """A process's start on the time.monotonic() clock (its start in boot-time ticks, /proc/PID/stat)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.monotonic() - age


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def service(name: str, ips: list[str] | None = None, dual: bool = True) -> dict[str, Any]:
    ann = {"lbctl.io/address-pool": POOL}
    if ips:
        ann["lbctl.io/loadBalancerIPs"] = ",".join(ips)
    spec: dict[str, Any] = {"type": "LoadBalancer", "selector": {"app": realcluster.BACKEND},
                            "allocateLoadBalancerNodePorts": False,
                            "ports": [{"name": "http", "port": 80, "targetPort": realcluster.BACKEND_PORT,
                                       "protocol": "TCP"}]}
    if dual:
        spec["ipFamilyPolicy"] = "PreferDualStack"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "annotations": ann,
                         "labels": {"service.kubernetes.io/service-proxy-name": "none"}},
            "spec": spec}


# --- the baseline: plain BIRD with a static config --------------------------------------------------


def baseline_conf(k: int, count: int) -> str:
    ip4, ip6 = f"{NET4}.{BASE_HOST + k}", f"{NET6}:{BASE_HOST + k}"
    r4 = "\n".join(f"  route {BASE4[i]}/32 blackhole;" for i in range(count))
    r6 = "\n".join(f"  route {BASE6[i]}/128 blackhole;" for i in range(count))
    return (f"router id {ip4};\nprotocol device {{}}\n"
            f"protocol static s4 {{\n  ipv4;\n{r4}\n}}\nprotocol static s6 {{\n  ipv6;\n{r6}\n}}\n"
            f"protocol bgp r4 {{\n  local {ip4} as {router.NODE_ASN};\n  neighbor {ROUTER_IP4} as {router.ROUTER_ASN};\n"
            "  connect delay time 1;\n  ipv4 { import none; export all; };\n}\n"
            f"protocol bgp r6 {{\n  local {ip6} as {router.NODE_ASN};\n  neighbor {ROUTER_IP6} as {router.ROUTER_ASN};\n"
            "  connect delay time 1;\n  ipv6 { import none; export all; };\n}\n")


class BaselineBirds:
    """One plain BIRD per node namespace; stopped, and their addresses removed, on the way out."""

    def __init__(self, topo: Topology, count: int) -> None:
        self.topo, self.count = topo, count
        self.dir = Path(tempfile.mkdtemp(prefix="bgp-scale-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.addrs: list[tuple[str, str]] = []

    def __enter__(self) -> BaselineBirds:
        return self

    def start(self) -> float:
        hosts = self.topo.node_hosts
        for k, h in enumerate(hosts):
            for addr in (f"{NET4}.{BASE_HOST + k}/24", f"{NET6}:{BASE_HOST + k}/64"):
                subprocess.run(["ip", "-n", h.netns, "addr", "add", addr, "dev", "eth0", "nodad"] if ":" in addr
                               else ["ip", "-n", h.netns, "addr", "add", addr, "dev", "eth0"], check=True,
                               capture_output=True)
                self.addrs.append((h.netns, addr))
            (self.dir / f"{k}.conf").write_text(baseline_conf(k, self.count))
        t0 = time.monotonic()
        for k, h in enumerate(hosts):
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", h.netns, "bird", "-f", "-c", str(self.dir / f"{k}.conf"),
                 "-s", str(self.dir / f"{k}.ctl")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        return t0

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]  # ip netns exec execs bird: the same process

    def __exit__(self, *_: Any) -> None:
        for p in self.procs:
            processes.terminate(p, 5)
        for netns, addr in self.addrs:
            subprocess.run(["ip", "-n", netns, "addr", "del", addr, "dev", "eth0"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- creating one Service with the clock started inside the control plane's namespace ----------------


async def _creator(kubeconfig: str) -> None:
    from lbctl.kube import config  # noqa: PLC0415 - only the creator process needs the client
    from lbctl.kube.client import Kube  # noqa: PLC0415
    loop = asyncio.get_running_loop()
    async with Kube(config.from_kubeconfig(Path(kubeconfig)), user_agent="lbctl-bench") as kube:
        await kube.send("GET", SERVICES, params={"limit": 1})  # the connection up before the first timing
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            body = json.loads(line)
            t0 = time.monotonic()
            status, _ = await kube.send("POST", SERVICES, body=body)
            print(json.dumps({"t0": t0, "t1": time.monotonic(), "status": status}), flush=True)
            t_ip = None
            while status < 300 and time.monotonic() - t0 < 30:  # the controller's part: the address in status
                got, text = await kube.send("GET", f"{SERVICES}/{body['metadata']['name']}")
                if got == 200 and ((json.loads(text).get("status") or {}).get("loadBalancer") or {}).get("ingress"):
                    t_ip = time.monotonic()
                    break
                await asyncio.sleep(0.005)
            print(json.dumps({"t_ip": t_ip}), flush=True)


class Creator:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", CP_NS, sys.executable, "-m", "benchmarks.bgp_scale",
                                      "--creator", str(cluster.ADMIN_KUBECONFIG)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=HERE)

    def create(self, body: dict[str, Any]) -> tuple[float, float]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(body) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise HarnessError("the creator process ended")
        out = json.loads(line)
        if out["status"] >= 300:
            raise HarnessError(f"creating {body['metadata']['name']}: HTTP {out['status']}")
        return out["t0"], out["t1"]

    def addressed(self) -> float | None:
        """When the last created Service had its address in status (the creator polls it), None: not in 30 s."""
        assert self.proc.stdout
        line = self.proc.stdout.readline()
        if not line:
            raise HarnessError("the creator process ended")
        return json.loads(line)["t_ip"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --- the speaker's own work per wake, without the lab ---------------------------------------------


def render_cost_ms(services: int, repeat: int = 5) -> float:
    """Median ms of one BgpSpeaker.desired() (plan, render of bird.conf and withdraw.conf) plus the status's
    advertised list, for `services` dual-stack addresses and the lab's two peers with BFD: what the speaker
    redoes on every informer event that wakes it (speaker/bgp.py), on this machine, nothing else running."""
    from lbctl.core.announce import IpIntent  # noqa: PLC0415 - the pure part only
    from lbctl.core.bgp_announce import advertised  # noqa: PLC0415
    from lbctl.core.election import NodeInfo  # noqa: PLC0415
    from lbctl.core.pools import parse_pool  # noqa: PLC0415
    from speaker.bgp import BgpSpeaker  # noqa: PLC0415
    from speaker.metrics import Metrics  # noqa: PLC0415
    pool = parse_pool(POOL, {"addresses": [str(POOL4), str(POOL6)], "layer2": {"enabled": False},
                             "bgp": {"advertisements": [{"peers": ["router", "router-v6"]}]}}, "")
    node = NodeInfo("node1", {}, addresses=(f"{NET6}:21", f"{NET4}.21"))
    intents = {ip: IpIntent(ip, pool=POOL) for i in range(services) for ip in (str(POOL4[i + 1]), str(POOL6[i + 1]))}
    sp = BgpSpeaker("node1", "/nonexistent", lambda: (intents, {POOL: pool}, {"node1": node}), Metrics(),
                    lambda: None)
    sp.take("BGPPeer", "SYNC", [{"metadata": {"name": name, "uid": name}, "spec": {
        "myASN": router.NODE_ASN, "peerASN": router.ROUTER_ASN, "peerAddress": address, "bfdProfile": "lab"}}
        for name, address in (("router", ROUTER_IP4), ("router-v6", ROUTER_IP6))])
    sp.take("BFDProfile", "SYNC", [{"metadata": {"name": "lab"}, "spec": {"receiveInterval": 100}}])
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        got, anns, _, _ = sp.desired()
        advertised(got.config, anns)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


# --- the benchmark ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, topo: Topology, args: argparse.Namespace, report: Report) -> None:
        self.topo, self.args, self.report = topo, args, report
        self.api = LabApi()
        self.nodes = [h.name for h in topo.node_hosts]
        self.phases: tuple[list[float], list[float], list[float]] = ([], [], [])

    def footprint(self, when: str) -> dict[str, float]:
        pids = {n: pod_pids(n) for n in self.nodes}
        for n, p in pids.items():
            if set(p) != {"speaker", "bgpd", "bird"}:
                raise HarnessError(f"{n}'s speaker pod: found {p}, want speaker, bgpd and bird")
        flat = {(n, w): pid for n, p in pids.items() for w, pid in p.items()}
        c0, t0 = {k: cpu_seconds(p) for k, p in flat.items()}, time.monotonic()
        time.sleep(self.args.idle_s)
        c1, t1 = {k: cpu_seconds(p) for k, p in flat.items()}, time.monotonic()
        cpu = {k: 100 * (c1[k] - c0[k]) / (t1 - t0) for k in flat}
        configures = max(sum(1 for t, _, _ in rows if t0 <= t <= t1) for rows in self.configure_log().values())
        rss = {k: rss_kib(p) / 1024 for k, p in flat.items()}
        out = {}
        for w in ("speaker", "bgpd", "bird"):
            out[f"{w}_rss"] = max(rss[(n, w)] for n in self.nodes)
            out[f"{w}_cpu"] = max(cpu[(n, w)] for n in self.nodes)
        out["pod_rss"] = max(sum(rss[(n, w)] for w in ("speaker", "bgpd", "bird")) for n in self.nodes)
        out["pod_cpu"] = max(sum(cpu[(n, w)] for w in ("speaker", "bgpd", "bird")) for n in self.nodes)
        log(f"  footprint {when} (max over nodes): speaker {out['speaker_rss']:.1f} MiB {out['speaker_cpu']:.2f} %, "
            f"wrapper {out['bgpd_rss']:.1f} MiB {out['bgpd_cpu']:.2f} %, BIRD {out['bird_rss']:.1f} MiB "
            f"{out['bird_cpu']:.2f} %; pod {out['pod_rss']:.1f} MiB {out['pod_cpu']:.2f} % over {self.args.idle_s:g} s; "
            f"BIRD configures in the window (max over nodes): {configures}")
        out["configures"] = configures
        return out

    def baseline(self) -> tuple[float, float, float]:
        n = self.args.services
        log(f"baseline: a plain BIRD per node with {n} + {n} static prefixes ({BASE4}, {BASE6})")
        with BaselineBirds(self.topo, n) as birds:
            t0 = birds.start()
            took, _ = wait_all((BASE4, BASE6), n, t0, 120)
            log(f"  every baseline prefix on the router with 3 next hops {took:.2f} s after starting the BIRDs")
            time.sleep(1.0)  # the last UPDATEs processed before the idle window
            c0, w0 = {p: cpu_seconds(p) for p in birds.pids()}, time.monotonic()
            time.sleep(self.args.idle_s)
            c1, w1 = {p: cpu_seconds(p) for p in birds.pids()}, time.monotonic()
            rss = max(rss_kib(p) for p in birds.pids()) / 1024
            cpu = max(100 * (c1[p] - c0[p]) / (w1 - w0) for p in birds.pids())
            log(f"  baseline BIRD: RSS {rss:.1f} MiB, idle CPU {cpu:.2f} % (max over nodes)")
        wait_for(lambda: count_in(full_routes()[0], BASE4, None) == 0, 30, "the baseline's routes gone", interval=0.2)
        return took, rss, cpu

    def bulk(self) -> float:
        n = self.args.services
        self.api.apply(IPPOOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": POOL},
                                 "spec": {"addresses": [str(POOL4), str(POOL6)], "autoAssign": False,
                                          "layer2": {"enabled": False},
                                          "bgp": {"advertisements": [{"peers": router.peer_names(self.topo)}]}}})
        log(f"bulk: pool {POOL} ({POOL4}, {POOL6}, BGP only), {n} dual-stack Services")
        t0 = time.monotonic()
        names = [f"bgp-scale-{i:04d}" for i in range(n)]
        for k in range(0, n, 100):
            bad = [r for r in self.api.batch([{"method": "APPLY", "path": SERVICES, "body": service(x)}
                                              for x in names[k:k + 100]], timeout=120) if r["status"] >= 300]
            if bad:
                raise HarnessError(f"creating Services: HTTP {bad[0]['status']}: {bad[0]['body']}")
        created = time.monotonic() - t0
        took, _ = wait_all((POOL4, POOL6), n, t0, 600)
        log(f"  {n} Services created in {created:.1f} s; all {2 * n} prefixes on the router with 3 next hops "
            f"{took:.1f} s after the first create")
        return took

    def restart(self, how: str) -> tuple[float, float, int]:
        n = self.args.services
        old = {node: realspeakers.pid(node) for node in self.nodes}
        log(f"restart ({how}): speakers {old}")
        if how == "process":
            for node, pid in old.items():
                if pid:
                    os.kill(pid, signal.SIGKILL)
        else:
            for pod in realspeakers.pods(self.api).values():
                self.api.call("DELETE", f"{PODS}/{pod['metadata']['name']}", ok=(404,))
        fewest = 2 * n

        def new_pids() -> dict[str, int] | None:
            nonlocal fewest
            r4, r6 = full_routes()
            fewest = min(fewest, count_in(r4, POOL4) + count_in(r6, POOL6))
            now = {node: realspeakers.pid(node) for node in self.nodes}
            return now if all(p and p != old[node] for node, p in now.items()) else None  # type: ignore[return-value]
        pids = wait_for(new_pids, 120, "a new speaker process on every node", interval=0.01)
        starts = sorted(started_at(p) for p in pids.values())
        took, fewest2 = wait_all((POOL4, POOL6), n, starts[0], 120)
        fewest = min(fewest, fewest2)
        from_last = took - (starts[-1] - starts[0])
        log(f"  new speakers started within {(starts[-1] - starts[0]) * 1000:.0f} ms of each other; every prefix "
            f"back with 3 next hops {took:.2f} s after the first started ({from_last:.2f} s after the last); fewest "
            f"prefixes with 3 next hops on the way: {fewest} of {2 * n}")
        return took, from_last, fewest

    def single(self) -> list[float]:
        a = self.args
        log(f"single: {a.trials} Services, one at a time, each with a requested IPv4 address in {TRIAL4}")
        creator = Creator()
        out, starts, ips, addrs = [], [], [], []
        with route_changes() as changes:
            try:
                for k in range(a.trials):
                    ip = str(TRIAL4[k + 1])
                    t0, _ = creator.create(service(f"bgp-one-{k:03d}", [ip], dual=False))
                    starts.append(t0)
                    addrs.append(ip)
                    while True:
                        hops = router.next_hops(f"{ip}/32")
                        if len(hops) == 3:
                            out.append(time.monotonic() - t0)
                            break
                        if time.monotonic() - t0 > 30:
                            raise HarnessError(f"{ip}: {len(hops)} next hops 30 s after its Service was created")
                        time.sleep(0.005)
                    t_ip = creator.addressed()
                    ips.append(t_ip - t0 if t_ip else float("inf"))
            finally:
                creator.close()
        ms = [x * 1000 for x in out]
        log(f"  Service created -> route with 3 next hops: p50 {statistics.median(ms):.0f} ms, p99 {pct(ms, 99):.0f} ms, "
            f"max {max(ms):.0f} ms")
        # Where the time goes: the controller (address in status), the last speaker's BIRD configure taking
        # the new address (its log), and the router.
        cfg = self.configured_after(starts)
        # The kernel's own time for the last change of the route before the poll saw 3 next hops (ip -ts
        # monitor): the poll's lag and the router's part apart.
        kernel = []
        for ip, t0, took in zip(addrs, starts, out):
            last = [t for t, what in changes if ip in what.split() and t <= t0 + took + 0.05]
            kernel.append(max(last) - t0 if last else float("inf"))
        ip_ms, cfg_ms, k_ms = [x * 1000 for x in ips], [x * 1000 for x in cfg], [x * 1000 for x in kernel]
        self.phases = (ip_ms, cfg_ms, k_ms)
        log(f"  of which: address in status p50 {statistics.median(ip_ms):.0f} / p99 {pct(ip_ms, 99):.0f} ms; "
            f"every speaker's BIRD configured with it p50 {statistics.median(cfg_ms):.0f} / p99 {pct(cfg_ms, 99):.0f} ms; "
            f"the router's kernel route's last change p50 {statistics.median(k_ms):.0f} / p99 {pct(k_ms, 99):.0f} ms")
        for k in sorted(range(len(out)), key=lambda k: -out[k])[:5]:
            log(f"  slowest: {addrs[k]} status {ip_ms[k]:.0f} ms, every BIRD configured {cfg_ms[k]:.0f} ms, kernel "
                f"route {k_ms[k]:.0f} ms, seen by the poll {out[k] * 1000:.0f} ms")
        return out

    def configure_log(self) -> dict[str, list[tuple[float, int, float]]]:
        """Per node, the speaker's `bgp_configured` lines: (time.monotonic(), addresses advertised, took_ms)."""
        offset = time.time() - time.monotonic()
        out: dict[str, list[tuple[float, int, float]]] = {}
        for node in self.nodes:
            rows = out.setdefault(node, [])
            for line in realspeakers.log(self.api, node).splitlines():
                _, _, doc = line.partition(" F ")
                if '"bgp_configured"' not in doc:
                    continue
                try:
                    e = json.loads(doc)
                    when = dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() - offset
                except (ValueError, KeyError):
                    continue
                rows.append((when, int(e.get("advertised", 0)), float(e.get("took_ms", 0))))
        return out

    def configured_after(self, starts: list[float]) -> list[float]:
        """For each trial start: seconds until every node's speaker had configured BIRD with one address more
        than it advertised before that start."""
        logs = self.configure_log()
        out = []
        for t0 in starts:
            worst = 0.0
            for rows in logs.values():
                before = max((n for t, n, _ in rows if t < t0), default=0)
                t = next((t for t, n, _ in rows if t >= t0 and n > before), None)
                worst = max(worst, t - t0 if t is not None else float("inf"))
            out.append(worst)
        return out


def run(args: argparse.Namespace, report: Report) -> None:
    started = time.monotonic()
    r = report
    small, big = render_cost_ms(10), render_cost_ms(args.services)
    log(f"the speaker's plan + render + status per wake: {big:.0f} ms at {args.services} dual-stack Services, "
        f"{small:.1f} ms at 10")
    r.add(f"speaker's plan+render+status per wake, {args.services} Services (10: baseline)",
          f"{big:.0f} ms ({small:.1f} ms, {big / small:.0f}x)", "", None)
    with own_lab(args.keep) as topo:
        r.add("lab up (BGP mode)", f"{time.monotonic() - started:.1f} s", "", None)
        b = Bench(topo, args, report)
        # the control plane's speaker peers too (it advertises nothing: excluded from external load balancers)
        wait_for(lambda: sum(s.state == "Established" for s in router.sessions().values()) >= 2 * len(b.nodes), 60,
                 "both sessions Established from every node", interval=0.2)
        n = args.services
        base_took, base_rss, base_cpu = b.baseline()
        before = b.footprint("with the lab's few Services")
        bulk = b.bulk()
        time.sleep(args.settle_s)  # the controller's and speakers' last status writes before the idle window
        after = b.footprint(f"with {n} Services")
        restarts = {how: b.restart(how) for how in ("process", "pod")}
        single = b.single()
        time.sleep(args.settle_s)
        late = b.footprint(f"with {n + args.trials} Services, after the trials")
        r.add(f"baseline: plain BIRD x3, {n}+{n} static prefixes -> router", f"{base_took:.2f} s", "", None)
        r.add(f"bulk: {n} Services created -> {2 * n} prefixes x 3 hops", f"{bulk:.1f} s", "", None)
        for how, (took, from_last, fewest) in restarts.items():
            label = {"process": "speakers SIGKILLed, restarted by kubelet", "pod": "speaker pods deleted, new pods"}[how]
            r.add(f"restart ({label}): first start -> all prefixes", f"{took:.2f} s", "<= 5 s", took <= 5)
            r.add(f"restart ({label}): last start -> all prefixes; fewest on the way",
                  f"{from_last:.2f} s; {fewest} of {2 * n}", "", None)
            r.add(f"restart ({label}) ratio to the baseline BIRD", f"{took / base_took:.2f}x", "", None)
        ms = [x * 1000 for x in single]
        r.add(f"one Service -> route with 3 hops, p50 ({len(ms)} trials)", f"{statistics.median(ms):.0f} ms", "", None)
        r.add("one Service -> route with 3 hops, p99", f"{pct(ms, 99):.0f} ms", "<= 300 ms", pct(ms, 99) <= 300)
        r.add("one Service -> route with 3 hops, max", f"{max(ms):.0f} ms", "", None)
        ip_ms, cfg_ms, k_ms = b.phases
        r.add("  of which: address in status, p50 / p99", f"{statistics.median(ip_ms):.0f} / {pct(ip_ms, 99):.0f} ms",
              "", None)
        r.add("  of which: every speaker's BIRD configured, p50 / p99",
              f"{statistics.median(cfg_ms):.0f} / {pct(cfg_ms, 99):.0f} ms", "", None)
        r.add("  of which: the router's kernel route changed last, p50 / p99",
              f"{statistics.median(k_ms):.0f} / {pct(k_ms, 99):.0f} ms", "", None)
        for when, f in (("few Services", before), (f"{n} Services", after),
                        (f"{n + args.trials} Services, later", late)):
            r.add(f"RSS speaker / wrapper / BIRD, {when}", f"{f['speaker_rss']:.1f} / {f['bgpd_rss']:.1f} / "
                  f"{f['bird_rss']:.1f} MiB (pod {f['pod_rss']:.1f})", "", None)
            r.add(f"idle CPU speaker / wrapper / BIRD, {when}", f"{f['speaker_cpu']:.2f} / {f['bgpd_cpu']:.2f} / "
                  f"{f['bird_cpu']:.2f} % (pod {f['pod_cpu']:.2f}); {f['configures']:.0f} BIRD configures", "", None)
        r.add(f"baseline BIRD, {n}+{n} prefixes: RSS / idle CPU", f"{base_rss:.1f} MiB / {base_cpu:.2f} %", "", None)
        r.add(f"BIRD RSS ratio sidecar/baseline at {n} Services", f"{after['bird_rss'] / base_rss:.2f}x", "", None)
        r.add("pod RSS ratio (speaker+wrapper+BIRD)/baseline BIRD", f"{after['pod_rss'] / base_rss:.2f}x", "", None)
        r.add("benchmark run time", f"{time.monotonic() - started:.0f} s", "", None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--creator"]:
        asyncio.run(_creator(argv[1]))
        return 0
    p = argparse.ArgumentParser(prog="benchmarks.bgp_scale", description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--idle-s", type=float, default=10.0)
    p.add_argument("--settle-s", type=float, default=5.0)
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards (for debugging)")
    args = p.parse_args(argv)
    if not 1 <= args.services <= 1700 or not 1 <= args.trials <= 254:
        # the bulk takes the pool's lowest addresses; the trials ask for ones in its last /24
        p.error("--services 1..1700 (the pool's /21 less the trials' /24), --trials 1..254")
    return run_reported(lambda report: run(args, report))


if __name__ == "__main__":
    sys.exit(main())
