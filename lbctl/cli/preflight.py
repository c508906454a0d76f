"""`lbctl preflight`: can this node run a speaker, and is the cluster set up for lbctl?

Node checks run locally (sysctls, raw sockets, interfaces); cluster checks need --kubeconfig (or
$KUBECONFIG / in-cluster). Each line is PASS, WARN or FAIL; the exit code is 1 if anything FAILs.
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import yaml

from .. import arpsysctl, netlink
from ..core import netifs, strictarp
from ..kube import config
from ..kube.client import ApiError, Kube

Check = tuple[str, str, str]  # (PASS|WARN|FAIL, what, detail)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig")
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


async def cluster_checks(kubeconfig: str | None) -> list[Check]:
    out: list[Check] = []
    async with Kube(config.load(kubeconfig), user_agent="lbctl-cli", timeout=10) as kube:
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


def run(args: argparse.Namespace) -> int:
    checks = node_checks()
    if not args.node_only:
        try:
            checks += asyncio.run(cluster_checks(args.kubeconfig))
        except (config.ConfigError, OSError) as exc:
            checks.append(("WARN", "cluster", f"skipped: {exc}"))
    for level, what, detail in checks:
        print(f"{level:4}  {what:12}  {detail}")
    return 1 if any(c[0] == "FAIL" for c in checks) else 0
