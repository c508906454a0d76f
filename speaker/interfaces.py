"""The node's interfaces, re-read over netlink (lbctl.netlink) when links or addresses change.

A link that comes back must rejoin the election at once, not at the next poll; the slow poll stays
as a safety net for missed notifications (netlink multicast can overflow).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterable, Sequence

from lbctl import log, netlink
from lbctl.core import netifs
from lbctl.core.netifs import Interface

logger = log.get(__name__)
REFRESH_EVERY = 30.0
ON_DEMAND_MIN_GAP = 1.0  # an unplaceable IP asks for a refresh; don't re-read in a tight loop
# IPv6-only segments beacon to this link-local group (RFC 4727's experimental ff02::114), same UDP port.
HEARTBEAT_GROUP6 = "ff02::114"
NETLINK_COALESCE = 0.05  # kube-proxy adds hundreds of addresses in a burst: one re-read per burst


class InterfaceTable:
    def __init__(self, allowed: frozenset[str] | None, on_change: Callable[[], None]) -> None:
        self.allowed = allowed
        self.on_change = on_change
        self.links: list[Interface] = []  # every link at the last read (addresses only on candidates)
        self.candidates: list[Interface] = []
        self._last_refresh = 0.0
        self._pending: asyncio.Task[None] | None = None
        self._again = False

    async def refresh(self) -> bool:
        """Re-read interfaces; True (and on_change) when the usable set changed."""
        self._last_refresh = time.monotonic()
        try:
            ifaces = await asyncio.wait_for(netlink.read(self._wanted), 5)
        except (OSError, asyncio.TimeoutError) as exc:
            logger.warning("interface_scan_failed", error=str(exc) or type(exc).__name__)  # keep the last good view
            return False
        except Exception:  # a netlink library bug must not end the table's task (and with it the speaker)
            logger.exception("interface_scan_failed")
            return False
        self.links = ifaces
        fresh = netifs.usable(ifaces, self.allowed)
        if fresh == self.candidates:
            return False
        logger.info("interfaces", usable=[i.name for i in fresh])
        self.candidates = fresh
        self.on_change()
        return True

    def _wanted(self, iface: Interface) -> bool:
        return netifs.may_announce(iface, self.allowed)  # addresses of the others are never decoded

    def request_refresh(self) -> None:
        if self._pending is None or self._pending.done():
            if time.monotonic() - self._last_refresh >= ON_DEMAND_MIN_GAP:
                self._pending = asyncio.create_task(self.refresh())

    async def run(self) -> None:
        nl = self._netlink()
        try:
            while True:
                await asyncio.sleep(REFRESH_EVERY)
                await self.refresh()
        finally:
            if nl is not None:
                asyncio.get_running_loop().remove_reader(nl.fileno())
                nl.close()

    def _netlink(self) -> socket.socket | None:
        try:
            nl = netlink.change_socket()
        except OSError as exc:
            logger.warning("netlink_unavailable", error=str(exc), fallback=f"polling every {REFRESH_EVERY}s")
            return None
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                while nl.recv(65536):
                    pass
            except OSError:  # EAGAIN when drained; ENOBUFS on overflow: re-read anyway
                pass
            self._again = True  # a re-read already running may have missed this change
            if self._pending is None or self._pending.done():
                self._pending = asyncio.ensure_future(self._coalesced())
        loop.add_reader(nl.fileno(), readable)
        return nl

    async def _coalesced(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            await asyncio.sleep(NETLINK_COALESCE)
            await self.refresh()

    def for_ip(self, ip: str, pool_interfaces: Sequence[str]) -> list[Interface]:
        return netifs.interfaces_for(ip, self.candidates, pool_interfaces)

    def heartbeat_targets(self, unicast: Iterable[str] = ()) -> dict[str, tuple[str, ...]]:
        return netifs.heartbeat_targets(self.candidates, HEARTBEAT_GROUP6, unicast)
