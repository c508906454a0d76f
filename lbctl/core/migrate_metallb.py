"""MetalLB configuration -> lbctl IPPools, BGPPeers and BFDProfiles.

Reads metallb.io objects (IPAddressPool, L2Advertisement, BGPPeer v1beta1/v1beta2, BGPAdvertisement,
Community, BFDProfile), the
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
- BGP: each BGPAdvertisement becomes an advertisement in the spec.bgp of every pool it selects (Community
  names expanded to their values); a pool that only BGP advertisements select gets layer2.enabled false.
  A plain `password` becomes a Secret manifest; a passwordSecret keeps its name, in lbctl's namespace.
  Refused by name: dynamicASN, interface (unnumbered), vrf (the peer), connectTime, disableMP,
  dualStackAddressFamily (the field; the peer is imported), serviceSelectors (the advertisement and the
  pools that rely on it, as for layer 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re

import yaml

from .migrate import (LBCTL_NAMESPACE, Conversion, InputError, bgp_pool_spec, check_addresses, check_bool,
                      community, legacy_selectors, object_name, pool_name)
from .selectors import SelectorError, matches, validate_selector

GROUP = "metallb.io"
DEFAULT_NAMESPACE = "metallb-system"
_PEER_FIELDS = {  # MetalLB BGPPeer field -> lbctl BGPPeer field (password and passwordSecret: see _bgp_peer)
    "myASN": "myASN", "peerASN": "peerASN", "peerAddress": "peerAddress", "peerPort": "peerPort",
    "sourceAddress": "sourceAddress", "holdTime": "holdTime", "keepaliveTime": "keepaliveTime",
    "routerID": "routerID", "nodeSelectors": "nodeSelectors", "bfdProfile": "bfdProfile",
    "ebgpMultiHop": "ebgpMultiHop", "enableGracefulRestart": "enableGracefulRestart"}
_PEER_NO_EQUIVALENT = {  # the peer cannot be imported: lbctl would open a different session or none
    "dynamicASN": "lbctl's BGPPeer needs the peer's ASN (peerASN); MetalLB learned it from the OPEN message",
    "interface": "unnumbered BGP (a session over an interface's IPv6 link-local address) has no lbctl "
                 "equivalent; give the router's address as peerAddress",
    "vrf": "lbctl's sessions run in the node's default VRF only",
}
_PEER_FIELD_DROPPED = {  # the peer is imported without the field
    "connectTime": "lbctl does not set the TCP connect retry timer (the daemon's default applies)",
    "disableMP": "lbctl's sessions carry only the peer address's own family",
    "dualStackAddressFamily": "lbctl's sessions carry only the peer address's own family; add a BGPPeer for the "
                              "router's other address to announce the other family",
}
_ADV_FIELDS = ("aggregationLength", "aggregationLengthV6", "localPref", "communities", "ipAddressPools",
               "ipAddressPoolSelectors", "nodeSelectors", "peers", "serviceSelectors")
_BFD_FIELDS = ("receiveInterval", "transmitInterval", "detectMultiplier", "echoInterval", "echoMode",
               "passiveMode", "minimumTtl")
_LEGACY_PEER = {  # MetalLB <= 0.12 config peers
    "peer-address": "peerAddress", "peer-asn": "peerASN", "my-asn": "myASN", "peer-port": "peerPort",
    "source-address": "sourceAddress", "hold-time": "holdTime", "keepalive-time": "keepaliveTime",
    "router-id": "routerID", "bfd-profile": "bfdProfile", "ebgp-multihop": "ebgpMultiHop"}
_LEGACY_ADV = {"aggregation-length": "aggregationLength", "aggregation-length-v6": "aggregationLengthV6",
               "localpref": "localPref", "communities": "communities"}
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
        self.aliases: dict[str, dict[str, str]] = {}  # namespace -> Community name -> value
        self.legacy_aliases: dict[str, str] = {}  # the ConfigMap's bgp-communities

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
            if obj.kind == "Community":
                _with_doc(obj.index, self._community, obj)
        for obj in self.objs:
            if obj.kind == "AddressPool":
                _with_doc(obj.index, self._address_pool, obj)
            elif obj.kind == "BGPPeer":
                _with_doc(obj.index, self._bgp_peer, obj)
            elif obj.kind == "BFDProfile":
                _with_doc(obj.index, self._bfd_profile, obj)
            elif obj.kind not in ("IPAddressPool", "L2Advertisement", "BGPAdvertisement", "Community"):
                self.conv.refuse(obj.label, "unknown MetalLB kind: lbctl does not know what it configures")
        for ns in dict.fromkeys(o.namespace for o in self.objs):
            self._namespace([o for o in self.objs if o.namespace == ns])
        self.conv.check_references()
        return self.conv

    # -- IPAddressPool + L2Advertisement (MetalLB >= 0.13)

    def _namespace(self, objs: list[_Obj]) -> None:
        pools = [o for o in objs if o.kind == "IPAddressPool"]
        layer2: dict[str, list[dict[str, Any]]] = {p.name: [] for p in pools}
        refused: dict[str, list[str]] = {p.name: [] for p in pools}
        bgp: dict[str, list[dict[str, Any]]] = {p.name: [] for p in pools}
        refused_bgp: dict[str, list[str]] = {p.name: [] for p in pools}
        for adv in objs:
            if adv.kind not in ("L2Advertisement", "BGPAdvertisement"):
                continue
            selected = _with_doc(adv.index, self._selected_pools, adv, pools)
            if adv.kind == "BGPAdvertisement":
                advert = _with_doc(adv.index, self._bgp_advertisement, adv)
                for p in selected:
                    (bgp[p].append(advert) if advert is not None else refused_bgp[p].append(adv.label))
                continue
            block = _with_doc(adv.index, self._l2_block, adv)
            for p in selected:
                (layer2[p].append(block) if block is not None else refused[p].append(adv.label))
        for pool in pools:
            spec = _with_doc(pool.index, self._pool_spec, pool)
            if spec is None:
                continue
            block, why = _combine(layer2[pool.name], refused[pool.name], bgp[pool.name], refused_bgp[pool.name])
            if why:
                self.conv.refuse(pool.label, why)
                continue
            if block:
                spec["layer2"] = block
            bgp_pool_spec(spec, bgp[pool.name], layer2=bool(layer2[pool.name] or refused[pool.name]))
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

    def _advertisement_usable(self, adv: _Obj, fields: tuple[str, ...], verb: str) -> bool:
        """Refuse unknown fields; an advertisement limited to some Services cannot be had at all."""
        for key in adv.spec:
            if key not in fields:
                self.conv.refuse(f"{adv.label}: spec.{key}", "unknown field: lbctl does not know what it restricts")
        if adv.spec.get("serviceSelectors"):
            self.conv.refuse(f"{adv.label}: spec.serviceSelectors", f"lbctl {verb}s every Service of a pool and "
                             f"cannot limit {verb[:-1]}ements by Service labels; pools that rely on this "
                             "advertisement are not imported")
            return False
        return True

    def _l2_block(self, adv: _Obj) -> dict[str, Any] | None:
        """The IPPool layer2 block this advertisement means, or None if it cannot be mapped (refused)."""
        spec = adv.spec
        if not self._advertisement_usable(adv, _L2_FIELDS, "announce"):
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

    # -- BGP kinds

    def _community(self, obj: _Obj) -> None:
        items = obj.spec.get("communities") or []
        if not isinstance(items, list) or not all(isinstance(c, Mapping) for c in items):
            raise InputError(f"{obj.label}: spec.communities", "must be a list of {name, value}")
        for j, item in enumerate(items):
            where = f"{obj.label}: spec.communities[{j}]"
            if not isinstance(item.get("name"), str):
                raise InputError(f"{where}.name", "must be a string")
            self.aliases.setdefault(obj.namespace, {})[item["name"]] = community(item.get("value"), {},
                                                                                 f"{where}.value")
        self.conv.note(obj.label, "not needed as an object: its names are expanded to their values in the "
                                  "advertisements that use them")

    def _bgp_peer(self, obj: _Obj) -> None:
        spec = obj.spec
        for key, why in _PEER_NO_EQUIVALENT.items():
            if spec.get(key) not in (None, "", False, {}):
                self.conv.refuse(f"{obj.label}: spec.{key}", f"{why}; the peer is not imported")
                return
        out: dict[str, Any] = {}
        name = object_name(obj.name, "BGPPeer", obj.label, self.conv)
        for key, value in spec.items():
            if key in _PEER_FIELDS:
                out[_PEER_FIELDS[key]] = value
            elif key in _PEER_FIELD_DROPPED:
                if value not in (None, "", False, 0):
                    self.conv.refuse(f"{obj.label}: spec.{key}", f"{_PEER_FIELD_DROPPED[key]}; the peer is "
                                                                 "imported without it")
            elif key == "password":
                if value:
                    out["passwordSecret"] = self.conv.password_secret(name, value, f"{obj.label}: spec.password")
            elif key == "passwordSecret":
                ref = value if isinstance(value, Mapping) else {}
                if not isinstance(ref.get("name"), str):
                    raise InputError(f"{obj.label}: spec.passwordSecret", "must name a Secret")
                out["passwordSecret"] = {"name": ref["name"], "namespace": LBCTL_NAMESPACE}
                self.conv.warn(f"{obj.label}: spec.passwordSecret: copy Secret {ref.get('namespace') or obj.namespace}"
                               f"/{ref['name']} (key password) to namespace {LBCTL_NAMESPACE}, where lbctl's speaker "
                               "reads it")
            elif key not in _PEER_NO_EQUIVALENT:
                self.conv.refuse(f"{obj.label}: spec.{key}", "unknown field: lbctl does not know what it means; "
                                                             "the peer is imported without it")
        self.conv.add_peer(name, out, obj.label)

    def _bfd_profile(self, obj: _Obj) -> None:
        spec = obj.spec
        for key in spec:
            if key not in _BFD_FIELDS:
                self.conv.refuse(f"{obj.label}: spec.{key}", "unknown field: the profile is imported without it")
        self.conv.add_bfd_profile(object_name(obj.name, "BFDProfile", obj.label, self.conv),
                                  {k: v for k, v in spec.items() if k in _BFD_FIELDS}, obj.label)

    def _bgp_advertisement(self, adv: _Obj) -> dict[str, Any] | None:
        """The advertisement for the pools' spec.bgp, or None when it cannot be mapped (refused)."""
        spec = adv.spec
        if not self._advertisement_usable(adv, _ADV_FIELDS, "advertise"):
            return None
        out = _advertisement(spec, self.aliases.get(adv.namespace, {}), f"{adv.label}: spec")
        peers = spec.get("peers") or []
        if not isinstance(peers, list):
            raise InputError(f"{adv.label}: spec.peers", "must be a list of BGPPeer names")
        if peers:
            out["peers"] = [object_name(p, "BGPPeer", f"{adv.label}: spec.peers", self.conv) for p in peers]
        nodes = spec.get("nodeSelectors") or []
        if not isinstance(nodes, list):
            raise InputError(f"{adv.label}: spec.nodeSelectors", "must be a list of label selectors")
        for j, sel in enumerate(nodes):
            _check_selector(sel, f"{adv.label}: spec.nodeSelectors[{j}]")
        if nodes:
            out["nodeSelectors"] = [dict(n) for n in nodes]
        return out

    def _legacy_peer(self, peer: Any, where: str) -> None:
        if not isinstance(peer, Mapping):
            raise InputError(where, "must be a map")
        out: dict[str, Any] = {}
        for key, value in peer.items():
            if key in _LEGACY_PEER:
                out[_LEGACY_PEER[key]] = value
            elif key == "node-selectors":
                if value:
                    out["nodeSelectors"] = legacy_selectors(value, f"{where}.node-selectors")
            elif key != "password":
                self.conv.refuse(f"{where}.{key}", "unknown key: the peer is imported without it")
        address = str(peer.get("peer-address", ""))
        name = object_name("peer-" + address.replace(".", "-").replace(":", "-"), "BGPPeer", where, self.conv)
        if peer.get("password"):
            out["passwordSecret"] = self.conv.password_secret(name, peer["password"], f"{where}.password")
        self.conv.add_peer(name, out, where)

    def _legacy_bfd(self, profile: Any, where: str) -> None:
        if not isinstance(profile, Mapping):
            raise InputError(where, "must be a map")
        out: dict[str, Any] = {}
        for key, value in profile.items():
            camel = "minimumTtl" if key == "minimum-ttl" else re.sub(r"-(\w)", lambda m: m[1].upper(), str(key))
            if camel in _BFD_FIELDS:
                out[camel] = value
            elif key != "name":
                self.conv.refuse(f"{where}.{key}", "unknown key: the profile is imported without it")
        self.conv.add_bfd_profile(object_name(profile.get("name"), "BFDProfile", where, self.conv), out, where)

    # -- AddressPool kind (MetalLB 0.13) and the ConfigMap (MetalLB <= 0.12)

    def _address_pool(self, obj: _Obj) -> None:
        spec = obj.spec
        self._legacy_pool(obj.name, obj.label, spec, "spec.", {
            "protocol": "protocol", "addresses": "addresses", "autoAssign": "auto", "avoidBuggyIPs": "buggy",
            "bgpAdvertisements": "bgp"}, obj.namespace)

    def _legacy_config(self, where: str, config: Mapping[str, Any]) -> None:
        aliases = config.get("bgp-communities") or {}
        if not isinstance(aliases, Mapping):
            raise InputError(f"{where}: bgp-communities", "must be a map of name -> value")
        self.legacy_aliases = {str(k): community(v, {}, f"{where}: bgp-communities.{k}", go_yaml=True)
                               for k, v in aliases.items()}
        for key, value in sorted(config.items(), key=lambda kv: kv[0] == "address-pools"):
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
                if not isinstance(value or [], list):
                    raise InputError(f"{where}: peers", "must be a list of peers")
                for j, peer in enumerate(value or []):
                    self._legacy_peer(peer, f"{where}: peers[{j}]")
            elif key == "bgp-communities":
                if value:
                    self.conv.note(f"{where}: bgp-communities", "not needed as such: its names are expanded to "
                                                                "their values in the advertisements that use them")
            elif key == "bfd-profiles":
                if not isinstance(value or [], list):
                    raise InputError(f"{where}: bfd-profiles", "must be a list of profiles")
                for j, profile in enumerate(value or []):
                    self._legacy_bfd(profile, f"{where}: bfd-profiles[{j}]")
            else:
                self.conv.refuse(f"{where}: {key}", "unknown key: not part of MetalLB's configuration format "
                                                    "(MetalLB rejects it too)")

    def _legacy_pool(self, raw_name: Any, where: str, pool: Mapping[str, Any], prefix: str,
                     fields: dict[str, str], namespace: str = "") -> None:
        """A pool with a protocol field: layer2 pools are announced on every node, bgp pools by BGP only."""
        by_role = {role: key for key, role in fields.items()}
        for key in pool:
            if key not in fields:
                self.conv.refuse(f"{where}: {prefix}{key}", "unknown field: lbctl does not know what it means")
        protocol = pool.get(by_role["protocol"])
        if protocol not in ("layer2", "bgp"):
            raise InputError(f"{where}: {prefix}{by_role['protocol']}",
                             ("is missing" if protocol is None else f"{protocol!r} is not layer2 or bgp")
                             + " (MetalLB rejects this pool too)")
        if protocol == "layer2" and pool.get(by_role["bgp"]):
            raise InputError(f"{where}: {prefix}{by_role['bgp']}", "a layer2 pool cannot have BGP advertisements "
                                                                   "(MetalLB rejects this pool too)")
        spec: dict[str, Any] = {"addresses": check_addresses(pool.get(by_role["addresses"]),
                                                             f"{where}: {prefix}{by_role['addresses']}")}
        if not check_bool(pool.get(by_role["auto"], True), f"{where}: {prefix}{by_role['auto']}"):
            spec["autoAssign"] = False
        if check_bool(pool.get(by_role["buggy"], False), f"{where}: {prefix}{by_role['buggy']}"):
            spec["avoidBuggyIPs"] = True
        if protocol == "bgp":  # no advertisements: MetalLB's default, every address as a /32 to every peer
            adverts = pool.get(by_role["bgp"]) or [{}]
            if not isinstance(adverts, list) or not all(isinstance(a, Mapping) for a in adverts):
                raise InputError(f"{where}: {prefix}{by_role['bgp']}", "must be a list of advertisements")
            kebab = prefix == ""  # the ConfigMap spells fields in kebab-case, AddressPool in camelCase
            fields = _LEGACY_ADV if kebab else {v: v for v in _LEGACY_ADV.values()}
            aliases = self.legacy_aliases if kebab else self.aliases.get(namespace, {})
            out = []
            for j, adv in enumerate(adverts):
                here = f"{where}: {prefix}{by_role['bgp']}[{j}]"
                for key in adv:
                    if key not in fields:
                        raise InputError(f"{here}.{key}", "unknown key (MetalLB rejects this pool too)")
                out.append(_advertisement({fields[k]: v for k, v in adv.items()}, aliases, here, go_yaml=kebab))
            spec = bgp_pool_spec(spec, out, layer2=False)
        self.conv.add_pool(pool_name(raw_name, where, self.conv), spec, where)


