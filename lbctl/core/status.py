"""What `lbctl status` reports, from listed objects and a clock: which speakers are alive, and whether each
LoadBalancer Service's addresses are Announced, Pending, Unannounced or in Conflict.

Conflict is either of two things: more than one live speaker claims the address (split brain), or a live
speaker reports another MAC claiming an address it announces (a rogue host, a second installation; the
SpeakerStatus `status.conflicts` list, RFC 5227 style detection in the speaker).

A speaker is alive while its Lease (renewed every RENEW_S by the speaker) has not expired, or while a
speaker alive by its own Lease lists it among the peers it hears: heartbeats keep working when a node
cannot reach the API server. Peer reports are taken one level deep only, because the status of a speaker
that cannot write its Lease may be stale too. Claims (SpeakerStatus `status.announced`) count only from
live speakers: a dead speaker's last status is history, not an announcement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .announce import canonical_ip
from .service import read_service

ANNOUNCED, PENDING, UNANNOUNCED, CONFLICT = "Announced", "Pending", "Unannounced", "Conflict"
SEVERITY = {ANNOUNCED: 0, PENDING: 1, UNANNOUNCED: 2, CONFLICT: 3}

# The speaker's Lease: coordination.k8s.io/v1, one per node, labelled so one cluster-wide list finds them all.
LEASE_PREFIX = "lbctl-speaker-"
LEASE_LABELS = {"app.kubernetes.io/name": "lbctl", "app.kubernetes.io/component": "speaker"}
LEASE_SELECTOR = ",".join(f"{k}={v}" for k, v in LEASE_LABELS.items())
NODE_LABEL = "lbctl.io/node"
RENEW_S = 10
LEASE_DURATION_S = 30  # three missed renewals


@dataclass(frozen=True)
class Claim:
    """One speaker announcing one address on one interface (a SpeakerStatus `announced` entry)."""

    ip: str
    node: str
    interface: str
    mac: str
    since: str | None


@dataclass(frozen=True)
class ForeignClaim:
    """A speaker's report that another MAC answers or announces an address it announces."""

    ip: str
    node: str  # the reporting speaker
    mac: str  # the foreign MAC
    interface: str
    since: str | None


@dataclass(frozen=True)
class Speaker:
    node: str
    alive: bool
    reason: str  # why not alive ("no lease", "lease expired", "stopped"), or how we know when only peers do
    last_heard: dt.datetime | None  # the Lease's renewTime
    heard_by: tuple[str, ...]  # live speakers that list it among their live peers
    claims: tuple[Claim, ...]
    live_peers: tuple[str, ...]
    has_status: bool
    conflicts: tuple[ForeignClaim, ...] = ()


@dataclass(frozen=True)
class Address:
    ip: str
    state: str  # ANNOUNCED, UNANNOUNCED or CONFLICT
    claims: tuple[Claim, ...]  # by live speakers only
    foreign: tuple[ForeignClaim, ...] = ()  # other MACs live speakers hear claiming it
    bgp: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (node, peers) live speakers advertise it to by BGP

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(sorted({c.node for c in self.claims}))


