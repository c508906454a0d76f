"""What `lbctl import` produces: IPPool specs, other chart values, and what could not be carried over.

Pure: the kubespray and MetalLB converters (migrate_kubespray, migrate_metallb) fill a Conversion from
parsed YAML; the CLI reads the files and prints. Nothing the converters recognise is dropped: it becomes a
pool or a chart value, a Refusal (cannot be mapped, and why), or a note (not needed, and why).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .pools import parse_pool
from .ranges import RangeError, parse_range

API_VERSION = "lbctl.io/v1alpha1"
# The chart's top-level keys in the order values-contract.md lists them, so output reads like values.yaml.
_VALUE_ORDER = ("lbClass", "logLevel", "pools", "controller", "speaker")
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
    _origin: dict[str, str] = field(default_factory=dict)  # pool name -> where it came from

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

    def ippools(self) -> list[dict[str, Any]]:
        return [{"apiVersion": API_VERSION, "kind": "IPPool", "metadata": {"name": name}, "spec": spec}
                for name, spec in self.pools.items()]

    def chart_values(self) -> dict[str, Any]:
        merged = dict(self.values, pools=[{"name": name, **spec} for name, spec in self.pools.items()])
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
    if not isinstance(raw, str) or not raw.strip():
        raise InputError(where, f"pool name {raw!r} is not a non-empty string")
    name = re.sub(r"[^a-z0-9.-]+", "-", raw.strip().lower()).strip("-.")[:253].strip("-.")
    if not name or not _DNS_NAME.match(name):
        raise InputError(where, f"pool name {raw!r} cannot be made a Kubernetes object name")
    if name != raw:
        conv.warn(f"{where}: pool {raw!r} is imported as IPPool {name!r} (not a valid Kubernetes name); "
                  f"Services annotated with address-pool: {raw} must be re-annotated with {name}")
    return name
