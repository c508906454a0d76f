"""One watch-health model for the controller and the speaker (lbctl/kube/watch_health.py)."""

from __future__ import annotations

import asyncio

from lbctl.kube.resources import SERVICES
from lbctl.kube.watch_health import WatchHealth
from lbctl.speaker.state import KubeState

from .test_speaker_churn_cost import StubInformer
from .test_speaker_model import svc


def test_first_failure_of_an_outage_counts_and_recovery_says_how_long() -> None:
    now = [100.0]
    health = WatchHealth(lambda: now[0])
    assert health.failed("Service") and not health.failed("Service")  # log once per outage
    now[0] = 103.0
    assert health.failed("Node")
    now[0] = 105.0
    assert health.worst() == 5.0
    assert health.recovered("Service") == 5.0 and health.recovered("Service") is None
    assert health.worst() == 2.0
    health.recovered("Node")
    assert health.worst() == 0.0


def test_the_speaker_watches_report_through_it() -> None:
    stub = StubInformer({SERVICES: [("ERROR", OSError("refused")), ("ERROR", OSError("refused"))]})
    state = KubeState(stub, None, lambda: None)  # type: ignore[arg-type]
    asyncio.run(state._watch("Service", SERVICES))
    assert set(state.health.failing_since) == {"Service"}
    stub.events = {SERVICES: [("SYNC", [svc("web", ["198.18.0.1"])])]}
    asyncio.run(state._watch("Service", SERVICES))
    assert state.health.failing_since == {} and "default/web" in state.model.services
