"""`lbctl explain NAMESPACE/NAME`: why a Service has (or lacks) an address, and which node announces it.

It replays the controller's and the speakers' pure decisions on a fresh read of the cluster, so the
answer is what they would decide now, next to what they last reported (status, SpeakerStatus, Events).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

from ..core import bgp_view
from ..core import status as core
from ..core.allocator import Allocator, to_addr
from ..core.announce import ClusterModel, canonical_ip
from ..core.election import eligible_nodes, rank
from ..core.pools import parse_pool
from ..core.service import read_service
from .cluster import add_kube_args, connect
from .exitcodes import ATTENTION, CONFLICT, OK
from .output import add_output_arg, attention, document, emit
from .snapshot import Snapshot, events_for, take


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", help="NAMESPACE/NAME (namespace defaults to 'default')")
    add_kube_args(p)
    add_output_arg(p)
    p.add_argument("--lb-class", help="the controller's --lb-class, if it runs with one")
    p.set_defaults(func=run)


def explain(snap: Snapshot, key: str, lb_class: str | None, now: dt.datetime) -> dict[str, Any]:
    """The Explanation document (see docs/cli.md); `events` is filled in by the caller."""
    doc = document("Explanation", service=key, exists=False, managed=False, reason=None, type=None,
                   ipFamilies=[], state=None, notes=[], ips=[], pending=None, error=None, freeNow=None,
                   liveSpeakers=[], events=[])
    svcs = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in snap.services}
    if key not in svcs:
        doc["reason"] = f"Service {key} does not exist"
        return doc
    req = read_service(svcs[key])
    doc.update(exists=True, type=svcs[key]["spec"].get("type"), ipFamilies=[f"IPv{f}" for f in req.families])
    if not req.wants(lb_class):
        doc["reason"] = "not type LoadBalancer" if not req.is_lb else f"loadBalancerClass {req.lb_class!r} is not ours"
        return doc
    doc["managed"] = True
    alloc = Allocator()
    alloc.set_pools(parse_pool(p["metadata"]["name"], p.get("spec"), p["metadata"].get("creationTimestamp") or "")
                    for p in snap.pools)
    for name, v in sorted(alloc.verdicts.items()):
        if not v.ready:
            doc["notes"].append(f"IPPool {name} is not usable ({v.reason}: {v.message})")
    others = sorted((read_service(s) for k, s in svcs.items() if k != key), key=lambda r: (r.created, r.key))
    for other in others:
        if other.wants(lb_class) and other.current_ips and not other.error:
            alloc.restore(other)
    ns_labels = next((n["metadata"].get("labels") or {} for n in snap.namespaces
                      if n["metadata"]["name"] == req.namespace), {})
    if req.current_ips:
        alloc.restore(req)
    outcome = alloc.sync(req, ns_labels, lb_class)
    speakers = core.speakers(snap.speakers, snap.leases, now)
    [state] = core.services([svcs[key]], speakers, lb_class)
    doc["state"] = state.state
    doc["liveSpeakers"] = [s.node for s in speakers if s.alive]
    bgp = bgp_view.read_bgp(snap.speakers)
    alive = [s.node for s in speakers if s.alive]
    if bgp:  # the state counts BGP advertisements too
        [state] = core.services([svcs[key]], speakers, lb_class, bgp_view.advertisers(bgp, alive))
        doc["state"] = state.state
    if req.current_ips:
        model = _model(snap)
        announcers = _announcers(model, speakers, lb_class)
        for raw, addr in zip(req.current_ips, state.addresses):
            pool = alloc.pool_of(to_addr(raw))
            doc["ips"].append({"ip": raw, "pool": pool.name if pool else None, "retained": pool is None,
                               "sharedWith": [h for h in alloc.holders(raw) if h != key], "state": addr.state,
                               "announcedBy": list(addr.nodes), **announcers.get(addr.ip, {})})
            if bgp or (pool is not None and pool.bgp):
                doc["ips"][-1]["bgp"] = _bgp(model, bgp, alive, req, addr.ip, pool)
        doc["error"] = outcome.error
    elif outcome.error:
        doc["pending"] = outcome.error
    else:
        doc["freeNow"] = {"ips": list(outcome.ips), "pool": outcome.pool}
    return doc


def _model(snap: Snapshot) -> ClusterModel:
    model = ClusterModel()
    for kind, items in (("Service", snap.services), ("EndpointSlice", snap.slices), ("Node", snap.nodes),
                        ("IPPool", snap.pools)):
        model.apply(kind, "SYNC", items)
    return model


def _bgp(model: ClusterModel, bgp: Mapping[str, bgp_view.NodeBgp], alive: list[str], req: Any, ip: str,
         pool: Any) -> dict[str, Any]:
    """Per node: whether it advertises `ip` by BGP, to which peers, and why not."""
    sharers = [r for r in model.services.values() if ip in {canonical_ip(i) for i in r.current_ips}] or [req]
    ready = model.ready_by_service()
    reason, answers = bgp_view.why(
        ip, pool, {n: i.labels for n, i in model.nodes.items()}, bgp, alive,
        etp_local=any(r.etp_local for r in sharers),
        ready_nodes={n for r in sharers for n in ready.get(r.key, ())})
    return {"reason": reason, "nodes": [{"node": a.node, "advertisedTo": list(a.advertised_to),
                                         "reasons": list(a.reasons)} for a in answers]}


def _announcers(model: ClusterModel, speakers: list[core.Speaker], lb_class: str | None) -> dict[str, dict[str, Any]]:
    """Per address, what the speakers' election gives now: eligible nodes in rank order, the winner."""
    live = {s.node for s in speakers if s.alive}
    out = {}
    for ip, intent in model.intents(lb_class).items():
        eligible = eligible_nodes(live, model.nodes, intent.node_selectors, intent.etp_local, set(intent.ready_nodes))
        order = rank(ip, eligible)
        out[ip] = {"eligible": order, "elected": order[0] if order else None, "etpLocal": intent.etp_local,
                   "notEligible": sorted(set(model.nodes) - eligible)}
    return out


