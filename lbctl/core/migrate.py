"""What `lbctl import` produces: IPPool specs, other chart values, and what could not be carried over.

BGP: peers become BGPPeers, BFD profiles BFDProfiles, advertisements the pools' spec.bgp; a plain-text
password becomes a Secret manifest (BGPPeer has no password field), said in a note.

Pure: the kubespray and MetalLB converters (migrate_kubespray, migrate_metallb) fill a Conversion from
parsed YAML; the CLI reads the files and prints. Nothing the converters recognise is dropped: it becomes a
pool or a chart value, a Refusal (cannot be mapped, and why), or a note (not needed, and why).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .bfdprofiles import parse_bfd_profile
from .bgp_fields import WELL_KNOWN, BGPError, parse_community
from .bgppeers import PASSWORD_KEY, SECRET_TYPE, parse_peer
from .pools import parse_pool
from .ranges import RangeError, parse_range

API_VERSION = "lbctl.io/v1alpha1"
# The chart's top-level keys in the order values-contract.md lists them, so output reads like values.yaml.
_VALUE_ORDER = ("lbClass", "logLevel", "pools", "bgp", "controller", "speaker")
# Where password Secrets go: the namespace the README installs the chart into (the speaker reads its own).
LBCTL_NAMESPACE = "lbctl-system"
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class InputError(ValueError):
    """Input that cannot be read as what it claims to be. `where` names the variable or object and key;
    `doc` is the index of the input document it came from (for the CLI to name the file), if known."""

    def __init__(self, where: str, message: str, doc: int | None = None) -> None:
        super().__init__(f"{where}: {message}")
        self.where, self.message, self.doc = where, message, doc


@dataclass(frozen=True)
class Refusal:
    what: str
    why: str

    def __str__(self) -> str:
        return f"refused: {self.what}: {self.why}"


@dataclass
class Conversion:
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)  # IPPool name -> spec, in input order
    values: dict[str, Any] = field(default_factory=dict)  # chart values other than `pools`
    refusals: list[Refusal] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)  # BGPPeer name -> spec
    bfd_profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # BFDProfile name -> spec
    secrets: list[dict[str, Any]] = field(default_factory=list)  # Secret manifests (BGP passwords)
    _origin: dict[str, str] = field(default_factory=dict)  # pool/peer/profile name -> where it came from

    def refuse(self, what: str, why: str) -> None:
        self.refusals.append(Refusal(what, why))

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def note(self, what: str, why: str) -> None:
        self.notes.append(f"{what}: {why}")

    def add_pool(self, name: str, spec: dict[str, Any], where: str) -> None:
        """Add a pool after the checks the controller would make; a clash of names is refused."""
        if name in self.pools:
            self.refuse(where, f"an IPPool named {name!r} already comes from {self._origin[name]}; "
                               "IPPool names are cluster-wide")
            return
        parsed = parse_pool(name, spec)
        if parsed.error:
            raise InputError(where, parsed.error)
        for other, other_spec in self.pools.items():
            clash = _overlap(spec["addresses"], other_spec["addresses"])
            if clash:
                self.warn(f"{where}: {clash[0]} overlaps {clash[1]} of IPPool {other} ({self._origin[other]}); "
                          f"lbctl hands out nothing from the newer of two overlapping pools")
        self.pools[name] = spec
        self._origin[name] = where

    def add_peer(self, name: str, spec: dict[str, Any], where: str) -> bool:
        """Add a BGPPeer after the checks the speaker would make; False when refused (name clash)."""
        return self._add(self.peers, "BGPPeer", parse_peer, name, spec, where)

    def add_bfd_profile(self, name: str, spec: dict[str, Any], where: str) -> bool:
        return self._add(self.bfd_profiles, "BFDProfile", parse_bfd_profile, name, spec, where)

    def _add(self, into: dict[str, dict[str, Any]], kind: str, parse: Any, name: str, spec: dict[str, Any],
             where: str) -> bool:
        key = f"{kind}/{name}"
        if name in into:
            self.refuse(where, f"a {kind} named {name!r} already comes from {self._origin[key]}; {kind} names "
                               "are cluster-wide")
            return False
        try:
            parse(name, spec)
        except BGPError as exc:
            raise InputError(where, str(exc)) from None
        into[name] = spec
        self._origin[key] = where
        return True

    def password_secret(self, peer: str, password: Any, where: str) -> dict[str, str]:
        """A Secret manifest for a plain-text password; returns the BGPPeer's passwordSecret reference."""
        if not isinstance(password, str) or not password:
            raise InputError(where, "must be a non-empty string")
        ref = {"name": f"{peer}-bgp-password", "namespace": LBCTL_NAMESPACE}
        self.secrets.append({"apiVersion": "v1", "kind": "Secret", "metadata": dict(ref), "type": SECRET_TYPE,
                             "stringData": {PASSWORD_KEY: password}})
        self.note(where, f"the plain-text password became Secret {ref['namespace']}/{ref['name']} (key "
                         f"{PASSWORD_KEY}), which BGPPeer {peer} names in spec.passwordSecret; lbctl resources hold "
                         "no passwords")
        return ref

    def check_references(self) -> None:
        """Warn about names that point nowhere among the imported objects (they may exist in the cluster)."""
        for name, spec in self.peers.items():
            profile = spec.get("bfdProfile")
            if profile is not None and profile not in self.bfd_profiles:
                self.warn(f"BGPPeer {name}: bfdProfile {profile!r} was not imported; the peer stays Invalid until a "
                          "BFDProfile of that name exists")
        for name, spec in self.pools.items():
            for i, adv in enumerate((spec.get("bgp") or {}).get("advertisements") or []):
                for peer in adv.get("peers") or []:
                    if peer not in self.peers:
                        self.warn(f"IPPool {name}: spec.bgp.advertisements[{i}].peers names {peer!r}, which was not "
                                  "imported as a BGPPeer")
        if any((spec.get("bgp") or {}).get("advertisements") for spec in self.pools.values()) and not self.peers:
            self.warn("pools are advertised by BGP but no BGPPeer was imported: they reach no router until one exists")

    def ippools(self) -> list[dict[str, Any]]:
        return [{"apiVersion": API_VERSION, "kind": "IPPool", "metadata": {"name": name}, "spec": spec}
                for name, spec in self.pools.items()]

    def resources(self) -> list[dict[str, Any]]:
        """Every manifest, in the order they can be applied: Secrets, BFDProfiles, BGPPeers, IPPools."""
        return [*self.secrets,
                *({"apiVersion": API_VERSION, "kind": "BFDProfile", "metadata": {"name": name}, "spec": spec}
                  for name, spec in self.bfd_profiles.items()),
                *({"apiVersion": API_VERSION, "kind": "BGPPeer", "metadata": {"name": name}, "spec": spec}
                  for name, spec in self.peers.items()),
                *self.ippools()]

    def chart_values(self) -> dict[str, Any]:
        merged = dict(self.values, pools=[{"name": name, **spec} for name, spec in self.pools.items()])
        bgp = {key: [{"name": name, **spec} for name, spec in items.items()]
               for key, items in (("peers", self.peers), ("bfdProfiles", self.bfd_profiles)) if items}
        if bgp:
            merged["bgp"] = {"enabled": True, **bgp} if self.peers else bgp  # peers: the speakers run BIRD
        return {k: merged[k] for k in sorted(merged, key=lambda k: (_VALUE_ORDER + (k,)).index(k))}


