"""Events are aggregated and rate-limited as client-go's EventCorrelator does (lbctl/core/events.py decides,
lbctl/kube/events.py writes): a flapping condition costs a bounded number of API writes."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from lbctl.core.events import Correlator
from lbctl.kube.events import EventRecorder

POOL = {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "name": "p", "namespace": "default", "uid": "u"}


class CountingKube:
    """Records every write, as the API server would see them (the verbs EventRecorder uses)."""

    def __init__(self) -> None:
        self.creates: list[dict[str, Any]] = []
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self._names = itertools.count()

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)  # a write takes a moment: emits arrive while it is on its way
        self.creates.append(body)
        return {"metadata": {"name": f"p.{next(self._names)}"}}

    async def patch(self, path: str, body: dict[str, Any], content_type: str = "") -> dict[str, Any]:
        await asyncio.sleep(0)
        self.patches.append((path.rsplit("/", 1)[1], body))
        return {}


def test_a_flapping_condition_does_not_flood_the_api_server() -> None:
    kube = CountingKube()

    async def main() -> None:
        rec = EventRecorder(kube, "test")  # type: ignore[arg-type]
        for i in range(1000):  # Ready / Overlap / Ready / ... on one pool
            if i % 2:
                rec.emit(POOL, "Warning", "Overlap", "198.18.0.0/30 overlaps IPPool q")
            else:
                rec.emit(POOL, "Normal", "Valid", "all ranges usable")
            if i % 10 == 0:
                await asyncio.sleep(0)
        await rec.drain()

    asyncio.run(main())
    writes = len(kube.creates) + len(kube.patches)
    print(f"\n1000 emits of a flapping pair -> {len(kube.creates)} creates + {len(kube.patches)} patches")
    assert len(kube.creates) == 2  # one Event per (reason, message)
    assert writes <= 25  # the object's burst; the rest waits for tokens (one per 5 minutes)


def test_repeats_raise_the_count_of_one_event() -> None:
    kube = CountingKube()

    async def main() -> None:
        rec = EventRecorder(kube, "test")  # type: ignore[arg-type]
        for _ in range(3):
            rec.emit(POOL, "Warning", "Overlap", "m")
            await rec.drain()
        for _ in range(4):  # back to back: the first patch goes, the three after it ride on one more patch
            rec.emit(POOL, "Warning", "Overlap", "m")
        await rec.drain()

    asyncio.run(main())
    assert len(kube.creates) == 1 and kube.creates[0]["count"] == 1
    assert [b["count"] for _, b in kube.patches] == [2, 3, 4, 7]
    assert {name for name, _ in kube.patches} == {"p.0"}


def test_token_bucket_refills_one_write_per_five_minutes_per_object() -> None:
    c = Correlator()
    now = 0.0
    written = [c.emit("o", "Warning", "R", f"m{i}", now) for i in range(30)]
    assert sum(w is not None for w in written) == 25 and c.dropped == 5
    assert c.emit("other", "Warning", "R", "m", now) is not None  # per object
    assert c.emit("o", "Warning", "R", "late", 299.0) is None
    assert c.emit("o", "Warning", "R", "later", 300.0) is not None


def test_a_repeat_after_the_window_is_a_new_event_and_a_failed_create_is_retried() -> None:
    c = Correlator()
    w = c.emit("o", "Normal", "R", "m", 0.0)
    assert w is not None and w.name is None
    assert c.done(w, "ev1", 0.1) is None
    again = c.emit("o", "Normal", "R", "m", 10.0)
    assert again is not None and again.name == "ev1" and again.count == 2
    assert c.done(again, "ev1", 10.1) is None
    fresh = c.emit("o", "Normal", "R", "m", 10.0 + 601)
    assert fresh is not None and fresh.name is None and fresh.count == 1
    assert c.done(fresh, None, 700.0) is None  # failed: forgotten, the next emit creates again
    retry = c.emit("o", "Normal", "R", "m", 700.0)
    assert retry is not None and retry.name is None


def test_tables_are_bounded() -> None:
    c = Correlator(max_keys=100)
    for i in range(1000):
        w = c.emit(f"o{i}", "Normal", "R", "m", float(i))
        assert w is not None
        c.done(w, f"e{i}", float(i))
    assert len(c._events) <= 100 and len(c._buckets) <= 100
