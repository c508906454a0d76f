"""The lab's Kubernetes side: the control plane in lbctl-cp, the chart's values, the daemons' logs."""

from __future__ import annotations

from typing import Any

from . import processes, router
from .controlplane import ControlPlane
from .processes import STATE
from .topology import CP_IP4, CP_NS, POOL4, POOL6, Topology

RELEASE, NAMESPACE = "lbctl", "lbctl-system"
ADMIN_KUBECONFIG = STATE / "cp" / "kubeconfig-admin"


def start_control_plane(topo: Topology, apiserver_args: list[str] | None = None) -> ControlPlane:
    """etcd, kube-apiserver (with `apiserver_args` added), kube-controller-manager and kube-scheduler."""
    cp = ControlPlane(host=CP_IP4, netns=CP_NS, workdir=STATE / "cp", dual_stack=topo.ipv6, controllers=True,
                      apiserver_args=apiserver_args or [])
    cp.start()
    for name, pid in cp.pids().items():
        processes.record(name, pid)
    return cp


def lab_values(topo: Topology, image: tuple[str, str], timing: str | None = None, controllers: int = 1,
               restart_hold: int | None = None) -> dict[str, Any]:
    """The lab's values for the chart: the seed's pool renumbered, JSON logs, and the speakers' heartbeat
    timing preset, the controller's replicas and the image (repository, tag) when asked for; in BGP mode the
    peers to the lab's router and a pool announced by BGP only (lbctl.lab.router). Nothing else differs from a
    user's install."""
    pool: dict[str, Any] = {"name": "default", "addresses": [POOL4] + ([POOL6] if topo.ipv6 else [])}
    values: dict[str, Any] = {"pools": [pool], "logFormat": "json"}
    if topo.bgp:
        pool.update(router.pool_values(topo))
        values["bgp"] = router.chart_values(topo)
    values["image"] = {"repository": image[0], "tag": image[1]}
    if restart_hold is not None:
        values.setdefault("speaker", {})["restartHold"] = restart_hold
    if timing:
        values.setdefault("speaker", {})["heartbeat"] = {"timing": timing}
    if controllers != 1:
        values["controller"] = {"replicas": controllers}
    return values


def tail(name: str, lines: int = 15) -> str:
    try:
        return "\n".join((processes.LOGS / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
