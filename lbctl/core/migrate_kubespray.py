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
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .migrate import (Conversion, InputError, check_addresses, check_bool, check_list_of_maps, check_selector_map,
                      pool_name)

NO_BGP = "lbctl announces addresses by ARP/NDP on the local link only; it has no BGP speaker"

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
            self.conv.refuse(f"{var}[{i}]", f"BGP peer {_peer(peer)}: {NO_BGP}")

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
        if protocol == "bgp":
            self.conv.refuse(f"{where} (pool {raw_name})", f"{proto_var} is bgp: {NO_BGP}")
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
        bgp_only = self._layer3(config.get("layer3"))
        pools = config.get("address_pools") or {}
        if not isinstance(pools, Mapping):
            raise InputError(f"{var}.address_pools", "must be a map of pool name -> settings")
        for raw in layer2:
            if raw not in pools:
                self.conv.refuse(f"{var}.layer2", f"names {raw!r}, which is not in {var}.address_pools; kubespray's "
                                                  "L2Advertisement for it selects no pool")
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
            if raw in layer2:
                self.conv.add_pool(name, spec, where)
            elif raw in bgp_only:
                self.conv.refuse(where, f"announced only over BGP ({', '.join(bgp_only[raw])}): {NO_BGP}")
            else:
                self.conv.refuse(where, f"not listed in {var}.layer2 (nor layer3): kubespray creates no "
                                        "advertisement for it, so MetalLB hands out its addresses but announces "
                                        "them nowhere, while lbctl announces every pool it serves; list it in "
                                        "layer2 if it should be announced")

    def _layer3(self, layer3: Any) -> dict[str, list[str]]:
        """Refuse every BGP setting; return pool -> the peers that advertised it."""
        where = "metallb_config.layer3"
        if layer3 is None:
            return {}
        if not isinstance(layer3, Mapping):
            raise InputError(where, "must be a map (defaults, communities, metallb_peers)")
        advertised: dict[str, list[str]] = {}
        for key, value in layer3.items():
            if key == "metallb_peers":
                if not isinstance(value, Mapping):
                    raise InputError(f"{where}.metallb_peers", "must be a map of peer name -> settings")
                for peer, spec in value.items():
                    spec = spec if isinstance(spec, Mapping) else {}
                    self.conv.refuse(f"{where}.metallb_peers.{peer}", f"BGP peer {_peer(spec)}: {NO_BGP}")
                    for pool in spec.get("address_pool") or []:
                        advertised.setdefault(pool, []).append(f"{where}.metallb_peers.{peer}")
            elif key == "communities":
                self.conv.refuse(f"{where}.communities", f"BGP communities tag BGP advertisements: {NO_BGP}")
            elif key == "defaults":
                self.conv.refuse(f"{where}.defaults", f"BGP session defaults: {NO_BGP}")
            else:
                self.conv.refuse(f"{where}.{key}", "unknown key: kubespray's layer3 template does not read it")
        return advertised


def _spec(addresses: list[str], auto_assign: bool, avoid_buggy: bool) -> dict[str, Any]:
    """Only what differs from the IPPool CRD's defaults, so the result equals a hand-written pool."""
    spec: dict[str, Any] = {"addresses": addresses}
    if not auto_assign:
        spec["autoAssign"] = False
    if avoid_buggy:
        spec["avoidBuggyIPs"] = True
    return spec


def _peer(spec: Mapping[str, Any]) -> str:
    return f"{spec.get('peer_address', '?')} AS {spec.get('peer_asn', '?')}"
