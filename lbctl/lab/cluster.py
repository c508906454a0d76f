"""The lab's Kubernetes side: control plane in lbctl-cp, the objects a cluster would have, the daemons."""

from __future__ import annotations

import base64
import importlib.util
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from lbctl.controlplane import ControlPlane, manifests
from lbctl.kube.resources import IPPOOLS, path

from . import processes
from .api import LabApi, wait_for
from .processes import STATE
from .topology import CP_IP4, CP_NS, CLIENT_NS, POOL4, POOL6, Topology

CONTROLLER_PORT, SPEAKER_PORT = 7472, 7473
KEY_FILE = STATE / "heartbeat.key"
HOSTNAME = "kubernetes.io/hostname"


def start_control_plane(topo: Topology) -> ControlPlane:
    cp = ControlPlane(host=CP_IP4, netns=CP_NS, workdir=STATE / "cp", dual_stack=topo.ipv6)
    cp.start()
    for name, proc in zip(("etcd", "kube-apiserver"), cp.procs):
        processes.record(name, proc.pid)
    return cp


def bootstrap(api: LabApi, topo: Topology) -> None:
    """CRDs and RBAC from deploy/, Node objects, the heartbeat Secret and the default pool."""
    calls = []
    for doc in manifests("crds", "rbac"):
        ns = doc["metadata"].get("namespace")
        calls.append({"method": "APPLY", "path": path(doc["apiVersion"], doc["kind"], namespace=ns), "body": doc})
    _check(api.batch(calls), "applying deploy/crds and deploy/rbac")
    wait_for(lambda: api.batch([{"method": "GET", "path": IPPOOLS}])[0]["status"] == 200, 30, "the IPPool CRD")

    key = secrets.token_hex(32)
    fd = os.open(KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    calls = [{"method": "APPLY", "path": "/api/v1/namespaces/lbctl-system/secrets", "body": {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "lbctl-memberlist", "namespace": "lbctl-system"},
        "data": {"secretkey": base64.b64encode(key.encode()).decode()}}}]
    for h in topo.node_hosts:
        calls.append({"method": "APPLY", "path": "/api/v1/nodes", "body": {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": h.name, "labels": {HOSTNAME: h.name, "kubernetes.io/os": "linux"}}}})
        # No kubelet here: give the Node what one would report (addresses, Ready).
        addresses = [{"type": "InternalIP", "address": h.ip4}] + (
            [{"type": "InternalIP", "address": h.ip6}] if topo.ipv6 else [])
        calls.append({"method": "PATCH", "path": f"/api/v1/nodes/{h.name}/status",
                      "content_type": "application/merge-patch+json", "body": {"status": {
                          "addresses": addresses + [{"type": "Hostname", "address": h.name}],
                          "conditions": [{"type": "Ready", "status": "True", "reason": "LabNode",
                                          "message": "lbctl lab node"}]}}})
    calls.append({"method": "APPLY", "path": IPPOOLS, "body": default_pool(topo)})
    _check(api.batch(calls), "creating Nodes, the heartbeat Secret and the default IPPool")


def default_pool(topo: Topology) -> dict[str, Any]:
    return {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "default"},
            "spec": {"addresses": [POOL4] + ([POOL6] if topo.ipv6 else [])}}


def _check(results: list[dict[str, Any]], what: str) -> None:
    bad = [r for r in results if not 200 <= r["status"] < 300]
    if bad:
        body = bad[0]["body"]
        raise RuntimeError(f"{what}: HTTP {bad[0]['status']}: {body.get('message', body)}")


def speaker_available() -> bool:
    return importlib.util.find_spec("speaker.__main__") is not None


def start_daemons(topo: Topology, speakers: bool = True) -> list[str]:
    """Controller in lbctl-cp; httpd, kube-proxy stand-in and speaker in each node. Returns warnings."""
    py, cp = sys.executable, STATE / "cp"
    warnings = []
    processes.spawn("controller", CP_NS, [py, "-m", "controller", "--kubeconfig", str(cp / "kubeconfig-controller"),
                                          "--http-host", CP_IP4, "--http-port", str(CONTROLLER_PORT),
                                          "--log-format", "json"])
    has_speaker = speakers and speaker_available()
    if not speakers:
        warnings.append("started without speakers (--no-speakers): nothing answers ARP/NDP for LB IPs")
    elif not has_speaker:
        warnings.append("speaker package has no __main__ yet: nodes will not answer ARP/NDP for LB IPs")
    for h in topo.node_hosts:
        processes.spawn(f"httpd-{h.name}", h.netns, [py, "-m", "lbctl.lab.httpd", "--name", h.name])
        processes.spawn(f"kubeproxy-{h.name}", h.netns, [py, "-m", "lbctl.lab.kubeproxy",
                                                         "--kubeconfig", str(cp / "kubeconfig-admin")])
        if has_speaker:
            processes.spawn(f"speaker-{h.name}", h.netns, speaker_argv(h.name, h.ip4))
    return warnings


def speaker_argv(node: str, host: str) -> list[str]:
    return [sys.executable, "-m", "speaker", "--node-name", node, "--kubeconfig",
            str(STATE / "cp" / "kubeconfig-speaker"), "--heartbeat-key-file", str(KEY_FILE),
            "--http-host", host, "--http-port", str(SPEAKER_PORT), "--log-format", "json"]


def http_ok(netns: str, url: str, timeout: float = 1.0) -> bool:
    res = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sf", "-o", "/dev/null", "-m", str(timeout), url],
                         capture_output=True)
    return res.returncode == 0


def wait_ready(topo: Topology, timeout: float = 90, say: Callable[[str], None] = print) -> None:
    """Wait for the controller, every speaker and every httpd; name what is late, and dead daemons."""
    checks = {"controller": (CP_NS, f"http://{CP_IP4}:{CONTROLLER_PORT}/readyz")}
    for h in topo.node_hosts:
        checks[f"httpd-{h.name}"] = (CLIENT_NS, f"http://{h.ip4}/")
        if processes.pid_of(f"speaker-{h.name}"):
            checks[f"speaker-{h.name}"] = (h.netns, f"http://{h.ip4}:{SPEAKER_PORT}/readyz")
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
