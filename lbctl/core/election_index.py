"""Incremental owner election: the same owners as `announce.owners()`, in time proportional to what changed.

`owners()` ranks every eligible node for every IP (sha256 per pair): 10,000 IPs x 1,000 nodes is 10 M
hashes, seconds of CPU on every change of the live set. Rendezvous hashing makes most of that pointless:
when one node leaves only the IPs it owned move, and a joining node only takes the IPs where it now ranks
first. So per IP we keep just the top K candidates, sorted by (digest, node) exactly as `election.owner`
orders them, with one invariant:

    every candidate of the IP that is not in its top K ranks below all that are.

- a node that leaves touches only the IPs whose top K hold it (reverse index node -> IPs); an IP whose top
  K runs empty while candidates remain outside it is recomputed in full (K leaves of that very IP first);
- a node that joins costs one hash per IP it may announce: it enters the top K only if it ranks above the
  last one (or the top K already holds every candidate);
- an IP whose intent or segments change is recomputed alone; a Node whose labels or conditions change is a
  leave and a join of that node wherever its eligibility changed.

Candidates of an IP = the speakers live on its source (the global live set, or the union of the live sets
of the segments it is announced on, as `announce.segment_live`) that are eligible for it
(`election.eligible_nodes`: known Node, usable network, no exclude label, a matching node selector, and for
externalTrafficPolicy=Local a ready endpoint). IPs are grouped by source ("group", few: one per interface
combination) and by eligibility rule ("class": the pool's selectors, or one per ETP Local ready set), so a
live-set change is a set difference per group, not a per-IP comparison. Memory is bounded by K entries per
IP plus the groups' and classes' node sets. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .announce import IpIntent
from .election import EXCLUDE_LB_LABEL, NodeInfo, _canonical
from .selectors import matches

_ABSENT = "\0absent"  # `before` value of an IP that had no entry (no node name contains NUL)
DEFAULT_K = 8  # a refill (full recompute of one IP) needs 8 of its best candidates gone first

_Key = tuple[bytes, str]
_Group = tuple[str, ...]  # the IP's segment names; () = the global live set
_Class = tuple[str, bool, frozenset[str] | None]  # (selectors repr, etp_local, ready nodes if etp_local)
_Cell = tuple[_Group, _Class]


def _rank_key(node: str, ip: str) -> _Key:
    return hashlib.sha256(f"{node}#{ip}".encode()).digest(), node  # election._key, inlined: the hot path


class _Rule:
    """An eligibility class: who may announce IPs with these selectors / ETP Local ready set."""

    __slots__ = ("selectors", "etp_local", "ready", "eligible")

    def __init__(self, selectors: Sequence[Mapping[str, Any]], etp_local: bool, ready: frozenset[str]) -> None:
        self.selectors, self.etp_local, self.ready = selectors, etp_local, ready
        self.eligible: set[str] = set()

    def admits(self, info: NodeInfo | None) -> bool:
        if info is None or info.network_unavailable or EXCLUDE_LB_LABEL in info.labels:
            return False
        if self.etp_local and info.name not in self.ready:
            return False
        return not self.selectors or any(matches(sel, info.labels) for sel in self.selectors)


class _Ip:
    __slots__ = ("ip", "canon", "intent", "cell", "top", "complete")

    def __init__(self, ip: str, intent: IpIntent, cell: _Cell) -> None:
        self.ip, self.canon, self.intent, self.cell = ip, _canonical(ip), intent, cell
        self.top: list[_Key] = []  # ascending; owner = top[0]
        self.complete = True  # top holds every candidate (none outside it)

    def owner(self) -> str | None:
        return self.top[0][1] if self.top else None


class ElectionIndex:
    """Call `update()` with the full current inputs each time; it returns the IPs whose owner changed and
    keeps `owners` (ip -> node or None) equal to `owners(intents, live, nodes, segment_live(segments_of,
    live_on))`. Inputs are only read, never kept by reference, so callers may mutate them afterwards."""

    def __init__(self, k: int = DEFAULT_K) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self.owners: dict[str, str | None] = {}
        self.refills = 0  # full per-IP recomputes caused by leaves (a health figure for the benchmark)
        self._ips: dict[str, _Ip] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._groups: dict[_Group, set[str]] = {}  # group -> its live set at the last update
        self._rules: dict[_Class, _Rule] = {}
        self._rules_of: dict[str, set[_Class]] = {}  # node -> classes that admit it
        self._etp_with: dict[str, set[_Class]] = {}  # node -> ETP Local classes whose ready set names it
        self._cells: dict[_Cell, set[str]] = {}
        self._holds: dict[str, set[str]] = {}  # node -> IPs whose top K hold it

    # --- the one entry point ---------------------------------------------------------------------

    def update(self, intents: Mapping[str, IpIntent], live: set[str], nodes: Mapping[str, NodeInfo],
               segments_of: Mapping[str, Iterable[str]] | None = None,
               live_on: Mapping[str, set[str]] | None = None, only: Iterable[str] | None = None) -> set[str]:
        """`only`: the IPs whose intent or segments may have changed since the last update (the others are
        not looked at, so a Service event costs its own IPs, not a scan of them all); None: any."""
        segments_of, live_on = segments_of or {}, live_on or {}
        before: dict[str, str | None] = {}
        redo: set[str] = set()

        # 1. IPs gone, new, or with another intent or segments: out of every structure, recomputed at the end.
        if only is None:
            gone, scan = [ip for ip in self._ips if ip not in intents], list(intents)
        else:
            only = set(only)
            gone, scan = [ip for ip in only if ip in self._ips and ip not in intents], [ip for ip in only
                                                                                        if ip in intents]
        for ip in gone:
            before[ip] = self.owners.pop(ip)
            self._forget(self._ips.pop(ip))
        for ip in scan:
            intent = intents[ip]
            group = segments_of.get(ip, ())
            if type(group) is not tuple:
                group = tuple(group)
            rec = self._ips.get(ip)
            if rec is not None and (rec.intent is intent or rec.intent == intent) and rec.cell[0] == group:
                continue
            if rec is not None:
                before.setdefault(ip, self.owners.get(ip))
                self._forget(rec)
            else:
                before.setdefault(ip, _ABSENT)
            self._ips[ip] = _Ip(ip, intent, (group, self._class_of(intent)))
            redo.add(ip)

        # 2. Eligibility: new classes in full, existing ones only for Nodes that changed.
        changed_nodes = {n for n in self._nodes.keys() | nodes.keys()
                         if (a := self._nodes.get(n)) is not (b := nodes.get(n)) and a != b}
        self._nodes = dict(nodes)
        old_rules = {n: set(self._rules_of.get(n, ())) for n in changed_nodes}
        for ip in redo:
            self._ensure_rule(self._ips[ip])
        for n in changed_nodes:
            for key in self._rules_touching(n):
                self._set_admitted(key, n)

        # 3. Live sets per group (new groups start empty: all their IPs are in `redo`).
        old_live: dict[_Group, set[str]] = {}
        for ip in redo:
            self._groups.setdefault(self._ips[ip].cell[0], set())
        for group in self._groups:
            tracked = [live_on[name] for name in group if name in live_on]
            fresh = set().union(*tracked) if tracked else set(live)
            if fresh != self._groups[group]:
                old_live[group] = self._groups[group]
                self._groups[group] = fresh
        moved = changed_nodes.union(*(old_live[g] ^ self._groups[g] for g in old_live))

        # 4. Per node: the cells where it stopped / started being a candidate. Removals first, so that an
        # IP's top K is a prefix of its (shrunk) candidates before anyone is offered to it.
        joins: dict[_Cell, list[str]] = {}
        for n in moved:
            was = self._cells_of(n, old_live, old_rules.get(n))
            now = self._cells_of(n, {}, None)
            if was - now:
                self._drop(n, was - now, redo, before)
            for cell in now - was:
                joins.setdefault(cell, []).append(n)
        for cell, joined in joins.items():  # batched per IP: a rack coming back is one pass, not one per node
            for ip in self._cells.get(cell, ()):
                if ip not in redo:
                    self._offer(ip, joined, before)

        # 5. Full recomputes, then drop classes and groups nothing uses any more.
        for ip in redo:
            rec = self._ips[ip]
            self._recompute(rec, ip)
            self._cells.setdefault(rec.cell, set()).add(ip)
        for ip in redo:
            self.owners[ip] = self._ips[ip].owner()
        self._collect()
        return {ip for ip, old in before.items() if self.owners.get(ip, _ABSENT) != old}

    # --- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _class_of(intent: IpIntent) -> _Class:
        # repr: selectors are dicts (unhashable); two spellings of one selector only cost an extra class.
        return repr(intent.node_selectors), intent.etp_local, frozenset(intent.ready_nodes) if intent.etp_local else None

    def _ensure_rule(self, rec: _Ip) -> None:
        key = rec.cell[1]
        if key in self._rules:
            return
        i = rec.intent
        rule = self._rules[key] = _Rule(i.node_selectors, i.etp_local, frozenset(i.ready_nodes))
        if rule.etp_local:
            for n in rule.ready:
                self._etp_with.setdefault(n, set()).add(key)
        for n in (rule.ready if rule.etp_local else self._nodes):
            if rule.admits(self._nodes.get(n)):
                rule.eligible.add(n)
                self._rules_of.setdefault(n, set()).add(key)

    def _rules_touching(self, n: str) -> list[_Class]:
        return [k for k, r in self._rules.items() if not r.etp_local] + list(self._etp_with.get(n, ()))

    def _set_admitted(self, key: _Class, n: str) -> None:
        rule = self._rules[key]
        if rule.admits(self._nodes.get(n)):
            rule.eligible.add(n)
            self._rules_of.setdefault(n, set()).add(key)
        else:
            rule.eligible.discard(n)
            self._rules_of.get(n, set()).discard(key)

    def _cells_of(self, n: str, live_override: Mapping[_Group, set[str]], rules: set[_Class] | None) -> set[_Cell]:
        keys = self._rules_of.get(n, ()) if rules is None else rules
        groups = [g for g, members in self._groups.items() if n in live_override.get(g, members)]
        return {(g, k) for g in groups for k in keys}

    def _drop(self, n: str, cells: set[_Cell], redo: set[str], before: dict[str, str | None]) -> None:
        held = self._holds.get(n)
        if not held:
            return
        for ip in [ip for ip in held if self._ips[ip].cell in cells]:
            rec = self._ips[ip]
            before.setdefault(ip, self.owners[ip])
            rec.top = [e for e in rec.top if e[1] != n]
            held.discard(ip)
            if not rec.top and not rec.complete:  # candidates left outside the top K: rank them again
                self.refills += 1
                self._forget(rec)
                redo.add(ip)
            else:
                self.owners[ip] = rec.owner()

    def _offer(self, ip: str, joined: list[str], before: dict[str, str | None]) -> None:
        rec = self._ips[ip]
        entries = [_rank_key(n, rec.canon) for n in joined]
        if not rec.complete:  # those ranking below the top K rank below everything in it: the invariant holds
            last = rec.top[-1]
            entries = [e for e in entries if e < last]
        if not entries:
            return
        before.setdefault(ip, self.owners[ip])
        top = sorted(rec.top + entries)
        for _, n in entries:
            self._holds.setdefault(n, set()).add(ip)
        if len(top) > self.k:
            for _, n in top[self.k:]:
                self._holds[n].discard(ip)
            del top[self.k:]
            rec.complete = False
        rec.top = top
        self.owners[ip] = rec.owner()

    def _recompute(self, rec: _Ip, ip: str) -> None:
        group, key = rec.cell
        cands = self._groups[group] & self._rules[key].eligible
        entries = [_rank_key(n, rec.canon) for n in cands]
        rec.complete = len(entries) <= self.k
        rec.top = sorted(entries) if rec.complete else heapq.nsmallest(self.k, entries)
        for _, n in rec.top:
            self._holds.setdefault(n, set()).add(ip)

    def _forget(self, rec: _Ip) -> None:
        for _, n in rec.top:
            self._holds[n].discard(rec.ip)
        self._cells.get(rec.cell, set()).discard(rec.ip)
        rec.top = []

    def _collect(self) -> None:
        for cell in [c for c, ips in self._cells.items() if not ips]:
            del self._cells[cell]
        used_groups = {c[0] for c in self._cells}
        for g in [g for g in self._groups if g not in used_groups]:
            del self._groups[g]
        used_rules = {c[1] for c in self._cells}
        for key in [k for k in self._rules if k not in used_rules]:
            rule = self._rules.pop(key)
            for n in rule.eligible:
                self._rules_of.get(n, set()).discard(key)
            for n in rule.ready if rule.etp_local else ():
                self._etp_with.get(n, set()).discard(key)
        for index in (self._holds, self._rules_of, self._etp_with):
            for n in [n for n, s in index.items() if not s]:
                del index[n]
