"""What the L2 speakers announce and who announces it, from watched cluster objects (plain dicts).

`ClusterModel` is fed Services, EndpointSlices, Nodes and IPPools; `intents()` turns them into one
`IpIntent` per assigned address (Services sharing an address collapse into one), and `owners()`
elects a node per address. Every speaker computes the same answer from the same inputs: no API
writes are needed to agree. `static_intents()` reads the test/debug `--static-config` file into the
same shapes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .election import NodeInfo, elect
from .endpoints import ready_nodes, slice_key, slice_service
from .pools import PoolSpec, parse_pool
from .service import ServiceRequest, read_service


@dataclass(frozen=True, order=True)
class ServiceRef:
    namespace: str
    name: str
    uid: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class IpIntent:
    ip: str  # canonical text form
    services: tuple[ServiceRef, ...] = ()
    pool: str | None = None
    node_selectors: tuple[Mapping[str, Any], ...] = ()
    interfaces: tuple[str, ...] = ()  # pool layer2.interfaces; empty = by subnet
    etp_local: bool = False
    ready_nodes: frozenset[str] = field(default_factory=frozenset)


def canonical_ip(ip: str) -> str | None:
    try:
        return ipaddress.ip_address(ip.strip()).compressed
    except (ValueError, AttributeError):
        return None


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def node_info(obj: Mapping[str, Any]) -> NodeInfo:
    meta = _map(obj.get("metadata"))
    conds = _map(obj.get("status")).get("conditions")
    conds = conds if isinstance(conds, list) else []
    unavailable = any(isinstance(c, Mapping) and c.get("type") == "NetworkUnavailable" and c.get("status") == "True"
                      for c in conds)
    labels = meta.get("labels")
    addrs = _map(obj.get("status")).get("addresses")
    internal = tuple(ip for a in (addrs if isinstance(addrs, list) else []) if isinstance(a, Mapping)
                     and a.get("type") == "InternalIP" and (ip := canonical_ip(str(a.get("address", "")))))
    ready = any(isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    going = bool(_map(obj.get("spec")).get("unschedulable")) or bool(meta.get("deletionTimestamp")) or not ready
    return NodeInfo(str(meta.get("name", "")), dict(labels) if isinstance(labels, Mapping) else {}, unavailable,
                    internal, going)


def layer2_of(layer2: Any) -> tuple[tuple[Mapping[str, Any], ...], tuple[str, ...]]:
    """(nodeSelectors, interfaces) of a pool's spec.layer2; nodeSelector may be one selector or a list."""
    if not isinstance(layer2, Mapping):
        return (), ()
    sel = layer2.get("nodeSelector", layer2.get("nodeSelectors"))
    sels = tuple(s for s in (sel if isinstance(sel, list) else [sel]) if isinstance(s, Mapping))
    ifs = layer2.get("interfaces")
    return sels, tuple(str(i) for i in ifs) if isinstance(ifs, list) else ()


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


