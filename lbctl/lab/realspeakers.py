"""The chart's speakers on the real cluster, as tests and benchmarks reach them: the container's process, its
pod, its HTTP endpoint and log; signal one and keep it down; bring them all back."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import yaml

from lbctl import assets

from . import processes, realcluster
from .api import LabApi, wait_for
from .cluster import NAMESPACE
from .realnode import RealNode
from .topology import Topology

COMMAND = b"lbctl-speaker"  # in the speaker container's command line
SELECTOR = "app.kubernetes.io/component=speaker"


def node(name: str) -> RealNode:
    return RealNode.load(realcluster.NODES / name)


def pid(name: str) -> int | None:
    """The pid of the speaker container's process on node `name` (None when it is not running)."""
    for p in node(name).pids_in_cgroup():
        try:
            if COMMAND in Path(f"/proc/{p}/cmdline").read_bytes():
                return p
        except OSError:
            pass
    return None


def url(topo: Topology, name: str, path: str = "/metrics") -> str:
    """The speaker's HTTP endpoint on node `name` (hostNetwork: the node's address), to fetch inside its netns."""
    port = yaml.safe_load((assets.chart_dir() / "values.yaml").read_text())["speaker"]["httpPort"]
    return f"http://{topo.host(name).ip4}:{port}{path}"


def pods(api: LabApi) -> dict[str, dict[str, Any]]:
    """node name -> its speaker pod."""
    items = api.get(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=SELECTOR)["items"]
    return {p["spec"]["nodeName"]: p for p in items if p["spec"].get("nodeName")}


def log(api: LabApi, name: str) -> str:
    """What node `name`'s current speaker pod printed, as its kubelet keeps it (CRI log lines, oldest first)."""
    pod = pods(api).get(name)
    if not pod:
        return ""
    meta = pod["metadata"]
    logs = node(name).workdir / "log" / "pods" / f"{NAMESPACE}_{meta['name']}_{meta['uid']}"
    files = sorted(logs.rglob("*.log"), key=lambda f: f.stat().st_mtime) if logs.is_dir() else []
    return "".join(f.read_text(errors="replace") for f in files)


def kill(name: str, sig: signal.Signals) -> int:
    """Signal node `name`'s speaker and keep it down: the node's kubelet is stopped first, so nothing restarts
    the container until restore() (a running kubelet restarts it within about a second, and the election then
    gives its addresses back). Returns the pid signalled."""
    node(name).stop_kubelet()
    p = pid(name)
    if not p:
        raise realcluster.ClusterError(f"the speaker on {name} is not running")
    os.kill(p, sig)
    return p


def restore(api: LabApi, topo: Topology, timeout: float = 90) -> None:
    """Start every stopped kubelet (it restarts the speaker it finds dead), then wait until every speaker pod
    is Ready with its process running."""
    for h in realcluster.hosts(topo):
        n = node(h.name)
        if not processes.alive(n.pid("kubelet")):
            n.start_kubelet()

    def all_ready() -> bool:
        found = pods(api)
        return all(_ready(found.get(h.name)) and pid(h.name) for h in realcluster.hosts(topo))
    wait_for(all_ready, timeout, "every speaker pod Ready", interval=0.2)


def _ready(pod: dict[str, Any] | None) -> bool:
    return bool(pod) and any(c["type"] == "Ready" and c["status"] == "True"
                             for c in (pod or {}).get("status", {}).get("conditions") or [])
