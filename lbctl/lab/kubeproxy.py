"""A kube-proxy (IPVS mode) stand-in for one lab node: kube-ipvs0 holds exactly the LB ingress IPs.

That is the part of kube-proxy an L2 load balancer depends on: the node accepts traffic for every
LoadBalancer IP, while strict ARP keeps the kernel from answering ARP for them (the speaker does).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

from lbctl import log
from lbctl.kube import config
from lbctl.kube.client import Kube

from .topology import IPVS_DEV

logger = log.get("lab.kubeproxy")


def lb_ips(svc: Mapping[str, Any]) -> set[str]:
    if (svc.get("spec") or {}).get("type") != "LoadBalancer":
        return set()
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    out = set()
    for i in ingress:
        try:
            out.add(ipaddress.ip_address(i.get("ip", "")).compressed)
        except ValueError:
            continue
    return out


async def ip(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec("ip", *argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"ip {' '.join(argv)}: {err.decode().strip()}")
    return out.decode()


async def current() -> set[str]:
    doc = json.loads(await ip("-j", "addr", "show", "dev", IPVS_DEV) or "[]")
    return {ipaddress.ip_address(a["local"]).compressed for link in doc for a in link.get("addr_info", [])
            if a.get("scope") != "link"}


async def sync(wanted: Iterable[str]) -> None:
    want, have = set(wanted), await current()
    for addr in sorted(want - have):
        plen = 32 if ipaddress.ip_address(addr).version == 4 else 128
        extra = ["nodad"] if plen == 128 else []
        await ip("addr", "add", f"{addr}/{plen}", "dev", IPVS_DEV, *extra)
        logger.info("address_added", ip=addr)
    for addr in sorted(have - want):
        plen = 32 if ipaddress.ip_address(addr).version == 4 else 128
        await ip("addr", "del", f"{addr}/{plen}", "dev", IPVS_DEV)
        logger.info("address_removed", ip=addr)


async def run(kubeconfig: str) -> None:
    services: dict[str, set[str]] = {}
    async with Kube(config.load(kubeconfig), user_agent="lbctl-lab-kubeproxy") as kube:
        async for kind, obj in kube.informer("/api/v1/services"):
            if kind == "ERROR":
                logger.warning("watch_error", error=str(obj))
                continue
            if kind == "SYNC":
                services = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": lb_ips(s) for s in obj}
            else:
                key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
                if kind == "DELETED":
                    services.pop(key, None)
                else:
                    services[key] = lb_ips(obj)
            try:
                await sync(set().union(*services.values()) if services else set())
            except RuntimeError as exc:
                logger.error("sync_failed", error=str(exc))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="lbctl-lab-kubeproxy", description=__doc__)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="json")
    args = p.parse_args(argv)
    log.setup(args.log_format)
    logger.info("starting", device=IPVS_DEV)
    try:
        asyncio.run(run(args.kubeconfig))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