@dataclass(frozen=True)
class ServiceState:
    namespace: str
    name: str
    state: str
    addresses: tuple[Address, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_time(value: Any) -> dt.datetime | None:
    """RFC 3339 (Time or MicroTime) to an aware datetime; None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _lease(obj: Mapping[str, Any], now: dt.datetime) -> tuple[str, bool, str, dt.datetime | None]:
    """(node, fresh, reason, renewTime) of one speaker Lease."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    node = (meta.get("labels") or {}).get(NODE_LABEL) or holder or str(meta.get("name", "")).removeprefix(LEASE_PREFIX)
    renewed = parse_time(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    if not holder:
        return node, False, "stopped", renewed  # released on a graceful shutdown
    if renewed is None or not isinstance(duration, int):
        return node, False, "lease expired", renewed
    fresh = now < renewed + dt.timedelta(seconds=duration)
    return node, fresh, "" if fresh else "lease expired", renewed


def _claims(node: str, status: Mapping[str, Any]) -> tuple[Claim, ...]:
    out = []
    for a in status.get("announced") or []:
        if not isinstance(a, Mapping):
            continue
        ip = canonical_ip(str(a.get("ip", "")))
        if ip:
            out.append(Claim(ip, node, str(a.get("interface") or ""), str(a.get("mac") or ""), a.get("since")))
    return tuple(out)


def _foreign(node: str, status: Mapping[str, Any]) -> tuple[ForeignClaim, ...]:
    out = []
    for c in status.get("conflicts") or []:
        if not isinstance(c, Mapping):
            continue
        ip = canonical_ip(str(c.get("ip", "")))
        if ip:
            out.append(ForeignClaim(ip, node, str(c.get("foreignMAC") or ""), str(c.get("interface") or ""),
                                    c.get("since")))
    return tuple(out)


def speakers(statuses: Iterable[Mapping[str, Any]], leases: Iterable[Mapping[str, Any]],
             now: dt.datetime) -> list[Speaker]:
    """Every speaker known from a SpeakerStatus, a Lease, or a live peer's report; sorted by node."""
    status_of: dict[str, Mapping[str, Any]] = {}
    for obj in statuses:
        name = (obj.get("metadata") or {}).get("name")
        if name:
            status_of[str(name)] = obj.get("status") or {}
    lease_of = {}
    for obj in leases:
        node, fresh, reason, renewed = _lease(obj, now)
        # Two Leases for one node (a reinstall in another namespace): the fresher one speaks for it.
        if node and (node not in lease_of or (fresh, renewed or now) > lease_of[node][:2]):
            lease_of[node] = (fresh, renewed or now, reason, renewed)
    by_lease = {n for n, v in lease_of.items() if v[0]}
    heard_by: dict[str, set[str]] = {}
    for reporter in by_lease:
        for peer in (status_of.get(reporter) or {}).get("livePeers") or []:
            if isinstance(peer, str) and peer != reporter:
                heard_by.setdefault(peer, set()).add(reporter)
    out = []
    for node in sorted(set(status_of) | set(lease_of) | set(heard_by)):
        st = status_of.get(node) or {}
        fresh, _, reason, renewed = lease_of.get(node, (False, None, "no lease", None))
        peers = tuple(sorted(heard_by.get(node, ())))
        alive = fresh or bool(peers)
        if not fresh and peers:
            reason = f"heard by peers ({reason})"
        out.append(Speaker(node=node, alive=alive, reason=reason, last_heard=renewed, heard_by=peers,
                           claims=_claims(node, st), live_peers=tuple(sorted(p for p in st.get("livePeers") or []
                                                                             if isinstance(p, str))),
                           has_status=node in status_of, conflicts=_foreign(node, st)))
    return out


def classify(claims: Iterable[Claim], foreign: Iterable[ForeignClaim] = (), by_bgp: bool = False) -> str:
    """Layer 2 allows one node per address; BGP any number (ECMP), so BGP alone is never a conflict."""
    nodes = {c.node for c in claims}
    if any(True for _ in foreign):
        return CONFLICT
    return (ANNOUNCED if by_bgp else UNANNOUNCED) if not nodes else ANNOUNCED if len(nodes) == 1 else CONFLICT


def services(items: Iterable[Mapping[str, Any]], speaker_list: Iterable[Speaker], lb_class: str | None = None,
             advertised: Mapping[str, tuple[tuple[str, tuple[str, ...]], ...]] | None = None) -> list[ServiceState]:
    """The LoadBalancer Services lbctl handles (see ServiceRequest.wants), sorted by namespace/name.
    `advertised`: ip -> (node, peers) of live speakers advertising it by BGP (lbctl.core.bgp_view.advertisers)."""
    advertised = advertised or {}
    claims: dict[str, list[Claim]] = {}
    foreign: dict[str, list[ForeignClaim]] = {}
    for sp in speaker_list:
        if sp.alive:
            for c in sp.claims:
                claims.setdefault(c.ip, []).append(c)
            for f in sp.conflicts:
                foreign.setdefault(f.ip, []).append(f)
    out = []
    for obj in items:
        req = read_service(obj)
        if not req.wants(lb_class):
            continue
        addrs = []
        for raw in req.current_ips:
            ip = canonical_ip(raw) or raw
            mine = tuple(sorted(claims.get(ip, ()), key=lambda c: (c.node, c.interface)))
            others = tuple(sorted(foreign.get(ip, ()), key=lambda f: (f.mac, f.node)))
            bgp = advertised.get(ip, ())
            addrs.append(Address(ip, classify(mine, others, bool(bgp)), mine, others, bgp))
        state = max((a.state for a in addrs), key=SEVERITY.__getitem__, default=PENDING)
        out.append(ServiceState(req.namespace, req.name, state, tuple(addrs)))
    return sorted(out, key=lambda s: (s.namespace, s.name))


def attention(svcs: Iterable[ServiceState], speaker_list: Iterable[Speaker],
              pools: Iterable[Mapping[str, Any]], bgp: Iterable[str] = ()) -> list[str]:
    """One line per thing a person should look at; empty when all is well. `bgp`: the lines about BGP sessions
    (lbctl.core.bgp_view.attention), last."""
    out = []
    for p in pools:
        cond = pool_ready(p)
        if cond.get("status") != "True":
            out.append(f"IPPool {p['metadata']['name']}: not Ready"
                       + (f" ({cond.get('reason')}: {cond.get('message')})" if cond.get("reason") else
                          " (no status yet: is the controller running?)"))
    for s in svcs:
        if s.state == PENDING:
            out.append(f"Service {s.key}: Pending (no IP yet; `lbctl explain {s.key}` says why)")
        for a in s.addresses:
            if a.state == UNANNOUNCED:
                out.append(f"Service {s.key}: {a.ip} Unannounced (no live speaker announces it)")
            elif a.state == CONFLICT and a.foreign:
                macs = ", ".join(sorted({f"{f.mac} (seen by {f.node})" for f in a.foreign}))
                out.append(f"Service {s.key}: {a.ip} in Conflict (another host claims it: {macs})")
            elif a.state == CONFLICT:
                out.append(f"Service {s.key}: {a.ip} in Conflict (announced by {', '.join(a.nodes)})")
    for sp in speaker_list:
        if not sp.alive:
            out.append(f"speaker {sp.node}: not alive ({sp.reason})")
    return out + list(bgp)


def pool_ready(pool: Mapping[str, Any]) -> Mapping[str, Any]:
    conds = (pool.get("status") or {}).get("conditions") or []
    return next((c for c in conds if isinstance(c, Mapping) and c.get("type") == "Ready"), {})
