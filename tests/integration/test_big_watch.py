"""Objects far over aiohttp's 128 KiB line limit, as the API server accepts them, on every watch we run.

Annotations are capped at 256 KiB in total, labels are not: a ~700 KiB Service takes 200 KiB of
annotations and ~5000 labels. Its watch line used to end Kube.watch with LineTooLong, which ended the
controller's Service informer (silently) and every speaker.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lbctl.controlplane import RELEASE, SA_NS, ControlPlane, free_port
from lbctl.kube import config
from lbctl.kube.client import Kube
from tests import httpget
from tests.big_objects import big_metadata
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
    node, port = f"big-watch-node-{os.getpid()}", free_port()
    key = tmp_path / "key"
    key.write_text(base64.b16encode(os.urandom(32)).decode())
    key.chmod(0o400)
    log = tmp_path / "speaker.log"
    kubeconfig = control_plane.service_account_kubeconfig(SA_NS, f"{RELEASE}-speaker")
    proc = subprocess.Popen(
        [sys.executable, "-m", "speaker", "--node-name", node, "--kubeconfig", str(kubeconfig),
         "--heartbeat-key-file", str(key), "--interfaces", "lbctl-none0", "--http-host", "127.0.0.1",
         "--http-port", str(port), "--log-format", "json"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        def ready() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            return httpget.get(f"http://127.0.0.1:{port}/readyz", timeout=1)[0] == 200
        wait_for(ready, 30, what="the speaker's informers to sync")
        big_service(lab, "big")
        lab.kube.patch(f"/api/v1/namespaces/{lab.ns}/services/big", {"metadata": {"labels": {"touched": "yes"}}})
        lab.service("small")
        # The speaker logs each Service it learns of only through its model; give the watch time to deliver
        # both big events and the small one, then demand it is still up, ready and never lost a task.
        time.sleep(3)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert ready()
        text = log.read_text()
        assert "task_ended" not in text and "LineTooLong" not in text, text[-3000:]
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)
        lab.kube.delete(f"/apis/lbctl.io/v1alpha1/speakerstatuses/{node}")
