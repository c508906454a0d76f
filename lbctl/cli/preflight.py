"""`lbctl preflight`: can this node run a speaker, and is the cluster set up for lbctl?

Node checks run locally (sysctls, raw sockets, interfaces); cluster checks use --kubeconfig/--context
($KUBECONFIG, in-cluster, ~/.kube/config). Each check is PASS, WARN or FAIL; the exit code is 1 if anything
FAILs, and 2 if a cluster was named (flag or $KUBECONFIG) but cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..core.netifs import parse_ip_addr, skip_reason
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


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys/net/ipv4/conf/all", name).read_text().strip()
    except OSError:
        return None


def node_checks() -> list[Check]:
    out: list[Check] = []
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        out.append(("PASS", "raw sockets", "CAP_NET_RAW available"))
    except PermissionError:
        out.append(("FAIL", "raw sockets", "no CAP_NET_RAW: the speaker cannot answer ARP/NDP"))
    ipvs = Path("/sys/class/net/kube-ipvs0").exists()
    ignore, announce = _sysctl("arp_ignore"), _sysctl("arp_announce")
    strict = ignore == "1" and announce == "2"
    if ipvs and not strict:
        out.append(("FAIL", "strict ARP", f"kube-ipvs0 exists but arp_ignore={ignore}, arp_announce={announce}: every "
                    "node would answer ARP for every LoadBalancer IP; set kube-proxy strictARP: true"))
    else:
        out.append(("PASS", "strict ARP", f"arp_ignore={ignore} arp_announce={announce}"
                    + ("" if ipvs else " (no kube-ipvs0: kube-proxy is not in IPVS mode here)")))
    try:
        doc = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout)
        usable = [i.name for i in parse_ip_addr(doc) if not skip_reason(i)]
        out.append(("PASS" if usable else "FAIL", "interfaces",
                    f"can announce on {', '.join(usable)}" if usable else "no interface the speaker may announce on"))
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        out.append(("WARN", "interfaces", f"cannot list interfaces: {exc}"))
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
            conf = yaml.safe_load((cm.get("data") or {}).get("config.conf") or "{}") or {}
            mode, strict = conf.get("mode") or "iptables", (conf.get("ipvs") or {}).get("strictARP")
            if mode == "ipvs" and not strict:
                out.append(("FAIL", "kube-proxy", "mode ipvs without ipvs.strictARP: true"))
            else:
                out.append(("PASS", "kube-proxy", f"mode {mode}" + (", strictARP" if strict else "")))
        except ApiError as exc:
            out.append(("WARN", "kube-proxy", f"no kube-system/kube-proxy ConfigMap to check ({exc.status})"))
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
