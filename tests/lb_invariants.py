"""The allocation promise, judged from what the API shows (Service statuses and Events), not from any table.

1. No address is held by two LoadBalancer Services unless they share it validly: the same sharing key, no
   protocol/port in common, the same externalTrafficPolicy, identical selectors for `Local`. A duplicate an
   admin made (an address another Service holds, written by hand into a status) is a note, not a violation:
   the controller did not make it (the order is what the checks saw first); nor did it make a pair that
   shared validly until one changed its own request and was told why it keeps the address (a note too).
2. An address never changes for a Service that did not ask: its own request unchanged since it got that
   address. A hand edit of its status counts as asking, and so does another status written by hand that
   claims its address (then the older claimant keeps it, as documented).
3. Every LoadBalancer Service of ours without an address has a Warning Event `AllocationFailed` (on its uid).
4. Across a restart with nothing else going on, no Service is written at all (same resourceVersion).

Written independently of lbctl.core.sharing on purpose: this is the oracle the controller is judged by.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lbctl.core.service import annotation

Svc = Mapping[str, Any]
REQUEST_ANNOTATIONS = ("loadBalancerIPs", "address-pool", "allow-shared-ip")
ASKED_CHECKS = 2
NOTES = frozenset({"duplicate-by-hand", "kept-by-request"})  # reported, but the controller made neither
REQUEST_SPEC = ("type", "loadBalancerClass", "loadBalancerIP", "ipFamilyPolicy", "ipFamilies",
                "externalTrafficPolicy", "selector")


@dataclass
class Violation:
    step: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"step {self.step}: {self.kind}: {self.detail}"


def name(svc: Svc) -> str:
    return f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"


def uid(svc: Svc) -> str:
    return svc["metadata"]["uid"]


def ips(svc: Svc) -> tuple[str, ...]:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return tuple(i.get("ip") or "" for i in ingress)


def ours(svc: Svc) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def request(svc: Svc) -> str:
    """The Service's own request, as a comparable string (labels are not part of it: they only pick pools)."""
    spec = svc.get("spec") or {}
    annotations = (svc.get("metadata") or {}).get("annotations") or {}
    return json.dumps({
        "annotations": {a: annotation(annotations, a) for a in REQUEST_ANNOTATIONS},
        "spec": {k: spec.get(k) for k in REQUEST_SPEC},
        "ports": sorted((p.get("protocol") or "TCP", p.get("port")) for p in spec.get("ports") or []),
    }, sort_keys=True)


def requested(svc: Svc) -> set[str]:
    """The addresses the Service names (annotation or spec.loadBalancerIP)."""
    spec = svc.get("spec") or {}
    raw = annotation((svc.get("metadata") or {}).get("annotations") or {}, "loadBalancerIPs") or ""
    names = {ip.strip() for ip in raw.split(",") if ip.strip()}
    return names | ({spec["loadBalancerIP"]} if spec.get("loadBalancerIP") else set())


def share_fault(a: Svc, b: Svc) -> str | None:
    """Why a and b may not hold one address together, or None."""
    ka = annotation((a["metadata"].get("annotations") or {}), "allow-shared-ip")
    kb = annotation((b["metadata"].get("annotations") or {}), "allow-shared-ip")
    if not ka or ka != kb:
        return f"sharing keys {ka!r} and {kb!r}"
    ports = [{(p.get("protocol") or "TCP", p.get("port")) for p in s["spec"].get("ports") or []} for s in (a, b)]
    if ports[0] & ports[1]:
        return f"ports {sorted(ports[0] & ports[1])} in common"
    etp = [s["spec"].get("externalTrafficPolicy") or "Cluster" for s in (a, b)]
    if etp[0] != etp[1]:
        return f"externalTrafficPolicy {etp[0]} and {etp[1]}"
    if etp[0] == "Local" and a["spec"].get("selector") != b["spec"].get("selector"):
        return "Local with different selectors"
    return None


