"""Which network interfaces may carry an L2 announcement, from rtnetlink link and address records.

Pure: the shell (lbctl.netlink) dumps links and addresses and hands them over as plain dicts:

    link:    {"index": 2, "name": "eth0", "flags": IFF_* bits, "type": ARPHRD_* number,
              "address": "aa:bb:cc:dd:ee:ff", "port_of": IFLA_INFO_SLAVE_KIND or None}
    address: {"index": 2, "address": IFA_ADDRESS, "local": IFA_LOCAL or None, "prefixlen": 24,
              "broadcast": IFA_BROADCAST or None}

Skipped interfaces are the ones where answering ARP/NDP would be wrong or useless: loopback, kube-proxy's
IPVS dummy, NOARP links, ports of a bridge or bond (the master answers, a port would duplicate it),
CNI/container plumbing, and links that are down. Every rule looks at the link alone, so the shell reads
addresses only for the links that pass (kube-ipvs0 can hold thousands).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .arp import mac_to_bytes

SKIP_NAMES = frozenset({"lo", "kube-ipvs0"})
SKIP_PREFIXES = ("veth", "cali", "flannel", "cni", "docker", "virbr", "lxc")
PORT_KINDS = frozenset({"bridge", "bond", "team", "openvswitch"})  # a port of these never answers itself

# <linux/if.h> net_device_flags, named as `ip link` prints them
IFF = {0x1: "UP", 0x2: "BROADCAST", 0x4: "DEBUG", 0x8: "LOOPBACK", 0x10: "POINTOPOINT", 0x20: "NOTRAILERS",
       0x40: "RUNNING", 0x80: "NOARP", 0x100: "PROMISC", 0x200: "ALLMULTI", 0x400: "MASTER", 0x800: "SLAVE",
       0x1000: "MULTICAST", 0x2000: "PORTSEL", 0x4000: "AUTOMEDIA", 0x8000: "DYNAMIC", 0x10000: "LOWER_UP",
       0x20000: "DORMANT", 0x40000: "ECHO"}
# <linux/if_arp.h> ARPHRD_*, the few worth a name; others stay numeric
ARPHRD = {1: "ether", 32: "infiniband", 768: "ipip", 769: "tunnel6", 772: "loopback", 776: "sit", 778: "gre",
          65534: "none"}

Network = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    mac: str  # "aa:bb:cc:dd:ee:ff"
    flags: frozenset[str]
    link_type: str
    networks: tuple[Network, ...] = ()
    broadcasts: tuple[str, ...] = ()  # IPv4 subnet broadcast addresses, for heartbeats
    port_of: str = ""  # the master's kind when enslaved ("bridge", "bond", "vrf", ...)

    @property
    def up(self) -> bool:
        return "UP" in self.flags and "LOWER_UP" in self.flags


def flag_names(bits: int) -> frozenset[str]:
    return frozenset(name for bit, name in IFF.items() if bits & bit)


def link(rec: Mapping[str, Any]) -> Interface:
    """One link record -> an Interface without addresses; ValueError/KeyError/TypeError when malformed."""
    index, bits, kind = rec["index"], rec["flags"], rec["type"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, bits, kind)):
        raise TypeError(f"link record fields must be integers: {rec!r}")
    name = rec["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"link {index} has no name")
    return Interface(name=name, index=index, mac=str(rec.get("address") or ""), flags=flag_names(bits),
                     link_type=ARPHRD.get(kind, str(kind)), port_of=str(rec.get("port_of") or ""))


def links(recs: Iterable[Any]) -> list[Interface]:
    """Link records -> Interfaces; malformed records are skipped, never raised on."""
    out = []
    for rec in recs if isinstance(recs, (list, tuple)) else ():
        try:
            out.append(link(rec))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return out


def address(rec: Mapping[str, Any]) -> tuple[int, Network, str | None]:
    """(link index, address/prefix, IPv4 broadcast); IFA_LOCAL is the address, IFA_ADDRESS the peer on p2p."""
    net = ipaddress.ip_interface(f"{rec.get('local') or rec['address']}/{rec['prefixlen']}")
    brd: str | None = None
    if net.version == 4:
        brd = rec.get("broadcast") or (str(net.network.broadcast_address) if net.network.prefixlen < 31 else None)
    return int(rec["index"]), net, brd


def with_addresses(ifaces: Iterable[Interface], recs: Iterable[Any]) -> list[Interface]:
    """Attach address records to their links by index; malformed records are skipped."""
    nets: dict[int, dict[Network, None]] = {}  # dicts: ordered sets
    brds: dict[int, dict[str, None]] = {}
    for rec in recs if isinstance(recs, (list, tuple)) else ():
        try:
            index, net, brd = address(rec)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        nets.setdefault(index, {})[net] = None
        if brd:
            brds.setdefault(index, {})[brd] = None
    return [replace(i, networks=tuple(nets.get(i.index, ())), broadcasts=tuple(brds.get(i.index, ()))) for i in ifaces]


def interfaces(link_recs: Iterable[Any], addr_recs: Iterable[Any]) -> list[Interface]:
    return with_addresses(links(link_recs), addr_recs)


def skip_reason(iface: Interface) -> str | None:
    """Why `iface` must not announce, or None if it may. Looks at the link only, never at its addresses."""
    if iface.name in SKIP_NAMES:
        return "reserved"
    if iface.name.startswith(SKIP_PREFIXES):
        return "container plumbing"
    if iface.link_type != "ether" or not _is_mac(iface.mac):
        return "not ethernet"
    if "NOARP" in iface.flags:
        return "NOARP"
    if iface.port_of in PORT_KINDS:
        return f"{iface.port_of} port"
    if not iface.up:
        return "down"
    return None


def may_announce(iface: Interface, allowed: Iterable[str] | None = None) -> bool:
    """Not skipped, and named in `allowed` (--interfaces) when that is given."""
    return skip_reason(iface) is None and (not allowed or iface.name in set(allowed))


def usable(ifaces: Iterable[Interface], allowed: Iterable[str] | None = None) -> list[Interface]:
    """Interfaces that may announce, optionally restricted to `allowed` names (--interfaces)."""
    allow = frozenset(allowed) if allowed else None
    return [i for i in ifaces if may_announce(i, allow)]


def interfaces_for(ip: str, candidates: Sequence[Interface], pool_interfaces: Sequence[str] = ()) -> list[Interface]:
    """Where to announce `ip`: the pool's interfaces if it names any, else those whose subnet holds it."""
    if pool_interfaces:
        names = set(pool_interfaces)
        return [i for i in candidates if i.name in names]
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return []
    return [i for i in candidates
            if any(n.version == addr.version and not n.is_link_local and addr in n.network for n in i.networks)]


