"""`lbctl preflight`: can this node run a speaker, and is the cluster set up for lbctl?

Node checks run locally (sysctls, raw sockets, interfaces); cluster checks use --kubeconfig/--context
($KUBECONFIG, in-cluster, ~/.kube/config). Each check is PASS, WARN or FAIL; the exit code is 1 if anything
FAILs, and 2 if a cluster was named (flag or $KUBECONFIG) but cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import Mapping
from typing import Any

import yaml

from .. import arpsysctl, netlink
from ..core import netifs, strictarp
from ..kube.client import ApiError
from .cluster import CliError, add_kube_args, asked_for_cluster, connect
from .exitcodes import ATTENTION, OK
from .output import add_output_arg, attention, document, emit

Check = tuple[str, str, str]  # (PASS|WARN|FAIL, what, detail)


def register(p: argparse.ArgumentParser) -> None:
    add_kube_args(p)
    add_output_arg(p)
    p.add_argument("--node-only", action="store_true", help="skip the cluster checks")
    p.set_defaults(func=run)


def _check(f: strictarp.Finding) -> Check:
    return f.level, f.what, f.message


def node_checks() -> list[Check]:
    out: list[Check] = []
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        out.append(("PASS", "raw sockets", "CAP_NET_RAW available"))
    except PermissionError:
        out.append(("FAIL", "raw sockets", "no CAP_NET_RAW: the speaker cannot answer ARP/NDP"))
    try:
        links = netlink.read_sync(lambda _: False)  # names and flags decide; addresses are not needed
    except OSError as exc:
        out.append(("WARN", "interfaces", f"cannot list interfaces: {exc}"))
        return out
    usable = [i.name for i in netifs.usable(links)]
    out.append(_check(arpsysctl.check(links, usable)))
    out.append(("PASS" if usable else "FAIL", "interfaces",
                f"can announce on {', '.join(usable)}" if usable else "no interface the speaker may announce on"))
    return out


async def cluster_checks(args: argparse.Namespace) -> list[Check]:
    out: list[Check] = []
    async with connect(args, timeout=10) as kube:
        for crd in ("ippools.lbctl.io", "speakerstatuses.lbctl.io"):
            try:
                await kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")
                out.append(("PASS", "CRD", f"{crd} installed"))
            except ApiError as exc:
                out.append(("FAIL", "CRD", f"{crd}: {exc.message}"))
        try:
            pools = (await kube.get("/apis/lbctl.io/v1alpha1/ippools")).get("items") or []
            ready = [p["metadata"]["name"] for p in pools
                     if any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in (p.get("status") or {}).get("conditions") or [])]
            out.append(("PASS" if ready else "WARN", "IPPools",
                        f"ready: {', '.join(ready)}" if ready else "no Ready IPPool: Services will stay pending"))
        except ApiError as exc:
            out.append(("WARN", "IPPools", exc.message))
        try:
            cm = await kube.get("/api/v1/namespaces/kube-system/configmaps/kube-proxy")
            out.append(_check(strictarp.kube_proxy(yaml.safe_load((cm.get("data") or {}).get("config.conf") or "{}") or {})))
        except ApiError as exc:
            out.append(("WARN", "kube-proxy", f"no kube-system/kube-proxy ConfigMap to check ({exc.status})"))
        except yaml.YAMLError as exc:
            out.append(("WARN", "kube-proxy", f"kube-proxy config.conf is not YAML: {exc}"))
    return out


def render(doc: Mapping[str, Any]) -> str:
    return "\n".join(f"{c['result']:4}  {c['check']:12}  {c['detail']}" for c in doc["checks"])


def run(args: argparse.Namespace) -> int:
    checks = node_checks()
    if not args.node_only:
        try:
            checks += asyncio.run(cluster_checks(args))
        except CliError as exc:
            if asked_for_cluster(args):
                raise
            checks.append(("WARN", "cluster", f"skipped: {exc}"))
    failed = [f"{what}: {detail}" for level, what, detail in checks if level == "FAIL"]
    doc = document("Preflight", healthy=not failed,
                   checks=[{"result": level, "check": what, "detail": detail} for level, what, detail in checks])
    emit(doc, args.output, render)
    attention("lbctl preflight", failed)
    return ATTENTION if failed else OK
