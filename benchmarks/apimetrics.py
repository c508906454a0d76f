"""What the API server and etcd say about a phase of a benchmark: scraped from their /metrics before and after.

Request latency by verb and resource (the API server's own histogram: time inside the server, not on the
wire), etcd request latency as the API server sees it, watch events sent, Go GC cycles and bytes allocated.
The difference of two scrapes covers exactly the phase between them. Histogram quantiles are interpolated
within the server's buckets (0.05 s wide at the bottom), so they are coarse; the mean is exact.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "apiserver_request_duration_seconds"
ETCD = "etcd_request_duration_seconds"


@dataclass
class Histogram:
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    total: float = 0.0
    count: float = 0.0

    def minus(self, other: Histogram | None) -> Histogram:
        if other is None:
            return self
        return Histogram({le: n - other.buckets.get(le, 0.0) for le, n in self.buckets.items()},
                         self.total - other.total, self.count - other.count)

    def quantile(self, q: float) -> float:
        """Like PromQL histogram_quantile: linear within the bucket the rank falls in."""
        if self.count <= 0:
            return float("nan")
        rank, lower, below = q * self.count, 0.0, 0.0
        for le in sorted(self.buckets):
            n = self.buckets[le]
            if n >= rank:
                if le == float("inf"):
                    return lower
                return lower + (le - lower) * (rank - below) / max(n - below, 1e-9)
            lower, below = le, n
        return lower

    def above(self, seconds: float) -> float:
        """How many observations exceeded `seconds` (a bucket bound)."""
        return self.count - self.buckets.get(seconds, self.count)


@dataclass
class Scrape:
    histograms: dict[tuple[str, tuple[str, ...]], Histogram] = field(default_factory=dict)
    values: dict[tuple[str, tuple[str, ...]], float] = field(default_factory=dict)


KEYS = {REQUESTS: ("verb", "resource", "subresource"), ETCD: ("operation", "type")}
VALUES = {"apiserver_watch_events_total": ("kind",), "apiserver_watch_events_sizes_sum": ("kind",),
          "go_gc_duration_seconds_count": (), "go_gc_duration_seconds_sum": (), "go_memstats_alloc_bytes_total": (),
          "go_memstats_heap_inuse_bytes": (), "process_cpu_seconds_total": (),
          "apiserver_registered_watchers": ("kind",)}


def parse(text: str) -> Scrape:
    out = Scrape()
    for family in text_string_to_metric_families(text):
        keys = KEYS.get(family.name)
        for s in family.samples:
            if keys is not None:
                key = (family.name, tuple(s.labels.get(k, "") for k in keys))
                h = out.histograms.setdefault(key, Histogram())
                if s.name.endswith("_bucket"):
                    h.buckets[float(s.labels["le"])] = s.value
                elif s.name.endswith("_sum"):
                    h.total = s.value
                elif s.name.endswith("_count"):
                    h.count = s.value
            elif s.name in VALUES:
                key = (s.name, tuple(s.labels.get(k, "") for k in VALUES[s.name]))
                out.values[key] = out.values.get(key, 0.0) + s.value
    return out


async def scrape(kube: Any) -> Scrape:
    status, text = await kube.send("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"API server /metrics answered {status}")
    return parse(text)


def report(label: str, before: Scrape, after: Scrape, seconds: float) -> list[str]:
    """Lines saying what the API server did between two scrapes `seconds` apart."""
    lines: list[str] = []
    rows, watches = [], []
    for key, h in after.histograms.items():
        if key[0] != REQUESTS or key[1][0] == "CONNECT":
            continue
        d = h.minus(before.histograms.get(key))
        verb, resource, sub = key[1]
        if d.count >= 1 and verb != "WATCH":
            rows.append((d.count, f"{verb} {resource}{'/' + sub if sub else ''}", d))
        elif d.count >= 1:
            watches.append(f"{resource} {d.count:.0f}")
    rows.sort(key=lambda r: -r[0])
    lines.append(f"{label:9} API server requests by verb and resource (server-side latency, {seconds:.0f} s):")
    for count, name, d in rows[:14]:
        lines.append(f"            {name:32} {count / seconds:6.1f}/s  mean {1000 * d.total / d.count:6.1f} ms  "
                     f"p99 ~{1000 * d.quantile(.99):6.0f} ms  > 0.2 s: {d.above(0.2):.0f}")
    lines.append("          watches ended (timeout or cut): " + (", ".join(watches) or "none"))
    big = [f"{name} x{count:.0f} (mean {1000 * d.total / d.count:.0f} ms)" for count, name, d in rows
           if name.startswith("LIST ") and d.total / d.count > 0.1]
    if big:  # whoever sent them, they are not this phase's steady load: say so beside its figures
        lines.append("          note: slow full LISTs fell in this phase: " + ", ".join(big) + "; a LIST of every "
                     "Service is the API server's own ClusterIP/NodePort repair (every 3 min, retried on conflict), "
                     "and its garbage brings GC cycles closer together")
    etcd: dict[str, Histogram] = defaultdict(lambda: Histogram())
    for key, h in after.histograms.items():
        if key[0] == ETCD:
            d = h.minus(before.histograms.get(key))
            agg = etcd[key[1][0]]
            agg.count += d.count
            agg.total += d.total
            for le, n in d.buckets.items():
                agg.buckets[le] = agg.buckets.get(le, 0.0) + n
    lines.append("          etcd as the API server sees it: " + ", ".join(
        f"{op} {d.count / seconds:.0f}/s mean {1000 * d.total / d.count:.1f} ms p99 ~{1000 * d.quantile(.99):.0f} ms"
        for op, d in sorted(etcd.items(), key=lambda kv: -kv[1].count) if d.count))

    def delta(name: str, labels: tuple[str, ...] = ()) -> float:
        return after.values.get((name, labels), 0.0) - before.values.get((name, labels), 0.0)

    events = sorted(((k[1][0], v - before.values.get(k, 0.0)) for k, v in after.values.items()
                     if k[0] == "apiserver_watch_events_total"), key=lambda kv: -kv[1])
    lines.append("          watch events sent: " + ", ".join(
        f"{kind} {n / seconds:.0f}/s ({delta('apiserver_watch_events_sizes_sum', (kind,)) / max(n, 1):.0f} B each)"
        for kind, n in events[:6] if n))
    gcs = delta("go_gc_duration_seconds_count")
    lines.append(f"          Go: {gcs:.0f} GC cycles ({seconds / gcs if gcs else float('inf'):.1f} s apart), "
                 f"{delta('go_memstats_alloc_bytes_total') / seconds / 2**20:.1f} MiB/s allocated, heap in use "
                 f"{after.values.get(('go_memstats_heap_inuse_bytes', ()), 0) / 2**20:.0f} MiB; API server CPU "
                 f"{100 * delta('process_cpu_seconds_total') / seconds:.0f} %")
    return lines


GC_LINE = re.compile(r"^gc (\d+) @([\d.]+)s \d+%: ([\d.+]+) ms clock, .* (\d+)->(\d+)->(\d+) MB")


def gc_cycles(log: Path) -> list[tuple[float, float, int, int]]:
    """From a Go process's log with GODEBUG=gctrace=1: (seconds since its start, wall ms of the cycle, heap MB
    at its start, live heap MB after it) for every GC cycle."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if m := GC_LINE.match(line):
            clock = sum(float(x) for x in m.group(3).split("+"))
            out.append((float(m.group(2)), clock, int(m.group(4)), int(m.group(6))))
    return out