def _overlap(mine: list[str], theirs: list[str]) -> tuple[str, str] | None:
    for a in mine:
        for b in theirs:
            if parse_range(a).overlaps(parse_range(b)):
                return a, b
    return None


def check_addresses(value: Any, where: str) -> list[str]:
    """A list of ranges/CIDRs/IPs, each checked by the core's parser; errors name the list item."""
    if not isinstance(value, list) or not value:
        raise InputError(where, f"must be a non-empty list of address ranges, got {value!r}")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(str(parse_range(item)))
        except RangeError as exc:
            raise InputError(f"{where}[{i}]", str(exc)) from None
    return out


def check_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "false", "no", "off"):
        return value.strip().lower() in ("true", "yes", "on")
    raise InputError(where, f"must be true or false, got {value!r}")


def check_selector_map(value: Any, where: str) -> dict[str, str]:
    """A plain label map (Kubernetes nodeSelector)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InputError(where, f"must be a map of label names to values, got {value!r}")
    return {k: str(v) for k, v in value.items()}


def check_list_of_maps(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InputError(where, f"must be a list of objects, got {value!r}")
    return [dict(v) for v in value]


def pool_name(raw: Any, where: str, conv: Conversion) -> str:
    """An IPPool name for a MetalLB pool name. Names that Kubernetes rejects are rewritten, with a warning:
    Services that request the pool by its old name (address-pool annotation) must be re-annotated."""
    name = _k8s_name(raw, "pool", where)
    if name != raw:
        conv.warn(f"{where}: pool {raw!r} is imported as IPPool {name!r} (not a valid Kubernetes name); "
                  f"Services annotated with address-pool: {raw} must be re-annotated with {name}")
    return name


def bgp_pool_spec(spec: dict[str, Any], advertisements: list[dict[str, Any]], layer2: bool) -> dict[str, Any]:
    """A pool spec announced by BGP (advertisements, duplicates dropped) and/or layer 2."""
    unique = [a for i, a in enumerate(advertisements) if a not in advertisements[:i]]
    if unique:
        spec["bgp"] = {"advertisements": unique}
    if not layer2:
        spec["layer2"] = {"enabled": False, **(spec.get("layer2") or {})}
    return spec


def community(value: Any, aliases: Mapping[str, str], where: str, go_yaml: bool = False) -> str:
    """A community as written in a MetalLB advertisement: a Community alias, a literal, or a well-known name.
    YAML 1.1 reads an unquoted 65000:7 as the base-60 number 3900007. Go's YAML (MetalLB reading its
    ConfigMap, go_yaml) kept the text, so it is rebuilt; Ansible's did not, so kubespray passed the number on."""
    if isinstance(value, str) and value in aliases:
        return aliases[value]
    if isinstance(value, int) and not isinstance(value, bool):
        if go_yaml:
            return f"{value // 60}:{value % 60}"
        raise InputError(where, f"{value} is a number: YAML reads an unquoted ASN:VALUE as base 60 (Ansible too, so "
                                "MetalLB got this number and refused it); quote the community")
    try:
        parse_community(value, where)
    except BGPError as exc:
        raise InputError(where, f"{value!r} is neither a Community name defined here nor a community value ("
                                f"{str(exc).partition(' must be ')[2]})") from None
    return value.strip().lower() if value.strip().lower() in WELL_KNOWN else value.strip()


