"""Assigned addresses the speakers refuse to announce (outside every IPPool, or in one that is not usable):
one node says so, once per address and reason, in its log and as a Warning Event on each Service."""

from __future__ import annotations

from collections.abc import Mapping

from lbctl import log
from lbctl.core.announce import ServiceRef
from lbctl.core.election import rank
from lbctl.kube.events import EventRecorder

logger = log.get(__name__)


class WithheldReporter:
    def __init__(self, recorder: EventRecorder | None, node: str) -> None:
        self.recorder, self.node = recorder, node
        self._said: dict[str, str] = {}  # ip -> reason already reported

    def reported(self, ip: str) -> bool:
        """This node has said `ip` is not announced (an update must run if it changes)."""
        return ip in self._said

    def update(self, withheld: Mapping[str, tuple[str, tuple[ServiceRef, ...]]], live: set[str]) -> None:
        said: dict[str, str] = {}
        for ip, (reason, refs) in withheld.items():
            # The node the election would pick speaks for everyone: one Event, not one per node.
            if not live or rank(ip, live)[0] != self.node:
                continue
            said[ip] = reason
            if self._said.get(ip) == reason:
                continue
            logger.warning("not_announced", ip=ip, reason=reason, services=[r.key for r in refs])
            if self.recorder:
                for ref in refs:
                    self.recorder.emit({"apiVersion": "v1", "kind": "Service", "name": ref.name,
                                        "namespace": ref.namespace, "uid": ref.uid}, "Warning", "NotAnnounced",
                                       f"{ip} is not announced: {reason}")
        self._said = said