def render(doc: Mapping[str, Any]) -> str:
    key = doc["service"]
    if not doc["exists"]:
        return doc["reason"]
    lines = [f"Service {key}: type {doc['type']}, ipFamilies {'/'.join(doc['ipFamilies'])}"]
    if not doc["managed"]:
        return "\n".join(lines + [f"  lbctl leaves it alone: {doc['reason']}"])
    lines += [f"  note: {n}" for n in doc["notes"]]
    if doc["ips"]:
        lines.append(f"  holds {', '.join(i['ip'] for i in doc['ips'])} ({doc['state']})")
        for i in doc["ips"]:
            lines.append(f"    {i['ip']}: " + (f"IPPool {i['pool']}" if i["pool"] else "outside every usable IPPool (retained)")
                         + (f", shared with {', '.join(i['sharedWith'])}" if i["sharedWith"] else ""))
        if doc["error"]:
            lines.append(f"  but: {doc['error']}")
    elif doc["pending"]:
        lines.append(f"  pending: {doc['pending']}")
    elif doc["freeNow"]:
        lines.append(f"  pending, but {', '.join(doc['freeNow']['ips'])} from IPPool {doc['freeNow']['pool']} is free "
                     "for it now (is the controller running?)")
    if doc["ips"]:
        lines.append(f"  live speakers: {', '.join(doc['liveSpeakers']) or 'none'}")
    for i in doc["ips"]:
        if "eligible" not in i:
            continue
        lines.append(f"    {canonical_ip(i['ip']) or i['ip']}: eligible {', '.join(i['eligible']) or 'none'}"
                     + (" (externalTrafficPolicy Local: nodes with ready endpoints only)" if i["etpLocal"] else "")
                     + f"; elected {i['elected'] or '-'}; announced by {', '.join(i['announcedBy']) or 'nobody'}")
        if i["notEligible"]:
            lines.append(f"      not eligible: {', '.join(i['notEligible'])}")
    for i in doc["ips"]:
        lines += _render_bgp(i)
    if doc["events"]:
        lines.append("  recent events:")
        lines += [f"    {e['type']} {e['reason']}: {e['message']}" for e in doc["events"]]
    return "\n".join(lines)


def _render_bgp(i: Mapping[str, Any]) -> list[str]:
    b = i.get("bgp")
    if b is None:
        return []
    ip = canonical_ip(i["ip"]) or i["ip"]
    if b["reason"]:
        return [f"    {ip}: not advertised by BGP: {b['reason']}"]
    lines = [f"    {ip} by BGP:"]
    for n in b["nodes"]:
        sent = f"advertises to {', '.join(n['advertisedTo'])}" if n["advertisedTo"] else "does not advertise it"
        lines.append(f"      {n['node']}: {sent}" + (f"; {'; '.join(n['reasons'])}" if n["reasons"] else ""))
    return lines


def exit_code(doc: Mapping[str, Any]) -> int:
    if not doc["exists"]:
        return ATTENTION
    return {core.CONFLICT: CONFLICT, core.PENDING: ATTENTION, core.UNANNOUNCED: ATTENTION}.get(doc["state"], OK)


def reasons(doc: Mapping[str, Any]) -> list[str]:
    if not doc["exists"]:
        return [doc["reason"]]
    if doc["state"] == core.PENDING:
        return [f"{doc['service']} has no address yet"]
    return [f"{i['ip']}: {i['state']}" + (f" (announced by {', '.join(i['announcedBy'])})" if i["announcedBy"] else "")
            for i in doc["ips"] if i["state"] != core.ANNOUNCED]


async def read(args: argparse.Namespace, key: str) -> tuple[Snapshot, list[dict[str, Any]]]:
    ns, name = key.split("/", 1)
    async with connect(args) as kube:
        snap, events = await asyncio.gather(
            take(kube, "services", "pools", "speakers", "leases", "namespaces", "nodes", "slices"),
            events_for(kube, ns, name))
    return snap, events


def run(args: argparse.Namespace) -> int:
    key = args.service if "/" in args.service else f"default/{args.service}"
    snap, events = asyncio.run(read(args, key))
    doc = explain(snap, key, args.lb_class, dt.datetime.now(dt.timezone.utc))
    if doc["exists"]:
        doc["events"] = [{"type": e.get("type"), "reason": e.get("reason"), "message": e.get("message"),
                          "lastTimestamp": e.get("lastTimestamp") or e.get("eventTime")} for e in events[-5:]]
    emit(doc, args.output, render)
    attention("lbctl explain", reasons(doc))
    return exit_code(doc)
