"""The lab's Kubernetes side: control plane in lbctl-cp, the objects a cluster would have, the daemons."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .controlplane import ControlPlane

from . import apiproxy, faultproxy, pods, processes
from .api import LabApi
from .processes import STATE
from .topology import CP_IP4, CP_NS, CLIENT_NS, POOL4, POOL6, Topology

RELEASE, NAMESPACE = "lbctl", "lbctl-system"
ADMIN_KUBECONFIG = STATE / "cp" / "kubeconfig-admin"
HOSTNAME = "kubernetes.io/hostname"


def start_control_plane(topo: Topology, controllers: bool = False) -> ControlPlane:
    cp = ControlPlane(host=CP_IP4, netns=CP_NS, workdir=STATE / "cp", dual_stack=topo.ipv6, controllers=controllers)
    cp.start()
    for name, pid in cp.pids().items():
        processes.record(name, pid)
    return cp


def bootstrap(api: LabApi, topo: Topology) -> None:
    """Node objects with what a kubelet would report; everything of lbctl's comes from the chart."""
    calls = []
    for h in topo.node_hosts:
        calls.append({"method": "APPLY", "path": "/api/v1/nodes", "body": {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": h.name, "labels": {HOSTNAME: h.name, "kubernetes.io/os": "linux"}}}})
        addresses = [{"type": "InternalIP", "address": h.ip4}] + (
            [{"type": "InternalIP", "address": h.ip6}] if topo.ipv6 else [])
        # The API server taints new Nodes not-ready; the node lifecycle controller (absent here) would lift it.
        calls.append({"method": "PATCH", "path": f"/api/v1/nodes/{h.name}", "content_type": "application/merge-patch+json",
                      "body": {"spec": {"taints": None}}})
        calls.append({"method": "PATCH", "path": f"/api/v1/nodes/{h.name}/status",
                      "content_type": "application/merge-patch+json", "body": {"status": {
                          "addresses": addresses + [{"type": "Hostname", "address": h.name}],
                          "conditions": [{"type": "Ready", "status": "True", "reason": "LabNode",
                                          "message": "lbctl lab node"}]}}})
    bad = [r for r in api.batch(calls) if not 200 <= r["status"] < 300]
    if bad:
        raise RuntimeError(f"creating Nodes: HTTP {bad[0]['status']}: {bad[0]['body'].get('message', bad[0]['body'])}")


def lab_values(topo: Topology, timing: str | None = None, controllers: int = 1,
               image: tuple[str, str] | None = None, restart_hold: int | None = None) -> dict[str, Any]:
    """The lab's values for the chart: the seed's pool renumbered, JSON logs, and the speakers' heartbeat
    timing preset, the controller's replicas and the image (repository, tag) when asked for. Nothing else
    differs from a user's install."""
    values: dict[str, Any] = {"pools": [{"name": "default", "addresses": [POOL4] + ([POOL6] if topo.ipv6 else [])}],
                              "logFormat": "json"}
    if image:
        values["image"] = {"repository": image[0], "tag": image[1]}
    else:
        # The process lab's SIGTERM tests exercise the graceful handover, which is what a speaker stopping on
        # a cordoned or failing node does; nothing restarts its pods on their own to end a hold.
        values["speaker"] = {"restartHold": 0}
    if restart_hold is not None:
        values.setdefault("speaker", {})["restartHold"] = restart_hold
    if timing:
        values.setdefault("speaker", {})["heartbeat"] = {"timing": timing}
    if controllers != 1:
        values["controller"] = {"replicas": controllers}
    return values


def start_api_proxies(topo: Topology, faults: bool = False) -> None:
    """nginx on localhost in each namespace that runs pods (lbctl.lab.apiproxy says why); with `faults`, the
    fault injector between every nginx and the API server (lbctl.lab.faultproxy)."""
    if faults:
        processes.spawn("faultproxy", CP_NS, [sys.executable, "-m", "lbctl.lab.faultproxy"])
        deadline = time.monotonic() + 10
        while not faultproxy.CONTROL.exists():
            if time.monotonic() > deadline or not processes.alive(processes.pid_of("faultproxy")):
                raise RuntimeError("faultproxy did not start:\n" + tail("faultproxy"))
            time.sleep(0.05)
    apiproxy.start(topo, faults)


def start_daemons(api: LabApi, topo: Topology, speakers: bool = True, faults: bool = False) -> list[str]:
    """The chart's pods (controller, speakers) as the lab's kubelet runs them, each reaching the API server
    through its namespace's nginx; httpd and the kube-proxy stand-in in each node. Returns warnings."""
    py = sys.executable
    warnings = []
    if not speakers:
        warnings.append("started without speakers (--no-speakers): nothing answers ARP/NDP for LB IPs")
    start_api_proxies(topo, faults)
    host, port, ca = apiproxy.kubernetes_service()
    pods.launch(api, NAMESPACE, topo, ca, want=lambda name: speakers or not name.startswith("speaker"),
                service=(host, port))
    for h in topo.node_hosts:
        processes.spawn(f"httpd-{h.name}", h.netns, [py, "-m", "lbctl.lab.httpd", "--name", h.name])
        processes.spawn(f"kubeproxy-{h.name}", h.netns, [py, "-m", "lbctl.lab.kubeproxy",
                                                         "--kubeconfig", str(ADMIN_KUBECONFIG)])
    return warnings


def restart_speaker(node: str) -> None:
    pods.restart(f"speaker-{node}")


def speaker_ready_url(node: str) -> str:
    url = pods.saved()[f"speaker-{node}"].ready_url
    if not url:
        raise RuntimeError("the chart's speaker container has no readinessProbe")
    return url


def http_ok(netns: str, url: str, timeout: float = 1.0) -> bool:
    res = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sf", "-o", "/dev/null", "-m", str(timeout), url],
                         capture_output=True)
    return res.returncode == 0


def wait_ready(topo: Topology, timeout: float = 90, say: Callable[[str], None] = print) -> None:
    """Wait for every chart pod's readiness probe and every httpd; name what is late, and dead daemons."""
    checks = {name: (run.netns, run.ready_url) for name, run in pods.saved().items() if run.ready_url
              and processes.pid_of(name)}
    for h in topo.node_hosts:
        checks[f"httpd-{h.name}"] = (CLIENT_NS, f"http://{h.ip4}/")
    pending = dict(checks)
    deadline = time.monotonic() + timeout
    while pending:
        for name, (ns, url) in list(pending.items()):
            if not processes.alive(processes.pid_of(name)):
                raise RuntimeError(f"{name} exited during start-up; see {processes.LOGS / (name + '.log')}:\n"
                                   + tail(name))
            if http_ok(ns, url):
                del pending[name]
                say(f"  ready: {name}")
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(pending)} (logs in {processes.LOGS})")
        time.sleep(0.2)


def tail(name: str, lines: int = 15) -> str:
    try:
        return "\n".join((processes.LOGS / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
