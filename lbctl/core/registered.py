"""Registered speakers versus speakers heard: a speaker that hears fewer peers than have a fresh Lease is
cut off from part of its segment (a filtered port, another VLAN, a dead NIC) and must say so.

Pure: the shell lists the speaker Leases (lbctl/core/status.py explains when one is fresh) and passes
them in with its live set and a clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .status import speakers

WARN_EVERY_S = 60.0  # the same shortfall is logged again at most this often


@dataclass(frozen=True)
class PeerCheck:
    registered: frozenset[str]  # speakers with a fresh Lease, ourselves included
    missing: tuple[str, ...]  # registered but not heard, sorted


def check_peers(leases: Iterable[Mapping[str, Any]], live: set[str], self_name: str, now: dt.datetime) -> PeerCheck:
    registered = {s.node for s in speakers((), leases, now) if s.alive}
    registered.add(self_name)  # our own Lease may not be written yet (API server slow), we are here anyway
    return PeerCheck(frozenset(registered), tuple(sorted(registered - live)))


class ShortfallLog:
    """When to log a shortfall: at once when the missing set changes, else at most every WARN_EVERY_S."""

    def __init__(self, every: float = WARN_EVERY_S) -> None:
        self.every = every
        self._last: tuple[str, ...] = ()
        self._at = float("-inf")

    def due(self, missing: tuple[str, ...], now: float) -> bool:
        """True when a `fewer_peers_than_registered` line should be written now (monotonic `now`)."""
        if not missing:
            self._last = ()
            return False
        if missing != self._last or now - self._at >= self.every:
            self._last, self._at = missing, now
            return True
        return False
