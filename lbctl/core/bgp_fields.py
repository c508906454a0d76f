"""Field checks shared by the BGP resources (BGPPeer, BFDProfile, IPPool spec.bgp).

Pure. Every check raises BGPError naming the field, so a resource's condition (and `lbctl import`) can
say exactly what is wrong; the CRDs refuse the same shapes at `kubectl apply` where openAPI can.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from .selectors import SelectorError, validate_selector

MAX_ASN = 4294967295
MAX_U32 = 4294967295
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DURATION = re.compile(r"^(?:0|(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+)$")
_UNIT = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_COMMUNITY = re.compile(r"^(?:(?P<a>[0-9]{1,10}):(?P<b>[0-9]{1,10})|large:(?P<x>[0-9]{1,10}):(?P<y>[0-9]{1,10}):(?P<z>[0-9]{1,10}))$")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# RFC 1997 / RFC 7999 / RFC 8326 well-known communities, by the names users write.
WELL_KNOWN = {
    "no-export": "65535:65281",
    "no-advertise": "65535:65282",
    "local-as": "65535:65283",
    "no-peer": "65535:65284",
    "blackhole": "65535:666",
    "graceful-shutdown": "65535:0",
}


class BGPError(ValueError):
    """A BGP resource field that cannot be used; the message starts with the field's path."""


def check_object(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise BGPError(f"{where} must be an object, got {_show(value)}")
    return value


def check_int(value: Any, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BGPError(f"{where} must be an integer from {low} to {high}, got {_show(value)}")
    return value


def check_flag(value: Any, where: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BGPError(f"{where} must be true or false, got {_show(value)}")
    return value


def check_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 253 or not _NAME.match(value):
        raise BGPError(f"{where} must be a Kubernetes object name (lower case, digits, '-', '.'), got {_show(value)}")
    return value


def check_asn(value: Any, where: str) -> int:
    return check_int(value, where, 1, MAX_ASN)


def check_ip(value: Any, where: str, family: int | None = None) -> str:
    """A single address (no prefix), returned in canonical form."""
    try:
        ip = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        ip = None
    if ip is None:
        raise BGPError(f"{where} must be an IP address, got {_show(value)}")
    if family is not None and ip.version != family:
        raise BGPError(f"{where} must be an IPv{family} address, got {value!r}")
    return str(ip)


def parse_duration(value: Any, where: str) -> float:
    """A Go duration string ("90s", "1m30s", "0") as MetalLB writes them, in seconds."""
    if not isinstance(value, str) or not _DURATION.match(value):
        raise BGPError(f"{where} must be a duration such as \"90s\" or \"1m30s\", got {_show(value)}")
    return sum(float(n) * _SECONDS[unit] for n, unit in _UNIT.findall(value))


def whole_seconds(value: Any, where: str) -> int:
    seconds = parse_duration(value, where)
    if seconds != int(seconds):
        raise BGPError(f"{where} must be whole seconds (BGP timers count seconds), got {value!r}")
    return int(seconds)


def parse_community(value: Any, where: str) -> str:
    """"65000:100", "large:1:2:3" or a well-known name, returned canonical ("65000:100", "large:1:2:3")."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text in WELL_KNOWN:
        return WELL_KNOWN[text]
    m = _COMMUNITY.match(text or "")
    if m and m["a"] is not None and int(m["a"]) <= 65535 and int(m["b"]) <= 65535:
        return f"{int(m['a'])}:{int(m['b'])}"
    if m and m["x"] is not None and all(int(m[k]) <= MAX_U32 for k in "xyz"):
        return f"large:{int(m['x'])}:{int(m['y'])}:{int(m['z'])}"
    raise BGPError(f"{where} must be \"ASN:VALUE\" (each 0-65535), \"large:A:B:C\" (each 0-4294967295) or one of "
                   f"{', '.join(WELL_KNOWN)}, got {_show(value)}")


def check_selectors(value: Any, where: str) -> tuple[Mapping[str, Any], ...]:
    """A list of Kubernetes label selectors (empty: every node)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BGPError(f"{where} must be a list of label selectors, got {_show(value)}")
    for i, sel in enumerate(value):
        _check_selector_shape(sel, f"{where}[{i}]")
        try:
            validate_selector(sel, f"{where}[{i}]")
        except SelectorError as exc:
            raise BGPError(str(exc)) from None
    return tuple(value)


def _check_selector_shape(sel: Any, where: str) -> None:
    """What validate_selector assumes: the right container types all the way down."""
    sel = check_object(sel, where)
    labels = check_object(sel.get("matchLabels"), f"{where}.matchLabels")
    if not all(isinstance(v, str) for v in labels.values()):
        raise BGPError(f"{where}.matchLabels values must be strings")
    exprs = sel.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise BGPError(f"{where}.matchExpressions must be a list")
    for i, expr in enumerate(exprs):
        expr = check_object(expr, f"{where}.matchExpressions[{i}]")
        if not isinstance(expr.get("key", ""), str):
            raise BGPError(f"{where}.matchExpressions[{i}].key must be a string")
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise BGPError(f"{where}.matchExpressions[{i}].values must be a list of strings")


def check_known(spec: Mapping[str, Any], fields: tuple[str, ...], where: str) -> None:
    for key in spec:
        if key not in fields:
            raise BGPError(f"{where}.{key} is not a field (known: {', '.join(fields)})")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
