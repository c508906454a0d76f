"""`lbctl status`: pools, LoadBalancer Services with their announcing node and state, and the speakers; with
BGP (a SpeakerStatus has `status.bgp`), every node's sessions and which nodes advertise each address to which peers.

Five LISTs (Services, IPPools, SpeakerStatuses, speaker Leases, BGPPeers), then pure classification in
lbctl.core.status; nothing is fetched per object, so 500 Services cost the same five calls.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

from .. import tables
from ..core import bgp_view
from ..core import status as core
from .cluster import add_kube_args, connect
from .exitcodes import ATTENTION, CONFLICT, OK
from .output import add_output_arg, attention, document, emit, iso
from .snapshot import Snapshot, take


def register(p: argparse.ArgumentParser) -> None:
    add_kube_args(p)
    add_output_arg(p)
    p.add_argument("--lb-class", help="the controller's --lb-class, if it runs with one")
    p.set_defaults(func=run)


def pool_doc(p: Mapping[str, Any]) -> dict[str, Any]:
    st = p.get("status") or {}
    cond = core.pool_ready(p)
    ready = {"True": True, "False": False}.get(str(cond.get("status")))
    return {"name": p["metadata"]["name"], "addresses": list((p.get("spec") or {}).get("addresses") or []),
            "ready": ready, "reason": cond.get("reason"), "message": cond.get("message"),
            "assigned": st.get("assigned"), "available": st.get("available"),
            "ipv4": st.get("ipv4"), "ipv6": st.get("ipv6")}


def _claim(c: core.Claim | None) -> dict[str, Any]:
    return {"node": c.node if c else None, "interface": c.interface if c else None,
            "mac": c.mac if c else None, "since": c.since if c else None}


def service_doc(s: core.ServiceState, bgp: bool = False) -> dict[str, Any]:
    addrs = []
    for a in s.addresses:
        owner = a.claims[0] if a.state == core.ANNOUNCED and a.claims else None
        addrs.append({"ip": a.ip, "state": a.state, **_claim(owner),
                      "claims": [_claim(c) for c in a.claims],
                      "foreign": [{"mac": f.mac, "seenBy": f.node, "interface": f.interface, "since": f.since}
                                  for f in a.foreign],
                      **({"bgp": [{"node": n, "peers": list(p)} for n, p in a.bgp]} if bgp else {})})
    return {"namespace": s.namespace, "name": s.name, "state": s.state, "ips": [a.ip for a in s.addresses],
            "addresses": addrs}


def speaker_doc(sp: core.Speaker, now: dt.datetime) -> dict[str, Any]:
    return {"node": sp.node, "alive": sp.alive, "reason": sp.reason or None, "lastHeard": iso(sp.last_heard),
            "lastHeardSecondsAgo": round((now - sp.last_heard).total_seconds(), 1) if sp.last_heard else None,
            "heardBy": list(sp.heard_by), "announcedCount": len({c.ip for c in sp.claims}),
            "livePeers": list(sp.live_peers)}


def session_doc(s: bgp_view.Session, alive: bool, now: dt.datetime) -> dict[str, Any]:
    up = bgp_view.uptime(s, now)
    return {"node": s.node, "speakerAlive": alive, "peer": s.peer, "address": s.address, "state": s.state,
            "since": s.since, "sinceSeconds": round(up, 1) if up is not None else None,
            "prefixesSent": s.prefixes_sent, "lastError": s.last_error}


def build(snap: Snapshot, now: dt.datetime, lb_class: str | None = None) -> dict[str, Any]:
    speakers = core.speakers(snap.speakers, snap.leases, now)
    alive = {sp.node for sp in speakers if sp.alive}
    bgp = bgp_view.read_bgp(snap.speakers)
    svcs = core.services(snap.services, speakers, lb_class, bgp_view.advertisers(bgp, alive))
    pools = sorted(snap.pools, key=lambda p: p["metadata"]["name"])
    reasons = core.attention(svcs, speakers, pools,
                             bgp_view.invalid_peers(snap.bgppeers) + bgp_view.attention(bgp, alive))
    extra: dict[str, Any] = {}
    if bgp:  # only then: the layer-2 document stays as it was
        extra["bgpSessions"] = [session_doc(s, s.node in alive, now) for s in bgp_view.sessions(bgp)]
        extra["bgpSkipped"] = [{"node": n, "peer": p, "reason": r} for n in sorted(bgp)
                               for p, r in sorted(bgp[n].skipped.items())]
    return document("Status", generatedAt=iso(now), healthy=not reasons, attention=reasons,
                    pools=[pool_doc(p) for p in pools], services=[service_doc(s, bool(bgp)) for s in svcs],
                    speakers=[speaker_doc(sp, now) for sp in speakers], **extra)


def exit_code(doc: Mapping[str, Any]) -> int:
    if any(s["state"] == core.CONFLICT for s in doc["services"]):
        return CONFLICT
    return ATTENTION if doc["attention"] else OK


def _age(since: str | None, now: dt.datetime) -> str:
    t = core.parse_time(since)
    return tables.age((now - t).total_seconds()) if t else "-"


def render(doc: Mapping[str, Any]) -> str:
    now = core.parse_time(doc["generatedAt"]) or dt.datetime.now(dt.timezone.utc)
    pools = [[p["name"], ",".join(p["addresses"]), {True: "True", False: "False"}.get(p["ready"], "Unknown"),
              str(p["assigned"] if p["assigned"] is not None else "-"), str(p["available"] or "-"),
              "" if p["ready"] else (p["message"] or "")] for p in doc["pools"]]
    svcs = []
    for s in doc["services"]:
        key = f"{s['namespace']}/{s['name']}"
        if not s["addresses"]:
            svcs.append([key, "<pending>", s["state"], "-", "-", "-", "-"])
        for a in s["addresses"]:
            nodes = ",".join(dict.fromkeys(c["node"] for c in a["claims"]))
            mac = a["mac"] or ("also " + ",".join(dict.fromkeys(f["mac"] for f in a["foreign"])) if a["foreign"]
                               else "-")
            interface = a["interface"] or "-"
            if not nodes and a.get("bgp"):  # advertised by BGP only: its nodes (ECMP), the BGP table has the peers
                nodes, interface = ",".join(b["node"] for b in a["bgp"]), "(BGP)"
            svcs.append([key, a["ip"], a["state"], nodes or "-", interface, mac,
                         _age(a["since"], now) if a["since"] else "-"])
    speakers = [[sp["node"], ("yes" if sp["alive"] else "no") + (f" ({sp['reason']})" if sp["reason"] else ""),
                 tables.age(sp["lastHeardSecondsAgo"]) + (" ago" if sp["lastHeard"] else ""),
                 str(sp["announcedCount"]), ",".join(sp["livePeers"]) or "-"] for sp in doc["speakers"]]
    return "\n\n".join([
        tables.table(["POOL", "ADDRESSES", "READY", "ASSIGNED", "AVAILABLE", "MESSAGE"], pools),
        tables.table(["SERVICE", "EXTERNAL-IP", "STATE", "NODE", "INTERFACE", "MAC", "SINCE"], svcs),
        tables.table(["SPEAKER", "ALIVE", "LAST HEARD", "ANNOUNCED", "LIVE PEERS"], speakers),
        *(_render_bgp(doc) if "bgpSessions" in doc else []),
    ])


def _render_bgp(doc: Mapping[str, Any]) -> list[str]:
    """BGP sessions per node and peer; per Service address, which nodes advertise it to which peers."""
    sessions = [[s["node"] + ("" if s["speakerAlive"] else " (not alive)"), s["peer"], s["address"], s["state"],
                 tables.age(s["sinceSeconds"]), "-" if s["prefixesSent"] is None else str(s["prefixesSent"]),
                 s["lastError"] or "-"] for s in doc["bgpSessions"]]
    sessions += [[k["node"], k["peer"], "-", "Skipped", "-", "-", k["reason"]] for k in doc["bgpSkipped"]]
    rows = []
    for s in doc["services"]:
        for a in s["addresses"]:
            rows += [[f"{s['namespace']}/{s['name']}", a["ip"], b["node"], ",".join(b["peers"])] for b in a["bgp"]]
    return [tables.table(["NODE", "BGP PEER", "ADDRESS", "STATE", "SINCE", "PREFIXES SENT", "LAST ERROR"], sessions),
            tables.table(["SERVICE", "EXTERNAL-IP", "ADVERTISED BY", "TO PEERS"], rows)]


async def read(args: argparse.Namespace) -> Snapshot:
    async with connect(args) as kube:
        return await take(kube, "services", "pools", "speakers", "leases", "bgppeers")


def run(args: argparse.Namespace) -> int:
    snap = asyncio.run(read(args))
    doc = build(snap, dt.datetime.now(dt.timezone.utc), args.lb_class)
    emit(doc, args.output, render)
    attention("lbctl status", doc["attention"])
    return exit_code(doc)
