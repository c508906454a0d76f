"""Bug 5: one Service or EndpointSlice event must cost the speaker its own Service's IPs, not a rebuild of
every IP's state (which looks up the pool of every IP: counted here). A stub informer feeds KubeState
exactly as the watches do; after each event the speaker reads the intents, as each reconcile does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lbctl.core.announce import ClusterModel
from lbctl.kube.resources import IPPOOLS, NODES, SERVICES
from lbctl.speaker.state import SLICES_V1, KubeState

from .test_speaker_model import eps, node, pool, svc

N = 2_000


class StubInformer:
    def __init__(self, events: dict[str, list[tuple[str, Any]]]) -> None:
        self.events = events

    async def informer(self, path: str) -> AsyncIterator[tuple[str, Any]]:
        for event in self.events.get(path, []):
            yield event


def run_watches(state: KubeState) -> None:
    async def all_of_them() -> None:
        await asyncio.gather(state._watch("Node", NODES), state._watch("IPPool", IPPOOLS),
                             state._watch("Service", SERVICES), state._watch("EndpointSlice", SLICES_V1))
    asyncio.run(all_of_them())


def test_an_event_for_one_service_looks_up_only_its_own_ips(monkeypatch: pytest.MonkeyPatch) -> None:
    services = [svc(f"s{i}", [f"198.18.{i >> 8}.{i & 255}"]) for i in range(N)]
    stub = StubInformer({NODES: [("SYNC", [node("n0"), node("n1")])],
                         IPPOOLS: [("SYNC", [pool("p", ["198.18.0.0/16"])])],
                         SERVICES: [("SYNC", services)],
                         SLICES_V1: [("SYNC", [eps(f"s{i}", ["n0"]) for i in range(N)])]})
    state = KubeState(stub, None, lambda: None)  # type: ignore[arg-type]
    run_watches(state)
    assert state.synced and len(state.intents()) == N

    lookups = []
    real = ClusterModel.pool_for
    monkeypatch.setattr(ClusterModel, "pool_for", lambda self, ip: (lookups.append(ip), real(self, ip))[1])
    state.on_change = lambda: state.intents()  # what the speaker's next reconcile reads
    churn: list[tuple[str, Any]] = []
    for i in range(0, 40, 2):
        changed = svc(f"s{i}", [f"198.18.0.{i}"])
        changed["metadata"]["labels"] = {"churn": str(i)}
        churn.append(("MODIFIED", changed))
    stub.events = {SERVICES: churn, SLICES_V1: [("MODIFIED", eps(f"s{i}", ["n1"])) for i in range(1, 40, 2)]}
    run_watches(state)
    assert len(set(lookups)) <= 40, f"{len(lookups)} pool lookups over {len(set(lookups))} IPs for 40 events"
    assert state.intents() == state.model.intents(None)
