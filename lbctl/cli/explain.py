"""`lbctl explain NAMESPACE/NAME`: why a Service has (or lacks) an address, and which node announces it.

It replays the controller's and the speakers' pure decisions on a fresh read of the cluster, so the
answer is what they would decide now, next to what they last reported (status, SpeakerStatus, Events).
"""

from __future__ import annotations

import argparse
import asyncio

from ..core.allocator import Allocator, to_addr
from ..core.announce import ClusterModel, canonical_ip
from ..core.election import eligible_nodes, rank
from ..core.pools import parse_pool
from ..core.service import read_service
from .snapshot import Snapshot, events_for, take


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", help="NAMESPACE/NAME (namespace defaults to 'default')")
    p.add_argument("--kubeconfig")
    p.add_argument("--lb-class", help="the controller's --lb-class, if it runs with one")
    p.set_defaults(func=run)


def explain(snap: Snapshot, key: str, lb_class: str | None) -> list[str]:
    svcs = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in snap.services}
    if key not in svcs:
        return [f"Service {key} does not exist"]
    req = read_service(svcs[key])
    lines = [f"Service {key}: type {svcs[key]['spec'].get('type')}, "
             f"ipFamilies {'/'.join(f'IPv{f}' for f in req.families)}"]
    if not req.wants(lb_class):
        why = "not type LoadBalancer" if not req.is_lb else f"loadBalancerClass {req.lb_class!r} is not ours"
        return lines + [f"  lbctl leaves it alone: {why}"]
    alloc = Allocator()
    alloc.set_pools(parse_pool(p["metadata"]["name"], p.get("spec"), p["metadata"].get("creationTimestamp") or "")
                    for p in snap.pools)
    for name, v in sorted(alloc.verdicts.items()):
        if not v.ready:
            lines.append(f"  note: IPPool {name} is not usable ({v.reason}: {v.message})")
    others = sorted((read_service(s) for k, s in svcs.items() if k != key), key=lambda r: (r.created, r.key))
    for other in others:
        if other.wants(lb_class) and other.current_ips and not other.error:
            alloc.restore(other)
    ns_labels = next((n["metadata"].get("labels") or {} for n in snap.namespaces
                      if n["metadata"]["name"] == req.namespace), {})
    if req.current_ips:
        alloc.restore(req)
    outcome = alloc.sync(req, ns_labels, lb_class)
    if req.current_ips:
        lines.append(f"  holds {', '.join(req.current_ips)}")
        for ip in req.current_ips:
            pool = alloc.pool_of(to_addr(ip))
            holders = [h for h in alloc.holders(ip) if h != key]
            lines.append(f"    {ip}: " + (f"IPPool {pool.name}" if pool else "outside every usable IPPool (retained)")
                         + (f", shared with {', '.join(holders)}" if holders else ""))
        if outcome.error:
            lines.append(f"  but: {outcome.error}")
    elif outcome.error:
        lines.append(f"  pending: {outcome.error}")
    else:
        lines.append(f"  pending, but {', '.join(outcome.ips)} from IPPool {outcome.pool} is free for it now "
                     "(is the controller running?)")
    lines += _announcers(snap, req.current_ips, lb_class)
    return lines


def _announcers(snap: Snapshot, ips: tuple[str, ...], lb_class: str | None) -> list[str]:
    if not ips:
        return []
    model = ClusterModel()
    for kind, items in (("Service", snap.services), ("EndpointSlice", snap.slices), ("Node", snap.nodes),
                        ("IPPool", snap.pools)):
        model.apply(kind, "SYNC", items)
    intents = model.intents(lb_class)
    live = {sp["metadata"]["name"] for sp in snap.speakers}
    for sp in snap.speakers:
        live |= set((sp.get("status") or {}).get("livePeers") or [])
    reported = snap.owners()
    lines = [f"  speakers reporting: {', '.join(sorted(live)) or 'none'}"]
    for raw in ips:
        ip = canonical_ip(raw) or raw
        intent = intents.get(ip)
        if intent is None:
            continue
        eligible = eligible_nodes(live, model.nodes, intent.node_selectors, intent.etp_local, set(intent.ready_nodes))
        order = rank(ip, eligible)
        lines.append(f"    {ip}: eligible {', '.join(order) or 'none'}"
                     + (" (externalTrafficPolicy Local: nodes with ready endpoints only)" if intent.etp_local else "")
                     + f"; elected {order[0] if order else '-'}; announced by {reported.get(ip, reported.get(raw, 'nobody'))}")
        excluded = sorted(set(model.nodes) - eligible)
        if excluded:
            lines.append(f"      not eligible: {', '.join(excluded)}")
    return lines


def run(args: argparse.Namespace) -> int:
    key = args.service if "/" in args.service else f"default/{args.service}"
    snap = asyncio.run(take(args.kubeconfig))
    lines = explain(snap, key, args.lb_class)
    ns, name = key.split("/", 1)
    events = asyncio.run(events_for(args.kubeconfig, ns, name)) if len(lines) > 1 else []
    if events:
        lines.append("  recent events:")
        lines += [f"    {e.get('type')} {e.get('reason')}: {e.get('message')}" for e in events[-5:]]
    lines += [f"warning: {p}" for p in snap.problems]
    print("\n".join(lines))
    return 0 if len(lines) > 1 else 1
