"""What one node's BGP daemon should say: the parsed resources (BGPPeer, BFDProfile, the pools' advertisements)
and the addresses this node advertises, turned into the renderer's input (lbctl.core.bgp_render.BgpConfig).

Pure: the speaker's shell decides which addresses the node advertises (externalTrafficPolicy, eligibility)
and reads the password Secrets; this module decides, for each peer, whether the node peers with it and which
prefixes, with which attributes, go to it. A peer that cannot be served is left out with the reason, never
rendered half right.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .bfdprofiles import BFDProfile
from .bgp_advertisements import Advertisement
from .bgp_render import BfdProfile, BgpConfig, Export, Peer
from .bgppeers import BGPPeer
from .selectors import matches

DEFAULT_MIN_TTL = BFDProfile("default").minimum_ttl


@dataclass(frozen=True)
class Announcement:
    """An address this node advertises, with its pool's advertisements."""
    ip: str
    advertisements: tuple[Advertisement, ...]


@dataclass(frozen=True)
class Plan:
    config: BgpConfig | None  # None: no peer for this node
    skipped: Mapping[str, str]  # peer name -> why this node does not peer with it


def plan(node_labels: Mapping[str, str], node_ipv4: str, peers: Iterable[BGPPeer],
         profiles: Mapping[str, BFDProfile], announcements: Iterable[Announcement],
         passwords: Mapping[str, str] | None = None, invalid: Mapping[str, str] | None = None) -> Plan:
    """`invalid`: peer name -> reason (judge_peers' verdicts); `passwords`: peer name -> the Secret's password."""
    passwords, invalid = passwords or {}, invalid or {}
    skipped: dict[str, str] = {}
    chosen: list[BGPPeer] = []
    for p in sorted(peers, key=lambda p: p.name):
        if p.name in invalid:
            skipped[p.name] = f"the BGPPeer is invalid: {invalid[p.name]}"
        elif p.node_selectors and not any(matches(s, node_labels) for s in p.node_selectors):
            skipped[p.name] = "its nodeSelectors do not select this node"
        elif p.password_secret and p.name not in passwords:
            skipped[p.name] = f"its password Secret {p.password_secret.name} could not be read"
        elif p.bfd_profile and p.bfd_profile not in profiles:
            skipped[p.name] = f"its BFDProfile {p.bfd_profile} does not exist"
        elif p.bfd_profile and profiles[p.bfd_profile].echo_mode:
            skipped[p.name] = f"its BFDProfile {p.bfd_profile} asks for echo mode, which BIRD does not have"
        else:
            chosen.append(p)
    if not chosen:
        return Plan(None, skipped)
    # One daemon speaks with one ASN and one router ID: those most of its peers ask for (ties: the first
    # peer by name), so one odd peer cannot take the node's sessions away from the others.
    local_asn = _most_common([p.my_asn for p in chosen])
    router_id = _most_common([p.router_id or node_ipv4 for p in chosen if p.my_asn == local_asn])
    first = next(p for p in chosen if p.my_asn == local_asn and (p.router_id or node_ipv4) == router_id)
    served: list[BGPPeer] = []
    for p in chosen:
        if p.my_asn != local_asn:
            skipped[p.name] = f"myASN {p.my_asn} differs from {local_asn} (BGPPeer {first.name}) on this node"
        elif (p.router_id or node_ipv4) != router_id:
            skipped[p.name] = f"routerID {p.router_id or node_ipv4} differs from {router_id} on this node"
        else:
            served.append(p)
    anns = list(announcements)
    out = tuple(_peer(p, profiles, passwords, _exports(p, node_labels, anns)) for p in served)
    return Plan(BgpConfig(router_id=router_id, local_asn=local_asn, peers=out), skipped)


def _most_common(values: list) -> object:
    counts: dict = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return max(counts, key=lambda v: counts[v])  # dicts keep insertion order: a tie goes to the first seen


def _exports(peer: BGPPeer, node_labels: Mapping[str, str], anns: list[Announcement]) -> tuple[Export, ...]:
    """Every prefix this node sends `peer`: each address aggregated as its advertisement says, in the peer's own
    address family; one prefix with several advertisements keeps the first that asked for it (pool order)."""
    family = ipaddress.ip_address(peer.peer_address).version
    exports: dict[str, Export] = {}
    for ann in anns:
        if _version(ann.ip) != family:
            continue
        for adv in ann.advertisements:
            if adv.peers and peer.name not in adv.peers:
                continue
            if adv.node_selectors and not any(matches(s, node_labels) for s in adv.node_selectors):
                continue
            prefix = _prefix(ann.ip, adv.length(family))
            exports.setdefault(prefix, Export(prefix, adv.local_pref, adv.communities))
    return tuple(exports[k] for k in sorted(exports, key=_network))


# Cached: the speaker plans again on every change, for the same addresses (1,000 Services: most of its time).
@functools.lru_cache(maxsize=1 << 16)
def _version(ip: str) -> int:
    return ipaddress.ip_address(ip).version


@functools.lru_cache(maxsize=1 << 16)
def _prefix(ip: str, length: int) -> str:
    return str(ipaddress.ip_network(f"{ip}/{length}", strict=False))


_network = functools.lru_cache(maxsize=1 << 16)(ipaddress.ip_network)


def _peer(p: BGPPeer, profiles: Mapping[str, BFDProfile], passwords: Mapping[str, str],
          exports: tuple[Export, ...]) -> Peer:
    bfd = None
    if p.bfd_profile:
        b = profiles[p.bfd_profile]
        # minimumTtl matters on multihop sessions only, where the renderer refuses it (BIRD cannot check it):
        # the parser's default (254) is not a request, so it is dropped there.
        ttl = None if p.ebgp_multihop and b.minimum_ttl == DEFAULT_MIN_TTL else b.minimum_ttl
        bfd = BfdProfile(b.name, b.receive_interval, b.transmit_interval, b.detect_multiplier, False, None,
                         b.passive_mode, ttl)
    return Peer(name=p.name, address=p.peer_address, asn=p.peer_asn, port=p.peer_port,
                source_address=p.source_address, hold_time_s=p.hold_time, keepalive_time_s=p.keepalive_time,
                ebgp_multihop=p.ebgp_multihop, password=passwords.get(p.name), bfd=bfd,
                graceful_restart=p.graceful_restart, exports=exports)
