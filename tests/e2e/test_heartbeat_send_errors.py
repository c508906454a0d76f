"""Heartbeat send errors are counted and logged once per outage (issue 12, bug 6): a beacon sent on an interface
that went down, in a network namespace of the test's own (veth pair, 198.18.0.0/15)."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from structlog.testing import capture_logs

from lbctl.core.heartbeat import Keyring
from lbctl.speaker.heartbeats import Heartbeats
from lbctl.speaker.metrics import Metrics

from .test_speaker_dataplane import in_netns, sh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
METRIC = "lbctl_speaker_heartbeat_send_errors_total"


@pytest.fixture
def netns():
    name = f"{os.environ.get('LBCTL_LAB_PREFIX', 'lbctl-')}hbtx{os.getpid() % 100000}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "add", "hb0", "type", "veth", "peer", "name", "hb1")
        sh("ip", "-n", name, "addr", "add", "198.18.7.1/24", "brd", "+", "dev", "hb0")
        for link in ("lo", "hb0", "hb1"):
            sh("ip", "-n", name, "link", "set", link, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def errors(metrics: Metrics) -> float:
    return sum(s.value for m in metrics.registry.collect() if m.name == METRIC.removesuffix("_total")
               for s in m.samples if s.name == METRIC and s.labels.get("interface") == "hb0")


def test_send_errors_on_a_downed_interface_are_counted_and_logged_once(netns: str) -> None:
    async def scenario() -> None:
        metrics = Metrics()
        hb = Heartbeats("me", Keyring([b"k" * 32]), 17946, 0.1, 0.45, lambda: None, metrics)
        try:
            hb.set_targets({"hb0": ("198.18.7.255",)})
            hb._send(False)
            assert errors(metrics) == 0
            sh("ip", "-n", netns, "link", "set", "hb0", "down")
            with capture_logs() as logs:
                for _ in range(5):
                    hb._send(False)
                assert errors(metrics) == 5
                sh("ip", "-n", netns, "link", "set", "hb0", "up")
                hb._send(False)
                hb._send(False)
            assert errors(metrics) == 5
            events = [e["event"] for e in logs if e["event"].startswith("heartbeat_send")]
            assert events == ["heartbeat_send_failed", "heartbeat_send_recovered"], logs
        finally:
            hb.close()

    with in_netns(netns):
        asyncio.run(scenario())
