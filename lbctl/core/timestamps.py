"""The one formatter of UTC timestamps as the API server writes them (metav1.Time and MicroTime)."""

from __future__ import annotations

import datetime as dt


def rfc3339(t: dt.datetime | float, micro: bool = False) -> str:
    """RFC 3339 in UTC with a Z: seconds (Time: Events, conditions) or exactly six fractional digits (MicroTime:
    Lease renewTime). `t` is an aware datetime or seconds since the epoch."""
    if not isinstance(t, dt.datetime):
        t = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")
