"""Bug 5, the speaker's side: a reconcile for an event on a Service this node does not own (and no change of
live peers or interfaces) must cost what changed, not a pass over every owned IP (announcer, status body,
takeover Events). The real Speaker.reconcile runs on a real KubeState; only the raw sockets, the heartbeat
thread's live set and the API writers are stubbed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from lbctl.core.heartbeat import Keyring
from lbctl.core.netifs import Interface
from lbctl.speaker import main as speaker_main
from lbctl.speaker.announcer import Announcer
from lbctl.speaker.cli import parse_args
from lbctl.speaker.main import Speaker
from lbctl.speaker.metrics import Metrics
from lbctl.speaker.state import KubeState
from lbctl.speaker.status import StatusWriter, TakeoverEvents

from .test_speaker_model import eps, node, pool, svc

NODE = "n0"
MINE, OTHERS = 20, 500
ETH0 = Interface("eth0", 2, "02:00:00:00:00:01", frozenset({"UP", "LOWER_UP"}), "ether")


class FakeResponder:
    """Stands in for ArpResponder/NdpResponder (raw sockets): keeps the owned set."""

    def __init__(self, name: str, index: int, mac: bytes, metrics: Metrics, foreign: Callable) -> None:
        self.index, self.mac, self.owned, self.yielding = index, mac, frozenset(), False

    def set_owned(self, owned: frozenset[bytes]) -> None:
        self.owned = owned

    def gratuitous(self, packed: bytes) -> bool:
        return True

    unsolicited = gratuitous

    def close(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, str, str, str]] = []

    def emit(self, obj: dict, kind: str, reason: str, message: str) -> None:
        self.emitted.append((f"{obj['namespace']}/{obj['name']}", kind, reason, message))


def cluster_objects(n_mine: int = MINE, n_others: int = OTHERS) -> dict[str, list[Any]]:
    """As benchmarks/speaker_churn.py: `mine` is announced by n0 (the only live speaker); `others` only by
    Nodes labelled bench-role=other, which never beacon, so nobody announces them. One Service is withheld."""
    mine = [svc(f"m{i}", [f"198.18.64.{i}"]) for i in range(n_mine)]
    others = [svc(f"o{i}", [f"198.18.{128 + (i >> 8)}.{i & 255}"]) for i in range(n_others)]
    return {"Node": [node(NODE), node("n1", {"bench-role": "other"})],
            "IPPool": [pool("mine", ["198.18.64.0/24"], {"interfaces": ["eth0"]}),
                       pool("others", ["198.18.128.0/17"], {"interfaces": ["eth0"],
                                                           "nodeSelector": {"matchLabels": {"bench-role": "other"}}})],
            "Service": [*mine, *others, svc("lost", ["198.19.0.1"])],
            "EndpointSlice": [eps(s["metadata"]["name"], [NODE]) for s in mine + others]}


@contextmanager
def speaker(monkeypatch: pytest.MonkeyPatch, cls: type[Speaker] = Speaker,
            objects: dict[str, list[Any]] | None = None) -> Iterator[tuple[Speaker, Recorder]]:
    """A Speaker fed by a real KubeState (events go in through state.index.apply); must run on a loop."""
    monkeypatch.setattr("lbctl.speaker.announcer.ArpResponder", FakeResponder)
    monkeypatch.setattr("lbctl.speaker.announcer.NdpResponder", FakeResponder)
    sp = cls(parse_args(["--node-name", NODE, "--garp-count", "0"]), Keyring([b"k" * 32]), Metrics())
    peers = {"now": {NODE}}
    sp.heartbeats.live = lambda now: set(peers["now"])  # type: ignore[method-assign]
    sp.heartbeats.live_on = lambda now: {"eth0": set(peers["now"])}  # type: ignore[method-assign]
    sp.peers = peers  # type: ignore[attr-defined]  # the test changes the live set through this
    sp.interfaces.candidates = [ETH0]
    state = KubeState(None, None, sp.dirty.set)  # type: ignore[arg-type]
    for kind, objs in (objects or cluster_objects()).items():
        state.index.apply(kind, "SYNC", objs)
    sp.source = state
    recorder = Recorder()
    sp.events = TakeoverEvents(recorder, NODE)  # type: ignore[arg-type]
    sp.withheld.recorder = recorder  # type: ignore[assignment]
    sp.status = StatusWriter(None, NODE)  # type: ignore[arg-type]  # update() only: never flushed here
    try:
        yield sp, recorder
    finally:
        sp.announcer.close()
        sp.heartbeats.close()


def churn(i: int) -> list[tuple[str, str, Any]]:
    """What the benchmark sends: a label change on one `others` Service, a readiness flip on another's slice."""
    changed = svc(f"o{i % OTHERS}", [f"198.18.{128 + ((i % OTHERS) >> 8)}.{i % OTHERS & 255}"])
    changed["metadata"]["labels"] = {"churn": str(i)}
    j = (i + 1) % OTHERS
    return [("Service", "MODIFIED", changed), ("EndpointSlice", "MODIFIED", eps(f"o{j}", [NODE] if i % 2 else []))]


def test_churn_on_services_of_other_nodes_skips_the_per_owned_ip_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    work = {"placed": 0, "status_bodies": 0, "event_passes": 0}
    real_apply, real_body, real_events = Announcer.apply, speaker_main.status_body, TakeoverEvents.update

    def apply(self: Announcer, mine: Any) -> Any:
        work["placed"] += len(mine)
        return real_apply(self, mine)

    def body(*args: Any, **kw: Any) -> Any:
        work["status_bodies"] += 1
        return real_body(*args, **kw)

    def events(self: TakeoverEvents, mine: Any, announced: Any) -> None:
        work["event_passes"] += 1
        real_events(self, mine, announced)

    async def scenario() -> None:
        with speaker(monkeypatch) as (sp, recorder):
            sp.reconcile(time.monotonic())
            assert len(sp.announcer.owned_ips()) == MINE and len(recorder.emitted) == MINE + 1  # + NotAnnounced
            monkeypatch.setattr(Announcer, "apply", apply)
            monkeypatch.setattr(speaker_main, "status_body", body)
            monkeypatch.setattr(TakeoverEvents, "update", events)
            assert sp.source is not None
            for i in range(200):
                for kind, event, obj in churn(i):
                    sp.source.index.apply(kind, event, obj)  # type: ignore[union-attr]
                sp.reconcile(time.monotonic())
            assert len(sp.announcer.owned_ips()) == MINE and len(recorder.emitted) == MINE + 1

    asyncio.run(scenario())
    assert work == {"placed": 0, "status_bodies": 0, "event_passes": 0}, f"200 foreign events cost {work}"
