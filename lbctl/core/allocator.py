"""The allocation table: which Service holds which LoadBalancer IP.

Pure state machine. The Service status is the record: the controller feeds existing assignments in with
`restore()` before anything is allocated, so a restart reproduces the same table.

Policy for addresses that fall outside every usable pool (pool edited, deleted or marked Overlap):
they are *retained* — the Service keeps its IP, nobody else can take it, and `Outcome.retained`
lets the controller warn. Nothing ever moves an IP unless the Service's own request changed.

Two things make an address busy: the decision (what a Service's status should say, `ips_of`) and the
status as last seen (`req.current_ips` of every Service, whatever its type, class or request). An address
a status shows stays reserved until that status is seen without it (or the Service is deleted), so a
release or a move whose status write has not landed yet never hands the address to someone else. A status
address of a Service that is not ours is reserved for it alone (nobody shares with it).
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .pools import PoolSpec, PoolVerdict, judge_pools
from .ranges import AddressRange, is_buggy, iter_free, make_ip
from .service import ServiceRequest
from .sharing import share_conflict

Addr = tuple[int, int]  # (family, integer value)


def to_addr(ip: str) -> Addr:
    obj = ipaddress.ip_address(ip)
    return obj.version, int(obj)


def to_text(addr: Addr) -> str:
    return str(make_ip(*addr))


@dataclass
class Outcome:
    """What the Service's status should say, and why."""

    ips: tuple[str, ...] = ()
    error: str | None = None  # allocation impossible now; the Service stays as it is
    changed: bool = False  # ips differ from what the Service's status shows
    released: tuple[str, ...] = ()  # addresses this call made free for anyone
    retained: tuple[str, ...] = ()  # kept although no usable pool contains them
    pool: str | None = None


@dataclass
class PoolUsage:
    capacity: dict[int, int] = field(default_factory=dict)
    assigned: dict[int, int] = field(default_factory=dict)

    def available(self, family: int) -> int:
        return max(self.capacity.get(family, 0) - self.assigned.get(family, 0), 0)


