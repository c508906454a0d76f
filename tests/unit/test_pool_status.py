"""IPPool status writes: count-only changes are rate-limited per pool, a Ready change goes out at once."""

from __future__ import annotations

import asyncio
from typing import Any

from lbctl.controller import pool_status
from lbctl.controller.metrics import Metrics
from lbctl.controller.pool_status import PoolStatusWriter
from lbctl.core.allocator import Allocator
from lbctl.core.pools import parse_pool
from lbctl.core.service import read_service
from lbctl.kube.events import EventRecorder


class RecordingKube:
    def __init__(self) -> None:
        self.writes: list[tuple[str, dict[str, Any]]] = []

    async def patch(self, path: str, body: Any, content_type: str = "") -> dict[str, Any]:
        self.writes.append((path.split("/")[-2], body["status"]))
        return {}

    async def create(self, path: str, body: Any) -> dict[str, Any]:
        return {}


def svc(name: str) -> Any:
    return read_service({"metadata": {"namespace": "ns", "name": name, "uid": name},
                         "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv4"], "ports": [{"port": 80}]}})


def test_counts_are_written_at_most_every_interval_but_a_ready_change_at_once(monkeypatch: Any) -> None:
    monkeypatch.setattr(pool_status, "DEBOUNCE", 0.01)
    monkeypatch.setattr(pool_status, "COUNTS_INTERVAL", 0.3)
    kube = RecordingKube()
    alloc = Allocator()
    alloc.set_pools([parse_pool("p", {"addresses": ["198.18.0.0/29"]}, "1"),
                     parse_pool("q", {"addresses": ["198.18.1.0/29"]}, "2")])

    async def main() -> None:
        writer = PoolStatusWriter(kube, EventRecorder(kube, "test"), Metrics())  # type: ignore[arg-type]
        writer.update(alloc)
        await asyncio.sleep(0.05)
        assert sorted(name for name, _ in kube.writes) == ["p", "q"]  # first status of each: at once
        kube.writes.clear()
        for name in ("a", "b", "c"):  # a steady churn of count changes on p
            alloc.sync(svc(name), {})
            writer.update(alloc)
            await asyncio.sleep(0.05)
        assert kube.writes == []  # p's counts were written a moment ago: deferred
        # q turns Overlap (a Ready change) while p's counts wait: q goes out within the debounce.
        alloc.set_pools([parse_pool("p", {"addresses": ["198.18.0.0/29"]}, "1"),
                         parse_pool("q", {"addresses": ["198.18.0.0/30"]}, "2")])
        writer.update(alloc)
        await asyncio.sleep(0.05)
        assert [name for name, _ in kube.writes] == ["q"]
        assert kube.writes[0][1]["conditions"][0]["reason"] == "Overlap"
        await asyncio.sleep(0.4)  # p's latest counts, once, when due
        assert [(name, st["assigned"]) for name, st in kube.writes[1:]] == [("p", 3)]
        await asyncio.sleep(0.4)
        assert len(kube.writes) == 2  # nothing more: nothing changed
    asyncio.run(main())


