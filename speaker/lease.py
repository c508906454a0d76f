"""The speaker's liveness signal for `lbctl status`: a coordination.k8s.io/v1 Lease per node.

The SpeakerStatus is written only when something changes, so on its own it cannot tell a quiet speaker
from a dead one. The Lease is renewed every RENEW_S with one merge patch (as kubelets do for nodes) and
released on a graceful shutdown. Needs `leases` create and patch in its namespace. Failures are logged
once per outage and never stop the speaker: peers and ARP do not depend on it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from lbctl import log
from lbctl.core.leader import micro_time
from lbctl.core.status import LEASE_DURATION_S, LEASE_LABELS, LEASE_PREFIX, NODE_LABEL, RENEW_S
from lbctl.kube.client import Kube, KubeError
from lbctl.kube.config import ConfigError
from lbctl.kube.lease import LeaseClient

logger = log.get(__name__)


class LeaseRenewer:
    def __init__(self, kube: Kube, node: str, namespace: str, renew: float = RENEW_S,
                 duration: int = LEASE_DURATION_S) -> None:
        self.kube, self.node, self.namespace = kube, node, namespace
        self.renew_s, self.duration = renew, duration
        self.name = f"{LEASE_PREFIX}{node}"
        self.lease = LeaseClient(kube, namespace, self.name, {**LEASE_LABELS, NODE_LABEL: node})
        self._failing = False

    async def run(self) -> None:
        while True:
            await self.renew()
            await asyncio.sleep(self.renew_s)

    async def renew(self) -> bool:
        return await self._write(self.node, self.duration)

    async def release(self) -> bool:
        """Graceful stop: an empty holder tells `lbctl status` the speaker stopped rather than died."""
        return await self._write("", self.duration)

    async def _write(self, holder: str, duration: int) -> bool:
        spec: dict[str, Any] = {"holderIdentity": holder, "leaseDurationSeconds": duration,
                                "renewTime": micro_time(dt.datetime.now(dt.timezone.utc))}
        try:
            await self.lease.patch_or_create(spec, {"acquireTime": spec["renewTime"]})
        except Exception as exc:  # liveness must never kill the speaker
            if not self._failing:
                logger.warning("lease_renew_failed", lease=f"{self.namespace}/{self.name}", error=_describe(exc))
            self._failing = True
            return False
        if self._failing:
            logger.info("lease_renewed", lease=f"{self.namespace}/{self.name}")
            self._failing = False
        return True


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, (KubeError, ConfigError, OSError)) else repr(exc)
