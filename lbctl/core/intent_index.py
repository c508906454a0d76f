"""`ClusterModel.intents()` and `withheld()`, kept up to date per changed object instead of rebuilt.

A speaker watches every Service and EndpointSlice in the cluster; most events are for Services it will never
announce. Rebuilding every IP's intent on each (10,000 Services: tens of ms on the event loop, which shares
the GIL with the ARP and heartbeat threads) is what this avoids. Per event only the IPs it can touch are
recomputed, with the same per-IP function as the full rebuild (`ClusterModel.state_at`):

- a Service: the IPs it held before and holds now;
- an EndpointSlice: the IPs of the Service it belonged to and belongs to now;
- an IPPool: the IPs inside its ranges before and after (a scan of the held IPs, not a recompute);
- a Node: none (nodes are the election's input, not the intents');
- a relist (SYNC): every IP.

`take_changes()` hands the caller the IPs whose intent or withheld entry may differ since the last call, so
the election, too, looks only at those. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from .announce import ClusterModel, IpIntent, ServiceRef, service_ips
from .endpoints import slice_key, slice_service
from .pools import PoolSpec

Withheld = tuple[str, tuple[ServiceRef, ...]]


def _service_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"  # as read_service names it


class IntentIndex:
    def __init__(self, lb_class: str | None) -> None:
        self.lb_class = lb_class
        self.model = ClusterModel()
        self.intents: dict[str, IpIntent] = {}  # equal to model.intents(lb_class), always
        self.withheld: dict[str, Withheld] = {}  # equal to model.withheld(lb_class), always
        self.bgp: dict[str, IpIntent] = {}  # IPs of pools with BGP advertisements, when model.bgp is on
        self.recomputed = 0  # IPs recomputed so far (how much work the events caused)
        self._ips_of: dict[str, tuple[str, ...]] = {}  # Service key -> the IPs it holds (served Services only)
        self._at: dict[str, set[str]] = {}  # IP -> keys of the Services holding it
        self._slices_of: dict[str, set[str]] = {}  # Service key -> keys of its EndpointSlices
        self._changes: set[str] | None = None  # None: everything (nothing taken yet, or a relist)

    def take_changes(self) -> set[str] | None:
        """IPs whose intent or withheld entry may have changed since the last call; None: any of them."""
        out, self._changes = self._changes, set()
        return out

    def apply(self, kind: str, event: str, obj: Any) -> bool:
        """Feed one informer event (as ClusterModel.apply); True when the election's inputs may have changed."""
        if event == "SYNC":
            changed = self.model.apply(kind, event, obj)
            self._rebuild()
            return changed
        if not isinstance(obj, Mapping):
            return False
        if kind == "Service":
            key = _service_key(obj)
            changed = self.model.apply(kind, event, obj)
            if changed:
                self._reindex(key)
            return changed
        if kind == "EndpointSlice":
            skey = slice_key(obj)
            old = self.model.slices.get(skey)
            changed = self.model.apply(kind, event, obj)
            if changed:
                owners = {old[0] if old else None, slice_service(obj)} - {None}
                for svc in owners:
                    assert svc is not None
                    self._slices_of.setdefault(svc, set()).discard(skey)
                new = self.model.slices.get(skey)
                if new and new[0]:
                    self._slices_of.setdefault(new[0], set()).add(skey)
                for svc in owners:
                    if not self._slices_of.get(svc):
                        self._slices_of.pop(svc, None)
                    self._recompute(set(self._ips_of.get(svc, ())))
            return changed
        if kind == "IPPool":
            name = str((obj.get("metadata") or {}).get("name", ""))
            old_pool = self.model.pools.get(name)
            changed = self.model.apply(kind, event, obj)
            if changed:
                pools = [p for p in (old_pool, self.model.pools.get(name)) if p is not None]
                self._recompute({ip for ip in self._at if _inside(ip, pools)})
            return changed
        return self.model.apply(kind, event, obj)

    # --- internals -------------------------------------------------------------------------------------

    def _rebuild(self) -> None:
        self._ips_of, self._at, self._slices_of = {}, {}, {}
        for key, svc in self.model.services.items():
            ips = service_ips(svc, self.lb_class)
            if ips:
                self._ips_of[key] = ips
                for ip in ips:
                    self._at.setdefault(ip, set()).add(key)
        for skey, (svc_key, _) in self.model.slices.items():
            if svc_key:
                self._slices_of.setdefault(svc_key, set()).add(skey)
        self.intents, self.withheld, self.bgp = {}, {}, {}
        self._recompute(set(self._at))
        self._changes = None

    def _reindex(self, key: str) -> None:
        svc = self.model.services.get(key)
        old = self._ips_of.pop(key, ())
        new = service_ips(svc, self.lb_class) if svc else ()
        if new:
            self._ips_of[key] = new
        for ip in old:
            holders = self._at.get(ip)
            if holders is not None:
                holders.discard(key)
                if not holders:
                    del self._at[ip]
        for ip in new:
            self._at.setdefault(ip, set()).add(key)
        self._recompute(set(old) | set(new))

    def _ready_of(self, svc_key: str) -> set[str]:
        out: set[str] = set()
        for skey in self._slices_of.get(svc_key, ()):
            out |= self.model.slices[skey][1]
        return out

    def _recompute(self, ips: set[str]) -> None:
        self.recomputed += len(ips)
        for ip in ips:
            svcs = [self.model.services[k] for k in self._at.get(ip, ())]
            intent, held = self.model.state_at(ip, svcs, self._ready_of) if svcs else (None, None)
            if intent is None:
                self.intents.pop(ip, None)
            else:
                self.intents[ip] = intent
            if held is None:
                self.withheld.pop(ip, None)
            else:
                self.withheld[ip] = held
            bgp = self.model.bgp_intent(ip, svcs, self._ready_of) if svcs and self.model.bgp else None
            if bgp is None:
                self.bgp.pop(ip, None)
            else:
                self.bgp[ip] = bgp
        if self._changes is not None:
            self._changes |= ips


def _inside(ip: str, pools: list[PoolSpec]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(p.range_of(addr.version, int(addr)) is not None for p in pools)
