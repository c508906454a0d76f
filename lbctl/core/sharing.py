"""When may two Services share one LoadBalancer IP?

Same sharing key, no protocol/port in common, the same externalTrafficPolicy, and for ETP Local the same
pod selector (otherwise one owner node cannot have ready endpoints for both).
"""

from __future__ import annotations

from collections.abc import Iterable

from .service import ServiceRequest


def share_conflict(req: ServiceRequest, others: Iterable[ServiceRequest]) -> str | None:
    """Why `req` cannot join the holders of an IP, or None when it can."""
    for other in others:
        if other.key == req.key:
            continue
        if not req.sharing_key or req.sharing_key != other.sharing_key:
            theirs = f"sharing key {other.sharing_key!r}" if other.sharing_key else "no sharing key"
            return f"in use by Service {other.key} ({theirs})"
        clash = sorted(f"{p.protocol}/{p.port}" for p in req.ports & other.ports)
        if clash:
            return f"shared with Service {other.key}, which already uses {', '.join(clash)}"
        if req.etp_local != other.etp_local:
            return f"shared with Service {other.key}, whose externalTrafficPolicy differs"
        if req.etp_local and req.selector != other.selector:
            return f"shared with Service {other.key}: externalTrafficPolicy Local needs identical selectors"
    return None
