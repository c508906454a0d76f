"""The speaker image in a lab node: the chart's pod spec (as the lab's kubelet resolved it: args, env,
ServiceAccount token and heartbeat key mounts) run by podman in lbctl-node1's network namespace with only
NET_RAW, read-only root and no privilege escalation — and it answers ARP for the IP it owns."""

from __future__ import annotations

import signal
import time

from lbctl.lab import cluster, pods, processes
from lbctl.lab.api import wait_for
from tests import image

from .conftest import Lab, ipv4_of

CONTAINER = "lbctl-e2e-speaker-node1"
HOST_ONLY_ENV = ("PATH", "HOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")  # the image sets its own


def test_speaker_image_answers_arp_in_a_lab_node(fresh: Lab) -> None:
    image.ensure_image()
    run = pods.saved()["speaker-node1"]
    node1 = fresh.topo.host("node1")
    # Only the containerised speaker may answer: stop every process speaker.
    for h in fresh.topo.node_hosts:
        fresh.kill_speaker(h.name, signal.SIGTERM)
    for h in fresh.topo.node_hosts:
        wait_for(lambda: not processes.alive(fresh.speaker_pid(h.name)), 10, f"speaker-{h.name} to stop")
    try:
        image.run_speaker(node1.netns, {m.source: m.target for m in run.mounts},
                          {k: v for k, v in run.env.items() if k not in HOST_ONLY_ENV}, run.argv, CONTAINER)
        wait_for(lambda: cluster.http_ok(node1.netns, run.ready_url) or (not image.exists(CONTAINER)), 60,
                 "the containerised speaker to be ready")
        assert image.exists(CONTAINER), image.logs(CONTAINER)[-3000:]
        status = image.podman("exec", CONTAINER, "sh", "-c", "grep -E '^(CapEff|NoNewPrivs)' /proc/1/status").stdout
        assert "CapEff:\t0000000000002000" in status and "NoNewPrivs:\t1" in status, status
        ip = ipv4_of(fresh.service("in-image"))
        owner = fresh.wait_arp_owner(ip, timeout=15)
        assert owner == "node1", f"{ip} answered by {owner}"
        time.sleep(0.5)  # several requests, one answer each, all from node1's MAC
        assert fresh.arp_owners(ip, count=3) == {"node1"}
    finally:
        out = image.stop(CONTAINER)
        if "Traceback" in out:
            print(out[-3000:])
