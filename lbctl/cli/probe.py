"""`lbctl probe IP --interface IF`: who answers ARP/NDP for an address, and how fast.

Exit 0 when exactly one MAC answers, 1 when none does, 3 when several do (two owners: split brain).
With --kubeconfig or --context it also reads the SpeakerStatuses to name the node behind each MAC;
without them it needs no cluster access at all ($KUBECONFIG alone does not make it dial the API server:
probes often run from a host or namespace that cannot reach it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import statistics
from collections.abc import Mapping
from typing import Any

from .. import netlink, netprobe
from ..core.status import speakers
from .cluster import CliError, add_kube_args, connect
from .exitcodes import ATTENTION, CONFLICT, OK, USAGE
from .output import add_output_arg, attention, document, emit
from .snapshot import take


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("ip")
    p.add_argument("--interface", "-i", required=True)
    p.add_argument("--count", "-c", type=int, default=3)
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for replies to each probe")
    p.add_argument("--source", help="IPv4 source address (default: the interface's first address)")
    add_kube_args(p)
    add_output_arg(p)
    p.set_defaults(func=run)


def _source(ifname: str) -> str:
    for iface in netlink.read_sync(lambda i: i.name == ifname):
        if iface.name == ifname:
            # no IPv4 address: an RFC 5227 probe (source 0.0.0.0) still gets answers
            return next((str(n.ip) for n in iface.networks if n.version == 4), "0.0.0.0")
    raise OSError(f"no interface named {ifname}")


async def _nodes_by_mac(args: argparse.Namespace) -> dict[str, str]:
    """MAC -> node, from what every speaker reports announcing (dead ones included: a MAC is a MAC)."""
    async with connect(args, timeout=10) as kube:
        snap = await take(kube, "speakers")
    now = dt.datetime.now(dt.timezone.utc)
    return {c.mac.lower(): sp.node for sp in speakers(snap.speakers, [], now) for c in sp.claims if c.mac}


def render(doc: Mapping[str, Any]) -> str:
    lines = [f"{doc['ip']} is-at {a['mac']}: {a['replies']}/{doc['probes']} {doc['protocol']} replies, "
             f"median {a['medianMs']:.3f} ms" + (f" (node {a['node']})" if a["node"] else "") for a in doc["answers"]]
    if doc["result"] == "none":
        lines.append(f"{doc['ip']}: no {doc['protocol']} reply on {doc['interface']} to {doc['probes']} probes")
    elif doc["result"] == "several":
        lines.append(f"{doc['ip']}: {len(doc['answers'])} different MACs answer - more than one node announces "
                     "this address")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    ip = ipaddress.ip_address(args.ip)
    nodes = asyncio.run(_nodes_by_mac(args)) if args.kubeconfig or args.context else {}
    try:
        if ip.version == 4:
            answers = netprobe.arp(args.interface, str(ip), args.source or _source(args.interface), args.count, args.timeout)
        else:
            answers = netprobe.ndp(args.interface, str(ip), args.count, args.timeout)
    except PermissionError:
        raise CliError(USAGE, "needs CAP_NET_RAW (run as root)") from None
    except OSError as exc:
        raise CliError(USAGE, f"{args.interface}: {exc}") from None
    by_mac: dict[str, list[float]] = {}
    for a in answers:
        by_mac.setdefault(a.mac, []).append(a.rtt_ms)
    result = "none" if not by_mac else "one" if len(by_mac) == 1 else "several"
    doc = document("Probe", ip=str(ip), interface=args.interface, protocol="ARP" if ip.version == 4 else "NDP",
                   probes=args.count, result=result,
                   answers=[{"mac": mac, "node": nodes.get(mac.lower()), "replies": len(rtts),
                             "medianMs": round(statistics.median(rtts), 3)} for mac, rtts in sorted(by_mac.items())])
    emit(doc, args.output, render)
    if result == "several":
        attention("lbctl probe", [f"{ip}: answered by {', '.join(a['node'] or a['mac'] for a in doc['answers'])}"])
        return CONFLICT
    if result == "none":
        attention("lbctl probe", [f"{ip}: nobody answers on {args.interface}"])
        return ATTENTION
    return OK
