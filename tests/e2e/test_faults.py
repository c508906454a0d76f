"""Faults between the daemons and the API server (issue 12, acceptance 3), injected where a cluster meets them.

The lab is the real cluster (lbctl.lab.realcluster: kubelets, containerd, kube-proxy, the chart's image in runc
containers) with two controller replicas and a speaker on each of its four nodes. The pods reach the API server
as on any cluster, through the `kubernetes` Service and kube-proxy; its endpoint is the API server behind an HTTP
load balancer (lbctl.lab.realfaults: nginx with the API server's certificate, then the fault injector
lbctl.lab.faultproxy). Each test injects one fault (the last one a seeded mix) and measures from the outside:

- daemon exits: a container restarted (its restartCount), a pod replaced, or a process of the chart's containers
  gone from its node's cgroups (target 0);
- every Service's addresses before and after: duplicated, moved, leaked (IPPool status against the addresses
  held) (0);
- resume: from the fault's end to a Service created then having its address and its owner answering ARP
  (the controller's and the speakers' watches are back) (<= 5 s);
- two writers: both controllers' `lbctl_controller_leader` gauges (their pods' metrics port, dialled from the
  control-plane namespace over the routes between the nodes' pod ranges) sampled every 100 ms; seconds both
  said 1 (0);
- ARP answers lost for the Services that existed before, probed from the client throughout (0: the data plane
  does not depend on the API).

`python -m benchmarks.faults` runs this module and prints the table (docs/reliability.md).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lbctl.lab import apiproxy, faultproxy, lifecycle, probes, processes, realcluster, realfaults
from lbctl.lab.api import wait_for
from lbctl.lab.cluster import NAMESPACE
from lbctl.lab.realnode import RealNode
from lbctl.lab.topology import CLIENT_NS, CP_NS

from tests.figures import figure
from .conftest import IPPOOLS, SERVICES, Lab, ingress_ips, ipv4_of

STEADY = 3  # Services that exist before every fault: their ARP answers must never stop
RESUME_TARGET_S = 5.0
ARP_GAP_S = 0.1  # one ARP request every 100 ms, the steady Services in turn
TAIL_S = 8.0  # ARP and leader sampling go on this long after the fault's end
RESUME_WAIT_S = 45.0
NEVER = 999.0  # the figure when a new Service was not served within RESUME_WAIT_S
DAEMONS = {"controller": b"lbctl-controller", "speaker": b"lbctl-speaker"}  # component -> its command
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def flab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("e2e tests need root: they create network namespaces")
    try:
        topo, _ = lifecycle.up(faults=True, controllers=2, say=lambda _: None)
        lab = Lab(topo)
        realfaults.wait_mirrored(lab.api)
        for i in range(STEADY):
            lab.wait_arp_owner(ipv4_of(lab.service(f"steady-{i}")))
        yield lab
    finally:
        lifecycle.down(say=lambda _: None, keep_logs=True)  # the daemons' logs stay in STATE-logs


def chart_pods(lab: Lab) -> list[dict[str, Any]]:
    return [p for p in lab.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
            if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") in DAEMONS
            and not p["metadata"].get("deletionTimestamp")]


def restarts(lab: Lab) -> dict[str, int]:
    """Each chart pod's container restarts, by pod name (a replaced pod has a new name)."""
    return {p["metadata"]["name"]: sum(c.get("restartCount", 0) for c in p["status"].get("containerStatuses") or [])
            for p in chart_pods(lab)}


def processes_of_daemons(lab: Lab) -> set[tuple[str, str, int]]:
    """(node, component, pid) of every daemon process in the nodes' container cgroups: the truth about exits,
    whatever the kubelet has reported yet."""
    out = set()
    for h in realcluster.hosts(lab.topo):
        for pid in RealNode.load(realcluster.NODES / h.name).pids_in_cgroup():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for component, command in DAEMONS.items():
                if any(a.endswith(command) for a in argv[:2]):
                    out.add((h.name, component, pid))
    return out


def exits_between(before: tuple[dict[str, int], set[tuple[str, str, int]]],
                  after: tuple[dict[str, int], set[tuple[str, str, int]]]) -> list[str]:
    """Pods restarted or gone, and daemon processes gone; the larger of the two counts is the figure."""
    pods_exited = [f"{n} ({'gone' if n not in after[0] else f'{after[0][n] - r} restarts'})"
                   for n, r in before[0].items() if after[0].get(n) != r]
    procs_gone = [f"{c} pid {pid} on {node}" for node, c, pid in sorted(before[1] - after[1])]
    return pods_exited if len(pods_exited) >= len(procs_gone) else procs_gone


