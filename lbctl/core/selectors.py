"""Kubernetes label selectors (matchLabels + matchExpressions), evaluated in pure Python."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist"}


class SelectorError(ValueError):
    pass


def validate_selector(sel: Any, where: str) -> None:
    if sel is None:
        return
    if not isinstance(sel, Mapping):
        raise SelectorError(f"{where} must be a label selector object")
    labels = sel.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise SelectorError(f"{where}.matchLabels must be a map")
    for i, expr in enumerate(sel.get("matchExpressions") or []):
        op = expr.get("operator") if isinstance(expr, Mapping) else None
        if op not in OPERATORS:
            raise SelectorError(f"{where}.matchExpressions[{i}].operator {op!r} is not one of {sorted(OPERATORS)}")
        values = expr.get("values") or []
        if not expr.get("key"):
            raise SelectorError(f"{where}.matchExpressions[{i}] has no key")
        if op in ("In", "NotIn") and not values:
            raise SelectorError(f"{where}.matchExpressions[{i}] ({op}) needs values")
        if op in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"{where}.matchExpressions[{i}] ({op}) takes no values")


def matches(sel: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """True when `labels` satisfy `sel`. An empty selector matches everything, as in Kubernetes."""
    if sel is None:
        return True
    labels = labels or {}
    for key, value in (sel.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True
