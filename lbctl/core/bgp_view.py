"""What `lbctl status` and `lbctl explain` show of BGP, from the speakers' SpeakerStatus `status.bgp` blocks:

    {"sessions": [{"peer", "address", "state", "since", "prefixesSent", "lastError"}],
     "advertised": [{"ip", "peers": [...]}], "skipped": {peer: reason}}

(absent when a node has no BGP). Pure. A block is read defensively: a speaker's status is input like any other,
and a malformed entry is dropped, never the end of the view. Only live speakers count for advertisements, as
for layer-2 claims: a dead speaker's last status is history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .announce import canonical_ip
from .pools import PoolSpec
from .selectors import matches
from .status import parse_time

ESTABLISHED = "Established"


@dataclass(frozen=True)
class Session:
    node: str
    peer: str
    address: str
    state: str
    since: str | None
    prefixes_sent: int | None
    last_error: str

    @property
    def up(self) -> bool:
        return self.state == ESTABLISHED


@dataclass(frozen=True)
class NodeBgp:
    node: str
    sessions: tuple[Session, ...]
    advertised: Mapping[str, tuple[str, ...]]  # canonical ip -> peers it goes to
    skipped: Mapping[str, str]  # peer -> why this node does not peer with it

    def peers(self) -> set[str]:
        """Every peer this node's speaker knows of: with a session or skipped."""
        return {s.peer for s in self.sessions} | set(self.skipped)


def read_bgp(statuses: Iterable[Mapping[str, Any]]) -> dict[str, NodeBgp]:
    """node -> its BGP block, for every SpeakerStatus that has one."""
    out: dict[str, NodeBgp] = {}
    for obj in statuses:
        name = (obj.get("metadata") or {}).get("name") if isinstance(obj, Mapping) else None
        status = obj.get("status") if isinstance(obj, Mapping) else None
        bgp = status.get("bgp") if isinstance(status, Mapping) else None
        if not name or not isinstance(bgp, Mapping):
            continue
        node = str(name)
        sessions = []
        for s in _list(bgp.get("sessions")):
            if isinstance(s, Mapping) and isinstance(s.get("peer"), str) and s["peer"]:
                sent = s.get("prefixesSent")
                sessions.append(Session(node, s["peer"], str(s.get("address") or ""), str(s.get("state") or "unknown"),
                                        s.get("since") if isinstance(s.get("since"), str) else None,
                                        sent if isinstance(sent, int) and not isinstance(sent, bool) else None,
                                        str(s.get("lastError") or "")))
        advertised: dict[str, tuple[str, ...]] = {}
        for a in _list(bgp.get("advertised")):
            ip = canonical_ip(str(a.get("ip", ""))) if isinstance(a, Mapping) else None
            if ip:
                peers = tuple(p for p in _list(a.get("peers")) if isinstance(p, str))
                advertised[ip] = tuple(sorted(set(advertised.get(ip, ()) + peers)))
        skipped_raw = bgp.get("skipped")
        skipped = {str(k): str(v) for k, v in skipped_raw.items()} if isinstance(skipped_raw, Mapping) else {}
        out[node] = NodeBgp(node, tuple(sorted(sessions, key=lambda s: s.peer)), advertised, skipped)
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def sessions(bgp: Mapping[str, NodeBgp]) -> list[Session]:
    return [s for node in sorted(bgp) for s in bgp[node].sessions]


def uptime(session: Session, now: dt.datetime) -> float | None:
    """Seconds in its state since `since` (None when unknown)."""
    t = parse_time(session.since)
    return (now - t).total_seconds() if t else None


