"""Which network interfaces may carry an L2 announcement, from `ip -j addr` output (plain dicts).

Pure: the speaker runs `ip` and reads /sys; this module only decides. Skipped interfaces are the ones
where answering ARP/NDP would be wrong or useless: loopback, kube-proxy's IPVS dummy, NOARP links,
bridge ports (the bridge itself answers, a port would duplicate it), CNI/container plumbing, and
links that are down.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .arp import mac_to_bytes

SKIP_NAMES = frozenset({"lo", "kube-ipvs0"})
SKIP_PREFIXES = ("veth", "cali", "flannel", "cni", "docker", "virbr", "lxc")

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

    @property
    def up(self) -> bool:
        return "UP" in self.flags and "LOWER_UP" in self.flags


def parse_ip_addr(doc: Any) -> list[Interface]:
    """`ip -j addr show` as parsed JSON -> interfaces; malformed entries are skipped, never raised on."""
    out: list[Interface] = []
    for link in doc if isinstance(doc, list) else []:
        try:
            nets: list[Network] = []
            brds: list[str] = []
            for a in link.get("addr_info") or []:
                if a.get("family") not in ("inet", "inet6") or not a.get("local"):
                    continue
                net = ipaddress.ip_interface(f"{a['local']}/{a.get('prefixlen', 128)}")
                nets.append(net)
                if net.version == 4:
                    brd = a.get("broadcast") or (str(net.network.broadcast_address)
                                                 if net.network.prefixlen < 31 else None)
                    if brd:
                        brds.append(brd)
            out.append(Interface(
                name=str(link["ifname"]), index=int(link["ifindex"]), mac=str(link.get("address") or ""),
                flags=frozenset(link.get("flags") or ()), link_type=str(link.get("link_type") or ""),
                networks=tuple(nets), broadcasts=tuple(dict.fromkeys(brds)),
            ))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return out


def skip_reason(iface: Interface, bridge_ports: Iterable[str] = ()) -> str | None:
    """Why `iface` must not announce, or None if it may."""
    if iface.name in SKIP_NAMES:
        return "reserved"
    if iface.name.startswith(SKIP_PREFIXES):
        return "container plumbing"
    if iface.link_type != "ether" or not _is_mac(iface.mac):
        return "not ethernet"
    if "NOARP" in iface.flags:
        return "NOARP"
    if iface.name in set(bridge_ports):
        return "bridge port"
    if not iface.up:
        return "down"
    return None


def usable(ifaces: Iterable[Interface], bridge_ports: Iterable[str] = (),
           allowed: Iterable[str] | None = None) -> list[Interface]:
    """Interfaces that may announce, optionally restricted to `allowed` names (--interfaces)."""
    ports, allow = set(bridge_ports), (set(allowed) if allowed else None)
    return [i for i in ifaces if skip_reason(i, ports) is None and (allow is None or i.name in allow)]


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


def heartbeat_targets(candidates: Sequence[Interface]) -> dict[str, tuple[str, ...]]:
    """Interface name -> IPv4 broadcast addresses to beacon on."""
    return {i.name: i.broadcasts for i in candidates if i.broadcasts}


def by_name(ifaces: Iterable[Interface]) -> Mapping[str, Interface]:
    return {i.name: i for i in ifaces}


def _is_mac(mac: str) -> bool:
    try:
        mac_to_bytes(mac)
    except ValueError:
        return False
    return True
