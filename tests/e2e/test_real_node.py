"""A real node: containerd + runc + a kubelet in a network namespace, against a control plane with the real
kube-controller-manager and kube-scheduler. A DaemonSet's pod is created by the DaemonSet controller, bound by
the scheduler, made Ready by the kubelet's own httpGet probe, and runs with exactly the capabilities its
securityContext asks for, enforced by runc.

The test builds its own pair of namespaces (a veth between them, no lab bridge): the control plane in one,
the node in the other. Binaries come from lbctl/lab/build-apiserver.sh; a missing one fails the test with
the command that builds it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lbctl.lab import kubebins, realnode
from lbctl.lab.controlplane import ControlPlane, ControlPlaneError
from lbctl.lab.topology import PREFIX
from tests import image
from tests.wait import wait_for

pytestmark = pytest.mark.timeout(900)

CP_NS, NODE_NS = f"{PREFIX}rcp", f"{PREFIX}rn1"
CP_IP, NODE_IP = "198.18.0.11", "198.18.0.21"
NODE = "node1"
WORKDIR = Path("/dev/shm") / f"{PREFIX}realnode-test"  # fixed: a crashed run's node is cleaned up by the next
DS, NS, PORT = "realnode-web", "default", 18080
PROBE_PATH = "/?probe=kubelet"  # only the kubelet asks for this: its line in the pod's log proves who probed
CAP_NET_RAW = 1 << 13


@dataclass
class Cluster:
    cp: ControlPlane
    node: realnode.RealNode
    started: float  # when the kubelet was started (monotonic)

    def get(self, path: str) -> Any:
        """The object, or None when the API server has none (404 or any error: the caller waits)."""
        try:
            return self.cp.request("GET", path)
        except ControlPlaneError:
            return None


def _sh(*argv: str, check: bool = True) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and res.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")


def _namespaces() -> None:
    for ns in (CP_NS, NODE_NS):
        _sh("ip", "netns", "add", ns)
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
    # Made inside the control-plane namespace, the peer moved straight into the node's: never in the root ns.
    _sh("ip", "-n", CP_NS, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", NODE_NS)
    for ns, ip in ((CP_NS, CP_IP), (NODE_NS, NODE_IP)):
        _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _sh("ip", "-n", ns, "link", "set", "eth0", "up")


def _teardown(node: realnode.RealNode, cp: ControlPlane | None) -> None:
    errors = []
    try:
        node.stop()
    except Exception as e:  # noqa: BLE001 - the rest must still go
        errors.append(e)
    if cp:
        cp.cleanup()
    for ns in (NODE_NS, CP_NS):
        _sh("ip", "netns", "del", ns, check=False)
    if errors:
        raise errors[0]  # WORKDIR stays: its pidfiles let the next run finish the job
    shutil.rmtree(WORKDIR, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("a real node needs root: network and mount namespaces, cgroups")
    try:
        kubebins.require(*kubebins.BUILT, "containerd", "ctr", "runc", "nsenter", "unshare")
    except kubebins.MissingBinary as e:
        pytest.fail(str(e))
    node = realnode.RealNode(NODE, NODE_NS, NODE_IP, WORKDIR / "node", WORKDIR / "cp" / f"kubeconfig-node-{NODE}")
    _teardown(node, None)  # a crashed run's leftovers
    cp = None
    try:
        _namespaces()
        cp = ControlPlane(host=CP_IP, netns=CP_NS, workdir=WORKDIR / "cp", dual_stack=False, controllers=True)
        cp.start()
        cp.node_kubeconfig(NODE)
        started = time.monotonic()
        node.start()
        image.ensure_tools()
        image.ensure_base()
        archive = WORKDIR / "base.tar"
        image.podman("save", "--format", "docker-archive", "-o", str(archive), image.BASE_TAG, timeout=300)
        node.import_image(archive)
        archive.unlink()
        yield Cluster(cp, node, started)
    finally:
        _teardown(node, cp)


def _condition(obj: dict[str, Any] | None, kind: str) -> bool:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == kind and c["status"] == "True" for c in conds)


def _daemonset() -> dict[str, Any]:
    labels = {"app": DS}
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": DS, "namespace": NS},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "hostNetwork": True,
            "containers": [{
                "name": "web", "image": image.BASE_TAG, "imagePullPolicy": "Never",
                "command": ["python3", "-m", "http.server", str(PORT), "--bind", NODE_IP, "--directory", "/tmp"],
                "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]},
                                    "readOnlyRootFilesystem": True},
                "readinessProbe": {"httpGet": {"path": PROBE_PATH, "port": PORT}, "periodSeconds": 1},
            }]}}}}


def _web_process(node: realnode.RealNode) -> int | None:
    """The container's http.server, found among the processes of the node's cgroups."""
    for pid in node.pids_in_cgroup():
        try:
            if b"http.server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    return None


def _status_field(pid: int, name: str) -> str:
    return next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith(name + ":"))


def test_daemonset_pod_runs_on_the_real_node(cluster: Cluster) -> None:
    node_obj = wait_for(lambda: (n := cluster.get(f"/api/v1/nodes/{NODE}")) and _condition(n, "Ready") and n,
                        90, 0.5, f"Node {NODE} Ready (kubelet log: {cluster.node.logs / 'kubelet.log'})")
    assert {"type": "InternalIP", "address": NODE_IP} in node_obj["status"]["addresses"]
    print(f"real node: Ready {time.monotonic() - cluster.started:.1f} s after containerd and kubelet start")
    # The controller-manager's ServiceAccount controllers, with the API server's signing key.
    sa = wait_for(lambda: (s := cluster.get(f"/api/v1/namespaces/{NS}/serviceaccounts/default")) and
                  s.get("secrets") and s, 60, 0.5, "the default ServiceAccount with its token Secret")
    token = cluster.cp.request("GET", f"/api/v1/namespaces/{NS}/secrets/{sa['secrets'][0]['name']}")
    assert token["type"] == "kubernetes.io/service-account-token" and token["data"]["token"]

    created = time.monotonic()
    ds = cluster.cp.request("POST", f"/apis/apps/v1/namespaces/{NS}/daemonsets", _daemonset())

    def ready_pod() -> dict[str, Any] | None:
        pods = cluster.get(f"/api/v1/namespaces/{NS}/pods?labelSelector=app%3D{DS}") or {"items": []}
        return next((p for p in pods["items"] if _condition(p, "Ready")), None)
    pod = wait_for(ready_pod, 120, 0.5, f"the DaemonSet's pod Ready (node logs: {cluster.node.logs})")
    print(f"real node: DaemonSet pod Ready {time.monotonic() - created:.1f} s after the DaemonSet was created")

    name = pod["metadata"]["name"]
    [owner] = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == \
        ("DaemonSet", DS, ds["metadata"]["uid"], True)
    assert pod["spec"]["nodeName"] == NODE
    events = cluster.cp.request("GET", f"/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name%3D{name}")
    scheduled = [e for e in events["items"] if e["reason"] == "Scheduled"]
    assert scheduled and all((e.get("reportingComponent") or e["source"].get("component")) == "default-scheduler"
                             for e in scheduled), events["items"]

    # Readiness came from the kubelet's own probe: its request is in the container's log (per node /var/log/pods).
    logs = list((cluster.node.workdir / "log" / "pods").glob(f"{NS}_{name}_*/web/*.log"))
    assert logs and any(f"GET {PROBE_PATH} HTTP/1.1\" 200" in p.read_text() for p in logs), logs

    pid = wait_for(lambda: _web_process(cluster.node), 10, 0.1, "the http.server process in the node's cgroups")
    assert int(_status_field(pid, "CapEff"), 16) == CAP_NET_RAW
    assert int(_status_field(pid, "CapBnd"), 16) == CAP_NET_RAW
    # hostNetwork: the container shares the node's network namespace.
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{NODE_NS}").st_ino
