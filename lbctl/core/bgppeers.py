"""BGPPeer specs (lbctl.io/v1alpha1, cluster-scoped): parsing, and the checks across peers.

MetalLB's vocabulary (metallb.io/v1beta2 BGPPeer) so that `lbctl import metallb` maps field for field.
The CRD refuses malformed shapes at `kubectl apply`; this parser checks the rest (keepalive below hold,
address families, duplicates, references) and is what the speaker trusts. There is no plain-text password
field: the TCP-MD5 password comes from a Secret (key `password`, as MetalLB's passwordSecret).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .bgp_fields import (BGPError, check_asn, check_flag, check_int, check_ip, check_known, check_name,
                         check_object, check_selectors, whole_seconds)

DEFAULT_PORT = 179
DEFAULT_HOLD = 90  # seconds, MetalLB's and RFC 4271's suggestion
PASSWORD_KEY = "password"
SECRET_TYPE = "kubernetes.io/basic-auth"  # what MetalLB requires of a passwordSecret
FIELDS = ("myASN", "peerASN", "peerAddress", "peerPort", "sourceAddress", "holdTime", "keepaliveTime", "routerID",
          "ebgpMultiHop", "passwordSecret", "nodeSelectors", "bfdProfile", "enableGracefulRestart")
READY, INVALID = "Ready", "Invalid"


@dataclass(frozen=True)
class SecretRef:
    name: str
    namespace: str | None  # None: the speaker's own namespace


@dataclass(frozen=True)
class BGPPeer:
    name: str
    my_asn: int
    peer_asn: int
    peer_address: str
    peer_port: int = DEFAULT_PORT
    source_address: str | None = None
    hold_time: int = DEFAULT_HOLD  # seconds; 0 = no hold timer (and no keepalives)
    keepalive_time: int = DEFAULT_HOLD // 3
    router_id: str | None = None
    ebgp_multihop: bool = False
    password_secret: SecretRef | None = None
    node_selectors: tuple[Mapping[str, Any], ...] = ()  # empty: every node
    bfd_profile: str | None = None
    graceful_restart: bool = False

    @property
    def family(self) -> int:
        return 6 if ":" in self.peer_address else 4

    @property
    def ebgp(self) -> bool:
        return self.my_asn != self.peer_asn


def parse_peer(name: Any, spec: Any) -> BGPPeer:
    """A BGPPeer from its name and spec; raises BGPError naming the field (and only BGPError)."""
    name = check_name(name, "metadata.name")
    spec = check_object(spec, "spec")
    check_known(spec, FIELDS, "spec")
    for key in ("myASN", "peerASN", "peerAddress"):
        if key not in spec:
            raise BGPError(f"spec.{key} is required")
    address = check_ip(spec["peerAddress"], "spec.peerAddress")
    family = 6 if ":" in address else 4
    source = spec.get("sourceAddress")
    hold = whole_seconds(spec["holdTime"], "spec.holdTime") if spec.get("holdTime") is not None else DEFAULT_HOLD
    if hold != 0 and not 3 <= hold <= 65535:
        raise BGPError(f"spec.holdTime must be 0 or from 3s to 65535s (RFC 4271), got {spec['holdTime']!r}")
    if spec.get("keepaliveTime") is None:
        keepalive = hold // 3
    else:
        keepalive = whole_seconds(spec["keepaliveTime"], "spec.keepaliveTime")
        if hold == 0 and keepalive != 0:
            raise BGPError(f"spec.keepaliveTime ({keepalive}s) must be 0 when spec.holdTime is 0 (no hold timer)")
        if hold and not 1 <= keepalive < hold:
            raise BGPError(f"spec.keepaliveTime ({keepalive}s) must be at least 1s and less than spec.holdTime "
                           f"({hold}s); RFC 4271 suggests a third of it")
    return BGPPeer(
        name=name,
        my_asn=check_asn(spec["myASN"], "spec.myASN"),
        peer_asn=check_asn(spec["peerASN"], "spec.peerASN"),
        peer_address=address,
        peer_port=check_int(spec.get("peerPort", DEFAULT_PORT), "spec.peerPort", 1, 65535),
        source_address=None if source is None else check_ip(source, "spec.sourceAddress", family),
        hold_time=hold,
        keepalive_time=keepalive,
        router_id=None if spec.get("routerID") is None else check_ip(spec["routerID"], "spec.routerID", 4),
        ebgp_multihop=check_flag(spec.get("ebgpMultiHop"), "spec.ebgpMultiHop"),
        password_secret=_secret(spec.get("passwordSecret")),
        node_selectors=check_selectors(spec.get("nodeSelectors"), "spec.nodeSelectors"),
        bfd_profile=None if spec.get("bfdProfile") is None else check_name(spec["bfdProfile"], "spec.bfdProfile"),
        graceful_restart=check_flag(spec.get("enableGracefulRestart"), "spec.enableGracefulRestart"),
    )


def _secret(value: Any) -> SecretRef | None:
    if value is None:
        return None
    ref = check_object(value, "spec.passwordSecret")
    check_known(ref, ("name", "namespace"), "spec.passwordSecret")
    namespace = ref.get("namespace")
    return SecretRef(check_name(ref.get("name"), "spec.passwordSecret.name"),
                     None if namespace is None else check_name(namespace, "spec.passwordSecret.namespace"))


@dataclass(frozen=True)
class PeerVerdict:
    ready: bool
    reason: str
    message: str


def judge_peers(peers: Iterable[tuple[str, Any]], bfd_profiles: Iterable[str] = ()) -> dict[str, PeerVerdict]:
    """Verdicts for every BGPPeer (name, spec): Invalid when the spec is bad, names a BFDProfile that does
    not exist, or duplicates an earlier peer (same address and port for an overlapping set of nodes:
    two sessions to one router from one node cannot both stand). Earlier = lower name, so every replica
    decides the same way."""
    profiles = set(bfd_profiles)
    verdicts: dict[str, PeerVerdict] = {}
    accepted: list[BGPPeer] = []
    for name, spec in sorted(peers, key=lambda p: str(p[0])):
        try:
            peer = parse_peer(name, spec)
        except BGPError as exc:
            verdicts[str(name)] = PeerVerdict(False, INVALID, str(exc))
            continue
        if peer.bfd_profile is not None and peer.bfd_profile not in profiles:
            verdicts[name] = PeerVerdict(False, INVALID, f"spec.bfdProfile: no BFDProfile named {peer.bfd_profile!r}")
            continue
        twin = next((p for p in accepted if (p.peer_address, p.peer_port) == (peer.peer_address, peer.peer_port)
                     and _may_share_nodes(p, peer)), None)
        if twin is not None:
            verdicts[name] = PeerVerdict(False, INVALID, f"duplicates BGPPeer {twin.name} (same peerAddress "
                                         f"{peer.peer_address} and peerPort {peer.peer_port} on the same nodes)")
            continue
        accepted.append(peer)
        verdicts[name] = PeerVerdict(True, READY, f"AS {peer.peer_asn} at {peer.peer_address}:{peer.peer_port}")
    return verdicts


def _may_share_nodes(a: BGPPeer, b: BGPPeer) -> bool:
    """Conservative: only selectors that pin one label key to different values are known to be disjoint."""
    if not a.node_selectors or not b.node_selectors:
        return True
    return any(not _disjoint(x, y) for x in a.node_selectors for y in b.node_selectors)


def _disjoint(x: Mapping[str, Any], y: Mapping[str, Any]) -> bool:
    lx, ly = x.get("matchLabels") or {}, y.get("matchLabels") or {}
    return any(k in ly and ly[k] != v for k, v in lx.items())
