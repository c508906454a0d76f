"""`lab up` and `lab down`: build the topology, start the cluster, and tear all of it down again."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

from lbctl import assets

from . import cluster, processes, topology
from .api import LabApi
from .processes import STATE
from .topology import Topology

TOPOLOGY_FILE = STATE / "topology.json"
Say = Callable[[str], None]


class LabError(RuntimeError):
    pass


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, mounts): run it as root")


def is_up() -> bool:
    """A lab is up when its topology was recorded and any daemon it started still runs. A lab with a
    dead speaker (a failover test, a benchmark) is degraded, not stale: never clean it from under them."""
    return TOPOLOGY_FILE.exists() and any(processes.alive(p) for p in processes.pidfiles().values())


def leftovers() -> bool:
    return STATE.exists() or bool(topology.lab_namespaces())


def up(nodes: int = 3, ipv6: bool = True, speakers: bool = True, say: Say = print,
       timing: str | None = None, faults: bool = False, controllers: int = 1) -> tuple[Topology, list[str]]:
    """Returns the topology and warnings (e.g. no speaker yet). Cleans up everything on failure. `faults`
    puts the fault injector (lbctl.lab.faultproxy) between every nginx and the API server; `controllers` > 1
    runs more controller replicas (the first in the control-plane namespace, the others on the nodes)."""
    require_root()
    if is_up():
        raise LabError(f"a lab is already up (state in {STATE}); run `lbctl lab down` first")
    if leftovers():
        say("cleaning up a stale lab first")
        down(say=lambda _: None)
    topo = Topology.plan(nodes, ipv6)
    started = time.monotonic()
    try:
        STATE.mkdir(mode=0o700, parents=True)
        say(f"network: bridge in {topology.BRIDGE_NS}, {nodes} nodes, IPv6 {'on' if ipv6 else 'off'}")
        topology.build(topo)
        topo.save(TOPOLOGY_FILE)
        say(f"control plane: etcd + kube-apiserver at https://{topology.CP_IP4}:6443 in {topology.CP_NS}")
        cp = cluster.start_control_plane(topo)
        api = LabApi()
        cluster.bootstrap(api, topo)
        say(f"cluster: Nodes {', '.join(h.name for h in topo.node_hosts)}")
        cp.install_chart(cluster.RELEASE, cluster.NAMESPACE, cluster.lab_values(topo, timing, controllers))
        pools = topology.POOL4 + (f", {topology.POOL6}" if ipv6 else "")
        say(f"helm install {cluster.RELEASE} (chart {assets.chart_dir()}) into {cluster.NAMESPACE}: CRDs, RBAC, "
            f"heartbeat Secret, controller Deployment, speaker DaemonSet, IPPool default ({pools})")
        warnings = cluster.start_daemons(api, topo, speakers, faults)
        say("API proxies: nginx on 127.0.0.1:6443 in each pod's namespace"
            + (", the fault injector behind them" if faults else ""))
        say("pods started from the API server's Deployment and DaemonSet, with ServiceAccount tokens")
        for w in warnings:
            say(f"WARNING: {w}")
        cluster.wait_ready(topo, say=say)
    except BaseException:
        say("lab up failed; tearing down")
        _show_failed_logs(say)
        down(say=lambda _: None, keep_logs=True)
        raise
    say(f"lab up in {time.monotonic() - started:.1f}s (state in {STATE})")
    return topo, warnings


def _show_failed_logs(say: Say) -> None:
    """The daemon logs go with the state dir; show the ones that complain before they do."""
    if processes.LOGS.exists():
        for log in sorted(processes.LOGS.glob("*.log")):
            text = log.read_text(errors="replace").strip()
            if text and ("Traceback" in text or "error" in text.lower()):
                say(f"--- {log.name} (last lines)\n{cluster.tail(log.stem, 10)}")


def down(say: Say = print, keep_logs: bool = False) -> None:
    """Idempotent: kills every lab process, deletes every lbctl-* namespace and the state dir."""
    require_root()
    killed = processes.kill_all()
    if killed:
        say(f"stopped {killed} processes")
    gone = topology.destroy()
    if gone:
        say(f"deleted namespaces: {', '.join(gone)}")
    if STATE.exists():
        if keep_logs and processes.LOGS.exists():
            saved = STATE.with_name(STATE.name + "-logs")
            shutil.rmtree(saved, ignore_errors=True)
            shutil.copytree(processes.LOGS, saved)
            say(f"logs kept in {saved}")
        shutil.rmtree(STATE, ignore_errors=True)
    if not (killed or gone):
        say("no lab was running")


def load_topology() -> Topology:
    if not TOPOLOGY_FILE.exists():
        raise LabError("no lab is up; run `lbctl lab up`")
    return Topology.load(TOPOLOGY_FILE)
