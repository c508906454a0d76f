"""A steady HTTP client for failover measurements: one GET every --interval, one JSON line each.

Runs inside lbctl-client. Each request uses a fresh connection (like a new user would), and records
time.monotonic(), which is system-wide, so the launcher can line results up with what it did when.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from dataclasses import asdict, dataclass


@dataclass
class Probe:
    t: float  # monotonic seconds when the request started
    ok: bool
    node: str  # reply body, or the error
    ms: float


def get(ip: str, port: int, timeout: float) -> tuple[bool, str]:
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status == 200, who(resp.read().decode(errors="replace").strip())
    except OSError as exc:
        return False, type(exc).__name__
    finally:
        conn.close()


def who(body: str) -> str:
    """The node that answered: the lab's backend answers JSON naming its node and pod (a plain body is kept)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    return str(doc.get("node", body)) if isinstance(doc, dict) else body


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="lbctl-lab-prober", description=__doc__)
    p.add_argument("ip")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=0.25)
    args = p.parse_args(argv)
    end = time.monotonic() + args.duration
    while (start := time.monotonic()) < end:
        ok, node = get(args.ip, args.port, args.timeout)
        probe = Probe(start, ok, node, round((time.monotonic() - start) * 1000, 2))
        sys.stdout.write(json.dumps(asdict(probe)) + "\n")
        sys.stdout.flush()
        time.sleep(max(0.0, args.interval - (time.monotonic() - start)))


def read_probes(text: str) -> list[Probe]:
    return [Probe(**json.loads(line)) for line in text.splitlines() if line.strip()]


@dataclass
class Failover:
    before: str | None  # node answering before `t_break`
    after: str | None  # first other node answering after it
    switch_s: float | None  # t_break -> first reply from `after`
    gap_s: float  # longest stretch without any successful reply
    failures: int
    total: int


def analyse(probes: list[Probe], t_break: float) -> Failover:
    before = next((p.node for p in reversed(probes) if p.ok and p.t < t_break), None)
    first_new = next((p for p in probes if p.ok and p.t >= t_break and p.node != before), None)
    gap, last_ok = 0.0, None
    for p in probes:
        if p.ok:
            if last_ok is not None:
                gap = max(gap, p.t - last_ok)
            last_ok = p.t
    return Failover(before, first_new.node if first_new else None,
                    first_new.t - t_break if first_new else None, gap,
                    sum(not p.ok for p in probes), len(probes))


if __name__ == "__main__":
    main()