def snapshot(lab: Lab) -> tuple[dict[str, int], set[tuple[str, str, int]]]:
    return restarts(lab), processes_of_daemons(lab)


def services(lab: Lab) -> dict[str, list[str]]:
    return {s["metadata"]["name"]: sorted(ingress_ips(s)) for s in lab.api.get(SERVICES)["items"]
            if s["spec"].get("type") == "LoadBalancer"}


def pool_assigned(lab: Lab) -> int:
    return int(((lab.api.get(f"{IPPOOLS}/default").get("status") or {}).get("assigned")) or 0)


def arp_answered(ip: str) -> bool:
    return bool(probes.arping(ip, count=1, timeout=1))


class Sampler:
    """A process in a lab namespace that prints one JSON line per sample; stopped and read at the end."""

    def __init__(self, netns: str, argv: list[str]) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, *argv],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self, timeout: float, stop: bool = False) -> str:
        if stop:
            self.proc.terminate()
        out, err = self.proc.communicate(timeout=timeout)
        if not stop and self.proc.returncode:
            raise AssertionError(f"sampler failed ({self.proc.returncode}): {err[-2000:]}")
        return out


LEADER_SAMPLER = r"""
import json, signal, sys, time, urllib.request
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
url = sys.argv[1]
while True:
    t = time.monotonic()
    try:
        text = urllib.request.urlopen(url, timeout=0.5).read().decode()
        v = next((float(l.split()[1]) for l in text.splitlines() if l.startswith("lbctl_controller_leader ")), -1)
    except Exception:
        v = -1
    print(json.dumps([t, v]), flush=True)
    time.sleep(0.1)
"""


def leader_samplers(lab: Lab) -> dict[str, Sampler]:
    """One sampler per controller pod, dialling its pod IP's metrics port from the control-plane namespace (it
    routes every node's pod range; the root namespace never dials a lab address)."""
    out = {}
    for pod in chart_pods(lab):
        if pod["metadata"]["labels"]["app.kubernetes.io/component"] != "controller":
            continue
        [port] = [p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or []
                  if p.get("name") == "metrics"]
        ip = pod["status"].get("podIP")
        assert ip, f"controller pod {pod['metadata']['name']} has no IP"
        out[pod["metadata"]["name"]] = Sampler(CP_NS, ["-c", LEADER_SAMPLER, f"http://{ip}:{port}/metrics"])
    assert len(out) == 2, f"two controller replicas expected, found {sorted(out)}"
    return out


def two_writer_seconds(samples: dict[str, list[tuple[float, float]]]) -> float:
    """Seconds during which two replicas both reported themselves leader (a sample holds until the next)."""
    spans: list[list[tuple[float, float]]] = []
    for rows in samples.values():
        spans.append([(t, rows[i + 1][0]) for i, (t, v) in enumerate(rows[:-1]) if v == 1])
    both = 0.0
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            for s1, e1 in a:
                for s2, e2 in b:
                    both += max(0.0, min(e1, e2) - max(s1, s2))
    return both


@dataclass
class Fault:
    name: str
    seconds: float
    start: Callable[[Lab], None]
    stop: Callable[[Lab], None] = field(default=lambda lab: faultproxy.set_fault("pass"))
    what: str = ""
    # What shows the daemons met it: a faultproxy counter that must grow during the fault, or "front-400" (the
    # front answered a TLS client hello with its plaintext 400). Without it, a fault outside the pods' path to
    # the API server would pass every other assertion.
    proof: str = "connections"


def meetings(proof: str, since_stats: dict[str, Any], since_wall: float) -> int:
    """How often the daemons met the fault since `since_stats` (faultproxy.stats()) / `since_wall` (time.time())."""
    if proof == "front-400":
        log = processes.LOGS / f"{apiproxy.name(apiproxy.FRONT)}.access.log"
        rows = [ln.split() for ln in log.read_text(errors="replace").splitlines()] if log.exists() else []
        return sum(1 for r in rows if len(r) > 1 and float(r[0]) >= since_wall and r[1] == "400")
    return faultproxy.stats()["stats"][proof] - since_stats["stats"][proof]


def _proxy(kind: str, **kw: Any) -> Callable[[Lab], None]:
    def start(lab: Lab) -> None:
        faultproxy.set_fault(kind, **kw)
    return start


