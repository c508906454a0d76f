"""What a client saw during a roll: the connection prober's attempts (lbctl.lab.connprobe), their JSON
document, and per-target figures (failed connections, failure kinds, longest gap, who answered).

Pure: the prober encodes with `encode`, readers decode with `decode`, so the format lives in one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lbctl.tables import table

FORMAT = 1
FIELDS = ["target", "t", "outcome", "ms", "body"]
OK = "ok"


class FormatError(ValueError):
    pass


@dataclass(frozen=True)
class Attempt:
    target: str  # "ip:port" ("[ip6]:port")
    t: float  # CLOCK_MONOTONIC seconds when the connect started
    outcome: str  # ok, refused, reset, timeout, bad_answer, or an errno name (EHOSTUNREACH, ...)
    ms: float  # connect start -> answer read, failure seen, or timeout
    body: str | None = None  # ok: the body's first line (the backend's name); bad_answer: what was wrong

    @property
    def ok(self) -> bool:
        return self.outcome == OK


@dataclass
class Run:
    """One prober run: its settings, when it ran, and every attempt."""
    targets: list[str]
    interval_s: float
    timeout_s: float
    started: float
    stopped: float
    stopped_by: str  # duration, signal, eof
    late_ticks: int  # ticks the prober started late by more than one interval (it was starved of CPU)
    attempts: list[Attempt] = field(default_factory=list)


def encode(run: Run) -> dict[str, Any]:
    """The JSON document: attempts as rows [target index, t, outcome, ms, body] to keep it small."""
    index = {t: i for i, t in enumerate(run.targets)}
    return {"format": FORMAT, "targets": run.targets, "interval_s": run.interval_s, "timeout_s": run.timeout_s,
            "started": round(run.started, 6), "stopped": round(run.stopped, 6), "stopped_by": run.stopped_by,
            "late_ticks": run.late_ticks, "fields": FIELDS,
            "attempts": [[index[a.target], round(a.t, 6), a.outcome, round(a.ms, 3), a.body] for a in run.attempts]}


def decode(doc: Any) -> Run:
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise FormatError(f"not a connprobe document (format {FORMAT})")
    try:
        targets = [str(t) for t in doc["targets"]]
        attempts = [Attempt(targets[int(i)], float(t), str(outcome), float(ms), None if body is None else str(body))
                    for i, t, outcome, ms, body in doc["attempts"]]
        return Run(targets, float(doc["interval_s"]), float(doc["timeout_s"]), float(doc["started"]),
                   float(doc["stopped"]), str(doc["stopped_by"]), int(doc["late_ticks"]), attempts)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise FormatError(f"bad connprobe document: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class TargetSummary:
    target: str
    attempts: int
    failed: int
    failures: dict[str, int]  # outcome -> count
    longest_gap_ms: float  # longest stretch without a successful attempt (see summarise)
    backends: dict[str, int]  # body first line of ok attempts -> count


def summarise(attempts: Iterable[Attempt], targets: Sequence[str] = (), start: float | None = None,
              stop: float | None = None) -> list[TargetSummary]:
    """One summary per target (`targets` first, in order, then any other target seen, sorted).

    The longest gap is the longest time between the starts of successive successful attempts, with the
    window's edges (`start`/`stop`, default the first and last attempt of any target) counted as edges too:
    a target that fails from the start, or never recovers, shows the outage, and one that never answers
    shows the whole window. Attempts may come in any order.
    """
    ordered = sorted(attempts, key=lambda a: a.t)
    lo = start if start is not None else (ordered[0].t if ordered else 0.0)
    hi = stop if stop is not None else (ordered[-1].t if ordered else 0.0)
    names = list(dict.fromkeys(targets)) + sorted({a.target for a in ordered} - set(targets))
    out = []
    for name in names:
        mine = [a for a in ordered if a.target == name]
        oks = [a.t for a in mine if a.ok]
        edges = [lo, *oks, hi]
        gap = max((b - a for a, b in zip(edges, edges[1:])), default=0.0)
        out.append(TargetSummary(name, len(mine), len(mine) - len(oks),
                                 dict(Counter(a.outcome for a in mine if not a.ok).most_common()),
                                 round(max(gap, 0.0) * 1000, 1),
                                 dict(Counter(a.body or "" for a in mine if a.ok).most_common())))
    return out


def overall(summaries: Sequence[TargetSummary]) -> TargetSummary:
    failures: Counter[str] = Counter()
    backends: Counter[str] = Counter()
    for s in summaries:
        failures.update(s.failures)
        backends.update(s.backends)
    return TargetSummary("ALL", sum(s.attempts for s in summaries), sum(s.failed for s in summaries),
                         dict(failures.most_common()), max((s.longest_gap_ms for s in summaries), default=0.0),
                         dict(backends.most_common()))


def _counts(counts: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in counts.items()) or "-"


def render(summaries: Sequence[TargetSummary], labels: Mapping[str, str] | None = None) -> str:
    """The per-target table plus the overall line; `labels` names targets (e.g. the Service or its owner)."""
    labels = labels or {}
    rows = [[labels.get(s.target, s.target), str(s.attempts), str(s.failed), _counts(s.failures),
             f"{s.longest_gap_ms:.0f}", _counts(s.backends)] for s in [*summaries, overall(summaries)]]
    return table(["TARGET", "ATTEMPTS", "FAILED", "FAILURES", "LONGEST GAP (ms)", "ANSWERED BY"], rows)
