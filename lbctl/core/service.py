"""What a Service asks of the allocator, read from its manifest (a plain dict).

Annotations are read in lbctl's own namespace first, then MetalLB's two generations, so clusters can
migrate without editing every Service.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ANNOTATION_PREFIXES = ("lbctl.io/", "metallb.io/", "metallb.universe.tf/")
FAMILY_BY_NAME = {"IPv4": 4, "IPv6": 6}


def annotation(annotations: Mapping[str, str], name: str) -> str | None:
    for prefix in ANNOTATION_PREFIXES:
        value = annotations.get(prefix + name)
        if value is not None and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True)
class Port:
    protocol: str
    port: int


@dataclass(frozen=True)
class ServiceRequest:
    key: str  # namespace/name
    namespace: str
    name: str
    uid: str
    created: str
    is_lb: bool
    lb_class: str | None
    labels: Mapping[str, str]
    # Address families wanted, in preference order, and whether all of them are required.
    families: tuple[int, ...]
    require_all_families: bool
    requested_ips: tuple[str, ...]
    pool: str | None
    sharing_key: str | None
    ports: frozenset[Port]
    etp_local: bool
    selector: tuple[tuple[str, str], ...]
    current_ips: tuple[str, ...]
    # A problem with the request itself (bad annotation); such a Service is never allocated.
    error: str | None = None
    # The version this view was read from: a status write carries it as a precondition, so a decision taken on a
    # stale view (a watch still catching up after an outage or a takeover) is refused instead of overwriting a
    # newer status. Not part of the request: a status write alone changes it.
    resource_version: str = field(default="", compare=False)

    def wants(self, lb_class: str | None) -> bool:
        """Is this Service ours? Type LoadBalancer and no class, or our class."""
        return self.is_lb and (self.lb_class is None or self.lb_class == lb_class)


def read_service(body: Mapping[str, Any]) -> ServiceRequest:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    annotations = meta.get("annotations") or {}
    ns, name = meta.get("namespace", "default"), meta.get("name", "")
    error = None

    families, require_all = _families(spec)
    requested: list[str] = []
    raw_ips = annotation(annotations, "loadBalancerIPs")
    if raw_ips:
        requested += [p.strip() for p in raw_ips.split(",") if p.strip()]
    if spec.get("loadBalancerIP"):
        requested.append(str(spec["loadBalancerIP"]).strip())
    requested = list(dict.fromkeys(requested))  # loadBalancerIP may repeat the annotation
    try:
        req_families = [ipaddress.ip_address(ip).version for ip in requested]
    except ValueError as exc:
        error = f"requested address is invalid: {exc}"
        req_families = []
    if not error and len(set(req_families)) != len(req_families):
        error = f"requested addresses {', '.join(requested)} hold more than one address of a family"
    if not error:
        for ip, fam in zip(requested, req_families):
            if fam not in families:
                wanted = "/".join(f"IPv{f}" for f in families)
                error = f"requested address {ip} is IPv{fam} but the Service's ipFamilies are {wanted}"
                break

    ports = frozenset(
        Port(str(p.get("protocol") or "TCP"), int(p.get("port") or 0)) for p in spec.get("ports") or []
    )
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    current = tuple(i["ip"] for i in ingress if isinstance(i, Mapping) and i.get("ip"))
    return ServiceRequest(
        key=f"{ns}/{name}",
        namespace=ns,
        name=name,
        uid=meta.get("uid", ""),
        created=meta.get("creationTimestamp") or "",
        is_lb=spec.get("type") == "LoadBalancer",
        lb_class=spec.get("loadBalancerClass"),
        labels=meta.get("labels") or {},
        families=families,
        require_all_families=require_all,
        requested_ips=tuple(requested),
        pool=annotation(annotations, "address-pool"),
        sharing_key=annotation(annotations, "allow-shared-ip"),
        ports=ports,
        etp_local=spec.get("externalTrafficPolicy") == "Local",
        selector=tuple(sorted((spec.get("selector") or {}).items())),
        current_ips=current,
        error=error,
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def _families(spec: Mapping[str, Any]) -> tuple[tuple[int, ...], bool]:
    names = spec.get("ipFamilies") or []
    fams = [FAMILY_BY_NAME[n] for n in names if n in FAMILY_BY_NAME]
    if not fams:  # servers without dual-stack fields: derive from the cluster IP
        cip = spec.get("clusterIP")
        try:
            fams = [ipaddress.ip_address(cip).version] if cip and cip != "None" else [4]
        except ValueError:
            fams = [4]
    policy = spec.get("ipFamilyPolicy") or "SingleStack"
    if policy == "SingleStack":
        return (fams[0],), True
    # The API server fills ipFamilies with what the cluster can serve; PreferDualStack gets what we can give.
    return tuple(dict.fromkeys(fams)), policy == "RequireDualStack"


def ingress_status(ips: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The `status.loadBalancer` value for a set of addresses; ipMode VIP tells kube-proxy to route locally."""
    return {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips]}
