"""IPPool specs: parsing, validation and overlap resolution between pools.

Overlap rule (stateless, so every restart decides the same way): when two pools share an address, the
older pool (creationTimestamp, then name) stays Ready and the newer one is marked Overlap and hands out
nothing. Addresses already assigned from the losing pool are kept (see allocator: retained addresses).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .bgp_advertisements import Advertisement, parse_advertisements
from .bgp_fields import BGPError
from .ranges import AddressRange, RangeError, count_buggy, parse_range
from .selectors import SelectorError, matches, validate_selector

READY = "Ready"
REASON_VALID = "Valid"
REASON_INVALID = "Invalid"
REASON_OVERLAP = "Overlap"


@dataclass(frozen=True)
class PoolSpec:
    name: str
    ranges: tuple[AddressRange, ...]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    priority: int | None = None
    namespaces: tuple[str, ...] = ()
    namespace_selector: Mapping[str, Any] | None = None
    service_selectors: tuple[Mapping[str, Any], ...] = ()
    created: str = ""
    # Set when the spec cannot be used; the pool then hands out nothing.
    error: str | None = None
    layer2: Mapping[str, Any] = field(default_factory=dict)
    bgp: tuple[Advertisement, ...] = ()  # spec.bgp.advertisements: announced by BGP when non-empty

    @property
    def layer2_enabled(self) -> bool:
        """Announced by ARP/NDP unless spec.layer2.enabled is false (pools before BGP stay as they were)."""
        return self.layer2.get("enabled", True) is not False

    @property
    def families(self) -> set[int]:
        return {r.family for r in self.ranges}

    @property
    def has_allocation_rules(self) -> bool:
        return bool(self.namespaces or self.namespace_selector is not None or self.service_selectors)

    def admits(self, namespace: str, ns_labels: Mapping[str, str] | None, svc_labels: Mapping[str, str] | None) -> bool:
        """Do this pool's serviceAllocation rules allow a Service in `namespace` with `svc_labels`?"""
        if self.namespaces and namespace not in self.namespaces:
            return False
        if self.namespace_selector is not None and not matches(self.namespace_selector, ns_labels):
            return False
        if self.service_selectors and not any(matches(s, svc_labels) for s in self.service_selectors):
            return False
        return True

    def capacity(self, family: int) -> int:
        total = 0
        for r in self.ranges:
            if r.family == family:
                total += r.size - (count_buggy(r) if self.avoid_buggy_ips else 0)
        return total

    def range_of(self, family: int, value: int) -> AddressRange | None:
        for r in self.ranges:
            if r.family == family and r.first <= value <= r.last:
                return r
        return None


def parse_pool(name: str, spec: Mapping[str, Any] | None, created: str = "") -> PoolSpec:
    """Turn an IPPool's spec into a PoolSpec; problems land in `.error` instead of raising."""
    spec = spec or {}
    alloc = spec.get("serviceAllocation") or {}
    try:
        addresses = spec.get("addresses")
        if not isinstance(addresses, list) or not addresses:
            raise RangeError("spec.addresses must be a non-empty list")
        ranges = tuple(parse_range(a) for a in addresses)
        _check_self_overlap(ranges)
        if not isinstance(alloc, Mapping):
            raise SelectorError("spec.serviceAllocation must be an object")
        priority = alloc.get("priority")
        if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
            raise SelectorError(f"spec.serviceAllocation.priority {priority!r} is not an integer")
        namespaces = alloc.get("namespaces") or []
        if not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces):
            raise SelectorError("spec.serviceAllocation.namespaces must be a list of names")
        validate_selector(alloc.get("namespaceSelector"), "spec.serviceAllocation.namespaceSelector")
        svc_sel = alloc.get("serviceSelector", alloc.get("serviceSelectors"))
        svc_sels = tuple(svc_sel) if isinstance(svc_sel, list) else ((svc_sel,) if svc_sel is not None else ())
        for i, s in enumerate(svc_sels):
            validate_selector(s, f"spec.serviceAllocation.serviceSelector[{i}]")
        layer2 = spec.get("layer2") or {}
        if not isinstance(layer2, Mapping) or not isinstance(layer2.get("enabled", True), bool):
            raise SelectorError("spec.layer2.enabled must be true or false")
        bgp = parse_advertisements(spec.get("bgp"), ranges) if spec.get("bgp") is not None else ()
    except (RangeError, SelectorError, BGPError) as exc:
        return PoolSpec(name=name, ranges=(), created=created, error=str(exc))
    return PoolSpec(
        name=name,
        ranges=ranges,
        auto_assign=bool(spec.get("autoAssign", True)),
        avoid_buggy_ips=bool(spec.get("avoidBuggyIPs", False)),
        priority=priority,
        namespaces=tuple(namespaces),
        namespace_selector=alloc.get("namespaceSelector"),
        service_selectors=svc_sels,
        created=created,
        layer2=layer2,
        bgp=bgp,
    )


def _check_self_overlap(ranges: tuple[AddressRange, ...]) -> None:
    ordered = sorted(ranges)
    for a, b in zip(ordered, ordered[1:]):
        if a.overlaps(b):
            raise RangeError(f"{a} overlaps {b} within the same pool")


@dataclass(frozen=True)
class PoolVerdict:
    ready: bool
    reason: str
    message: str


def judge_pools(pools: Iterable[PoolSpec]) -> dict[str, PoolVerdict]:
    """Decide which pools may hand out addresses. Older pools win overlaps."""
    verdicts: dict[str, PoolVerdict] = {}
    accepted: list[PoolSpec] = []
    for pool in sorted(pools, key=lambda p: (p.created, p.name)):
        if pool.error:
            verdicts[pool.name] = PoolVerdict(False, REASON_INVALID, pool.error)
            continue
        clash = _first_clash(pool, accepted)
        if clash:
            mine, other, theirs = clash
            verdicts[pool.name] = PoolVerdict(
                False, REASON_OVERLAP, f"{mine} overlaps {theirs} of IPPool {other}; this pool hands out nothing until fixed"
            )
            continue
        accepted.append(pool)
        verdicts[pool.name] = PoolVerdict(True, REASON_VALID, _describe(pool))
    return verdicts


def _first_clash(pool: PoolSpec, accepted: list[PoolSpec]) -> tuple[AddressRange, str, AddressRange] | None:
    for other in accepted:
        for mine in pool.ranges:
            for theirs in other.ranges:
                if mine.overlaps(theirs):
                    return mine, other.name, theirs
    return None


def _describe(pool: PoolSpec) -> str:
    parts = [f"IPv{f}: {pool.capacity(f)} addresses" for f in sorted(pool.families)]
    return "; ".join(parts)
