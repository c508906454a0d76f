"""`lbctl lab status`: namespaces, daemons and Services of the running lab."""

from __future__ import annotations

from typing import Any

from .. import tables
from . import processes, probes, realcluster, router, topology
from .api import LabApi
from .lifecycle import load_topology, require_root
from .realnode import RealNode
from .topology import Topology


def run() -> int:
    require_root()
    namespaces = topology.lab_namespaces()
    pids = processes.pidfiles()
    if not namespaces and not pids:
        print("no lab is running (start one with `lbctl lab up`)")
        return 1
    print("NAMESPACES: " + (" ".join(sorted(namespaces)) or "(none)"))
    print()
    print(tables.table(["PROCESS", "PID", "STATE"],
                       [[n, str(p or "-"), "running" if processes.alive(p) else "DEAD"] for n, p in pids.items()]))
    print()
    if not processes.alive(processes.pid_of("kube-apiserver")):
        print("Services: unavailable (kube-apiserver is not running)")
        return 1
    api = LabApi()
    _nodes(api)
    items = api.get("/api/v1/services").get("items") or []
    lbs = [s for s in items if (s.get("spec") or {}).get("type") == "LoadBalancer"]
    if not lbs:
        print("no LoadBalancer Services yet")
    else:
        print(tables.services(lbs))
        topo = load_topology()
        print()
        if topo.bgp:  # the client is behind the router: the router's routes are what reach a Service
            _router_view(topo, lbs)
            return 1 if any(not processes.alive(p) for p in pids.values()) else 0
        rows = []
        for svc in lbs:
            for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                if ":" not in ing.get("ip", ""):  # ARP is IPv4 only
                    macs = sorted(set(probes.arping(ing["ip"], count=1, timeout=1)))
                    rows.append([ing["ip"], ",".join(f"{topo.node_by_mac(m) or '?'} ({m})" for m in macs) or "nobody"])
        if rows:
            print(tables.table(["IP", "ANSWERS ARP"], rows))
    dead = [n for n, p in pids.items() if not processes.alive(p)]
    return 1 if dead else 0


def _router_view(topo: Topology, lbs: list[dict[str, Any]]) -> None:
    ips = [i["ip"] for svc in lbs for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
           if i.get("ip")]
    print(router.sessions_table(topo))
    print()
    print(router.hops_table(topo, [f"{ip}/{128 if ':' in ip else 32}" for ip in ips]))


def _nodes(api: LabApi) -> None:
    """The real cluster: each host's daemons and its Node as the API server has it, then the pods."""
    nodes = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes").get("items") or []}
    rows = []
    for d in sorted(realcluster.NODES.glob("*/node.json")):
        node = RealNode.load(d.parent)
        obj = nodes.get(node.name) or {}
        ready = next((c["status"] for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"),
                     "no Node")
        taints = ",".join(f"{t['key']}:{t['effect']}" for t in (obj.get("spec") or {}).get("taints") or []) or "-"
        rows.append([node.name, ready, taints] + ["running" if processes.alive(node.pid(n)) else "DEAD"
                                                  for n in ("containerd", "kubelet", "kube-proxy")])
    print(tables.table(["NODE", "READY", "TAINTS", "CONTAINERD", "KUBELET", "KUBE-PROXY"], rows))
    print()
    pods = api.get("/api/v1/pods").get("items") or []
    print(tables.table(["NAMESPACE", "POD", "NODE", "READY", "RESTARTS"], [[
        p["metadata"]["namespace"], p["metadata"]["name"], p["spec"].get("nodeName") or "-",
        next((c["status"] for c in (p.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), "-"),
        str(sum(c.get("restartCount", 0) for c in (p.get("status") or {}).get("containerStatuses") or []))]
        for p in pods]))
    print()
