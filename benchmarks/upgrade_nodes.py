"""Node events on the real cluster, as a client sees them (issue 13, item 4): `kubectl cordon`/`drain` of a VIP's
owner, and a node shutdown (kubelet stopped, link cut) with what the node lifecycle controller then does and
what happens when the node returns. Run from benchmarks.upgrade after the rolls, on the same lab.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from benchmarks.lab_bench import HarnessError, log
from lbctl.core.connsummary import overall, render, summarise
from lbctl.lab import cluster, connprobe, k8sbin, probes, realcluster
from lbctl.lab.api import LabApi
from lbctl.lab.realnode import RealNode
from lbctl.lab.topology import BRIDGE_NS, CLIENT_NS, CP_NS, Topology
from lbctl.tables import table


def kubectl(*args: str, timeout: float = 120) -> str:
    res = subprocess.run(["ip", "netns", "exec", CP_NS, str(k8sbin.kubectl()), "--kubeconfig",
                          str(cluster.ADMIN_KUBECONFIG), *args], capture_output=True, text=True, timeout=timeout)
    if res.returncode:
        raise HarnessError(f"kubectl {' '.join(args)}: {res.stderr.strip()[-800:]}")
    return res.stdout


def arp_owner(topo: Topology, ip: str) -> str:
    owners = sorted({topo.node_by_mac(m) or m for m in probes.arping(ip, count=1, timeout=1)})
    return "+".join(owners) or "-"


def owner_changes(seq: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """The change points of an (time, owner) series, unanswered polls ("-") left out."""
    out: list[tuple[float, str]] = []
    for t, o in seq:
        if o != "-" and (not out or out[-1][1] != o):
            out.append((t, o))
    return out


def drain(topo: Topology, targets: dict[str, str], node: str, interval: float, timeout: float) -> list[str]:
    """cordon + drain of `node` (the owner of some VIPs) under the prober; the VIPs' owners before and after."""
    before = {t: arp_owner(topo, t.rsplit(":", 1)[0]) for t in targets}
    proc = connprobe.launch(CLIENT_NS, list(targets), interval, timeout)
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        kubectl("cordon", node)
        kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=90s", timeout=150)
        drained = time.monotonic() - t0
        time.sleep(3.0)
    finally:
        run = connprobe.finish(proc)
    after = {t: arp_owner(topo, t.rsplit(":", 1)[0]) for t in targets}
    kubectl("uncordon", node)
    summ = summarise(run.attempts, run.targets, run.started, run.stopped)
    print(f"\ncordon + drain of {node} ({drained:.1f} s; the speaker is a DaemonSet pod: drain leaves it):")
    print(table(["VIP", "OWNER BEFORE", "OWNER AFTER"], [[t, before[t], after[t]] for t in targets]))
    print(render(summ, {t: t for t in targets}))
    return [f"FIGURE upgrade_drain_failed_connections={overall(summ).failed} count",
            f"FIGURE upgrade_drain_longest_gap_ms={overall(summ).longest_gap_ms:g} ms",
            f"FIGURE upgrade_drain_vips_moved={sum(before[t] != after[t] for t in targets)} count"]