class ClusterModel:
    """Last known cluster state. Kept as is when the API server is unreachable."""

    def __init__(self) -> None:
        self.services: dict[str, ServiceRequest] = {}
        self.slices: dict[str, tuple[str | None, frozenset[str]]] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.pools: dict[str, PoolSpec] = {}
        self.unready_pools: dict[str, str] = {}  # name -> the message of its Ready=False condition
        self._by_age: list[PoolSpec] | None = None  # pools oldest first, sorted once per pool change
        self.bgp = False  # the speaker runs BGP: a pool with BGP advertisements is announced, layer 2 or not

    # Each apply returns True when something election-relevant may have changed.
    def apply(self, kind: str, event: str, obj: Any) -> bool:
        handler = {"Service": self._service, "EndpointSlice": self._slice, "Node": self._node,
                   "IPPool": self._pool}[kind]
        if kind == "IPPool":
            self._by_age = None
        if event == "SYNC":
            self._store(kind).clear()
            for item in obj if isinstance(obj, list) else []:
                self._safe(handler, item, False)
            return True
        return self._safe(handler, obj, event == "DELETED")

    @staticmethod
    def _safe(handler: Any, obj: Any, deleted: bool) -> bool:
        # Odd objects (a broken CR, a future API shape) are skipped, never allowed to stop a watch.
        if not isinstance(obj, Mapping):
            return False
        try:
            return bool(handler(obj, deleted))
        except (AttributeError, KeyError, TypeError, ValueError):
            return False

    def _store(self, kind: str) -> dict[str, Any]:
        return {"Service": self.services, "EndpointSlice": self.slices, "Node": self.nodes,
                "IPPool": self.pools}[kind]  # type: ignore[return-value]

    def _service(self, obj: Mapping[str, Any], deleted: bool) -> bool:
        try:
            svc = read_service(obj)
        except (KeyError, TypeError, ValueError, AttributeError):
            return False
        old = self.services.pop(svc.key, None)
        if not deleted:
            self.services[svc.key] = svc
        return old != self.services.get(svc.key)

    def _slice(self, obj: Mapping[str, Any], deleted: bool) -> bool:
        key = slice_key(obj)
        old = self.slices.pop(key, None)
        if not deleted:
            self.slices[key] = (slice_service(obj), ready_nodes(obj))
        return old != self.slices.get(key)

    def _node(self, obj: Mapping[str, Any], deleted: bool) -> bool:
        info = node_info(obj)
        old = self.nodes.pop(info.name, None)
        if not deleted and info.name:
            self.nodes[info.name] = info
        return old != self.nodes.get(info.name)

    def _pool(self, obj: Mapping[str, Any], deleted: bool) -> bool:
        name = _name(obj)
        old = self.pools.pop(name, None), self.unready_pools.pop(name, None)
        if not deleted and name:
            spec = obj.get("spec")
            self.pools[name] = parse_pool(name, spec if isinstance(spec, Mapping) else None,
                                          str((obj.get("metadata") or {}).get("creationTimestamp") or ""))
            conds = _map(obj.get("status")).get("conditions")
            for c in conds if isinstance(conds, list) else []:
                if isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "False":
                    self.unready_pools[name] = str(c.get("message") or c.get("reason") or "not Ready")
        return old != (self.pools.get(name), self.unready_pools.get(name))

    def ready_by_service(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for svc, nodes in self.slices.values():
            if svc:
                out.setdefault(svc, set()).update(nodes)
        return out

    def pool_for(self, ip: str) -> PoolSpec | None:
        """The pool whose range holds `ip`; the oldest wins an overlap, as in the controller."""
        addr = ipaddress.ip_address(ip)
        if self._by_age is None:
            self._by_age = sorted(self.pools.values(), key=lambda p: (p.created, p.name))
        for pool in self._by_age:
            if pool.range_of(addr.version, int(addr)) is not None:
                return pool
        return None

    def withheld_reason(self, ip: str) -> str | None:
        """Why `ip` must not be announced: whoever may write a Service's status must not be able to make the
        cluster answer ARP for any address (a gateway, say), so only addresses of a usable IPPool are."""
        return self._unusable(self.pool_for(ip))

    def _unusable(self, pool: PoolSpec | None) -> str | None:
        if pool is None:
            return "it is outside every IPPool"
        if pool.error:
            return f"IPPool {pool.name} is invalid: {pool.error}"
        if pool.name in self.unready_pools:
            return f"IPPool {pool.name} is not Ready: {self.unready_pools[pool.name]}"
        if not pool.layer2_enabled and not (self.bgp and pool.bgp):
            return f"IPPool {pool.name} is announced by BGP only (spec.layer2.enabled: false)"
        return None

    def withheld(self, lb_class: str | None) -> dict[str, tuple[str, tuple[ServiceRef, ...]]]:
        """ip -> (reason, Services) for every assigned address that is not announced."""
        return {ip: w for ip, svcs in self._by_ip(lb_class).items() if (w := self.state_at(ip, svcs, _none)[1])}

    def _by_ip(self, lb_class: str | None) -> dict[str, list[ServiceRequest]]:
        by_ip: dict[str, list[ServiceRequest]] = {}
        for svc in self.services.values():
            for ip in service_ips(svc, lb_class):
                by_ip.setdefault(ip, []).append(svc)
        return by_ip

    def intents(self, lb_class: str | None) -> dict[str, IpIntent]:
        """Every IP's intent from scratch (IntentIndex keeps the same up to date per changed object)."""
        ready = self.ready_by_service()
        empty: set[str] = set()
        return {ip: intent for ip, svcs in self._by_ip(lb_class).items()
                if (intent := self.state_at(ip, svcs, lambda key: ready.get(key, empty))[0]) is not None}

    def bgp_intents(self, lb_class: str | None) -> dict[str, IpIntent]:
        """Every IP's BGP intent from scratch (IntentIndex.bgp keeps the same up to date)."""
        ready = self.ready_by_service()
        empty: set[str] = set()
        return {ip: intent for ip, svcs in self._by_ip(lb_class).items()
                if (intent := self.bgp_intent(ip, svcs, lambda key: ready.get(key, empty))) is not None}

    def state_at(self, ip: str, svcs: Iterable[ServiceRequest], ready_of: Callable[[str], Iterable[str]]
                 ) -> tuple[IpIntent | None, tuple[str, tuple[ServiceRef, ...]] | None]:
        """(intent, None) for `ip` held by `svcs` (Services that want it), or (None, (reason, Services)) when
        it is withheld. The one per-IP function of both the full rebuild and IntentIndex."""
        svcs = list(svcs)
        pool = self.pool_for(ip)
        reason = self._unusable(pool)
        if reason or pool is None:
            return None, (reason or "", _refs(svcs))
        if not pool.layer2_enabled:
            return None, None  # BGP only, and BGP is on: announced, but not by layer 2
        return self._intent(ip, svcs, pool, ready_of), None

    def bgp_intent(self, ip: str, svcs: Iterable[ServiceRequest], ready_of: Callable[[str], Iterable[str]]
                   ) -> IpIntent | None:
        """`ip`'s intent for BGP: when BGP is on and its pool is usable and has BGP advertisements."""
        if not self.bgp:
            return None
        pool = self.pool_for(ip)
        if pool is None or not pool.bgp or self._unusable(pool):
            return None
        return self._intent(ip, list(svcs), pool, ready_of)

    @staticmethod
    def _intent(ip: str, svcs: list[ServiceRequest], pool: PoolSpec, ready_of: Callable[[str], Iterable[str]]
                ) -> IpIntent:
        sels, ifs = layer2_of(pool.layer2)
        nodes: set[str] = set()
        for s in svcs:
            nodes.update(ready_of(s.key))
        return IpIntent(
            ip=ip, services=_refs(svcs), pool=pool.name, node_selectors=sels, interfaces=ifs,
            # Shared addresses: Local on any sharer confines the owner to nodes serving one of them.
            etp_local=any(s.etp_local for s in svcs), ready_nodes=frozenset(nodes),
        )


def _none(_key: str) -> Iterable[str]:
    return ()


def service_ips(svc: ServiceRequest, lb_class: str | None) -> tuple[str, ...]:
    """The canonical addresses a Service holds, when it is one the speakers serve."""
    if not svc.wants(lb_class):
        return ()
    return tuple(dict.fromkeys(ip for raw in svc.current_ips if (ip := canonical_ip(raw))))


def _refs(svcs: Iterable[ServiceRequest]) -> tuple[ServiceRef, ...]:
    return tuple(sorted(ServiceRef(s.namespace, s.name, s.uid) for s in svcs))


def owners(intents: Mapping[str, IpIntent], live: set[str], nodes: Mapping[str, NodeInfo],
           live_for: Mapping[str, set[str]] | None = None) -> dict[str, str | None]:
    """Owner per IP. `live_for` (see segment_live) narrows an IP's candidates to the speakers live on the
    segment it is announced on; an IP absent from it is elected among `live`."""
    got = live_for or {}
    return {ip: elect(ip, got.get(ip, live), nodes, i.node_selectors, i.etp_local, set(i.ready_nodes))
            for ip, i in intents.items()}


def segment_live(segments_of: Mapping[str, Iterable[str]], live_on: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Per IP, the speakers live on the segments (our interfaces) it would be announced on.

    `segments_of`: IP -> names of the interfaces this node would announce it on; `live_on`: interface ->
    speakers heard on it (ourselves included while it is up). A peer that still beacons on another NIC but
    not on this IP's segment is no candidate for it: its NIC there is dead or cut off. IPs with no tracked
    segment (no interface here, or none carrying heartbeats, e.g. IPv6-only) are left out: the caller
    elects them among everyone live, as before.
    """
    out: dict[str, set[str]] = {}
    for ip, names in segments_of.items():
        tracked = [live_on[n] for n in names if n in live_on]
        if tracked:
            out[ip] = set().union(*tracked)
    return out


class StaticConfigError(ValueError):
    pass


def static_intents(doc: Any) -> tuple[dict[str, IpIntent], dict[str, NodeInfo]]:
    """Parse the --static-config document (see speaker/static.py for the format)."""
    if not isinstance(doc, Mapping):
        raise StaticConfigError("static config must be a JSON object")
    nodes: dict[str, NodeInfo] = {}
    for n in doc.get("nodes") or []:
        if isinstance(n, str):
            nodes[n] = NodeInfo(n)
        elif isinstance(n, Mapping) and isinstance(n.get("name"), str):
            nodes[n["name"]] = NodeInfo(n["name"], dict(n.get("labels") or {}), bool(n.get("networkUnavailable")))
        else:
            raise StaticConfigError(f"bad node entry {n!r}")
    intents: dict[str, IpIntent] = {}
    ips = doc.get("ips", {})
    if not isinstance(ips, Mapping):
        raise StaticConfigError("'ips' must map addresses to objects")
    for raw, spec in ips.items():
        ip = canonical_ip(str(raw))
        if ip is None:
            raise StaticConfigError(f"not an IP address: {raw!r}")
        spec = spec or {}
        if not isinstance(spec, Mapping):
            raise StaticConfigError(f"entry for {raw} must be an object")
        sels, ifs = layer2_of({"nodeSelector": spec.get("node_selector"), "interfaces": spec.get("interfaces")})
        refs = []
        for s in spec.get("services") or []:
            ns, _, name = str(s).rpartition("/")
            refs.append(ServiceRef(ns or "default", name))
        intents[ip] = IpIntent(ip=ip, services=tuple(refs), pool=spec.get("pool"), node_selectors=sels,
                               interfaces=ifs, etp_local=bool(spec.get("etp_local")),
                               ready_nodes=frozenset(_strings(spec.get("ready_nodes"))))
    return intents, nodes


def _strings(v: Any) -> Iterable[str]:
    return [str(x) for x in v] if isinstance(v, list) else []
