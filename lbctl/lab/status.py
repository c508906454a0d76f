"""`lbctl lab status`: namespaces, daemons and Services of the running lab."""

from __future__ import annotations

from .. import tables
from . import processes, probes, topology
from .api import LabApi
from .lifecycle import load_topology, require_root


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
    items = LabApi().get("/api/v1/services").get("items") or []
    lbs = [s for s in items if (s.get("spec") or {}).get("type") == "LoadBalancer"]
    if not lbs:
        print("no LoadBalancer Services yet")
    else:
        print(tables.services(lbs))
        topo = load_topology()
        print()
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