def _combine(blocks: list[dict[str, Any]], refused: list[str], bgp: list[dict[str, Any]], refused_bgp: list[str]
             ) -> tuple[dict[str, Any], str]:
    """One layer2 block for a pool from the L2Advertisements that select it, or why the pool cannot be had."""
    if refused_bgp and not bgp:
        return {}, f"every BGPAdvertisement that selects it ({', '.join(refused_bgp)}) was refused (see above)"
    if not blocks:
        if refused:
            return {}, f"every L2Advertisement that selects it ({', '.join(refused)}) was refused (see above)"
        if bgp:
            return {}, ""
        return {}, ("no L2Advertisement or BGPAdvertisement selects it: MetalLB hands out its addresses but announces "
                    "them nowhere, while lbctl announces every pool it serves; add an advertisement if it should be "
                    "announced")
    if any(not b for b in blocks):  # one advertisement covers all nodes on all interfaces: the union is that
        return {}, ""
    distinct = [b for j, b in enumerate(blocks) if b not in blocks[:j]]
    if len(distinct) > 1:
        return {}, (f"{len(distinct)} L2Advertisements select it with different nodeSelectors/interfaces "
                    f"({distinct}); MetalLB announces from their union, an IPPool holds one layer2 block")
    return distinct[0], ""


def _advertisement(spec: Mapping[str, Any], aliases: Mapping[str, str], where: str, go_yaml: bool = False
                   ) -> dict[str, Any]:
    """Aggregation lengths, localPref and communities (aliases expanded) of a MetalLB advertisement."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key in ("aggregationLength", "aggregationLengthV6", "localPref") and value is not None:
            out[key] = value
    communities = spec.get("communities") or []
    if not isinstance(communities, list):
        raise InputError(f"{where}.communities", "must be a list")
    if communities:
        out["communities"] = [community(c, aliases, f"{where}.communities[{j}]", go_yaml)
                              for j, c in enumerate(communities)]
    if out.get("aggregationLength") == 32:
        del out["aggregationLength"]
    if out.get("aggregationLengthV6") == 128:
        del out["aggregationLengthV6"]
    return out


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