def test_a_restarted_writer_rewrites_no_status_that_is_still_right() -> None:
    alloc = Allocator()
    alloc.set_pools([parse_pool("p", {"addresses": ["198.18.0.0/29"]}, "1"),
                     parse_pool("q", {"addresses": ["198.18.1.0/29"]}, "2")])
    alloc.sync(svc("a"), {})
    first, second = RecordingKube(), RecordingKube()

    async def main() -> None:
        await PoolStatusWriter(first, EventRecorder(first, "t"), Metrics()).flush(alloc)  # type: ignore[arg-type]
        # What the server keeps (a merge patch drops None fields), listed by the restarted controller.
        stored = {name: {k: v for k, v in st.items() if v is not None} for name, st in first.writes}
        stored["q"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T00:00:00Z"
        stored["q"]["assigned"] = 7  # stale counts: rewritten, with the condition's time kept
        restarted = PoolStatusWriter(second, EventRecorder(second, "t"), Metrics())  # type: ignore[arg-type]
        restarted.observed(stored)
        await restarted.flush(alloc)
    asyncio.run(main())
    assert [name for name, _ in second.writes] == ["q"]
    assert second.writes[0][1]["assigned"] == 0
    assert second.writes[0][1]["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_counts_still_deferred_are_written_when_stopping(monkeypatch: Any) -> None:
    monkeypatch.setattr(pool_status, "DEBOUNCE", 0.01)
    kube = RecordingKube()
    alloc = Allocator()
    alloc.set_pools([parse_pool("p", {"addresses": ["198.18.0.0/29"]}, "1")])

    async def main() -> None:
        writer = PoolStatusWriter(kube, EventRecorder(kube, "test"), Metrics())  # type: ignore[arg-type]
        writer.update(alloc)
        await asyncio.sleep(0.05)
        alloc.sync(svc("a"), {})
        writer.update(alloc)
        await asyncio.sleep(0.05)
        assert [st["assigned"] for _, st in kube.writes] == [0]  # deferred (COUNTS_INTERVAL is 5 s)
        await writer.drain()
        assert [st["assigned"] for _, st in kube.writes] == [0, 1]
    asyncio.run(main())


def test_count_writes_are_spread_over_rounds_not_burst(monkeypatch: Any) -> None:
    monkeypatch.setattr(pool_status, "DEBOUNCE", 0.02)
    monkeypatch.setattr(pool_status, "COUNTS_INTERVAL", 0.0)
    monkeypatch.setattr(pool_status, "COUNTS_PER_ROUND", 2)
    kube = RecordingKube()
    alloc = Allocator()
    names = [f"p{i}" for i in range(5)]
    alloc.set_pools([parse_pool(n, {"addresses": [f"198.18.{i}.0/29"], "serviceAllocation": {"namespaces": [n]}},
                                str(i)) for i, n in enumerate(names)])

    async def main() -> None:
        writer = PoolStatusWriter(kube, EventRecorder(kube, "test"), Metrics())  # type: ignore[arg-type]
        assert await writer.flush(alloc) is None and len(kube.writes) == 5  # first writes: no budget
        kube.writes.clear()
        for n in names:  # every pool's counts change at once
            sync_in(alloc, n)
        rounds = []
        for _ in range(3):
            rounds.append((await writer.flush(alloc), len(kube.writes)))
        d = pool_status.DEBOUNCE
        assert rounds == [(d, 2), (d, 4), (None, 5)]  # 2 per round, the rest due next round
        assert sorted(n for n, _ in kube.writes) == names  # each pool once
    asyncio.run(main())


def sync_in(alloc: Allocator, ns: str) -> None:
    alloc.sync(read_service({"metadata": {"namespace": ns, "name": "s", "uid": ns},
                             "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv4"], "ports": [{"port": 80}]}}), {})


class SlowKube(RecordingKube):
    """A status write that takes a while, and fails for a pool deleted meanwhile (404 in a real cluster)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def patch(self, path: str, body: Any, content_type: str = "") -> dict[str, Any]:
        await self.gate.wait()
        return await super().patch(path, body, content_type)


def test_a_pool_deleted_while_a_write_is_in_flight_is_dropped(monkeypatch: Any) -> None:
    """CI saw `lbctl_pool_ready{pool=...}` outlive its pool: the change came while a flush was writing, and the
    flush task, seeing nothing deferred, ended without another round."""
    monkeypatch.setattr(pool_status, "DEBOUNCE", 0.01)
    kube = SlowKube()
    alloc = Allocator()
    alloc.set_pools([parse_pool("p", {"addresses": ["198.18.0.0/29"]}, "1")])
    metrics = Metrics()

    def gauged() -> set[str]:
        return {s.labels["pool"] for m in metrics.pool_ready.collect() for s in m.samples}

    async def main() -> None:
        writer = PoolStatusWriter(kube, EventRecorder(kube, "test"), metrics)  # type: ignore[arg-type]
        writer.update(alloc)
        await asyncio.sleep(0.05)  # the first write of p is in flight, held at the gate
        assert gauged() == {"p"}
        alloc.set_pools([])  # p deleted meanwhile
        writer.update(alloc)
        kube.gate.set()
        await asyncio.sleep(0.1)
        assert gauged() == set()

    asyncio.run(main())
