"""`lbctl status`: pools, LoadBalancer Services with their announcing node, and the speakers."""

from __future__ import annotations

import argparse
import asyncio

from ..core.service import read_service
from .snapshot import Snapshot, table, take


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    p.set_defaults(func=run)


def render(snap: Snapshot) -> str:
    out = []
    rows = [["POOL", "ADDRESSES", "READY", "ASSIGNED", "AVAILABLE", "MESSAGE"]]
    for p in sorted(snap.pools, key=lambda p: p["metadata"]["name"]):
        st = p.get("status") or {}
        cond = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
        rows.append([p["metadata"]["name"], ",".join(p.get("spec", {}).get("addresses") or []),
                     cond.get("status", "?"), str(st.get("assigned", "?")), str(st.get("available", "?")),
                     "" if cond.get("status") == "True" else cond.get("message", "")])
    out.append(table(rows))
    owners = snap.owners()
    rows = [["SERVICE", "EXTERNAL-IP", "ANNOUNCED BY"]]
    for s in sorted(snap.services, key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"])):
        req = read_service(s)
        if not req.is_lb:
            continue
        ips = req.current_ips
        rows.append([req.key, ",".join(ips) or "<pending>",
                     ",".join(owners.get(ip, "-") for ip in ips) or "-"])
    out.append(table(rows))
    rows = [["SPEAKER", "ANNOUNCING", "LIVE PEERS"]]
    for sp in sorted(snap.speakers, key=lambda s: s["metadata"]["name"]):
        st = sp.get("status") or {}
        rows.append([sp["metadata"]["name"], str(st.get("announcedCount", 0)), ",".join(st.get("livePeers") or [])])
    out.append(table(rows))
    out += [f"warning: {p}" for p in snap.problems]
    return "\n\n".join(out)


def run(args: argparse.Namespace) -> int:
    snap = asyncio.run(take(args.kubeconfig))
    print(render(snap))
    return 1 if snap.problems else 0