def _cut(lab: Lab) -> None:
    faultproxy.set_fault("cut", watch=True)
    lab.service(f"trigger-{time.monotonic_ns()}", wait_ip=False)  # an event on every Service watch, cut mid-line


def _apiserver_down(lab: Lab) -> None:
    lab.kill_apiserver()


def _apiserver_up(lab: Lab) -> None:
    lab.restart_apiserver()


def _tls(lab: Lab) -> None:
    apiproxy.reload("untrusted")
    time.sleep(4)  # half of the fault: certificates from another CA; then a listener speaking plain HTTP
    apiproxy.reload("plaintext")


def _tls_end(lab: Lab) -> None:
    apiproxy.reload("ok")


SINGLE = [
    Fault("reset-response", 6, _proxy("reset", watch=False, after=64),
          what="every response but watches reset (RST) after 64 body bytes", proof="resets"),
    Fault("reset-watch", 6, _proxy("reset", watch=True, after=0, drop=True),
          what="open watch streams reset, new ones reset at their first event", proof="resets"),
    Fault("cut-watch-mid-line", 6, _cut, what="watch streams closed in the middle of an event's line", proof="cuts"),
    Fault("stall", 35, _proxy("stall"), what="no response byte for 35 s (longer than the 30 s request timeout)"),
    Fault("trickle", 12, _proxy("trickle", rate=100, drop=True), what="responses at 100 B/s, streams reopened"),
    Fault("429", 10, _proxy("status", status=429, retry_after=1, drop=True),
          what="429 Too Many Requests, Retry-After: 1 from the proxy", proof="statuses"),
    Fault("503", 10, _proxy("status", status=503, retry_after=None, drop=True),
          what="503 from the proxy", proof="statuses"),
    Fault("apiserver-restart", 5, _apiserver_down, _apiserver_up,
          what="kube-apiserver killed for 5 s (the front answers 502; kubelets and kube-proxies lose it too), "
               "then ready again", proof="upstream_failures"),
    Fault("tls-handshake", 8, _tls, _tls_end,
          what="the front reloaded with an untrusted certificate (4 s), then speaking plain HTTP (4 s)",
          proof="front-400"),
]


def _mixed(seed: int) -> Fault:
    rng = random.Random(seed)
    steps: list[tuple[str, Callable[[Lab], None]]] = [
        ("reset-watch", _proxy("reset", watch=True, drop=True)),
        ("reset-response", _proxy("reset", watch=False, after=rng.randrange(1, 400))),
        ("503", _proxy("status", status=503, retry_after=None, drop=True)),
        ("429", _proxy("status", status=429, retry_after=1)),
        ("trickle", _proxy("trickle", rate=rng.choice([50, 200, 1000]), drop=True)),
        ("cut", _proxy("cut", watch=True)),
        ("untrusted-tls", lambda lab: apiproxy.reload("untrusted")),
    ]
    rng.shuffle(steps)
    steps = steps[:5]

    def run(lab: Lab) -> None:
        for i, (name, step) in enumerate(steps):
            if i and steps[i - 1][0] == "untrusted-tls":
                apiproxy.reload("ok")
            faultproxy.set_fault("pass")
            step(lab)
            if i < len(steps) - 1:
                time.sleep(2.5)

    def stop(lab: Lab) -> None:
        faultproxy.set_fault("pass")
        apiproxy.reload("ok")
    return Fault("mixed", 2.5, run, stop, what="seed %d: %s, 2.5 s each" % (seed, ", ".join(n for n, _ in steps)))


FAULTS = SINGLE + [_mixed(12)]


def restore(lab: Lab) -> None:
    """Put back what a fault broke: the injector in pass mode, the front serving, the API server running, and
    wait for every chart pod to be Ready (the kubelets restart what exited)."""
    faultproxy.set_fault("pass")
    apiproxy.reload("ok")
    if not processes.alive(processes.pid_of("kube-apiserver")):
        lab.restart_apiserver()
    realcluster.wait_workloads(lab.api, NAMESPACE, timeout=60, say=lambda _: None)


