"""Deterministic per-IP owner election for L2 announcement.

Every speaker computes the same answer from the same inputs without talking to the others
(MetalLB's scheme): rank nodes by sha256(node#ip). This is rendezvous hashing, so when a node
leaves only the IPs it owned move. sha256, never hash(): the order must agree across processes.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .selectors import matches

EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


def _canonical(ip: str) -> str:
    # "2001:DB8::1" and "2001:db8:0::1" must hash alike on every speaker.
    try:
        return ipaddress.ip_address(ip).compressed
    except ValueError:
        return ip


def _key(ip: str, node: str) -> tuple[bytes, str]:
    return hashlib.sha256(f"{node}#{ip}".encode()).digest(), node


def rank(ip: str, nodes: Iterable[str]) -> list[str]:
    """Nodes in preference order for `ip`; duplicates collapse."""
    ip = _canonical(ip)
    return sorted(set(nodes), key=lambda n: _key(ip, n))


def owner(ip: str, nodes: Iterable[str]) -> str | None:
    ip = _canonical(ip)
    keys = [_key(ip, n) for n in set(nodes)]
    return min(keys)[1] if keys else None


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    network_unavailable: bool = False  # NodeNetworkUnavailable condition is True
    addresses: tuple[str, ...] = ()  # status.addresses of type InternalIP: heartbeat unicast fallback
    going: bool = False  # cordoned, being deleted or not Ready: a speaker stopping here hands over, never holds


def eligible_nodes(
    live: set[str],
    nodes: Mapping[str, NodeInfo],
    node_selectors: Sequence[Mapping[str, Any]] | None,
    etp_local: bool,
    nodes_with_ready_endpoints: set[str] | None,
) -> set[str]:
    """Nodes that may announce an IP of this pool/service.

    A node must be live (heartbeating), known, match any of the pool's layer2 nodeSelectors (none
    means all), not carry the exclude-from-external-load-balancers label (any value, as in
    Kubernetes), and have a usable network. With externalTrafficPolicy=Local it must also host a
    ready endpoint, or traffic would be dropped; None then means "unknown" and yields no node.
    """
    out = set()
    for name in live:
        info = nodes.get(name)
        if info is None or info.network_unavailable or EXCLUDE_LB_LABEL in info.labels:
            continue
        if node_selectors and not any(matches(sel, info.labels) for sel in node_selectors):
            continue
        out.add(name)
    if etp_local:
        out &= nodes_with_ready_endpoints or set()
    return out


def elect(
    ip: str,
    live: set[str],
    nodes: Mapping[str, NodeInfo],
    node_selectors: Sequence[Mapping[str, Any]] | None,
    etp_local: bool,
    nodes_with_ready_endpoints: set[str] | None,
) -> str | None:
    """The node that should announce `ip`, or None if no node may."""
    return owner(ip, eligible_nodes(live, nodes, node_selectors, etp_local, nodes_with_ready_endpoints))