def heartbeat_targets(candidates: Sequence[Interface], group6: str | None = None,
                      unicast: Iterable[str] = ()) -> dict[str, tuple[str, ...]]:
    """Interface name -> where to beacon: its IPv4 broadcast addresses; on an IPv6-only interface that can
    multicast, the link-local group `group6` (when given). Never both: one beacon per segment per tick.

    `unicast`: peers' addresses to beacon to directly as well (broadcast filtered between us); each goes
    on the interface whose subnet holds it, in that interface's family; our own addresses are skipped.
    """
    out: dict[str, tuple[str, ...]] = {}
    for i in candidates:
        if i.broadcasts:
            out[i.name] = i.broadcasts
        elif group6 and "MULTICAST" in i.flags and any(n.version == 6 for n in i.networks):
            out[i.name] = (group6,)
    peers = [a for a in (_ip(u) for u in unicast) if a is not None]
    for i in candidates:
        if i.name not in out:
            continue
        family = 4 if i.broadcasts else 6
        ours = {n.ip for n in i.networks}
        direct = [str(a) for a in peers if a.version == family and a not in ours
                  and any(n.version == family and not n.is_link_local and a in n.network for n in i.networks)]
        if direct:
            out[i.name] = out[i.name] + tuple(dict.fromkeys(direct))
    return out


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_mac(mac: str) -> bool:
    try:
        mac_to_bytes(mac)
    except ValueError:
        return False
    return True