def lease_lines(last: int = 30) -> str:
    """The controllers' log lines about their Lease (election, renewals that failed, resumes): why a slow resume
    was slow, kept in the failure message because the lab's logs are gone with the next module's lab."""
    lines = []
    for log in sorted(realcluster.NODES.glob(f"*/log/pods/{NAMESPACE}_*controller*/*/*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if any(w in line for w in ('"lease":', "leader", "resume", "restarting", "fenced")):
                lines.append(f"{log.parent.parent.name[:40]}: {line[:300]}")
    return "\n".join(sorted(lines, key=lambda ln: ln.rsplit('"timestamp": "', 1)[-1])[-last:])


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(flab: Lab, fault: Fault) -> None:
    lab = flab
    restore(lab)
    key = fault.name.replace("-", "_")
    before_daemons = snapshot(lab)
    before = services(lab)
    steady = [ipv4_of(lab.api.get(f"{SERVICES}/steady-{i}")) for i in range(STEADY)]
    client = lab.topo.host("client")
    count = math.ceil((fault.seconds + TAIL_S + (5 if fault.name == "apiserver-restart" else 0))
                      / (ARP_GAP_S * STEADY))
    arp = Sampler(CLIENT_NS, ["-m", "benchmarks.lab_arp", "rtt", "--mac", client.mac, "--ip", client.ip4,
                              "--targets", ",".join(steady), "--count", str(count), "--warmup", "0",
                              "--gap-ms", str(ARP_GAP_S * 1000), "--timeout-ms", "300"])
    leaders = leader_samplers(lab)

    since_stats, since_wall = faultproxy.stats(), time.time()
    fault.start(lab)
    time.sleep(fault.seconds)  # the fault lasts this long: nothing to wait for
    met = meetings(fault.proof, since_stats, since_wall)  # before the stop: a restart's dial failures end there
    fault.stop(lab)
    ended = time.monotonic()
    name = f"after-{fault.name}"
    lab.service(name, wait_ip=False)
    allocated = served = NEVER
    try:
        svc = wait_for(lambda: (s := lab.api.get(f"{SERVICES}/{name}")) and ingress_ips(s) and s, RESUME_WAIT_S,
                       f"Service {name} to get an address after the fault")
        allocated = time.monotonic() - ended
        ip = ipv4_of(svc)
        wait_for(lambda: arp_answered(ip), RESUME_WAIT_S, f"an ARP answer for {ip}", interval=0)
        served = time.monotonic() - ended
    except TimeoutError:
        pass  # reported as NEVER, asserted below with the other figures

    arp_out = json.loads(arp.result(timeout=count * STEADY * 0.5 + 30))
    samples = {n: [tuple(json.loads(line)) for line in s.result(10, stop=True).splitlines() if line]
               for n, s in leaders.items()}
    exits = exits_between(before_daemons, snapshot(lab))
    now = services(lab)
    moved = sorted(n for n, ips in before.items() if n in now and now[n] != ips)
    holders: dict[str, list[str]] = {}
    for n, ips in now.items():
        for a in ips:
            holders.setdefault(a, []).append(n)
    duplicated = sorted(a for a, ns in holders.items() if len(ns) > 1)
    try:
        wait_for(lambda: pool_assigned(lab) == len(holders), 20, "IPPool default's status to count the addresses held")
    except AssertionError:
        pass
    leaked = pool_assigned(lab) - len(holders)
    both = two_writer_seconds(samples)
    lost = sum(arp_out["lost"])

    print(f"\n{fault.name}: {fault.what}; exits {exits or 0}, moved {moved or 0}, duplicated {duplicated or 0}, "
          f"leaked {leaked}, allocated {allocated:.1f} s and answered {served:.1f} s after the fault's end, "
          f"two writers {both:.1f} s, ARP lost {lost} of {count * STEADY}; met it {met} times ({fault.proof})")
    figure(f"fault_{key}_exits", len(exits), "count")
    figure(f"fault_{key}_addresses_changed", len(moved) + len(duplicated) + abs(leaked), "count")
    figure(f"fault_{key}_resume_s", served, "s")
    figure(f"fault_{key}_two_writers_s", both, "s")
    figure(f"fault_{key}_arp_lost", lost, "count")

    for n in now:
        if n.startswith(("after-", "trigger-")):
            lab.delete_service(n)
    assert met > 0, f"the daemons never met {fault.name} ({fault.proof} did not grow): not in their path"
    assert not exits, f"daemons exited during {fault.name}: {exits} (logs in {realcluster.NODES}/*/log)"
    assert not moved and not duplicated and leaked == 0, (moved, duplicated, leaked)
    assert both == 0, f"two controllers reported leading at once for {both:.1f} s"
    assert lost == 0, f"{lost} ARP requests for existing Services unanswered during {fault.name}"
    assert served <= RESUME_TARGET_S, (f"new Service served {served:.1f} s after {fault.name} ended"
                                       + (f" (999: not within {RESUME_WAIT_S:.0f} s)" if served == NEVER else "")
                                       + "; the controllers' Lease lines:\n" + lease_lines())
