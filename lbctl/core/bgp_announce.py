"""Which addresses this node advertises by BGP, and what the status says about them (pure).

Every node whose speaker runs advertises a pool's addresses by BGP (ECMP on the router), not only an elected
owner as in layer 2: with externalTrafficPolicy Cluster every eligible node does; with Local only the nodes
with a ready endpoint, so the last endpoint leaving a node withdraws the route from it. Eligible is what it is
for layer 2 (lbctl.core.election.eligible_nodes): the Node is known, has a usable network and does not carry
the exclude-from-external-load-balancers label. Which peers get an address, and from which nodes, is the
advertisements' business (nodeSelectors, peers): bgp_plan applies those.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from .announce import IpIntent
from .bgp_plan import Announcement, Plan
from .bgp_render import BgpConfig, RenderError, _symbol, render
from .election import NodeInfo, eligible_nodes
from .pools import PoolSpec


def announcements(node: str, intents: Mapping[str, IpIntent], pools: Mapping[str, PoolSpec],
                  nodes: Mapping[str, NodeInfo]) -> list[Announcement]:
    """The addresses `node` advertises: `intents` are the addresses of usable pools (layer 2 on or off)."""
    if not eligible_nodes({node}, nodes, None, False, None):
        return []
    out: list[Announcement] = []
    for ip, intent in intents.items():
        pool = pools.get(intent.pool or "")
        if pool is None or not pool.bgp:
            continue
        if intent.etp_local and node not in intent.ready_nodes:
            continue
        out.append(Announcement(ip, pool.bgp))
    out.sort(key=lambda a: _ip_order(a.ip))
    return out


def advertised(config: BgpConfig | None, anns: Iterable[Announcement]) -> list[dict[str, Any]]:
    """Status: each announced address with the peers it goes to (as a prefix holding it), by address."""
    if config is None:
        return []
    exported = {p.name: {e.prefix for e in p.exports} for p in config.peers}  # bgp_plan's canonical text
    out = []
    for ann in anns:
        nets = {_prefix(ann.ip, adv.aggregation_length, adv.aggregation_length_v6) for adv in ann.advertisements}
        out.append({"ip": ann.ip, "peers": sorted(name for name, have in exported.items() if nets & have)})
    return out


@functools.lru_cache(maxsize=1 << 16)
def _prefix(ip: str, length: int, length_v6: int) -> str:
    # As bgp_plan writes an export's prefix; cached: the status asks again for every address on every change.
    addr = ipaddress.ip_address(ip)
    return str(ipaddress.ip_network(f"{addr}/{length if addr.version == 4 else length_v6}", strict=False))


def renderable(got: Plan) -> Plan:
    """After a RenderError: the plan without the peers the renderer refuses (each skipped with its error), so
    that one bad peer (a password BIRD cannot quote, say) does not hold back every other peer's changes.
    RenderError when the config fails as a whole (no usable router ID, for one)."""
    if got.config is None:
        return got
    try:
        render(got.config)
        return got
    except RenderError:
        render(dataclasses.replace(got.config, peers=()))  # fails here when the fault is not a peer's
    skipped, kept = dict(got.skipped), []
    for peer in got.config.peers:
        try:
            render(dataclasses.replace(got.config, peers=(peer,)))
            kept.append(peer)
        except RenderError as exc:
            skipped[peer.name] = f"cannot be rendered: {exc}"
    if len(kept) == len(got.config.peers):  # each alone renders, not together (two names, one symbol)
        render(got.config)  # raises it again, for the caller to report
    return Plan(dataclasses.replace(got.config, peers=tuple(kept)) if kept else None, skipped)


def symbols(config: BgpConfig | None) -> dict[str, str]:
    """BIRD protocol name -> BGPPeer name, to read the daemon's session table back."""
    return {_symbol(p.name): p.name for p in config.peers} if config else {}


def _ip_order(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    return addr.version, int(addr)