def duration(value: Any, where: str, warn: Any) -> str:
    """MetalLB's duration strings pass; a bare number (kubespray renders hold_time verbatim) is seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        warn(f"{where}: {value} has no unit (MetalLB's CRD wants a duration such as \"{value}s\"); taken as "
             "seconds")
        return f"{value}s"
    if not isinstance(value, str):
        raise InputError(where, f"must be a duration such as \"90s\", got {value!r}")
    return value.strip()


def legacy_selectors(value: Any, where: str) -> list[dict[str, Any]]:
    """MetalLB's ConfigMap node-selectors ([{match-labels, match-expressions}]) as label selectors."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InputError(where, f"must be a list of selectors (match-labels, match-expressions), got {value!r}")
    out = []
    for i, sel in enumerate(value):
        for key in sel:
            if key not in ("match-labels", "match-expressions"):
                raise InputError(f"{where}[{i}].{key}", "unknown key (MetalLB reads match-labels and "
                                                        "match-expressions)")
        one: dict[str, Any] = {}
        if sel.get("match-labels"):
            one["matchLabels"] = check_selector_map(sel["match-labels"], f"{where}[{i}].match-labels")
        if sel.get("match-expressions"):
            one["matchExpressions"] = check_list_of_maps(sel["match-expressions"], f"{where}[{i}].match-expressions")
        out.append(one)
    return out


def object_name(raw: Any, kind: str, where: str, conv: Conversion) -> str:
    """A Kubernetes object name for a BGP peer or profile name, rewritten (with a warning) when needed."""
    name = _k8s_name(raw, kind, where)
    if name != raw:
        conv.warn(f"{where}: {raw!r} is imported as {kind} {name!r} (not a valid Kubernetes name)")
    return name


def _k8s_name(raw: Any, what: str, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InputError(where, f"{what} name {raw!r} is not a non-empty string")
    name = re.sub(r"[^a-z0-9.-]+", "-", raw.strip().lower()).strip("-.")[:253].strip("-.")
    if not name or not _DNS_NAME.match(name):
        raise InputError(where, f"{what} name {raw!r} cannot be made a Kubernetes object name")
    return name
