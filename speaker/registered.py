"""Warn when this speaker hears fewer peers than speakers are registered (fresh Leases).

Every RENEW_S the speaker Leases of the release namespace are listed (one request; needs `leases` list
there) and compared with the heartbeat live set: gauge lbctl_speaker_registered_peers, and a rate-limited
`fewer_peers_than_registered` warning naming who is not heard; the speaker then also beacons to the
missing peers' InternalIPs directly (speaker/main.py unicast_to). API failures only skip a round: the
check is advisory, liveness never depends on it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable

from lbctl import log
from lbctl.core.registered import PeerCheck, ShortfallLog, check_peers
from lbctl.core.status import LEASE_SELECTOR, RENEW_S
from lbctl.kube.client import Kube

from .metrics import Metrics

logger = log.get(__name__)


class PeerCensus:
    def __init__(self, kube: Kube, node: str, namespace: str, live: Callable[[], set[str]],
                 ready: Callable[[], bool], metrics: Metrics, on_missing: Callable[[tuple[str, ...]], None],
                 every: float = RENEW_S) -> None:
        self.kube, self.node, self.live, self.ready, self.metrics = kube, node, live, ready, metrics
        self.on_missing = on_missing
        self.every = every
        self.collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.shortfall = ShortfallLog()
        self._short = False
        self._failing = False
        self.registered: frozenset[str] | None = None  # the last successful census (the isolation guard reads it)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            if self.ready():  # before warm-up every peer would look missing
                await self.check()

    async def check(self) -> PeerCheck | None:
        try:
            leases = await self.kube.list(self.collection, labelSelector=LEASE_SELECTOR)
        except Exception as exc:  # advisory only: never end the speaker over it
            if not self._failing:
                logger.warning("lease_list_failed", error=str(exc) or repr(exc))
            self._failing = True
            return None
        self._failing = False
        live = self.live()
        got = check_peers(leases, live, self.node, dt.datetime.now(dt.timezone.utc))
        self.registered = got.registered
        self.metrics.registered_peers.set(len(got.registered))
        if got.missing:
            self.on_missing(got.missing)
        if self.shortfall.due(got.missing, time.monotonic()):
            logger.warning("fewer_peers_than_registered", registered=len(got.registered), heard=len(live),
                           missing=list(got.missing),
                           hint="their heartbeats do not reach us: filtered UDP port, another segment, "
                                "a dead NIC, or a different heartbeat key")
            self._short = True
        elif self._short and not got.missing:
            logger.info("registered_peers_heard", registered=len(got.registered))
            self._short = False
        return got
