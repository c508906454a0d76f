"""`lbctl probe IP --interface IF`: who answers ARP/NDP for an address, and how fast.

Exit 0 when exactly one MAC answers, 1 when none does, 3 when several do (two owners: split brain).
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics

from .. import netlink, netprobe


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("ip")
    p.add_argument("--interface", "-i", required=True)
    p.add_argument("--count", "-c", type=int, default=3)
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for replies to each probe")
    p.add_argument("--source", help="IPv4 source address (default: the interface's first address)")
    p.set_defaults(func=run)


def _source(ifname: str) -> str:
    for iface in netlink.read_sync(lambda i: i.name == ifname):
        if iface.name == ifname:
            # no IPv4 address: an RFC 5227 probe (source 0.0.0.0) still gets answers
            return next((str(n.ip) for n in iface.networks if n.version == 4), "0.0.0.0")
    raise OSError(f"no interface named {ifname}")


def run(args: argparse.Namespace) -> int:
    ip = ipaddress.ip_address(args.ip)
    try:
        if ip.version == 4:
            answers = netprobe.arp(args.interface, str(ip), args.source or _source(args.interface), args.count, args.timeout)
        else:
            answers = netprobe.ndp(args.interface, str(ip), args.count, args.timeout)
    except PermissionError:
        print("lbctl probe: needs CAP_NET_RAW (run as root)")
        return 2
    except OSError as exc:
        print(f"lbctl probe: {exc}")
        return 2
    by_mac: dict[str, list[float]] = {}
    for a in answers:
        by_mac.setdefault(a.mac, []).append(a.rtt_ms)
    proto = "ARP" if ip.version == 4 else "NDP"
    for mac, rtts in sorted(by_mac.items()):
        print(f"{ip} is-at {mac}: {len(rtts)}/{args.count} {proto} replies, median {statistics.median(rtts):.3f} ms")
    if not by_mac:
        print(f"{ip}: no {proto} reply on {args.interface} to {args.count} probes")
        return 1
    if len(by_mac) > 1:
        print(f"{ip}: {len(by_mac)} different MACs answer - more than one node announces this address")
        return 3
    return 0
