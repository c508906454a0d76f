"""kubectl-style plain-text tables: the one renderer for `lbctl` and `lbctl lab`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [headers, *rows])


def service_row(svc: Mapping[str, Any]) -> list[str]:
    spec, meta = svc.get("spec") or {}, svc.get("metadata") or {}
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(i.get("ip", "") for i in ingress) or ("<pending>" if spec.get("type") == "LoadBalancer"
                                                             else "<none>")
    ports = ",".join(f"{p['port']}" + (f":{p['nodePort']}" if p.get("nodePort") else "") + f"/{p.get('protocol', 'TCP')}"
                     for p in spec.get("ports") or [])
    cluster_ip = ",".join(spec.get("clusterIPs") or [spec.get("clusterIP") or "<none>"])
    return [meta.get("name", ""), spec.get("type", ""), cluster_ip, external, ports]


def services(items: Sequence[Mapping[str, Any]]) -> str:
    return table(["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"], [service_row(s) for s in items])


def age(seconds: float | None) -> str:
    """kubectl's AGE style, coarsened: 42s, 5m, 3h, 12d (a unit from twice its size up); '-' when unknown."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= 2 * size:
            return f"{s // size}{unit}"
    return f"{s}s"