def shutdown(api: LabApi, topo: Topology, targets: dict[str, str], node: str, interval: float,
             timeout: float) -> list[str]:
    """`node`'s kubelet stopped and its link cut; the client's failover, then the node lifecycle controller
    (NotReady, taints), then the node back (link up, kubelet started): the owners polled throughout."""
    real = RealNode.load(realcluster.NODES / node)
    port = topo.host(node).port
    mine = [t for t, n in targets.items() if n == node]
    if not mine:
        raise HarnessError(f"{node} owns none of the VIPs")
    vip = mine[0].rsplit(":", 1)[0]
    proc = connprobe.launch(CLIENT_NS, mine, interval, timeout)
    t0 = 0.0
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        real.stop_kubelet()
        subprocess.run(["ip", "-n", BRIDGE_NS, "link", "set", port, "down"], check=True)
        time.sleep(5.0)
    finally:
        run = connprobe.finish(proc)
    summ = summarise(run.attempts, run.targets, run.started, run.stopped)
    # An attempt started just after t0 may still have got through (the port went down a moment later):
    # the failover runs from the cut to the first success after the first failure.
    first_bad = min((a.t for a in run.attempts if not a.ok and a.t >= t0), default=None)
    first_ok = min((a.t for a in run.attempts if a.ok and first_bad is not None and a.t > first_bad), default=None)
    failover = first_ok - t0 if first_ok else float("nan")
    during = sum(1 for a in run.attempts if not a.ok and first_ok and a.t < first_ok)
    # After the failover, connections that kube-proxy still sends to the dead node's pods time out: its
    # endpoints stay Ready until the node lifecycle controller marks the node NotReady (40 s by default).
    after = sum(1 for a in run.attempts if not a.ok and first_ok and a.t >= first_ok)
    print(f"\nshutdown of {node} (kubelet stopped, link cut), the client on {vip}:")
    print(render(summ, {t: t for t in mine}))
    owners: list[tuple[float, str]] = []
    events: list[tuple[float, str]] = []

    def poll_until(done: Callable[[dict[str, Any]], bool], limit: float, what: str) -> float:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            owners.append((time.monotonic() - t0, arp_owner(topo, vip)))
            n = api.get(f"/api/v1/nodes/{node}")
            if done(n):
                t = time.monotonic() - t0
                events.append((t, what))
                return t
            time.sleep(0.5)
        raise HarnessError(f"{node}: not {what} after {limit:.0f} s")

    not_ready = poll_until(lambda n: _ready_status(n) != "True", 120, "NotReady (node lifecycle controller)")
    tainted = poll_until(lambda n: any(t["key"] == "node.kubernetes.io/unreachable" for t in n["spec"].get("taints") or []),
                         60, "tainted node.kubernetes.io/unreachable")
    t_back = time.monotonic() - t0
    subprocess.run(["ip", "-n", BRIDGE_NS, "link", "set", port, "up"], check=True)
    real.start_kubelet()
    events.append((t_back, "link up, kubelet started"))
    ready_again = poll_until(lambda n: _ready_status(n) == "True", 120, "Ready again")
    end = time.monotonic() + 15
    while time.monotonic() < end:  # after the return: does the address settle, or flap?
        owners.append((time.monotonic() - t0, arp_owner(topo, vip)))
        time.sleep(0.5)
    changes = owner_changes(owners)
    after_return = [c for c in changes if c[0] >= t_back]
    print(table(["AT (s)", "EVENT"], [[f"{t:.1f}", e] for t, e in events]))
    print(table(["AT (s)", f"ARP OWNER OF {vip}"], [[f"{t:.1f}", o] for t, o in changes]))
    return [f"FIGURE upgrade_shutdown_failover_s={failover:.2f} s",
            f"FIGURE upgrade_shutdown_failed_during_failover={during} count",
            f"FIGURE upgrade_shutdown_failed_after_failover_dead_endpoints={after} count",
            f"FIGURE upgrade_shutdown_not_ready_after_s={not_ready:.1f} s",
            f"FIGURE upgrade_shutdown_tainted_after_s={tainted:.1f} s",
            f"FIGURE upgrade_shutdown_ready_again_after_return_s={ready_again - t_back:.1f} s",
            f"FIGURE upgrade_shutdown_owner_changes_after_return={len(after_return)} count",
            f"FIGURE upgrade_shutdown_owner_changes_total={len(changes) - 1} count"]


def _ready_status(node: dict[str, Any]) -> str:
    return next((c["status"] for c in (node.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"),
                "Unknown")


def node_events(api: LabApi, topo: Topology, targets: dict[str, str], interval: float, timeout: float) -> list[str]:
    """Drain the owner of the first VIP owned by a worker, then shut down the owner of another."""
    workers = [n for n in dict.fromkeys(targets.values()) if n.startswith("node")]
    if len(workers) < 2:
        raise HarnessError(f"need VIPs on two workers, have {targets}")
    log(f"cordon + drain {workers[0]}")
    lines = drain(topo, targets, workers[0], interval, timeout)
    log(f"shutdown {workers[1]}: kubelet stopped, link cut")
    lines += shutdown(api, topo, targets, workers[1], interval, timeout)
    return lines
