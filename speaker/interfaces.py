"""The node's interfaces, refreshed from `ip -j addr` every 10 s and on demand."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence

from lbctl import log
from lbctl.core import netifs
from lbctl.core.netifs import Interface

logger = log.get(__name__)
REFRESH_EVERY = 10.0
ON_DEMAND_MIN_GAP = 1.0  # an unplaceable IP asks for a refresh; don't fork `ip` in a tight loop


def bridge_ports() -> set[str]:
    try:
        return {n for n in os.listdir("/sys/class/net") if os.path.exists(f"/sys/class/net/{n}/brport")}
    except OSError:
        return set()


class InterfaceTable:
    def __init__(self, allowed: frozenset[str] | None, on_change: Callable[[], None]) -> None:
        self.allowed = allowed
        self.on_change = on_change
        self.candidates: list[Interface] = []
        self._last_refresh = 0.0
        self._pending: asyncio.Task[None] | None = None

    async def refresh(self) -> bool:
        """Re-read interfaces; True (and on_change) when the usable set changed."""
        self._last_refresh = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec("ip", "-j", "addr", "show", stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.DEVNULL)
            out, _ = await asyncio.wait_for(proc.communicate(), 5)
            doc = json.loads(out or b"[]")
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            logger.warning("interface_scan_failed", error=str(exc))  # keep the last good view
            return False
        fresh = netifs.usable(netifs.parse_ip_addr(doc), bridge_ports(), self.allowed)
        if fresh == self.candidates:
            return False
        logger.info("interfaces", usable=[i.name for i in fresh])
        self.candidates = fresh
        self.on_change()
        return True

    def request_refresh(self) -> None:
        if self._pending is None or self._pending.done():
            if time.monotonic() - self._last_refresh >= ON_DEMAND_MIN_GAP:
                self._pending = asyncio.create_task(self.refresh())

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            await self.refresh()

    def for_ip(self, ip: str, pool_interfaces: Sequence[str]) -> list[Interface]:
        return netifs.interfaces_for(ip, self.candidates, pool_interfaces)

    def heartbeat_targets(self) -> dict[str, tuple[str, ...]]:
        return netifs.heartbeat_targets(self.candidates)
