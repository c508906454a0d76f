"""`birdc show protocols all` output -> one record per BGP session (pure: text in, records out).

BIRD prints a table row per protocol (`Name Proto Table State Since Info`) followed by indented detail lines.
Only BGP protocols become records. `Since` is the time of the protocol's last state change, printed either as
a time of day (BIRD's default `timeformat protocol`, "08:56:59.366") or as a full date ("iso long",
"2026-12-05 08:56:59.366"); a time of day is placed on the day of `now` (the day before when that would lie in
the future). BIRD prints local time; the sidecar runs it with TZ=UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_ROW = re.compile(r"(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+"
                  r"(?P<since>(?:\d{4}-\d\d-\d\d\s+)?\d\d:\d\d:\d\d(?:\.\d+)?)(?:\s+(?P<info>.*))?$")
_ROUTES = re.compile(r"Routes:\s+(\d+) imported, (?:(\d+) filtered, )?(\d+) exported")


@dataclass(frozen=True)
class Session:
    protocol: str  # BIRD's protocol name (bgp_render's symbol for the peer)
    state: str  # BGP state: Established, Idle, Connect, Active, OpenSent, OpenConfirm, or BIRD's Down/Start
    since: dt.datetime | None  # last state change, UTC
    address: str = ""
    exported: int = 0  # prefixes sent, over every channel
    last_error: str = ""

    @property
    def up(self) -> bool:
        return self.state == "Established"


def parse_protocols(text: str, now: dt.datetime) -> list[Session]:
    """The BGP sessions in `birdc show protocols all` output; lines it does not know are skipped."""
    out: list[Session] = []
    current: dict | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            if current is not None:
                out.append(Session(**current))
                current = None
            m = _ROW.match(line.strip())
            if m and m["proto"] == "BGP":
                info = (m["info"] or "").split(None, 1)
                current = {"protocol": m["name"], "state": _state(m["state"], info[0] if info else ""),
                           "since": _since(m["since"], now), "last_error": info[1].strip() if len(info) > 1 else ""}
            continue
        if current is None:
            continue
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key == "BGP state" and value:
            current["state"] = value
        elif key == "Neighbor address":
            current["address"] = value
        elif key == "Last error":
            current["last_error"] = value
        elif key == "Routes" and (r := _ROUTES.search(line)):
            current["exported"] = current.get("exported", 0) + int(r[3])
    if current is not None:
        out.append(Session(**current))
    return out


def _state(proto_state: str, info: str) -> str:
    # The Info column holds the BGP state for a running protocol; a disabled or stopped one has none there.
    if info in ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established", "Close"):
        return info
    return proto_state.capitalize()


def _since(text: str, now: dt.datetime) -> dt.datetime | None:
    text = " ".join(text.split())
    try:
        if " " in text:
            return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)
        t = dt.time.fromisoformat(text)
    except ValueError:
        return None
    now = now.astimezone(dt.timezone.utc)
    at = dt.datetime.combine(now.date(), t, dt.timezone.utc)
    return at - dt.timedelta(days=1) if at > now + dt.timedelta(minutes=1) else at
