"""The lab as a real cluster: a kubelet with its own containerd in every host namespace (the control plane's
too, tainted as kubespray taints it), kube-proxy in iptables mode on every node, and pod networking from
Debian's CNI plugins (a bridge and host-local per node, routes between the nodes' pod ranges).

Addresses: pod ranges are /24s of POD_NET (the control plane's first, node k's the k-th after it), inside the
lab's 198.18.0.0/15 and clear of the hosts' /24 and the Service range (198.19.0.0/16). Every host namespace
forwards and routes each other host's pod range via that host, so a pod reaches the API server and a
LoadBalancer IP's traffic reaches a pod on any node (kube-proxy masquerades it unless the Service keeps the
client's address with externalTrafficPolicy Local).

Dual-stack (a topology with IPv6, the default), as a kubespray dual-stack cluster: every pod also gets an
address from its host's /64 of POD_NET6 (host-local with two ranges), routed between the hosts like the IPv4
ones. The 1.20 components run with the alpha gate IPv6DualStack, as kubespray's kube_feature_gates sets it
everywhere; measured, kube-proxy is the one that needs it (an ip6tables proxier beside the iptables one,
--cluster-cidr with both families; without it no ip6tables rule for an IPv6 ClusterIP), while the kubelet
reported both status.podIPs and the EndpointSlice controller wrote IPv6 slices without it.

kubelets and kube-proxies reach the API server through nginx on the node's 127.0.0.1:6443, kubespray's
nginx-proxy (lbctl.lab.nodeproxy); the pods reach it through the `kubernetes` Service, i.e. through
kube-proxy's rules, as on any cluster.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import kubebins, nodeproxy
from .api import LabApi
from .controlplane import ControlPlane
from .processes import STATE
from .realnode import RealNode
from .topology import NET4, NET6, Host, Topology, in_ns, sh

POD_NET = "198.18.128.0/17"
POD_NET6 = "2001:db8:80::/56"  # a /64 per host; clear of the hosts' 2001:db8:18::/64 and the Service /112
NODES = STATE / "nodes"
EXCLUDE_LB = "node.kubernetes.io/exclude-from-external-load-balancers"
CP_ROLE = "node-role.kubernetes.io/master"  # kubespray's control-plane taint and label (1.20)
# A node's default route, as every real node has one: a ClusterIP is routed before kube-proxy's OUTPUT rule
# rewrites it, so without a route a hostNetwork pod's connect() fails with ENETUNREACH. Nothing answers at this
# address; anything not rewritten stays on the lab bridge, in the lab's namespaces.
GATEWAY = f"{NET4}.1"
GATEWAY6 = f"{NET6}:1"
PROXY_HEALTH_PORT = 10256  # kube-proxy's health check: healthCheckNodePort answers come from here too
Say = Callable[[str], None]


class ClusterError(RuntimeError):
    pass


def hosts(topo: Topology) -> list[Host]:
    """The hosts that run a kubelet: the control plane, then the nodes."""
    return [topo.host("cp"), *topo.node_hosts]


def pod_cidr(topo: Topology, h: Host) -> str:
    return f"198.18.{128 + hosts(topo).index(h)}.0/24"


def pod_cidr6(topo: Topology, h: Host) -> str:
    return str(ipaddress.ip_network(f"2001:db8:80:{hosts(topo).index(h):x}::/64"))  # canonical: the cp's is ::/64


def pod_cidrs(topo: Topology, h: Host) -> list[str]:
    """The host's pod ranges: IPv4, and IPv6 when the lab is dual-stack."""
    return [pod_cidr(topo, h), *([pod_cidr6(topo, h)] if topo.ipv6 else [])]


def cluster_cidrs(topo: Topology) -> str:
    """kube-proxy's --cluster-cidr: one range per family the pods have."""
    return ",".join([POD_NET, *([POD_NET6] if topo.ipv6 else [])])


def node(cp: ControlPlane, topo: Topology, h: Host) -> RealNode:
    args = [f"--register-with-taints={CP_ROLE}=:NoSchedule"] if h.name == "cp" else []
    return RealNode(h.name, h.netns, h.ip4, NODES / h.name, local(cp.node_kubeconfig(h.name)), pod_cidrs(topo, h),
                    args, h.ip6 if topo.ipv6 else "")


def local(kubeconfig: Path) -> Path:
    """A copy of `kubeconfig` (beside it, 0600) that dials the node's localhost proxy. The API server's
    certificate does not name 127.0.0.1: verify it as `kubernetes`, a name it carries, as kubespray does."""
    doc = yaml.safe_load(kubeconfig.read_text())
    for c in doc["clusters"]:
        c["cluster"]["server"] = f"https://{nodeproxy.HOST}:{nodeproxy.PORT}"
        c["cluster"]["tls-server-name"] = "kubernetes"
    path = kubeconfig.with_name(kubeconfig.name + "-local")
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(doc))
    return path


