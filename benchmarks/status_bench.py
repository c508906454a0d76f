"""`lbctl status -o json` on the real-cluster lab with 500 LoadBalancer Services (target: <= 2 s).

    python -m benchmarks.status_bench [--services 500] [--runs 5]

Brings the real cluster up unless a lab is running (and then takes it down again), adds a /23 pool and the
Services (the lab's backend, externalTrafficPolicy Local, as tests/e2e make them), waits until every one has an
IP and the speakers announce them, then times the CLI as a user runs it
(a new process, inside lbctl-cp, admin kubeconfig) against a baseline measured in the same run:
`kubectl get services -A -o json`, which lists only one of the kinds status reads.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lbctl.lab import cluster, k8sbin, lifecycle
from lbctl.lab.api import LabApi, wait_for
from lbctl.lab.topology import CP_NS

from .lab_bench import announced_in, service_body

SERVICES = "/api/v1/namespaces/default/services"
IPPOOLS = "/apis/lbctl.io/v1alpha1/ippools"
POOL = "198.18.2.0/23"  # 512 addresses off the nodes' /24
PREFIX = "bench-status-"


def timed(argv: list[str]) -> tuple[float, str]:
    started = time.monotonic()
    res = subprocess.run(["ip", "netns", "exec", CP_NS, *argv], capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    if res.returncode not in (0, 1, 3):  # status: 1 needs attention, 3 conflict; the timing still counts
        raise RuntimeError(f"{argv[0]} failed ({res.returncode}): {res.stderr[-2000:]}")
    return took, res.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=500)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    started_here = not lifecycle.is_up()
    if started_here:
        lifecycle.up(3, True, say=lambda line: print(f"  {line}", flush=True), real=True)
    api = LabApi()
    names = [f"{PREFIX}{i:03d}" for i in range(a.services)]
    try:
        api.apply(IPPOOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "bench-status"},
                            "spec": {"addresses": [POOL], "autoAssign": False,
                                     "layer2": {"interfaces": ["eth0"]}}})  # off the nodes' /24
        for chunk in range(0, len(names), 100):
            api.batch([{"method": "APPLY", "path": SERVICES, "body": service_body(n, "bench-status")}
                       for n in names[chunk:chunk + 100]], timeout=120)

        def assigned() -> int:
            return sum(1 for s in api.get(SERVICES).get("items") or [] if s["metadata"]["name"].startswith(PREFIX)
                       and ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress"))
        wait_for(lambda: assigned() >= a.services, 300, f"{a.services} Services with an IP", interval=1)
        wait_for(lambda: len(announced_in(api, ipaddress.ip_network(POOL))) >= a.services, 300,
                 f"{a.services} IPs announced (SpeakerStatus)", interval=2)
        kubeconfig = str(cluster.ADMIN_KUBECONFIG)
        lbctl = str(Path(sys.executable).parent / "lbctl")
        status, base = [], []
        for _ in range(a.runs):
            took, out = timed([lbctl, "status", "-o", "json", "--kubeconfig", kubeconfig])
            status.append(took)
            base.append(timed([str(k8sbin.kubectl()), "--kubeconfig", kubeconfig, "get", "services", "-A",
                               "-o", "json"])[0])
        assert out.count(PREFIX) >= a.services, "status -o json does not list every Service"
        s, b = statistics.median(status), statistics.median(base)
        print(f"baseline  kubectl get services -A -o json ({a.services}+ Services): median {b:.2f} s")
        print(f"status    lbctl status -o json ({a.services} Services, pools, speakers, nodes): "
              f"median {s:.2f} s, max {max(status):.2f} s (target <= 2 s: {'met' if max(status) <= 2 else 'NOT met'})")
        print(f"          ratio status/baseline: {s / b:.2f}x")
    finally:
        for chunk in range(0, len(names), 100):
            api.batch([{"method": "DELETE", "path": f"{SERVICES}/{n}"} for n in names[chunk:chunk + 100]], timeout=120)
        api.delete(f"{IPPOOLS}/bench-status")
        if started_here:
            lifecycle.down(say=lambda line: print(f"  {line}", flush=True))


if __name__ == "__main__":
    main()