def advertisers(bgp: Mapping[str, NodeBgp], alive: Iterable[str]) -> dict[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """ip -> ((node, peers), ...) sorted by node: which live nodes advertise it to which peers."""
    live = set(alive)
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for node in sorted(bgp):
        if node in live:
            for ip, peers in bgp[node].advertised.items():
                if peers:
                    out.setdefault(ip, []).append((node, peers))
    return {ip: tuple(v) for ip, v in out.items()}


def attention(bgp: Mapping[str, NodeBgp], alive: Iterable[str]) -> list[str]:
    """A line per session of a live speaker that is not Established."""
    live = set(alive)
    return [f"BGP session {s.node} -> {s.peer} ({s.address}): {s.state}"
            + (f" ({s.last_error})" if s.last_error else "")
            for s in sessions(bgp) if s.node in live and not s.up]


def invalid_peers(peers: Iterable[Mapping[str, Any]]) -> list[str]:
    """A line per BGPPeer whose Valid condition (written by the controller) is False."""
    out = []
    for p in peers:
        conds = (p.get("status") or {}).get("conditions") if isinstance(p.get("status"), Mapping) else None
        cond = next((c for c in conds if isinstance(c, Mapping) and c.get("type") == "Valid"), None) \
            if isinstance(conds, list) else None
        if cond and cond.get("status") == "False":
            out.append(f"BGPPeer {(p.get('metadata') or {}).get('name')}: Invalid ({cond.get('message')})")
    return sorted(out)


@dataclass(frozen=True)
class NodeAnswer:
    """Whether one node advertises one address by BGP, and why not (to some or every peer)."""

    node: str
    advertised_to: tuple[str, ...]  # as its speaker reports
    reasons: tuple[str, ...]  # empty: advertised to every peer it should go to


def why(ip: str, pool: PoolSpec | None, nodes: Mapping[str, Mapping[str, str]], bgp: Mapping[str, NodeBgp],
        alive: Iterable[str], etp_local: bool, ready_nodes: Iterable[str]) -> tuple[str | None, list[NodeAnswer]]:
    """(a reason no node advertises `ip` at all, or None; each node's answer). `nodes`: node -> labels."""
    ip = canonical_ip(ip) or ip
    if pool is None:
        return "it is outside every IPPool", []
    if not pool.bgp:
        return f"IPPool {pool.name} has no BGP advertisement (spec.bgp.advertisements is empty)", []
    live, ready = set(alive), set(ready_nodes)
    out = []
    for node in sorted(set(nodes) | set(bgp)):
        nb = bgp.get(node)
        sent = nb.advertised.get(ip, ()) if nb and node in live else ()
        reasons: list[str] = []
        ads = [a for a in pool.bgp if not a.node_selectors or any(matches(s, nodes.get(node)) for s in a.node_selectors)]
        if node not in live:
            reasons.append("no live speaker on this node")
        elif nb is None:
            reasons.append("its speaker reports no BGP (no BGPPeer selects this node, or BGP is off)")
        elif not ads:
            reasons.append(f"not selected by the nodeSelectors of IPPool {pool.name}'s BGP advertisements")
        elif etp_local and node not in ready:
            reasons.append("externalTrafficPolicy Local and no ready endpoint on this node")
        else:
            wanted = nb.peers() if any(not a.peers for a in ads) else {p for a in ads for p in a.peers}
            if not wanted:
                reasons.append("no BGPPeer for this node")
            by_peer = {s.peer: s for s in nb.sessions}
            for peer in sorted(wanted - set(sent)):
                session = by_peer.get(peer)
                if peer in nb.skipped:
                    reasons.append(f"peer {peer} skipped: {nb.skipped[peer]}")
                elif session is None:
                    reasons.append(f"peer {peer}: no session on this node (is there a BGPPeer named {peer}?)")
                elif not session.up:
                    reasons.append(f"session to {peer} ({session.address}) is {session.state}"
                                   + (f": {session.last_error}" if session.last_error else ""))
                else:
                    reasons.append(f"not advertised to {peer} yet (session Established; the speaker has not "
                                   "reported it)")
        out.append(NodeAnswer(node, tuple(sent), tuple(reasons)))
    return None, out
