"""Objects far over aiohttp's 128 KiB line limit, as the API server accepts them, on every watch we run.

Annotations are capped at 256 KiB in total, labels are not: a ~700 KiB Service takes 200 KiB of
annotations and ~5000 labels. Its watch line used to end Kube.watch with LineTooLong, which ended the
controller's Service informer (silently) and every speaker.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from lbctl.lab.controlplane import ControlPlane
from lbctl.kube import config
from lbctl.kube.client import Kube
from tests import httpget
from tests.big_objects import big_metadata
from tests.procs import ConfinedSpeaker
from tests.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]


def big_service(lab: Any, name: str) -> dict[str, Any]:
    meta = big_metadata()
    return lab.service(name, annotations=meta["annotations"], labels=meta["labels"])


def test_the_api_server_accepts_a_700_kib_service(lab, kube):
    big_service(lab, "big")
    assert len(json.dumps(lab.svc("big"))) > 700 * 1024


def test_informer_yields_a_700_kib_service_and_goes_on(lab, control_plane: ControlPlane):
    cfg = config.from_kubeconfig(control_plane.kubeconfig("admin"))
    path = f"/api/v1/namespaces/{lab.ns}/services"

    async def main() -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        async with Kube(cfg) as kube:
            async with asyncio.timeout(60):
                async for kind, obj in kube.informer(path):
                    if kind == "SYNC":
                        await asyncio.to_thread(big_service, lab, "big")
                        await asyncio.to_thread(lab.service, "small")
                        continue
                    seen.append((kind, obj["metadata"]["name"] if isinstance(obj, dict) else repr(obj)))
                    if ("ADDED", "small") in seen:
                        return seen
        return seen

    seen = asyncio.run(main())
    assert seen[:2] == [("ADDED", "big"), ("ADDED", "small")], seen


def test_controller_allocates_around_and_for_a_700_kib_service(lab, controller):
    lab.pool("big", ["198.18.45.0/28"])
    lab.service("before")
    assert lab.wait_ips("before") == ["198.18.45.0"]
    big_service(lab, "big")
    lab.service("after")
    assert lab.wait_ips("big") and lab.wait_ips("after")
    # A change to the big one (another long line) and the watch still goes on.
    lab.kube.patch(f"/api/v1/namespaces/{lab.ns}/services/big", {"metadata": {"labels": {"touched": "yes"}}})
    lab.service("later")
    assert lab.wait_ips("later")
    assert sorted(lab.ips(n)[0] for n in ("before", "big", "after", "later")) == \
        [f"198.18.45.{i}" for i in range(4)]
    assert controller.proc.poll() is None
    assert httpget.get(f"http://127.0.0.1:{controller.port}/healthz")[0] == 200


def test_speaker_survives_a_700_kib_service(lab, control_plane: ControlPlane, tmp_path: Path):
    """The real speaker (Kubernetes mode, the chart's ServiceAccount, confined to an interface that does not
    exist: nothing leaves on any network) keeps running and ready through the big Service's ADDED/MODIFIED."""
    sp = ConfinedSpeaker(control_plane, f"big-watch-node-{os.getpid()}", tmp_path)
    node, proc, ready = sp.node, sp.proc, sp.ready
    try:
        wait_for(ready, 30, what="the speaker's informers to sync")
        big_service(lab, "big")
        lab.kube.patch(f"/api/v1/namespaces/{lab.ns}/services/big", {"metadata": {"labels": {"touched": "yes"}}})
        lab.service("small")
        # The speaker logs each Service it learns of only through its model; give the watch time to deliver
        # both big events and the small one, then demand it is still up, ready and never lost a task.
        time.sleep(3)
        assert proc.poll() is None, sp.log()[-3000:]
        assert ready()
        text = sp.log()
        assert "task_ended" not in text and "LineTooLong" not in text, text[-3000:]
    finally:
        sp.stop()
        lab.kube.delete(f"/apis/lbctl.io/v1alpha1/speakerstatuses/{node}")
