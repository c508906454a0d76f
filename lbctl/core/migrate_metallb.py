"""MetalLB configuration -> lbctl IPPools.

Reads metallb.io objects (IPAddressPool + L2Advertisement, and the BGP kinds, which are refused), the
pre-0.13 `config` ConfigMap (data.config: address-pools, peers, bgp-communities, bfd-profiles, also given
bare), and the 0.13-era AddressPool kind. Objects are grouped by namespace, as MetalLB reads only its own;
an object without metadata.namespace belongs to the namespace asked for (default metallb-system).

Mapping rules, where MetalLB and lbctl differ:
- An IPAddressPool that no L2Advertisement selects is refused: MetalLB hands out its addresses but never
  announces them (or announces them only over BGP), while lbctl announces every pool it serves.
- L2Advertisement nodeSelectors/interfaces become the pool's layer2 block. MetalLB ORs a list of node
  selectors and unions several advertisements; an IPPool holds one selector, so more than one distinct
  restriction is refused (an unrestricted advertisement covers all nodes and interfaces, so it wins).
- serviceAllocation: MetalLB's priority 0 means unset (omitted here); one namespaceSelector/serviceSelector
  maps, more are refused. MetalLB admits a namespace listed in `namespaces` OR matched by the selector,
  lbctl requires both, so a pool using both is refused. A refused allocation refuses the whole pool:
  without its rules the pool would serve Services it never served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .migrate import Conversion, InputError, check_addresses, check_bool, pool_name
from .selectors import SelectorError, matches, validate_selector

GROUP = "metallb.io"
DEFAULT_NAMESPACE = "metallb-system"
NO_BGP = "lbctl announces addresses by ARP/NDP on the local link only; it has no BGP speaker"
_BGP_KINDS = {
    "BGPPeer": "BGP peer",
    "BGPAdvertisement": "advertises pools over BGP",
    "Community": "BGP communities tag BGP advertisements",
    "BFDProfile": "BFD profiles tune BGP sessions",
}
_STATUS_KINDS = {"ServiceL2Status", "ServiceBGPStatus", "ConfigurationState"}
_LEGACY_KEYS = ("address-pools", "peers", "bgp-communities", "bfd-profiles")
_POOL_FIELDS = ("addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation")
_L2_FIELDS = ("ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors", "interfaces", "serviceSelectors",
              "preferredNodeSelectors")


@dataclass
class _Obj:
    kind: str
    namespace: str
    name: str
    doc: Mapping[str, Any]
    index: int

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def spec(self) -> Mapping[str, Any]:
        spec = self.doc.get("spec") or {}
        if not isinstance(spec, Mapping):
            raise InputError(self.label, "spec is not a map", self.index)
        return spec


def convert_metallb(docs: Sequence[Any], namespace: str | None = None) -> Conversion:
    """Convert parsed YAML documents (any mix of the kinds above). Raises InputError on malformed input,
    with `doc` set to the index of the offending document."""
    reader = _MetalLB(namespace)
    for i, doc in enumerate(docs):
        reader.add(doc, i)
    return reader.finish()


class _MetalLB:
    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace
        self.conv = Conversion()
        self.objs: list[_Obj] = []
        self.legacy: list[tuple[str, Mapping[str, Any], int]] = []

    def add(self, doc: Any, i: int) -> None:
        if doc is None:
            return
        if not isinstance(doc, Mapping):
            raise InputError(f"document {i + 1}", f"is not a YAML map (got {type(doc).__name__})", i)
        kind = doc.get("kind")
        if kind is None and any(k in doc for k in _LEGACY_KEYS):
            self.legacy.append((f"document {i + 1} (MetalLB config)", doc, i))
            return
        if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                self.add(item, i)
            return
        meta = doc.get("metadata") or {}
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(kind, str) or not isinstance(name, str):
            raise InputError(f"document {i + 1}", "has no kind and metadata.name (and is not a MetalLB config)", i)
        ns = meta.get("namespace") or self.namespace or DEFAULT_NAMESPACE
        obj = _Obj(kind, ns, name, doc, i)
        group = str(doc.get("apiVersion", "")).rpartition("/")[0]
        if self.namespace and ns != self.namespace:
            self.conv.note(obj.label, f"skipped: MetalLB in namespace {self.namespace} does not read it")
        elif kind == "ConfigMap" and group == "":
            data = doc.get("data") or {}
            if isinstance(data, Mapping) and "config" in data:
                self.legacy.append((f"{obj.label}: data.config", _parse_config(data["config"], obj), i))
            else:
                self.conv.note(obj.label, "skipped: no data.config, so not a MetalLB configuration")
        elif group != GROUP:
            self.conv.note(obj.label, "skipped: not MetalLB configuration")
        elif kind in _STATUS_KINDS:
            self.conv.note(obj.label, "not needed: MetalLB status, not configuration")
        else:
            self.objs.append(obj)

    def finish(self) -> Conversion:
        for where, config, i in self.legacy:
            _with_doc(i, self._legacy_config, where, config)
        for obj in self.objs:
            if obj.kind == "AddressPool":
                _with_doc(obj.index, self._address_pool, obj)
            elif obj.kind in _BGP_KINDS:
                self.conv.refuse(obj.label, _bgp_why(obj))
            elif obj.kind not in ("IPAddressPool", "L2Advertisement"):
                self.conv.refuse(obj.label, "unknown MetalLB kind: lbctl does not know what it configures")
        for ns in dict.fromkeys(o.namespace for o in self.objs):
            self._namespace([o for o in self.objs if o.namespace == ns])
        return self.conv

    # -- IPAddressPool + L2Advertisement (MetalLB >= 0.13)

    def _namespace(self, objs: list[_Obj]) -> None:
        pools = [o for o in objs if o.kind == "IPAddressPool"]
        layer2: dict[str, list[dict[str, Any]]] = {p.name: [] for p in pools}
        refused: dict[str, list[str]] = {p.name: [] for p in pools}
        bgp: dict[str, list[str]] = {p.name: [] for p in pools}
        for adv in objs:
            if adv.kind not in ("L2Advertisement", "BGPAdvertisement"):
                continue
            selected = _with_doc(adv.index, self._selected_pools, adv, pools)
            if adv.kind == "BGPAdvertisement":
                for p in selected:
                    bgp[p].append(adv.label)
                continue
            block = _with_doc(adv.index, self._l2_block, adv)
            for p in selected:
                (layer2[p].append(block) if block is not None else refused[p].append(adv.label))
        for pool in pools:
            spec = _with_doc(pool.index, self._pool_spec, pool)
            if spec is None:
                continue
            block, why = _combine(layer2[pool.name], refused[pool.name], bgp[pool.name])
            if why:
                self.conv.refuse(pool.label, why)
                continue
            if block:
                spec["layer2"] = block
            name = _with_doc(pool.index, pool_name, pool.name, pool.label, self.conv)
            _with_doc(pool.index, self.conv.add_pool, name, spec, pool.label)

    def _selected_pools(self, adv: _Obj, pools: list[_Obj]) -> list[str]:
        spec = adv.spec
        names = spec.get("ipAddressPools") or []
        selectors = spec.get("ipAddressPoolSelectors") or []
        if not isinstance(names, list) or not isinstance(selectors, list):
            raise InputError(adv.label, "spec.ipAddressPools and spec.ipAddressPoolSelectors must be lists")
        for j, sel in enumerate(selectors):
            _check_selector(sel, f"{adv.label}: spec.ipAddressPoolSelectors[{j}]")
        known = {p.name for p in pools}
        for n in names:
            if n not in known:
                self.conv.warn(f"{adv.label}: spec.ipAddressPools names {n!r}, which is not among the IPAddressPools "
                               f"read in namespace {adv.namespace}")
        if not names and not selectors:  # MetalLB: an advertisement that selects nothing selects every pool
            return [p.name for p in pools]
        labels = {p.name: (p.doc.get("metadata") or {}).get("labels") or {} for p in pools}
        return [p.name for p in pools if p.name in names or any(matches(s, labels[p.name]) for s in selectors)]

    def _l2_block(self, adv: _Obj) -> dict[str, Any] | None:
        """The IPPool layer2 block this advertisement means, or None if it cannot be mapped (refused)."""
        spec = adv.spec
        for key in spec:
            if key not in _L2_FIELDS:
                self.conv.refuse(f"{adv.label}: spec.{key}", "unknown field: lbctl does not know what it restricts")
        if spec.get("serviceSelectors"):
            self.conv.refuse(f"{adv.label}: spec.serviceSelectors", "lbctl announces every Service of a pool and "
                             "cannot limit announcements by Service labels; pools that rely on this advertisement "
                             "are not imported")
            return None
        if spec.get("preferredNodeSelectors"):
            self.conv.refuse(f"{adv.label}: spec.preferredNodeSelectors", "lbctl's election has no node "
                             "preferences; the pool is imported and any eligible node may announce it")
        block: dict[str, Any] = {}
        nodes = spec.get("nodeSelectors") or []
        if not isinstance(nodes, list):
            raise InputError(f"{adv.label}: spec.nodeSelectors", "must be a list of label selectors")
        if len(nodes) > 1:
            self.conv.refuse(f"{adv.label}: spec.nodeSelectors", f"{len(nodes)} selectors (MetalLB announces from "
                             "nodes matching any); an IPPool's layer2.nodeSelector holds one, so pools that rely on "
                             "this advertisement are not imported; merge them into one selector (matchExpressions "
                             "with In) and import again")
            return None
        if nodes:
            _check_selector(nodes[0], f"{adv.label}: spec.nodeSelectors[0]")
            if nodes[0]:
                block["nodeSelector"] = dict(nodes[0])
        interfaces = spec.get("interfaces") or []
        if not isinstance(interfaces, list) or not all(isinstance(i, str) for i in interfaces):
            raise InputError(f"{adv.label}: spec.interfaces", "must be a list of interface names")
        if interfaces:
            block["interfaces"] = list(interfaces)
        return block

    def _pool_spec(self, pool: _Obj) -> dict[str, Any] | None:
        spec = pool.spec
        for key in spec:
            if key not in _POOL_FIELDS:
                self.conv.refuse(f"{pool.label}: spec.{key}", "unknown field: lbctl does not know what it means")
        out: dict[str, Any] = {"addresses": check_addresses(spec.get("addresses"), f"{pool.label}: spec.addresses")}
        if not check_bool(spec.get("autoAssign", True), f"{pool.label}: spec.autoAssign"):
            out["autoAssign"] = False
        if check_bool(spec.get("avoidBuggyIPs", False), f"{pool.label}: spec.avoidBuggyIPs"):
            out["avoidBuggyIPs"] = True
        alloc = spec.get("serviceAllocation")
        if alloc is not None:
            mapped = self._allocation(alloc, f"{pool.label}: spec.serviceAllocation")
            if mapped is None:
                return None
            if mapped:
                out["serviceAllocation"] = mapped
        return out

    def _allocation(self, alloc: Any, where: str) -> dict[str, Any] | None:
        if not isinstance(alloc, Mapping):
            raise InputError(where, "must be a map")
        out: dict[str, Any] = {}
        for key in alloc:
            if key not in ("priority", "namespaces", "namespaceSelectors", "serviceSelectors"):
                self.conv.refuse(f"{where}.{key}", "unknown field: without it the pool could serve Services "
                                                   "MetalLB kept away from it; the pool is not imported")
                return None
        priority = alloc.get("priority")
        if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool) or priority < 0):
            raise InputError(f"{where}.priority", f"must be a non-negative integer, got {priority!r}")
        if priority:  # MetalLB treats 0 as unset (tried last); so does an IPPool without priority
            out["priority"] = priority
        namespaces = alloc.get("namespaces") or []
        if not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces):
            raise InputError(f"{where}.namespaces", "must be a list of namespace names")
        if namespaces:
            out["namespaces"] = list(namespaces)
        for field, single in (("namespaceSelectors", "namespaceSelector"), ("serviceSelectors", "serviceSelector")):
            sels = alloc.get(field) or []
            if not isinstance(sels, list):
                raise InputError(f"{where}.{field}", "must be a list of label selectors")
            for j, sel in enumerate(sels):
                _check_selector(sel, f"{where}.{field}[{j}]")
            if len(sels) > 1:
                self.conv.refuse(f"{where}.{field}", f"{len(sels)} selectors (MetalLB accepts a match of any); an "
                                 f"IPPool holds one {single}, so the pool is not imported; merge them into one "
                                 "selector and import again")
                return None
            if sels:
                out[single] = dict(sels[0])
        if namespaces and "namespaceSelector" in out:
            self.conv.refuse(f"{where}", "sets both namespaces and namespaceSelectors: MetalLB admits a namespace "
                                         "that is listed OR selected, lbctl requires both, so the pool is not "
                                         "imported; keep one of the two and import again")
            return None
        return out

    # -- AddressPool kind (MetalLB 0.13) and the ConfigMap (MetalLB <= 0.12)

    def _address_pool(self, obj: _Obj) -> None:
        spec = obj.spec
        self._legacy_pool(obj.name, obj.label, spec, "spec.", {
            "protocol": "protocol", "addresses": "addresses", "autoAssign": "auto", "avoidBuggyIPs": "buggy",
            "bgpAdvertisements": "bgp"})

    def _legacy_config(self, where: str, config: Mapping[str, Any]) -> None:
        for key, value in config.items():
            if key == "address-pools":
                if not isinstance(value, list):
                    raise InputError(f"{where}: address-pools", "must be a list of pools")
                for j, pool in enumerate(value):
                    here = f"{where}: address-pools[{j}]"
                    if not isinstance(pool, Mapping):
                        raise InputError(here, "must be a map")
                    self._legacy_pool(pool.get("name"), here, pool, "", {
                        "protocol": "protocol", "addresses": "addresses", "auto-assign": "auto",
                        "avoid-buggy-ips": "buggy", "bgp-advertisements": "bgp", "name": "name"})
            elif key == "peers":
                for j, peer in enumerate(value or []):
                    peer = peer if isinstance(peer, Mapping) else {}
                    self.conv.refuse(f"{where}: peers[{j}]", f"BGP peer {peer.get('peer-address', '?')} "
                                                             f"AS {peer.get('peer-asn', '?')}: {NO_BGP}")
            elif key == "bgp-communities":
                if value:
                    self.conv.refuse(f"{where}: bgp-communities", f"BGP communities tag BGP advertisements: {NO_BGP}")
            elif key == "bfd-profiles":
                if value:
                    self.conv.refuse(f"{where}: bfd-profiles", f"BFD profiles tune BGP sessions: {NO_BGP}")
            else:
                self.conv.refuse(f"{where}: {key}", "unknown key: not part of MetalLB's configuration format "
                                                    "(MetalLB rejects it too)")

    def _legacy_pool(self, raw_name: Any, where: str, pool: Mapping[str, Any], prefix: str,
                     fields: dict[str, str]) -> None:
        """A pool with a protocol field: layer2 pools are announced on every node, bgp pools are refused."""
        by_role = {role: key for key, role in fields.items()}
        for key in pool:
            if key not in fields:
                self.conv.refuse(f"{where}: {prefix}{key}", "unknown field: lbctl does not know what it means")
        protocol = pool.get(by_role["protocol"])
        if protocol == "bgp":
            self.conv.refuse(f"{where} (pool {raw_name})", f"protocol bgp: {NO_BGP}")
            return
        if protocol != "layer2":
            raise InputError(f"{where}: {prefix}{by_role['protocol']}",
                             ("is missing" if protocol is None else f"{protocol!r} is not layer2 or bgp")
                             + " (MetalLB rejects this pool too)")
        if pool.get(by_role["bgp"]):
            raise InputError(f"{where}: {prefix}{by_role['bgp']}", "a layer2 pool cannot have BGP advertisements "
                                                                   "(MetalLB rejects this pool too)")
        spec: dict[str, Any] = {"addresses": check_addresses(pool.get(by_role["addresses"]),
                                                             f"{where}: {prefix}{by_role['addresses']}")}
        if not check_bool(pool.get(by_role["auto"], True), f"{where}: {prefix}{by_role['auto']}"):
            spec["autoAssign"] = False
        if check_bool(pool.get(by_role["buggy"], False), f"{where}: {prefix}{by_role['buggy']}"):
            spec["avoidBuggyIPs"] = True
        self.conv.add_pool(pool_name(raw_name, where, self.conv), spec, where)


def _combine(blocks: list[dict[str, Any]], refused: list[str], bgp: list[str]) -> tuple[dict[str, Any], str]:
    """One layer2 block for a pool from the advertisements that select it, or why there is none."""
    if not blocks:
        if refused:
            return {}, f"every L2Advertisement that selects it ({', '.join(refused)}) was refused (see above)"
        if bgp:
            return {}, f"announced only over BGP ({', '.join(bgp)}): {NO_BGP}"
        return {}, ("no L2Advertisement selects it: MetalLB hands out its addresses but announces them nowhere, "
                    "while lbctl announces every pool it serves; add an L2Advertisement if it should be announced")
    if any(not b for b in blocks):  # one advertisement covers all nodes on all interfaces: the union is that
        return {}, ""
    distinct = [b for j, b in enumerate(blocks) if b not in blocks[:j]]
    if len(distinct) > 1:
        return {}, (f"{len(distinct)} L2Advertisements select it with different nodeSelectors/interfaces "
                    f"({distinct}); MetalLB announces from their union, an IPPool holds one layer2 block")
    return distinct[0], ""


def _bgp_why(obj: _Obj) -> str:
    if obj.kind == "BGPPeer":
        spec = obj.doc.get("spec") or {}
        return f"BGP peer {spec.get('peerAddress', '?')} AS {spec.get('peerASN', '?')}: {NO_BGP}"
    return f"{_BGP_KINDS[obj.kind]}: {NO_BGP}"


def _parse_config(text: Any, obj: _Obj) -> Mapping[str, Any]:
    try:
        config = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError as exc:
        raise InputError(f"{obj.label}: data.config", f"is not valid YAML: {exc}", obj.index) from None
    if not isinstance(config, Mapping):
        raise InputError(f"{obj.label}: data.config", "must hold a YAML map (address-pools, peers, ...)", obj.index)
    return config


def _check_selector(sel: Any, where: str) -> None:
    try:
        validate_selector(sel, "selector")
    except SelectorError as exc:
        raise InputError(where, str(exc)) from None


def _with_doc(index: int, fn: Any, *args: Any) -> Any:
    """Run fn, tagging an InputError with the document it came from."""
    try:
        return fn(*args)
    except InputError as exc:
        if exc.doc is None:
            exc.doc = index
        raise
