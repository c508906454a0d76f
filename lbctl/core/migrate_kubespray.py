"""kubespray's MetalLB addon variables -> lbctl IPPools and chart values.

Input: the group_vars of a kubespray inventory (addons.yml, k8s-cluster.yml), already merged (later file
wins per variable, as Ansible does). Two styles exist, and both are read:

- before kubespray v2.22 (MetalLB <= 0.12, ConfigMap): metallb_ip_range, metallb_pool_name,
  metallb_auto_assign, metallb_avoid_buggy_ips, metallb_protocol, metallb_peers,
  metallb_additional_address_pools, metallb_{speaker,controller}_{nodeselector,tolerations};
- since (MetalLB CRDs): metallb_config {address_pools, layer2, layer3, speaker, controller}.

Semantics follow kubespray's role (roles/kubernetes-apps/metallb): a metallb_config pool is announced only
if `layer2` lists it (kubespray writes one L2Advertisement per listed pool and none for the others); the
speaker's nodeSelector is metallb_speaker_nodeselector merged with metallb_config.speaker.nodeselector and
its tolerations are both lists concatenated; the controller's likewise.

BGP (layer3.yaml.j2 and the old ConfigMap template) is mapped as kubespray rendered it, quirks included:
- every peer's advertisements carry no `peers:`, so each pool a peer lists goes to EVERY peer;
- aggregation_length <= 30 adds a `<peer>-local` advertisement (/32 and /128, no-advertise) beside the
  aggregated one; a larger aggregation_length is not rendered (MetalLB's default /32 applies);
- `localpref` is rendered in lower case, which MetalLB ignores: not imported, with a warning;
- several communities on one peer render duplicate `communities:` keys, of which the last survives;
- the `well-known` Community kubespray always adds is not needed: lbctl knows those names;
- source_address is never rendered by layer3.yaml.j2 (it is by the old ConfigMap template);
- a peer without peer_port (and no layer3.defaults.peer_port) fails kubespray's render: refused.
Old style: metallb_protocol bgp pools get MetalLB's default advertisement (every peer, /32), and
metallb_peers (no names) become BGPPeers named after their address.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .bgp_fields import WELL_KNOWN
from .migrate import (Conversion, InputError, bgp_pool_spec, check_addresses, check_bool, check_list_of_maps,
                      check_selector_map, community, duration, legacy_selectors, object_name, pool_name)

_PEER_KEYS = ("peer_address", "peer_asn", "my_asn", "peer_port", "password", "router_id", "hold_time", "multihop",
              "communities", "address_pool", "aggregation_length", "localpref", "source_address")
_OLD_PEER_KEYS = ("peer_address", "peer_asn", "my_asn", "password", "source_address", "node_selectors")
# kubespray's `well-known` Community (layer3.yaml.j2): its names, as lbctl writes them.
_KUBESPRAY_WELL_KNOWN = {"no-export": "no-export", "no-advertise": "no-advertise", "local-as": "local-as",
                         "nopeer": "no-peer"}

# The role's defaults (roles/kubernetes-apps/metallb/defaults/main.yml, current and pre-v2.22) and the
# kube-proxy defaults from roles/kubespray_defaults, used to evaluate what the user left unset.
DEFAULTS: dict[str, Any] = {
    "metallb_enabled": False,
    "metallb_speaker_enabled": "{{ metallb_enabled }}",
    "metallb_log_level": "info",
    "metallb_loadbalancer_class": "",
    "metallb_protocol": "layer2",
    "metallb_pool_name": "loadbalanced",
    "metallb_auto_assign": True,
    "metallb_avoid_buggy_ips": False,
    "metallb_speaker_nodeselector": {"kubernetes.io/os": "linux"},
    "metallb_controller_nodeselector": {"kubernetes.io/os": "linux"},
    "metallb_speaker_tolerations": [
        {"effect": "NoSchedule", "key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
    "metallb_controller_tolerations": [],
    "kube_proxy_mode": "ipvs",
    "kube_proxy_strict_arp": False,
    "kube_proxy_remove": False,
}

_IMAGE = "lbctl runs its own image (chart values image.repository and image.tag)"
NOT_NEEDED: dict[str, str] = {
    "metallb_namespace": "lbctl lives in the Helm release namespace (helm install -n lbctl-system)",
    "metallb_version": _IMAGE,
    "metallb_image_tag": _IMAGE,
    "metallb_speaker_image_repo": _IMAGE,
    "metallb_controller_image_repo": _IMAGE,
    "metallb_speaker_digest_checksum": _IMAGE,
    "metallb_controller_digest_checksum": _IMAGE,
    "metallb_port": "MetalLB's metrics port; lbctl serves /metrics on controller.httpPort (7472) and "
                    "speaker.httpPort (7473)",
    "metallb_memberlist_port": "MetalLB's memberlist gossip port; lbctl's speakers use their own signed heartbeats "
                               "on speaker.heartbeat.port (UDP 7946 by default), which must differ from this port "
                               "while MetalLB's speakers still run (see docs/kubespray.md)",
}
_LIMITS = ("sized for MetalLB's Go binaries; lbctl's footprint differs (see README: Benchmarks); "
           "set controller.resources and speaker.resources in the chart values")
_LEGACY_POOL_VARS = ("metallb_ip_range", "metallb_pool_name", "metallb_auto_assign", "metallb_avoid_buggy_ips",
                     "metallb_protocol")
_PLACEMENT = {  # variable -> (chart component, chart key)
    "metallb_speaker_nodeselector": ("speaker", "nodeSelector"),
    "metallb_controller_nodeselector": ("controller", "nodeSelector"),
    "metallb_speaker_tolerations": ("speaker", "tolerations"),
    "metallb_controller_tolerations": ("controller", "tolerations"),
}
_LOG_LEVELS = {"all": "debug", "debug": "debug", "info": "info", "warn": "warning", "error": "error"}
_REF = re.compile(r"^\s*\{\{\s*([A-Za-z_]\w*)\s*\}\}\s*$")


class _Template(Exception):
    """A value that is a Jinja expression other than a plain `{{ variable }}` reference."""

    def __init__(self, var: str, text: str) -> None:
        super().__init__(var, text)
        self.var, self.text = var, text


def is_metallb_var(name: str) -> bool:
    return name.startswith("metallb_") or name == "matallb_auto_assign"


def convert_kubespray(variables: Mapping[str, Any]) -> Conversion:
    """Convert merged kubespray group_vars. Raises InputError (naming the variable) on malformed input."""
    if not isinstance(variables, Mapping):
        raise InputError("input", "kubespray group_vars must be a map of variables")
    ours = [k for k in variables if isinstance(k, str) and is_metallb_var(k)]
    if not ours and not any(str(k).startswith("kube_proxy_") for k in variables):
        raise InputError("input", "no metallb_* or kube_proxy_* variables found: is this kubespray's addons.yml?")
    return _Kubespray(variables).run(ours)


class _Kubespray:
    def __init__(self, variables: Mapping[str, Any]) -> None:
        self.vars = variables
        self.conv = Conversion()

    def get(self, name: str) -> Any:
        """A variable's value, following simple `{{ other_var }}` references as Ansible would."""
        value = self.vars.get(name, DEFAULTS.get(name))
        for _ in range(10):
            if not (isinstance(value, str) and "{{" in value):
                return value
            m = _REF.match(value)
            if not m:
                raise _Template(name, value)
            value = self.vars.get(m[1], DEFAULTS.get(m[1]))
        raise _Template(name, value)

    def run(self, ours: list[str]) -> Conversion:
        handlers = {
            "metallb_enabled": self._enabled,
            "metallb_speaker_enabled": self._speaker_enabled,
            "metallb_log_level": self._log_level,
            "metallb_loadbalancer_class": self._lb_class,
            "metallb_peers": self._peers,
            "metallb_config": self._config,
            "matallb_auto_assign": lambda v: self.conv.refuse(
                v, "misspelled; kubespray's metallb role fails when it is defined: use metallb_auto_assign"),
            "metallb_limits_cpu": lambda v: self.conv.refuse(v, _LIMITS),
            "metallb_limits_mem": lambda v: self.conv.refuse(v, _LIMITS),
        }
        if "metallb_ip_range" in self.vars or "metallb_additional_address_pools" in self.vars:
            self._guard("metallb_ip_range", self._legacy_pools)
        if "metallb_ip_range" not in self.vars:
            for v in _LEGACY_POOL_VARS[1:]:
                if v in self.vars:
                    self.conv.note(v, "not needed: only read together with metallb_ip_range, which is not set")
        if "metallb_ip_range" in self.vars and "metallb_config" in self.vars:
            self.conv.warn("both metallb_ip_range (kubespray < v2.22) and metallb_config (kubespray >= v2.22) are "
                           "set; each kubespray version reads only one of them; both are imported")
        self._placement()
        done = {*_LEGACY_POOL_VARS, "metallb_additional_address_pools", *_PLACEMENT}  # read above
        for var in ours:
            if var in NOT_NEEDED:
                self.conv.note(var, "not needed: " + NOT_NEEDED[var])
            elif var in handlers:
                self._guard(var, handlers[var])
            elif var not in done:
                self.conv.refuse(var, "unknown variable: kubespray's metallb role does not read it, "
                                      "so there is nothing it could be mapped to")
        self._strict_arp()
        self.conv.check_references()
        return self.conv

    def _guard(self, var: str, fn: Any) -> None:
        try:
            fn(var)
        except _Template as exc:
            self._refuse_template(exc)

    def _refuse_template(self, exc: _Template) -> None:
        self.conv.refuse(exc.var, f"{exc.text!r} is a Jinja expression lbctl does not evaluate; "
                                  "write the value out and import again")

    # -- informational and daemon-wide settings

    def _enabled(self, var: str) -> None:
        if check_bool(self.get(var), var):
            self.conv.note(var, "not needed: set metallb_enabled: false in addons.yml once lbctl serves the "
                                "addresses, or the next cluster.yml run puts MetalLB back (docs/kubespray.md)")
        else:
            self.conv.note(var, "not needed: the MetalLB addon is off")

    def _speaker_enabled(self, var: str) -> None:
        raw = self.vars[var]
        ref = _REF.match(raw) if isinstance(raw, str) else None
        if ref:  # kubespray's sample: "{{ metallb_enabled }}"
            self.conv.note(var, f"not needed: follows {ref[1]}; lbctl always runs its speaker DaemonSet")
        elif check_bool(self.get(var), var):
            self.conv.note(var, "not needed: lbctl always runs its speaker DaemonSet")
        else:
            self.conv.refuse(var, "MetalLB ran without speakers, so something else (e.g. Calico BGP) announced its "
                                  "addresses; lbctl's speakers always announce its pools by ARP/NDP and the chart "
                                  "has no speaker-less mode")

    def _log_level(self, var: str) -> None:
        level = str(self.get(var)).strip().lower()
        if level == "info":
            self.conv.note(var, "not needed: logLevel info is the chart default")
        elif level in _LOG_LEVELS:
            self.conv.values["logLevel"] = _LOG_LEVELS[level]
        elif level == "none":
            self.conv.refuse(var, "lbctl always logs errors; its quietest logLevel is error")
        else:
            raise InputError(var, f"{level!r} is not a MetalLB log level (all, debug, info, warn, error, none)")

    def _lb_class(self, var: str) -> None:
        cls = self.get(var)
        if not cls:
            self.conv.note(var, "not needed: empty (Services without a loadBalancerClass)")
            return
        self.conv.refuse(var, f"MetalLB with --lb-class={cls} handled only Services of that class; lbctl's lbClass "
                              "handles that class AND Services without a class, which another provider may own "
                              "here; set lbClass in the chart values yourself if none does")

    def _peers(self, var: str) -> None:
        peers = self.get(var)
        if not peers:
            self.conv.note(var, "not needed: empty")
            return
        for i, peer in enumerate(check_list_of_maps(peers, var)):
            where = f"{var}[{i}]"
            for key in peer:
                if key not in _OLD_PEER_KEYS:
                    self.conv.refuse(f"{where}.{key}", "unknown key: kubespray's ConfigMap template does not read it")
            address = str(peer.get("peer_address", ""))
            name = object_name("peer-" + address.replace(".", "-").replace(":", "-"), "BGPPeer", where, self.conv)
            spec = _peer_spec(peer, where)
            if peer.get("source_address") is not None:
                spec["sourceAddress"] = peer["source_address"]
            if peer.get("node_selectors") is not None:
                spec["nodeSelectors"] = legacy_selectors(peer["node_selectors"], f"{where}.node_selectors")
            if "password" in peer:
                spec["passwordSecret"] = self.conv.password_secret(name, peer["password"], f"{where}.password")
            self.conv.add_peer(name, spec, where)

    def _placement(self) -> None:
        """nodeSelector/tolerations of both daemons, merged as kubespray's template merges them."""
        config = self.vars.get("metallb_config")
        config = config if isinstance(config, Mapping) else {}
        for var, (component, key) in _PLACEMENT.items():
            sub = config.get(component)
            extra = sub.get(key.lower()) if isinstance(sub, Mapping) else None
            if var not in self.vars and extra is None:
                continue
            try:
                base = self.get(var)
            except _Template as exc:
                self._refuse_template(exc)
                continue
            where = f"metallb_config.{component}.{key.lower()}"
            if key == "nodeSelector":
                value: Any = {**check_selector_map(base, var),
                              **(check_selector_map(extra, where) if extra is not None else {})}
            else:
                value = check_list_of_maps(base, var) + (check_list_of_maps(extra, where) if extra is not None else [])
            if var == "metallb_controller_tolerations" and var in self.vars:
                self.conv.warn(f"{var}: current kubespray ignores it (only metallb_config.controller.tolerations "
                               "reaches MetalLB's controller); imported as older kubespray applied it")
            self.conv.values.setdefault(component, {})[key] = value

    def _strict_arp(self) -> None:
        given = [v for v in ("kube_proxy_strict_arp", "kube_proxy_mode") if v in self.vars]
        if not given:
            return
        try:
            mode, strict = self.get("kube_proxy_mode"), check_bool(self.get("kube_proxy_strict_arp"),
                                                                    "kube_proxy_strict_arp")
            removed = check_bool(self.get("kube_proxy_remove"), "kube_proxy_remove")
        except _Template as exc:
            self.conv.warn(f"{exc.var}: {exc.text!r} is a Jinja expression; strict ARP not checked")
            return
        if mode == "ipvs" and not strict and not removed:
            self.conv.warn("kube_proxy_strict_arp is false with kube_proxy_mode ipvs: kube-proxy binds every "
                           "LoadBalancer IP to kube-ipvs0 and every node answers ARP for it; set "
                           "kube_proxy_strict_arp: true in k8s-cluster.yml (lbctl preflight checks it)")

    # -- pools, pre-v2.22

    def _legacy_pools(self, _: str) -> None:
        if "metallb_ip_range" in self.vars:
            self._legacy_pool(self.get("metallb_pool_name"), "metallb_ip_range", {
                "ip_range": ("metallb_ip_range", self.get("metallb_ip_range")),
                "protocol": ("metallb_protocol", self.get("metallb_protocol")),
                "auto_assign": ("metallb_auto_assign", self.get("metallb_auto_assign")),
                "avoid_buggy_ips": ("metallb_avoid_buggy_ips", self.get("metallb_avoid_buggy_ips"))})
        extra = self.get("metallb_additional_address_pools")
        if extra is None:
            return
        if not isinstance(extra, Mapping):
            raise InputError("metallb_additional_address_pools", "must be a map of pool name -> settings")
        for raw, pool in extra.items():
            where = f"metallb_additional_address_pools.{raw}"
            if not isinstance(pool, Mapping):
                raise InputError(where, "must be a map with ip_range, protocol, auto_assign, avoid_buggy_ips")
            for key in pool:
                if key not in ("ip_range", "protocol", "auto_assign", "avoid_buggy_ips"):
                    self.conv.refuse(f"{where}.{key}", "unknown key: kubespray's template does not read it")
            if "protocol" not in pool:
                self.conv.warn(f"{where}.protocol: not set (kubespray's template requires it); taken as layer2")
            defaults = {"protocol": "layer2", "auto_assign": True, "avoid_buggy_ips": False}
            self._legacy_pool(raw, where, {key: (f"{where}.{key}", pool.get(key, defaults.get(key)))
                                           for key in ("ip_range", "protocol", "auto_assign", "avoid_buggy_ips")})

    def _legacy_pool(self, raw_name: Any, where: str, settings: dict[str, tuple[str, Any]]) -> None:
        """One ConfigMap-era pool; settings maps ip_range/protocol/... to (variable, value)."""
        (range_var, ranges), (proto_var, protocol) = settings["ip_range"], settings["protocol"]
        addresses = check_addresses(ranges, range_var)
        spec = _spec(addresses, check_bool(settings["auto_assign"][1], settings["auto_assign"][0]),
                     check_bool(settings["avoid_buggy_ips"][1], settings["avoid_buggy_ips"][0]))
        if protocol == "bgp":  # MetalLB's default for a pool without bgp-advertisements: /32 to every peer
            if not self.get("metallb_peers"):
                self.conv.warn(f"{proto_var}: bgp, but metallb_peers is empty: the pool is announced to no router")
            self.conv.add_pool(pool_name(raw_name, where, self.conv), bgp_pool_spec(spec, [{}], layer2=False), where)
        elif protocol == "layer2":
            self.conv.add_pool(pool_name(raw_name, where, self.conv), spec, where)
        else:
            raise InputError(proto_var, f"{protocol!r} is not a MetalLB protocol (layer2 or bgp)")

    # -- pools, v2.22 and later

    def _config(self, var: str) -> None:
        config = self.get(var)
        if not isinstance(config, Mapping):
            raise InputError(var, "must be a map (address_pools, layer2, layer3, speaker, controller)")
        for key in config:
            if key not in ("address_pools", "layer2", "layer3", "speaker", "controller"):
                self.conv.refuse(f"{var}.{key}", "unknown key: kubespray's metallb role does not read it")
        for component in ("speaker", "controller"):
            if not isinstance(config.get(component) or {}, Mapping):
                raise InputError(f"{var}.{component}", "must be a map (nodeselector, tolerations)")
            for key in config.get(component) or {}:
                if key not in ("nodeselector", "tolerations"):
                    self.conv.refuse(f"{var}.{component}.{key}", "unknown key: kubespray's metallb role reads only "
                                                                 "nodeselector and tolerations")
        layer2 = config.get("layer2") or []
        if not isinstance(layer2, list) or not all(isinstance(p, str) for p in layer2):
            raise InputError(f"{var}.layer2", "must be a list of pool names")
        bgp = self._layer3(config.get("layer3"))
        pools = config.get("address_pools") or {}
        if not isinstance(pools, Mapping):
            raise InputError(f"{var}.address_pools", "must be a map of pool name -> settings")
        for raw in layer2:
            if raw not in pools:
                self.conv.refuse(f"{var}.layer2", f"names {raw!r}, which is not in {var}.address_pools; kubespray's "
                                                  "L2Advertisement for it selects no pool")
        for raw in bgp:
            if raw not in pools:
                self.conv.warn(f"{var}.layer3: an address_pool names {raw!r}, which is not in {var}.address_pools; "
                               "kubespray's BGPAdvertisement for it selects no pool")
        for raw, pool in pools.items():
            where = f"{var}.address_pools.{raw}"
            if not isinstance(pool, Mapping):
                raise InputError(where, "must be a map with ip_range, auto_assign, avoid_buggy_ips")
            for key in pool:
                if key not in ("ip_range", "auto_assign", "avoid_buggy_ips"):
                    self.conv.refuse(f"{where}.{key}", "unknown key: kubespray's pools template reads only ip_range, "
                                                       "auto_assign and avoid_buggy_ips")
            addresses = check_addresses(pool.get("ip_range"), f"{where}.ip_range")
            spec = _spec(addresses, check_bool(pool.get("auto_assign", True), f"{where}.auto_assign"),
                         check_bool(pool.get("avoid_buggy_ips", False), f"{where}.avoid_buggy_ips"))
            name = pool_name(raw, where, self.conv)
            if raw in layer2 or raw in bgp:
                self.conv.add_pool(name, bgp_pool_spec(spec, bgp.get(raw, []), layer2=raw in layer2), where)
            else:
                self.conv.refuse(where, f"not listed in {var}.layer2 nor in a layer3 peer's address_pool: kubespray creates no "
                                        "advertisement for it, so MetalLB hands out its addresses but announces "
                                        "them nowhere, while lbctl announces every pool it serves; list it in "
                                        "layer2 if it should be announced")

    def _layer3(self, layer3: Any) -> dict[str, list[dict[str, Any]]]:
        """BGPPeers from metallb_peers; returns pool name -> the advertisements kubespray rendered for it."""
        where = "metallb_config.layer3"
        if layer3 is None:
            return {}
        if not isinstance(layer3, Mapping):
            raise InputError(where, "must be a map (defaults, communities, metallb_peers)")
        for key in layer3:
            if key not in ("defaults", "communities", "metallb_peers"):
                self.conv.refuse(f"{where}.{key}", "unknown key: kubespray's layer3 template does not read it")
        defaults = layer3.get("defaults") or {}
        if not isinstance(defaults, Mapping):
            raise InputError(f"{where}.defaults", "must be a map (peer_port, hold_time)")
        for key in defaults:
            if key not in ("peer_port", "hold_time"):
                self.conv.refuse(f"{where}.defaults.{key}", "unknown key: kubespray's layer3 template reads only "
                                                            "peer_port and hold_time")
        aliases = dict(_KUBESPRAY_WELL_KNOWN)
        communities = layer3.get("communities") or {}
        if not isinstance(communities, Mapping):
            raise InputError(f"{where}.communities", "must be a map of name -> \"asn:value\"")
        for name, value in communities.items():
            aliases[str(name)] = community(value, {}, f"{where}.communities.{name}")
        self.conv.note(f"{where} (the `well-known` Community kubespray adds)", "not needed: lbctl knows "
                       f"{', '.join(WELL_KNOWN)} by name")
        peers = layer3.get("metallb_peers") or {}
        if not isinstance(peers, Mapping):
            raise InputError(f"{where}.metallb_peers", "must be a map of peer name -> settings")
        advertised: dict[str, list[dict[str, Any]]] = {}
        for raw, peer in peers.items():
            pw = f"{where}.metallb_peers.{raw}"
            if not isinstance(peer, Mapping):
                raise InputError(pw, "must be a map (peer_address, peer_asn, my_asn, ...)")
            for key in peer:
                if key not in _PEER_KEYS:
                    self.conv.refuse(f"{pw}.{key}", "unknown key: kubespray's layer3 template does not read it")
            if "peer_port" not in peer and "peer_port" not in defaults:
                self.conv.refuse(pw, "no peer_port here nor in metallb_config.layer3.defaults: kubespray's "
                                     "template fails to render, so MetalLB never had this peer; set peer_port")
                continue
            name = object_name(raw, "BGPPeer", pw, self.conv)
            spec = _peer_spec(peer, pw)
            spec["peerPort"] = peer.get("peer_port", defaults.get("peer_port"))
            if "router_id" in peer:
                spec["routerID"] = peer["router_id"]
            hold = peer.get("hold_time", defaults.get("hold_time"))
            if hold is not None:
                spec["holdTime"] = duration(hold, f"{pw}.hold_time" if "hold_time" in peer
                                            else f"{where}.defaults.hold_time", self.conv.warn)
            if "multihop" in peer:
                spec["ebgpMultiHop"] = check_bool(peer["multihop"], f"{pw}.multihop")
            if "password" in peer:
                spec["passwordSecret"] = self.conv.password_secret(name, peer["password"], f"{pw}.password")
            if "source_address" in peer:
                self.conv.note(f"{pw}.source_address", "not imported: kubespray's layer3 template never renders "
                                                       "it, so MetalLB never used it (set sourceAddress to use it)")
            if "localpref" in peer:
                self.conv.warn(f"{pw}.localpref: not imported: kubespray renders it as lower-case `localpref`, "
                               "which MetalLB ignores; set localPref in the pool's advertisement to use it")
            self.conv.add_peer(name, spec, pw)
            for pool, adverts in self._peer_advertisements(peer, pw, aliases).items():
                advertised.setdefault(pool, []).extend(adverts)
        if len(peers) > 1 and advertised:
            self.conv.warn(f"{where}.metallb_peers: kubespray's advertisements name no peers, so every pool a peer "
                           "lists was advertised to every peer; imported the same (advertisements without peers)")
        return advertised

    def _peer_advertisements(self, peer: Mapping[str, Any], pw: str, aliases: dict[str, str]
                             ) -> dict[str, list[dict[str, Any]]]:
        pools = peer.get("address_pool") or []
        if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
            raise InputError(f"{pw}.address_pool", "must be a list of pool names")
        external: dict[str, Any] = {}
        length = peer.get("aggregation_length")
        if length is not None:
            if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= 128:
                raise InputError(f"{pw}.aggregation_length", f"must be a prefix length, got {length!r}")
            if length <= 30:
                external["aggregationLength"] = length
            else:
                self.conv.note(f"{pw}.aggregation_length", f"{length}: kubespray renders only lengths up to 30; "
                                                          "MetalLB's default /32 applies")
        listed = peer.get("communities") or []
        if not isinstance(listed, list):
            raise InputError(f"{pw}.communities", "must be a list of community names or values")
        if len(listed) > 1:
            self.conv.warn(f"{pw}.communities: {len(listed)} communities render as duplicate `communities:` keys "
                           f"in kubespray's template and only the last ({listed[-1]!r}) reached MetalLB; only it "
                           "is imported (add the others to the pool's advertisement if MetalLB should have had them)")
        if listed:
            external["communities"] = [community(listed[-1], aliases, f"{pw}.communities[{len(listed) - 1}]")]
        adverts = [external]
        if length is not None and length <= 30:  # kubespray's <peer>-local advertisement
            adverts.insert(0, {"communities": ["no-advertise"]})
        return {pool: [dict(a) for a in adverts] for pool in pools}


def _peer_spec(peer: Mapping[str, Any], where: str) -> dict[str, Any]:
    for key in ("peer_address", "peer_asn", "my_asn"):
        if key not in peer:
            raise InputError(f"{where}.{key}", "is required (kubespray's template renders it unconditionally)")
    return {"myASN": peer["my_asn"], "peerASN": peer["peer_asn"], "peerAddress": str(peer["peer_address"])}


def _spec(addresses: list[str], auto_assign: bool, avoid_buggy: bool) -> dict[str, Any]:
    """Only what differs from the IPPool CRD's defaults, so the result equals a hand-written pool."""
    spec: dict[str, Any] = {"addresses": addresses}
    if not auto_assign:
        spec["autoAssign"] = False
    if avoid_buggy:
        spec["avoidBuggyIPs"] = True
    return spec

