"""The node's links and addresses over rtnetlink (pyroute2): the one place lbctl reads interfaces.

One dump of the links, then the addresses of only the links the caller wants, filtered by the kernel
(NETLINK_GET_STRICT_CHK): kube-proxy's kube-ipvs0 may hold thousands of addresses and decoding each
costs tens of microseconds in Python. What the records mean is decided in lbctl.core.netifs.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkDecodeError, NetlinkDumpInterrupted, NetlinkError
from pyroute2.netlink.rtnl import RTM_GETADDR
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from .core import netifs
from .core.netifs import Interface

RTEXT_FILTER_SKIP_STATS = 1 << 3  # leave per-link statistics out of the link dump: less to decode
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
DUMP_ATTEMPTS = 3  # a dump that races a change is flagged interrupted by the kernel: read it again


def _everything(_: Interface) -> bool:
    return True


async def read(want: Callable[[Interface], bool] = _everything) -> list[Interface]:
    """Every link, with its addresses when want(link) (else with none). Raises OSError when netlink fails."""
    strict = True
    for attempt in range(DUMP_ATTEMPTS):
        try:
            return await _read(want, strict)
        except OSError as exc:
            if not (strict and exc.errno == errno.ENOPROTOOPT):
                raise
            strict = False  # kernel < 4.20: no filtered dumps; everything comes and is dropped here
        except NetlinkDumpInterrupted:
            if attempt == DUMP_ATTEMPTS - 1:
                raise OSError("netlink dump kept being interrupted by changes") from None
        except (NetlinkError, NetlinkDecodeError) as exc:
            raise OSError(f"netlink: {exc}") from None
    raise OSError("netlink: no usable dump")


def read_sync(want: Callable[[Interface], bool] = _everything) -> list[Interface]:
    """read() for code without an event loop (the CLI)."""
    return asyncio.run(read(want))


async def _read(want: Callable[[Interface], bool], strict: bool) -> list[Interface]:
    async with AsyncIPRoute(strict_check=strict, groups=0) as ipr:
        links = netifs.links([_link(m) async for m in await ipr.link("dump", ext_mask=RTEXT_FILTER_SKIP_STATS)])
        addrs: list[dict[str, Any]] = []
        for iface in links:
            if want(iface):
                query = ifaddrmsg()
                query["family"], query["index"] = socket.AF_UNSPEC, iface.index
                # The index check also keeps this right on a kernel that ignores the filter.
                addrs += [_addr(m) async for m in await ipr.nlm_request(query, RTM_GETADDR)
                          if m["index"] == iface.index]
    return netifs.with_addresses(links, addrs)


def _link(m: Any) -> dict[str, Any]:
    info = m.get("IFLA_LINKINFO")
    return {"index": m["index"], "name": m.get("IFLA_IFNAME"), "flags": m["flags"], "type": m["ifi_type"],
            "address": m.get("IFLA_ADDRESS"), "port_of": info.get("IFLA_INFO_SLAVE_KIND") if info else None}


def _addr(m: Any) -> dict[str, Any]:
    return {"index": m["index"], "address": m.get("IFA_ADDRESS"), "local": m.get("IFA_LOCAL"),
            "prefixlen": m["prefixlen"], "broadcast": m.get("IFA_BROADCAST")}


def change_socket() -> socket.socket:
    """A non-blocking rtnetlink socket that becomes readable when links or addresses change.

    Only a wake-up: the messages are drained unread and the caller re-reads with read()."""
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        nl.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        nl.setblocking(False)
    except OSError:
        nl.close()
        raise
    return nl
