"""A connection dropped mid-request (a proxy in front of a restarting API server) never kills a daemon task.

A real loopback server breaks each request (tests/faults.py); the real client talks to it. Each mode raises a
different aiohttp exception (ServerDisconnectedError, ClientPayloadError, ClientOSError, a timeout); the client
turns all of them into one `Unreachable`, and the leader loop, the IPPool status writer and Events survive.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from lbctl.controller.leader import LeaderElector
from lbctl.controller.metrics import Metrics
from lbctl.controller.pool_status import PoolStatusWriter
from lbctl.core.allocator import Allocator
from lbctl.core.leader import Timing
from lbctl.core.pools import parse_pool
from lbctl.kube.client import Kube
from lbctl.kube.config import KubeConfig
from lbctl.kube.events import EventRecorder
from tests.faults import FaultServer

MODES = ["disconnect", "truncate", "reset"]
FAST = Timing(lease_duration=3.0, renew_deadline=2.0, retry_period=0.05)


@pytest.mark.parametrize("mode", MODES + ["stall"])
def test_every_verb_raises_unreachable_for_a_request_that_did_not_complete(mode: str) -> None:
    from lbctl.kube.client import Unreachable

    async def main() -> None:
        async with FaultServer(mode, body={"metadata": {"name": "x"}, "padding": "y" * 200}) as srv:
            async with Kube(KubeConfig(server=srv.url), timeout=0.5) as kube:
                for call in (kube.get("/api/v1/namespaces/a/services/b"), kube.list("/api/v1/services"),
                             kube.patch("/api/v1/namespaces/a/services/b/status", {"status": {}}),
                             kube.create("/api/v1/namespaces/a/events", {}), kube.delete("/api/v1/nodes/n"),
                             kube.replace("/api/v1/nodes/n", {})):
                    with pytest.raises(Unreachable):
                        await call

    asyncio.run(main())


def test_connection_refused_is_unreachable_too() -> None:
    from lbctl.kube.client import Unreachable

    async def main() -> None:
        async with FaultServer() as srv:
            url = srv.url
        async with Kube(KubeConfig(server=url)) as kube:  # nothing listens there any more
            with pytest.raises(Unreachable):
                await kube.get("/api")

    asyncio.run(main())


@pytest.mark.parametrize("mode", MODES)
def test_leader_loop_survives_dropped_connections(mode: str) -> None:
    async def main() -> None:
        async with FaultServer(mode, body={"padding": "y" * 200}) as srv:
            async with Kube(KubeConfig(server=srv.url)) as kube:
                elector = LeaderElector(kube, "ns", "lease", "me", FAST, CollectorRegistry())
                task = asyncio.create_task(elector.run())
                async with asyncio.timeout(10):  # five attempts, each broken, or the loop died
                    while len(srv.requests) < 5 and not task.done():
                        await asyncio.sleep(0.01)
                assert not task.done(), task.exception()
                task.cancel()

    asyncio.run(main())


@pytest.mark.parametrize("mode", MODES)
def test_pool_status_writer_survives_dropped_connections(mode: str) -> None:
    alloc = Allocator()
    alloc.set_pools([parse_pool("p", {"addresses": ["198.18.0.0/29"]}, "1")])

    async def main() -> None:
        async with FaultServer(mode, body={"padding": "y" * 200}) as srv:
            async with Kube(KubeConfig(server=srv.url)) as kube:
                writer = PoolStatusWriter(kube, EventRecorder(kube, "test"), Metrics())
                assert await writer.flush(alloc, defer=False) is None  # the write failed, logged, not raised
                assert srv.requests and srv.requests[0][0] == "PATCH"

    asyncio.run(main())


@pytest.mark.parametrize("mode", MODES)
def test_event_post_survives_dropped_connections(mode: str) -> None:
    failures: list[Any] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: failures.append(ctx))
        async with FaultServer(mode, body={"padding": "y" * 200}) as srv:
            async with Kube(KubeConfig(server=srv.url)) as kube:
                events = EventRecorder(kube, "test")
                events.emit({"kind": "Service", "name": "s", "namespace": "ns"}, "Warning", "R", "m")
                tasks = list(events._tasks)
                await srv.wait_requests(1)
                await events.close()  # shutting down: not tried again
                for task in tasks:  # a task that died of the error, rather than logging it
                    assert task.exception() is None, task.exception()

    asyncio.run(main())
    assert not failures, failures


def test_a_leader_write_on_the_wire_is_abandoned_when_the_fence_runs_out() -> None:
    """Bug 3: the server stalls a write; the fence has 0.3 s left, the client's own timeout is 30 s. The write
    must end when the fence does (abandoned, counted), not 30 s later while another replica may lead."""
    from lbctl.controller.leader import FencedKube

    left = {"until": 0.0}
    counter = Counter("abandoned_total", "test", registry=CollectorRegistry())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        left["until"] = loop.time() + 0.3
        budget = lambda: max(0.0, left["until"] - loop.time())  # noqa: E731
        async with FaultServer("stall") as srv:
            async with Kube(KubeConfig(server=srv.url), timeout=30) as kube:
                fenced = FencedKube(kube, budget, counter)
                async with asyncio.timeout(5):  # far above the fence, far below the client's timeout
                    with pytest.raises(Exception) as err:
                        await fenced.patch("/api/v1/namespaces/a/services/b/status", {"status": {}})
                assert type(err.value).__name__ == "Unreachable", err.value
                assert loop.time() >= left["until"]
                assert fenced.quiet_at > float("-inf")  # it may still land: our next incarnation must wait
                assert counter._value.get() == 1

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["disconnect", "forbidden"])
def test_an_event_write_that_did_not_complete_is_tried_again(mode: str) -> None:
    # The reconciler posts each warning once: an Event lost to an API server restart left a pending Service
    # with no reason at all (the 2,000-step random run, seed 2, step 1982). client-go's recorder tries again.
    # "forbidden": a restarted API server answers 403 to every ServiceAccount until its RBAC cache is filled
    # (seed 4, step 564: the Event of a pending Service was refused so, and never written).
    async def main() -> None:
        async with FaultServer(mode, body={"metadata": {"name": "s.1"}}) as srv:
            async with Kube(KubeConfig(server=srv.url)) as kube:
                events = EventRecorder(kube, "test", retry_delays=(0.05, 0.05, 0.05))
                events.emit({"kind": "Service", "name": "s", "namespace": "ns"}, "Warning", "R", "m")
                await srv.wait_requests(2)  # the first failed; a second try came
                srv.mode = "ok"
                await srv.wait_requests(3)
                await events.drain()
                assert srv.requests == [("POST", "/api/v1/namespaces/ns/events")] * 3
                assert (events.failed, events.writes) == (2, 3)
                # Held by the server now: the next emit of the same warning patches its count.
                events.emit({"kind": "Service", "name": "s", "namespace": "ns"}, "Warning", "R", "m")
                await srv.wait_requests(4)
                await events.drain()
                assert srv.requests[-1] == ("PATCH", "/api/v1/namespaces/ns/events/s.1")

    asyncio.run(main())


def test_an_event_write_gives_up_after_its_tries() -> None:
    async def main() -> None:
        async with FaultServer("disconnect") as srv:
            async with Kube(KubeConfig(server=srv.url)) as kube:
                events = EventRecorder(kube, "test", retry_delays=(0.01, 0.01))
                events.emit({"kind": "Service", "name": "s", "namespace": "ns"}, "Warning", "R", "m")
                await srv.wait_requests(3)
                await events.drain()
                assert (len(srv.requests), events.failed) == (3, 3)

    asyncio.run(main())


def test_closing_stops_the_tries_at_once() -> None:
    async def main() -> None:
        async with FaultServer("disconnect") as srv:
            async with Kube(KubeConfig(server=srv.url)) as kube:
                events = EventRecorder(kube, "test")  # the real delays: ~95 s of tries
                events.emit({"kind": "Service", "name": "s", "namespace": "ns"}, "Warning", "R", "m")
                await srv.wait_requests(1)
                await asyncio.wait_for(events.close(), 5)  # a daemon's shutdown does not wait them out
                assert len(srv.requests) == 1

    asyncio.run(main())

