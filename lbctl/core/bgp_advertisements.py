"""An IPPool's BGP advertisements (spec.bgp.advertisements[]), MetalLB's BGPAdvertisement per pool.

A pool is announced by layer 2 unless spec.layer2.enabled is false, and by BGP when it has advertisements.
Each advertisement says to which peers (empty: every peer), how aggregated (aggregationLength: one route per
/32 by default; shorter aggregates the pool's addresses), with which localPref and communities, and from
which nodes (nodeSelectors; empty: every node).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .bgp_fields import (MAX_U32, BGPError, check_int, check_known, check_name, check_object, check_selectors,
                         parse_community)
from .ranges import AddressRange, make_ip

FIELDS = ("peers", "aggregationLength", "aggregationLengthV6", "localPref", "communities", "nodeSelectors")


@dataclass(frozen=True)
class Advertisement:
    peers: tuple[str, ...] = ()  # empty: every BGPPeer
    aggregation_length: int = 32
    aggregation_length_v6: int = 128
    local_pref: int | None = None
    communities: tuple[str, ...] = ()  # canonical: "65000:100", "large:1:2:3"
    node_selectors: tuple[Mapping[str, Any], ...] = ()

    def length(self, family: int) -> int:
        return self.aggregation_length if family == 4 else self.aggregation_length_v6


def parse_advertisements(bgp: Any, ranges: Iterable[AddressRange] = (), where: str = "spec.bgp"
                         ) -> tuple[Advertisement, ...]:
    """spec.bgp of an IPPool; `ranges` are the pool's own (aggregation may not reach beyond them).
    Raises BGPError naming the field (and only BGPError)."""
    bgp = check_object(bgp, where)
    check_known(bgp, ("advertisements",), where)
    items = bgp.get("advertisements") or []
    if not isinstance(items, list):
        raise BGPError(f"{where}.advertisements must be a list, got {type(items).__name__}")
    ranges = tuple(ranges)
    return tuple(_advertisement(item, ranges, f"{where}.advertisements[{i}]") for i, item in enumerate(items))


def _advertisement(item: Any, ranges: tuple[AddressRange, ...], where: str) -> Advertisement:
    spec = check_object(item, where)
    check_known(spec, FIELDS, where)
    peers = spec.get("peers") or []
    if not isinstance(peers, list):
        raise BGPError(f"{where}.peers must be a list of BGPPeer names")
    names = tuple(check_name(p, f"{where}.peers[{i}]") for i, p in enumerate(peers))
    communities = spec.get("communities") or []
    if not isinstance(communities, list):
        raise BGPError(f"{where}.communities must be a list")
    adv = Advertisement(
        peers=tuple(dict.fromkeys(names)),
        aggregation_length=check_int(spec.get("aggregationLength", 32), f"{where}.aggregationLength", 0, 32),
        aggregation_length_v6=check_int(spec.get("aggregationLengthV6", 128), f"{where}.aggregationLengthV6", 0, 128),
        local_pref=None if spec.get("localPref") is None else check_int(spec["localPref"], f"{where}.localPref", 0,
                                                                        MAX_U32),
        communities=tuple(dict.fromkeys(parse_community(c, f"{where}.communities[{i}]")
                                        for i, c in enumerate(communities))),
        node_selectors=check_selectors(spec.get("nodeSelectors"), f"{where}.nodeSelectors"),
    )
    for r in ranges:
        for net in _cidrs(r):
            if net.prefixlen > adv.length(r.family):
                key = "aggregationLength" if r.family == 4 else "aggregationLengthV6"
                raise BGPError(f"{where}.{key} ({adv.length(r.family)}) is shorter than the pool's {net} (from {r}): "
                               f"the aggregate would announce addresses outside the pool; use {net.prefixlen} or more")
    return adv


def _cidrs(r: AddressRange) -> Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return ipaddress.summarize_address_range(make_ip(r.family, r.first), make_ip(r.family, r.last))


def unknown_peers(advertisements: Iterable[Advertisement], peers: Iterable[str], where: str = "spec.bgp") -> list[str]:
    """Messages for advertisements naming peers that do not exist (for the pool's condition)."""
    known = set(peers)
    return [f"{where}.advertisements[{i}].peers names {p!r}, which is not a BGPPeer"
            for i, adv in enumerate(advertisements) for p in adv.peers if p not in known]