@dataclass
class Oracle:
    """Checks a settled view; remembers what it needs across checks (addresses, requests, Warnings seen)."""

    held: dict[str, tuple[str, ...]] = field(default_factory=dict)  # uid -> addresses at the last check
    # uid -> checks left during which a move is no violation: the test changed its request or status. Two, so a
    # change the controller sees only after this check's barrier is still covered; kept while it "cannot move".
    asked: dict[str, int] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)  # uid -> request at the last check
    warned: dict[str, str] = field(default_factory=dict)  # uid -> last AllocationFailed message seen
    checks: int = 0
    since: dict[tuple[str, str], int] = field(default_factory=dict)  # (uid, address) -> check it was first seen at

    # uid -> addresses before its status was written by hand; forgotten once the status shows them again
    hand: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def asked_by(self, uids: Iterable[str]) -> None:
        """The test changed these Services' requests: a move of their address soon after is no violation."""
        self.asked.update((u, ASKED_CHECKS) for u in uids)

    def hand_edited(self, u: str, before: tuple[str, ...]) -> None:
        """A status written by hand: while it differs from `before`, its own moves and those of any Service
        whose address it claims are the admin's doing (the older claimant keeps an address, documented)."""
        self.hand.setdefault(u, before)

    def saw_warnings(self, events: Iterable[Svc]) -> None:
        for e in sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"])):
            if e.get("type") == "Warning" and e.get("reason") == "AllocationFailed":
                self.warned[e["involvedObject"].get("uid") or ""] = e.get("message") or ""

    def _by_hand(self, s: Svc) -> bool:
        """Does the status show what an admin wrote (not yet replaced by the controller)?"""
        pre, now = self.hand.get(uid(s)), ips(s)
        before = self.held.get(uid(s), pre)
        return pre is not None and now != pre and (before == pre or now == before)

    def _duplicate(self, step: int, ip: str, a: Svc, b: Svc, fault: str) -> Violation:
        """The controller must never hand out an address another status shows; an admin writing one that
        another Service holds into a status makes a duplicate the controller did not make (a note)."""
        first, second = sorted((a, b), key=lambda s: self.since[(uid(s), ip)])
        made_by_hand = self._by_hand(second) or (
            self.since[(uid(a), ip)] == self.since[(uid(b), ip)] and self._by_hand(first))
        told = {name(s): self.warned[uid(s)] for s in (a, b) if uid(s) in self.warned}
        detail = f"{ip} held by {name(first)}, then also by {name(second)} ({fault})" + (
            f"; warned: {told}" if told else "")
        if made_by_hand:
            return Violation(step, "duplicate-by-hand", detail)
        if self.since[(uid(second), ip)] < self.checks and told:
            # Both held it before this check: one changed its own request (key, ports) and keeps the address
            # because the new request cannot be met, and is told so (README: "cannot move"; an invalid request
            # "keeps" what it holds). The controller made no duplicate.
            return Violation(step, "kept-by-request", detail)
        return Violation(step, "duplicate", detail)

    def check(self, step: int, services: list[Svc]) -> list[Violation]:
        self.checks += 1
        out: list[Violation] = []
        by_ip: dict[str, list[Svc]] = {}
        for s in services:
            if ours(s):
                for ip in dict.fromkeys(ips(s)):
                    by_ip.setdefault(ip, []).append(s)
        for s in services:
            for ip in ips(s):
                self.since.setdefault((uid(s), ip), self.checks)
        for ip, holders in sorted(by_ip.items()):
            for i, a in enumerate(holders):
                for b in holders[i + 1:]:
                    if fault := share_fault(a, b):
                        out.append(self._duplicate(step, ip, a, b, fault))
        claimed = {ip for s in services if self._by_hand(s) for ip in ips(s)}
        live = set()
        for s in services:
            u, now, req = uid(s), ips(s), request(s)
            live.add(u)
            if req != self.requests.get(u, req):
                self.asked[u] = ASKED_CHECKS
            before = self.held.get(u)
            # Moving to an address it names is what the Service asked for, however long it had to wait.
            if before and now != before and ours(s) and u not in self.asked and u not in self.hand \
                    and not set(before) & claimed and not set(now) & requested(s):
                out.append(Violation(step, "moved", f"{name(s)} {list(before)} -> {list(now)} without asking"))
            pre = self.hand.get(u, now)
            if now == pre or (before is not None and now != before and before != pre):
                self.hand.pop(u, None)  # the status shows its old addresses again, or the controller replaced it
            if now != before or (self.asked.get(u, 1) <= 1 and "cannot move" not in self.warned.get(u, "")):
                self.asked.pop(u, None)
            elif u in self.asked:
                self.asked[u] = max(self.asked[u] - 1, 1)
            self.held[u], self.requests[u] = now, req
            if ours(s) and not now and u not in self.warned:
                out.append(Violation(step, "no-warning", f"{name(s)} has no address and no AllocationFailed Event"))
        self.since = {k: v for k, v in self.since.items() if k[0] in live and k[1] in self.held[k[0]]}
        for gone in set(self.held) - live:
            del self.held[gone], self.requests[gone]
            self.asked.pop(gone, None)
            self.hand.pop(gone, None)
        return out


def snapshot(services: list[Svc]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """uid -> (resourceVersion, addresses): what must stay exactly as it is across a quiet restart."""
    return {uid(s): (s["metadata"]["resourceVersion"], ips(s)) for s in services}


def rewritten(step: int, before: Mapping[str, tuple[str, tuple[str, ...]]], services: list[Svc],
              what: str) -> list[Violation]:
    out = []
    for s in services:
        old = before.get(uid(s))
        if old and old[0] != s["metadata"]["resourceVersion"]:
            out.append(Violation(step, "rewritten", f"{name(s)} written across {what}: {list(old[1])} -> "
                                 f"{list(ips(s))}"))
    return out
