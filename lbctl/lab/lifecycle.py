"""`lab up` and `lab down`: build the topology, start the cluster, and tear all of it down again."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from lbctl import assets

from . import apiproxy, cluster, processes, realcluster, realfaults, router, topology
from .api import LabApi
from .controlplane import ControlPlane
from .processes import STATE
from .topology import Topology

TOPOLOGY_FILE = STATE / "topology.json"
LAB_IMAGE = ("localhost/lbctl", "lab")  # what the real cluster's nodes have imported (no registry)
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


def up(nodes: int = 3, ipv6: bool = True, say: Say = print, timing: str | None = None, faults: bool = False,
       controllers: int = 1, archives: list[Path] | None = None,
       restart_hold: int | None = None, bgp: bool = False) -> tuple[Topology, list[str]]:
    """The real cluster (lbctl.lab.realcluster): kubelets, containerd, kube-proxy and the controllers, running the
    chart's image from `archives` (built here when none are given). Returns the topology and warnings. Cleans
    up everything on failure. `faults` puts the fault injector (lbctl.lab.faultproxy) between the pods'
    `kubernetes` Service and the API server (lbctl.lab.realfaults); `controllers`: the controller's replicas;
    `restart_hold`: the chart's speaker.restartHold; `bgp`: the router (lbctl.lab.router) on the bridge, the
    client behind it, and the chart's BGP peers to it (kept in the topology file, so `down` finds it all)."""
    require_root()
    if is_up():
        raise LabError(f"a lab is already up (state in {STATE}); run `lbctl lab down` first")
    if leftovers():
        say("cleaning up a stale lab first")
        down(say=lambda _: None)
    topo = Topology.plan(nodes, ipv6, bgp)
    started = time.monotonic()
    try:
        STATE.mkdir(mode=0o700, parents=True)
        say(f"network: bridge in {topology.BRIDGE_NS}, {nodes} nodes, IPv6 {'on' if topo.ipv6 else 'off'}")
        topology.build(topo)
        topo.save(TOPOLOGY_FILE)
        if bgp:
            took = router.start(topo)
            say(f"router: FRR (zebra, bfdd, bgpd) AS {router.ROUTER_ASN} at {topology.ROUTER_IP4} in "
                f"{topology.ROUTER_NS}, up in {took:.2f} s; the client behind it at {topo.host('client').ip4}")
        say(f"control plane: etcd + kube-apiserver at https://{topology.CP_IP4}:6443 in {topology.CP_NS}")
        if faults:  # the pods' API server behind the fault injector (lbctl.lab.realfaults)
            cp = cluster.start_control_plane(topo, realfaults.APISERVER_ARGS)
            realfaults.start(cp, LabApi())
            say(f"  the pods' `kubernetes` Service: nginx on {topology.CP_IP4}:{apiproxy.FRONT_PORT}, the fault "
                "injector, the API server")
        else:
            cp = cluster.start_control_plane(topo)
        return topo, _up_real(cp, LabApi(), topo, archives or [], say, timing, controllers, started, restart_hold)
    except BaseException:
        say("lab up failed; tearing down")
        _show_failed_logs(say)
        down(say=lambda _: None, keep_logs=True)
        raise


def _up_real(cp: ControlPlane, api: LabApi, topo: Topology, archives: list[Path], say: Say, timing: str | None,
             controllers: int, started: float, restart_hold: int | None) -> list[str]:
    say("  kube-controller-manager and kube-scheduler beside it")
    say(f"nodes: a kubelet with its own containerd (runc, CNI bridge) and kube-proxy (iptables) in "
        f"{', '.join(h.netns for h in realcluster.hosts(topo))}; pod ranges in {realcluster.cluster_cidrs(topo)}")
    if not archives:
        from . import images  # noqa: PLC0415 - podman and the image recipes: only the real cluster needs them
        built = images.ensure_lab_images()
        made = {k: f"{v:.1f} s" for k, v in built.timings.items() if v and k != "total"}
        say(f"images: {', '.join(built.tags)} ({'built: ' + ', '.join(f'{k} {v}' for k, v in made.items()) if made else 'cached'})")
        archives = [built.archive]
    realcluster.start(cp, topo, archives, say)
    realcluster.wait_nodes_ready(api, topo)
    say(f"cluster: Nodes {', '.join(h.name for h in realcluster.hosts(topo))} Ready (cp tainted "
        f"{realcluster.CP_ROLE}:NoSchedule)")
    values = cluster.lab_values(topo, LAB_IMAGE, timing, controllers, restart_hold)
    cp.install_chart(cluster.RELEASE, cluster.NAMESPACE, values)
    say(f"helm install {cluster.RELEASE} (chart {assets.chart_dir()}, image {':'.join(LAB_IMAGE)}) into "
        f"{cluster.NAMESPACE}")
    realcluster.wait_workloads(api, cluster.NAMESPACE, say=say)
    realcluster.deploy_backend(api, topo)
    say(f"backend: Deployments {', '.join(f'{realcluster.BACKEND}-{h.name}' for h in topo.node_hosts)} "
        f"({realcluster.BACKEND_IMAGE}), Ready")
    say(f"lab up in {time.monotonic() - started:.1f}s (state in {STATE})")
    return []


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
    if keep_logs:
        _keep_logs(say)
    nodes = realcluster.stop_all()  # before kill_all: containers, cgroups and mount namespaces go in order
    if nodes:
        say(f"stopped {nodes} real nodes (kubelet, containers, containerd)")
    if router.stop():  # before kill_all: it also removes the daemons' crash log dirs outside the lab
        say("stopped the router (FRR)")
    killed = processes.kill_all()
    if killed:
        say(f"stopped {killed} processes")
    gone = topology.destroy()
    if gone:
        say(f"deleted namespaces: {', '.join(gone)}")
    if STATE.exists():
        shutil.rmtree(STATE, ignore_errors=True)
    if not (killed or gone):
        say("no lab was running")


def _keep_logs(say: Say) -> None:
    """The daemons' logs, and each real node's (kubelet, containerd, kube-proxy, pods), beside the state dir."""
    saved = STATE.with_name(STATE.name + "-logs")
    shutil.rmtree(saved, ignore_errors=True)
    if processes.LOGS.exists():
        shutil.copytree(processes.LOGS, saved)
    for logs in realcluster.log_dirs():
        shutil.copytree(logs, saved / logs.parent.name, dirs_exist_ok=True, symlinks=True)
    if saved.exists():
        say(f"logs kept in {saved}")


def load_topology() -> Topology:
    if not TOPOLOGY_FILE.exists():
        raise LabError("no lab is up; run `lbctl lab up`")
    return Topology.load(TOPOLOGY_FILE)