def start(cp: ControlPlane, topo: Topology, archives: list[Path], say: Say) -> list[RealNode]:
    """Pod routes, then every host's containerd, kubelet, images and kube-proxy, the hosts in parallel (most of
    a start is waiting). Raises ClusterError naming every host that failed; the caller tears down."""
    kubebins.require("kube-proxy")
    _pod_routes(topo)
    for h in hosts(topo):
        nodeproxy.start(h.name, h.netns, [f"{cp.host}:{cp.port}"])
    nodes = [node(cp, topo, h) for h in hosts(topo)]
    errors: dict[str, BaseException] = {}

    def bring_up(n: RealNode) -> None:
        try:
            started = time.monotonic()
            n.start()
            for archive in archives:
                n.import_image(archive)
            _start_kube_proxy(n, cp, topo)
            say(f"  {n.name}: containerd, kubelet, kube-proxy up, {len(archives)} image archive(s) imported "
                f"({time.monotonic() - started:.1f} s)")
        except BaseException as e:  # noqa: BLE001 - reported below, with the host's name
            errors[n.name] = e

    threads = [threading.Thread(target=bring_up, args=(n,), name=f"node-{n.name}") for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise ClusterError("; ".join(f"{name}: {e}" for name, e in errors.items()))
    return nodes


def _pod_routes(topo: Topology) -> None:
    for h in hosts(topo):
        in_ns(h.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        sh("ip", "-n", h.netns, "route", "replace", "default", "via", GATEWAY, "dev", "eth0")
        if topo.ipv6:
            in_ns(h.netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
            sh("ip", "-n", h.netns, "-6", "route", "replace", "default", "via", GATEWAY6, "dev", "eth0")
        for other in hosts(topo):
            if other is not h:
                sh("ip", "-n", h.netns, "route", "replace", pod_cidr(topo, other), "via", other.ip4)
                if topo.ipv6:
                    sh("ip", "-n", h.netns, "-6", "route", "replace", pod_cidr6(topo, other), "via", other.ip6)


def _start_kube_proxy(n: RealNode, cp: ControlPlane, topo: Topology) -> None:
    kube_proxy = kubebins.require("kube-proxy")["kube-proxy"]
    # With the gate, 1.20 runs a second (ip6tables) proxier beside the IPv4 one; each family's --cluster-cidr
    # tells it which sources are pods (masquerade, local-traffic detection).
    dual = ["--feature-gates=IPv6DualStack=true"] if topo.ipv6 else []
    n.run("kube-proxy", [
        str(kube_proxy), f"--kubeconfig={local(cp.kubeconfig('kube-proxy'))}", "--proxy-mode=iptables",
        f"--hostname-override={n.name}", f"--bind-address={n.ip}", f"--cluster-cidr={cluster_cidrs(topo)}", *dual,
        f"--healthz-bind-address={n.ip}:{PROXY_HEALTH_PORT}", "--metrics-bind-address=127.0.0.1:10249",
        # The machine's conntrack table size and timeouts are not a namespace's to change.
        "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0s",
        "--conntrack-tcp-timeout-close-wait=0s", "-v=1"])


def wait_nodes_ready(api: LabApi, topo: Topology, timeout: float = 90) -> None:
    """Every host's Node Ready (its kubelet registered, CNI configured), and the control plane labelled."""
    names = {h.name for h in hosts(topo)}
    deadline = time.monotonic() + timeout
    while True:
        items = (api.get("/api/v1/nodes") or {}).get("items", [])
        ready = {n["metadata"]["name"] for n in items if _condition(n, "Ready")}
        if names <= ready:
            break
        if time.monotonic() > deadline:
            raise ClusterError(f"Nodes not Ready after {timeout:.0f} s: {', '.join(sorted(names - ready))} "
                               f"(kubelet logs in {NODES}/<node>/logs)")
        time.sleep(0.5)
    # As kubeadm (kubespray) labels a control plane: no Service traffic through it, so no VIP on it.
    api.patch("/api/v1/nodes/cp", {"metadata": {"labels": {CP_ROLE: "", "node-role.kubernetes.io/control-plane": "",
                                                           EXCLUDE_LB: "true"}}})


def _condition(obj: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def log_dirs() -> list[Path]:
    """Each node's logs: its daemons' (logs/) and its pods' (log/pods, as /var/log/pods on a node)."""
    return [d for spec in sorted(NODES.glob("*/node.json")) if NODES.is_dir()
            for d in (spec.parent / "logs", spec.parent / "log") if d.is_dir()]


def stop_all() -> int:
    """Stop every node a lab started (from its workdir: works after a crash). Returns how many."""
    count, errors = 0, []
    for spec in sorted(NODES.glob("*/node.json")) if NODES.is_dir() else []:
        try:
            RealNode.load(spec.parent).stop()
            count += 1
        except Exception as e:  # noqa: BLE001 - every node gets its turn
            errors.append(e)
    if errors:
        raise errors[0]
    return count


def wait_workloads(api: LabApi, namespace: str, timeout: float = 90, say: Say = print) -> None:
    """Every DaemonSet and Deployment in `namespace` rolled out and Ready, as the real kubelets' probes say.
    On timeout, names each pod that is not Ready and why (waiting reason, restarts)."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while True:
        pending = []
        for kind, path in (("DaemonSet", f"/apis/apps/v1/namespaces/{namespace}/daemonsets"),
                           ("Deployment", f"/apis/apps/v1/namespaces/{namespace}/deployments")):
            for obj in api.get(path).get("items", []):
                name, st = f"{kind} {obj['metadata']['name']}", obj.get("status") or {}
                if kind == "DaemonSet":
                    want = st.get("desiredNumberScheduled", 0)
                    done = want > 0 and st.get("numberReady") == want == st.get("updatedNumberScheduled")
                else:
                    want = (obj.get("spec") or {}).get("replicas", 1)
                    done = st.get("readyReplicas") == want == st.get("updatedReplicas")
                if not done:
                    pending.append(name)
                elif name not in seen:
                    seen.add(name)
                    say(f"  ready: {name} ({want} pod{'s' if want != 1 else ''})")
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"not rolled out after {timeout:.0f} s: {', '.join(pending)}; "
                               f"{pod_problems(api, namespace) or 'no pod reports a problem'}")
        time.sleep(0.5)


def pod_problems(api: LabApi, namespace: str) -> str:
    out = []
    for pod in api.get(f"/api/v1/namespaces/{namespace}/pods").get("items", []):
        if _condition(pod, "Ready"):
            continue
        why = []
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            state = cs.get("state") or {}
            for k in ("waiting", "terminated"):
                if k in state:
                    why.append(f"{cs['name']} {k} {state[k].get('reason', '')}: {state[k].get('message', '')}"[:300])
            if cs.get("restartCount"):
                why.append(f"{cs['name']} restarted {cs['restartCount']}x")
        where = (pod.get("spec") or {}).get("nodeName") or "unscheduled"
        out.append(f"{pod['metadata']['name']} on {where}: {'; '.join(why) or pod.get('status', {}).get('phase')}")
    return " | ".join(out)


BACKEND = "web"  # the lab's workload: app=web pods, one Deployment per worker (web-<node>)
BACKEND_IMAGE = "localhost/lbctl-backend:lab"  # lbctl.lab.images builds it (lbctl/lab/backend.py)
BACKEND_PORT = 8080


def backend(node: str) -> dict[str, Any]:
    """The lab's backend on `node`: one Deployment per worker, so "scale the backend to 0 on a node" (what
    externalTrafficPolicy Local must follow) is one scale. It answers with its pod's and node's names and the
    client's address; on SIGTERM it fails readiness for 2 s before it stops accepting, so its endpoint leaves
    kube-proxy's rules before its socket closes."""
    labels = {"app": BACKEND, "node": node}
    field_env = [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": f}}}
                 for k, f in (("POD_NAME", "metadata.name"), ("NODE_NAME", "spec.nodeName"))]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"{BACKEND}-{node}", "namespace": "default", "labels": {"app": BACKEND}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 10,
                         "containers": [{
                             "name": BACKEND, "image": BACKEND_IMAGE, "imagePullPolicy": "IfNotPresent",
                             "env": [*field_env, {"name": "PORT", "value": str(BACKEND_PORT)},
                                     {"name": "DRAIN_SECONDS", "value": "2"}],
                             "ports": [{"name": "http", "containerPort": BACKEND_PORT}],
                             "readinessProbe": {"httpGet": {"path": "/healthz", "port": BACKEND_PORT},
                                                "periodSeconds": 1, "failureThreshold": 1},
                             "securityContext": {"runAsUser": 65532, "allowPrivilegeEscalation": False,
                                                 "readOnlyRootFilesystem": True,
                                                 "capabilities": {"drop": ["ALL"]}}}]}}}}


def deploy_backend(api: LabApi, topo: Topology, timeout: float = 60) -> None:
    """The backend on every worker, Ready (the kubelets' probes)."""
    for h in topo.node_hosts:
        api.apply("/apis/apps/v1/namespaces/default/deployments", backend(h.name))
    deadline = time.monotonic() + timeout
    while True:
        pods = api.get("/api/v1/namespaces/default/pods", labelSelector=f"app={BACKEND}")["items"]
        on = {p["spec"].get("nodeName") for p in pods if _condition(p, "Ready")}
        if {h.name for h in topo.node_hosts} <= on:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"backend not Ready on every worker after {timeout:.0f} s: "
                               f"{pod_problems(api, 'default') or 'no pod reports a problem'}")
        time.sleep(0.5)


def kill_container(node: str, needle: bytes) -> int:
    """SIGKILL the process of `node`'s containers whose command line holds `needle` (a container crash: the
    kubelet restarts it). Returns its pid; raises ClusterError when there is none."""
    for pid in RealNode.load(NODES / node).pids_in_cgroup():
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
                return pid
        except (OSError, ProcessLookupError):
            pass
    raise ClusterError(f"no process of {node}'s containers runs {needle.decode()}")