class Allocator:
    def __init__(self) -> None:
        self.pools: dict[str, PoolSpec] = {}
        self.verdicts: dict[str, PoolVerdict] = {}
        # Every Service an address is busy for: decided (`_by_service`) or shown in its status (`_shown`).
        self._holders: dict[Addr, dict[str, ServiceRequest]] = {}
        self._by_service: dict[str, tuple[Addr, ...]] = {}
        self._shown: dict[str, tuple[Addr, ...]] = {}
        self._holding: dict[str, set[Addr]] = {}  # key -> the addresses it stands in _holders for
        self._granted: dict[str, ServiceRequest] = {}  # the request each decided Service last got its addresses by
        self._freed: list[Addr] = []  # addresses that left _holders during the current call
        # Lowest address of each range that might be free: everything below it is taken.
        self._hint: dict[AddressRange, int] = {}
        # Derived from the pools (set_pools), so lookups stay O(log ranges) with 100s of pools and 10,000s of
        # Services: usable ranges by family, sorted by first address (usable pools never overlap).
        self._firsts: dict[int, list[int]] = {}
        self._spans: dict[int, list[tuple[int, PoolSpec]]] = {}
        # autoAssign candidates in preference order; per namespace named by a `namespaces` rule, the ones that
        # namespace may use (a pool listing namespaces admits no other).
        self._auto_by_ns: dict[str, list[PoolSpec]] = {}
        self._auto_any_ns: list[PoolSpec] = []
        # Addresses held, per usable pool and family: what usage() reports, kept as addresses come and go.
        self._assigned: dict[str, dict[int, int]] = {}

    # ----- pools -------------------------------------------------------------------------
    def set_pools(self, pools: Iterable[PoolSpec]) -> dict[str, PoolVerdict]:
        self.pools = {p.name: p for p in pools}
        self.verdicts = judge_pools(self.pools.values())
        self._hint.clear()
        usable = [p for p in self.pools.values() if self.usable(p.name)]
        spans = sorted(((r.family, r.first, r.last, p) for p in usable for r in p.ranges), key=lambda s: s[:3])
        self._firsts, self._spans = {}, {}
        for fam, first, last, pool in spans:
            self._firsts.setdefault(fam, []).append(first)
            self._spans.setdefault(fam, []).append((last, pool))
        auto = sorted((p for p in usable if p.auto_assign), key=lambda p: (
            not p.has_allocation_rules, p.priority if p.priority is not None else 1 << 31, p.created, p.name))
        self._auto_any_ns = [p for p in auto if not p.namespaces]
        self._auto_by_ns = {ns: [p for p in auto if not p.namespaces or ns in p.namespaces]
                            for ns in {ns for p in auto for ns in p.namespaces}}
        self._assigned = {p.name: {f: 0 for f in p.families} for p in self.pools.values()}
        for addr in self._holders:
            self._count(addr, 1)
        return self.verdicts

    def usable(self, name: str) -> bool:
        v = self.verdicts.get(name)
        return bool(v and v.ready)

    def pool_of(self, addr: Addr) -> PoolSpec | None:
        """The usable pool whose ranges contain the address (at most one: usable pools never overlap)."""
        firsts = self._firsts.get(addr[0])
        if not firsts:
            return None
        i = bisect.bisect_right(firsts, addr[1]) - 1
        if i < 0:
            return None
        last, pool = self._spans[addr[0]][i]
        return pool if addr[1] <= last else None

    def usage(self) -> dict[str, PoolUsage]:
        return {name: PoolUsage({f: p.capacity(f) for f in p.families}, dict(self._assigned[name]))
                for name, p in self.pools.items()}

    # ----- queries -----------------------------------------------------------------------
    def ips_of(self, key: str) -> tuple[str, ...]:
        return tuple(to_text(a) for a in self._by_service.get(key, ()))

    def holders(self, ip: str) -> list[str]:
        return sorted(self._holders.get(to_addr(ip), {}))

    def assignments(self) -> dict[str, tuple[str, ...]]:
        return {k: self.ips_of(k) for k in self._by_service}

    def holding(self) -> list[str]:
        """Every Service an address is busy for: decided, or shown in its status (whatever its type or class)."""
        return list(self._holding)

    # ----- mutations ---------------------------------------------------------------------
    def restore(self, req: ServiceRequest, lb_class: str | None = None) -> Outcome:
        """Record what the Service's status already says (startup). Never picks a new address."""
        self._observe(req, lb_class)
        if not req.wants(lb_class):
            return Outcome(ips=req.current_ips)
        # A status is kept even when it clashes with an older one: a sharer whose own request changed and could
        # not move looks just like that, and the running controller let it keep its address; moving the other
        # one now would move a Service that asked for nothing. Both are told (IPConflict).
        addrs = self._shown.get(req.key, ())
        conflicts = [f"{to_text(a)} recorded in status is {c}" for a in addrs
                     if (c := share_conflict(req, self._decided_users(a, req.key)))]
        self._claim(req, addrs)
        return Outcome(ips=req.current_ips, retained=self._retained(addrs), error="; ".join(conflicts) or None)

    def release(self, key: str) -> tuple[str, ...]:
        """The Service is gone: everything it held or showed is free."""
        self._freed = []
        self._by_service.pop(key, None)
        self._shown.pop(key, None)
        self._granted.pop(key, None)
        self._rehold(key, None)
        return tuple(to_text(a) for a in self._freed)

    def sync(self, req: ServiceRequest, ns_labels: Mapping[str, str] | None, lb_class: str | None = None) -> Outcome:
        """Bring the table in line with one Service and say what its status should be."""
        self._freed = []
        outcome = self._sync(req, ns_labels, lb_class)
        outcome.released = tuple(to_text(a) for a in self._freed if a not in self._holders)
        return outcome

    def _sync(self, req: ServiceRequest, ns_labels: Mapping[str, str] | None, lb_class: str | None) -> Outcome:
        was_ours = bool(self._by_service.get(req.key))
        self._observe(req, lb_class)
        if not req.wants(lb_class):
            self._by_service.pop(req.key, None)
            self._granted.pop(req.key, None)
            self._rehold(req.key, self._exclusive(req))
            return Outcome(ips=(), changed=bool(req.current_ips) and was_ours)
        held = self._unwritten_conflicts_dropped(req)
        if req.error:  # an invalid request moves nothing: the Service keeps what it holds, and is told why
            ips = self.ips_of(req.key)
            error = f"{req.error}; keeps {', '.join(ips)}" if ips else req.error
            return Outcome(ips=ips, error=error, changed=ips != tuple(req.current_ips), retained=self._retained(held))
        if held:
            keep = self._still_fits(req, held, ns_labels)
            if keep is None:
                self._claim(req, held)  # refresh ports/labels recorded for sharing checks
                return self._settled(req, held)
            # The Service's own request changed: try the new addresses first, keep the old on failure.
            outcome = self._allocate(req, ns_labels, exclude_self=True)
            if outcome.error:
                outcome.error = f"{keep}; cannot move: {outcome.error}"
                outcome.ips = self.ips_of(req.key)
                outcome.changed = outcome.ips != tuple(req.current_ips)  # a write that failed is made again
                return outcome
            self._claim(req, tuple(to_addr(ip) for ip in outcome.ips))
            outcome.changed = tuple(outcome.ips) != tuple(req.current_ips)
            return outcome
        outcome = self._allocate(req, ns_labels, exclude_self=False)
        if not outcome.error:
            self._claim(req, tuple(to_addr(ip) for ip in outcome.ips))
            outcome.changed = tuple(outcome.ips) != tuple(req.current_ips)
        return outcome

    # ----- internals ---------------------------------------------------------------------
    def _unwritten_conflicts_dropped(self, req: ServiceRequest) -> tuple[Addr, ...]:
        """The decided addresses, less those its status never showed and another status shows now (a write
        that had not landed loses to a status already there: nobody ever saw the address as this Service's)."""
        held = self._by_service.get(req.key, ())
        shown = self._shown.get(req.key, ())
        lost = [a for a in held if a not in shown and share_conflict(
            req, [u for k, u in self._holders.get(a, {}).items() if k != req.key and a in self._shown.get(k, ())])]
        if lost:
            held = tuple(a for a in held if a not in lost)
            self._by_service[req.key] = held
            if not held:
                del self._by_service[req.key]
                self._granted.pop(req.key, None)
            self._rehold(req.key, req)
        return held

    def _settled(self, req: ServiceRequest, held: tuple[Addr, ...]) -> Outcome:
        ips = tuple(to_text(a) for a in held)
        pool = self.pool_of(held[0])
        return Outcome(ips=ips, changed=ips != tuple(req.current_ips), retained=self._retained(held),
                       pool=pool.name if pool else None)

    def _retained(self, addrs: Iterable[Addr]) -> tuple[str, ...]:
        return tuple(to_text(a) for a in addrs if self.pool_of(a) is None)

    def _observe(self, req: ServiceRequest, lb_class: str | None) -> None:
        """What the Service's status shows now (valid addresses, each once)."""
        shown: list[Addr] = []
        for ip in req.current_ips:
            try:
                addr = to_addr(ip)
            except ValueError:
                continue
            if addr not in shown:
                shown.append(addr)
        if shown:
            self._shown[req.key] = tuple(shown)
        else:
            self._shown.pop(req.key, None)
        self._rehold(req.key, req if req.wants(lb_class) else self._exclusive(req))

    def _claim(self, req: ServiceRequest, addrs: tuple[Addr, ...]) -> None:
        self._by_service[req.key] = tuple(dict.fromkeys(addrs))
        self._granted[req.key] = req
        self._rehold(req.key, req)

    def _rehold(self, key: str, req: ServiceRequest | None) -> None:
        """Make _holders say that `key` (as `req`) holds its decided and its shown addresses, and nothing else."""
        now = set(self._by_service.get(key, ())) | set(self._shown.get(key, ()))
        for addr in self._holding.get(key, set()) - now:
            users = self._holders.get(addr)
            if users is None:
                continue
            users.pop(key, None)
            if not users:
                del self._holders[addr]
                self._count(addr, -1)
                self._free_hint(addr)
                self._freed.append(addr)
        if not now:
            self._holding.pop(key, None)
            return
        assert req is not None
        self._holding[key] = now
        for addr in now:
            users = self._holders.get(addr)
            if users is None:
                users = self._holders[addr] = {}
                self._count(addr, 1)
            users[key] = req

    @staticmethod
    def _exclusive(req: ServiceRequest) -> ServiceRequest:
        """A Service that is not ours keeps its status addresses to itself: nobody may share them."""
        return dataclasses.replace(req, sharing_key=None)

    def _decided_users(self, addr: Addr, key: str) -> list[ServiceRequest]:
        """Who else holds `addr` by a decision (for restore: the first decision wins, statuses only reserve)."""
        return [u for k, u in self._holders.get(addr, {}).items() if k != key and addr in self._by_service.get(k, ())]

    def _count(self, addr: Addr, delta: int) -> None:
        pool = self.pool_of(addr)
        if pool is not None:
            self._assigned[pool.name][addr[0]] += delta

    def _free_hint(self, addr: Addr) -> None:
        for r, low in self._hint.items():
            if r.family == addr[0] and r.first <= addr[1] <= r.last and addr[1] < low:
                self._hint[r] = addr[1]

    def _still_fits(self, req: ServiceRequest, held: tuple[Addr, ...], ns_labels: Mapping[str, str] | None) -> str | None:
        """None when the held addresses still answer the request; otherwise what changed."""
        ips = [to_text(a) for a in held]
        # A dual-stack Service may name the address of one family only: the other one is its free choice.
        if req.requested_ips and not set(req.requested_ips) <= set(ips):
            return f"requested {', '.join(req.requested_ips)} but holds {', '.join(ips)}"
        fams = [a[0] for a in held]
        if any(f not in req.families for f in fams):
            return f"holds {', '.join(ips)} but ipFamilies are {'/'.join(f'IPv{f}' for f in req.families)}"
        if req.require_all_families and set(fams) != set(req.families):
            return "a required address family is missing"
        for addr in held:
            pool = self.pool_of(addr)
            # Addresses outside every usable pool are retained, never moved (see module doc); so is one that a
            # pool edit put into another pool: only a change of the Service's own pool request moves it.
            granted = self._granted.get(req.key)
            if pool is not None and req.pool and pool.name != req.pool and (granted is None or granted.pool != req.pool):
                return f"holds {to_text(addr)} from IPPool {pool.name} but asks for IPPool {req.pool}"
            # Only a Service whose own sharing terms changed can have broken a sharing: the others stay put.
            if _sharing_terms(self._granted.get(req.key)) != _sharing_terms(req):
                conflict = share_conflict(req, self._decided_users(addr, req.key))
                if conflict:
                    return f"{to_text(addr)} is {conflict}"
        return None

    def _allocate(self, req: ServiceRequest, ns_labels: Mapping[str, str] | None, exclude_self: bool) -> Outcome:
        if req.requested_ips:
            return self._allocate_requested(req, ns_labels)
        pools, why = self._candidate_pools(req, ns_labels)
        if not pools:
            return Outcome(error=why)
        reasons: list[str] = []
        partial: Outcome | None = None
        for pool in pools:
            picks: list[Addr] = []
            missing: list[str] = []
            for fam in req.families:
                addr, reason = self._pick(pool, fam, req)
                if addr is None:
                    missing.append(reason)
                else:
                    picks.append(addr)
            if not missing:
                return Outcome(ips=tuple(to_text(a) for a in picks), pool=pool.name)
            reasons.append(f"IPPool {pool.name}: {'; '.join(missing)}")
            primary_ok = picks and picks[0][0] == req.families[0]
            if not req.require_all_families and primary_ok and partial is None:
                partial = Outcome(ips=tuple(to_text(a) for a in picks), pool=pool.name)
        if partial is not None:
            return partial
        return Outcome(error="no address available: " + " | ".join(reasons))

    def _candidate_pools(self, req: ServiceRequest, ns_labels: Mapping[str, str] | None) -> tuple[list[PoolSpec], str]:
        if req.pool:
            pool = self.pools.get(req.pool)
            if pool is None:
                return [], f"IPPool {req.pool} does not exist"
            if not self.usable(pool.name):
                v = self.verdicts[pool.name]
                return [], f"IPPool {pool.name} is not usable ({v.reason}: {v.message})"
            if not pool.admits(req.namespace, ns_labels, req.labels):
                return [], f"IPPool {pool.name} does not admit this Service (serviceAllocation rules)"
            return [pool], ""
        candidates = self._auto_by_ns.get(req.namespace, self._auto_any_ns)
        pools = [p for p in candidates if p.admits(req.namespace, ns_labels, req.labels)]
        if not pools:
            return [], "no usable IPPool with autoAssign admits this Service"
        return pools, ""

    def _pick(self, pool: PoolSpec, family: int, req: ServiceRequest) -> tuple[Addr | None, str]:
        ranges = [r for r in pool.ranges if r.family == family]
        if not ranges:
            return None, f"has no IPv{family} addresses"
        if req.sharing_key:  # join a compatible sharer first, lowest address wins
            for addr in sorted(a for a in self._holders if a[0] == family and pool.range_of(*a)):
                users = self._holders[addr]
                if any(u.sharing_key == req.sharing_key for u in users.values()) \
                        and share_conflict(req, users.values()) is None:
                    return addr, ""
        for r in ranges:
            start = self._hint.get(r, r.first)
            for value in iter_free(r, start, _UsedView(self._holders, family), pool.avoid_buggy_ips):
                self._hint[r] = value
                return (family, value), ""
            self._hint[r] = r.last + 1
        used = self._assigned[pool.name][family]  # a usable pool: every held address in its ranges is counted
        return None, f"IPv{family} exhausted ({used} of {pool.capacity(family)} assigned)"

    def _allocate_requested(self, req: ServiceRequest, ns_labels: Mapping[str, str] | None) -> Outcome:
        addrs: list[Addr] = []
        chosen: PoolSpec | None = None
        for ip in req.requested_ips:
            addr = to_addr(ip)
            pool = self.pool_of(addr)
            if pool is None:
                owner = next((p for p in self.pools.values() if p.range_of(*addr)), None)
                if owner is not None:
                    v = self.verdicts[owner.name]
                    return Outcome(error=f"requested {ip} is in IPPool {owner.name}, which is not usable ({v.reason}: {v.message})")
                return Outcome(error=f"requested {ip} is not in any IPPool")
            if req.pool and pool.name != req.pool:
                return Outcome(error=f"requested {ip} is in IPPool {pool.name}, not in the requested IPPool {req.pool}")
            if not pool.admits(req.namespace, ns_labels, req.labels):
                return Outcome(error=f"IPPool {pool.name} does not admit this Service (serviceAllocation rules)")
            if pool.avoid_buggy_ips and is_buggy(*addr):
                return Outcome(error=f"requested {ip} ends in .0 or .255 and IPPool {pool.name} avoids those")
            conflict = share_conflict(req, self._holders.get(addr, {}).values())
            if conflict:
                return Outcome(error=f"requested {ip} is {conflict}")
            addrs.append(addr)
            chosen = chosen or pool
        # Families the Service needs but did not name come from the same pool if it can.
        for fam in req.families:
            if any(a[0] == fam for a in addrs):
                continue
            assert chosen is not None
            addr, reason = self._pick(chosen, fam, req)
            if addr is None and req.require_all_families:
                return Outcome(error=f"IPPool {chosen.name}: {reason}")
            if addr is not None:
                addrs.append(addr)
        return Outcome(ips=tuple(to_text(a) for a in addrs), pool=chosen.name if chosen else None)


def _sharing_terms(req: ServiceRequest | None) -> tuple[object, ...] | None:
    return None if req is None else (req.sharing_key, req.ports, req.etp_local, req.selector)


class _UsedView:
    """`value in view` for one family, over the holders table, without building a set."""

    __slots__ = ("_holders", "_family")

    def __init__(self, holders: Mapping[Addr, object], family: int) -> None:
        self._holders, self._family = holders, family

    def __contains__(self, value: object) -> bool:
        return (self._family, value) in self._holders
