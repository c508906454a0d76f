"""The health of list-watches, one model for the controller and the speaker.

lbctl's informer relists after any failure, so a watch never ends on its own; this says since when each
has been failing, so a daemon logs the first failure of an outage (not every retry), how long it lasted
when it recovers, and /healthz can report a daemon that sees nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class WatchHealth:
    """Since when each watch has been failing (absent: working)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failing_since: dict[str, float] = {}

    def failed(self, kind: str) -> bool:
        """Record a failure; True for the first one of an outage (log that one, not every retry)."""
        if kind in self.failing_since:
            return False
        self.failing_since[kind] = self.clock()
        return True

    def recovered(self, kind: str) -> float | None:
        """Record a working event; the seconds it had been failing if it was, else None."""
        since = self.failing_since.pop(kind, None)
        return None if since is None else self.clock() - since

    def worst(self) -> float:
        """Seconds the longest-failing watch has been failing (0 when all work)."""
        now = self.clock()
        return max((now - t for t in self.failing_since.values()), default=0.0)
