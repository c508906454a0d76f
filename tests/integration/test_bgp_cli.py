"""`lbctl status` and `lbctl explain` against the real API server with SpeakerStatuses that carry a BGP block
(the shape the speakers write: status.bgp = {sessions, advertised, skipped}); the CRD keeps every field of it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from lbctl.kube import config
from lbctl.kube.client import Kube
from lbctl.lab.controlplane import RELEASE, SA_NS
from lbctl.speaker.lease import LeaseRenewer
from tests.integration.test_cli import LEASES, SPEAKERS, lbctl
from tests.wait import wait_for

PEERS = "/apis/lbctl.io/v1alpha1/bgppeers"


def _status(kube: Any, node: str, bgp: dict[str, Any]) -> None:
    kube.create(SPEAKERS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "SpeakerStatus", "metadata": {"name": node},
                           "spec": {"node": node}})
    kube.patch(f"{SPEAKERS}/{node}/status", {"status": {"node": node, "announcedCount": 0, "announced": [],
                                                        "livePeers": [], "livePeerCount": 0, "bgp": bgp}})


def test_status_and_explain_show_bgp(lab, control_plane, kube):
    lab.pool("bgp", ["198.18.21.0/30"], layer2={"enabled": False}, bgp={"advertisements": [{}]})
    lab.service("web")
    (ip,) = lab.wait_ips("web")
    n1, n2, n3 = (f"{lab.ns}-n{i}" for i in (1, 2, 3))
    up = {"peer": "tor1", "address": "198.18.0.1", "state": "Established", "since": "2026-12-05T08:00:00Z",
          "prefixesSent": 1, "lastError": ""}
    down = {"peer": "tor1", "address": "198.18.0.1", "state": "Active", "since": None, "prefixesSent": 0,
            "lastError": "Connection refused"}
    speaker_sa = control_plane.service_account_kubeconfig(SA_NS, f"{RELEASE}-speaker")
    peers = [f"{lab.ns}-tor1", f"{lab.ns}-tor1b"]  # the second duplicates the first: Invalid
    try:
        for name in peers:
            kube.create(PEERS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": name},
                                "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.0.1"}})
        wait_for(lambda: (kube.get(f"{PEERS}/{peers[1]}").get("status") or {}).get("conditions"), 20,
                 what="the controller's Valid condition on the duplicate peer")
        _status(kube, n1, {"sessions": [up], "advertised": [{"ip": ip, "peers": ["tor1"]}], "skipped": {}})
        _status(kube, n2, {"sessions": [down], "advertised": [], "skipped": {}})
        _status(kube, n3, {"sessions": [], "advertised": [], "skipped": {"tor1": "its nodeSelectors do not select "
                                                                                   "this node"}})
        stored = kube.get(f"{SPEAKERS}/{n1}")["status"]["bgp"]  # not pruned by the CRD's schema
        assert stored == {"sessions": [up], "advertised": [{"ip": ip, "peers": ["tor1"]}], "skipped": {}}

        async def leases() -> None:
            async with Kube(config.load(str(speaker_sa))) as sa:
                for node in (n1, n2, n3):
                    assert await LeaseRenewer(sa, node, SA_NS).renew()
        asyncio.run(leases())

        out = lbctl(control_plane, "status")
        assert out.returncode == 1, out.stderr  # the session down needs attention
        assert f"BGP session {n2} -> tor1 (198.18.0.1): Active (Connection refused)" in out.stderr
        assert f"BGPPeer {peers[1]}: Invalid (duplicates BGPPeer {peers[0]} " in out.stderr
        assert f"BGPPeer {peers[0]}:" not in out.stderr
        table = out.stdout
        assert f"{lab.ns}/web" in table and f"{ip}   Announced   {n1}" in table
        assert f"{n2}   tor1       198.18.0.1   Active        -       0               Connection refused" in table
        assert f"{n3}   tor1       -            Skipped" in table
        assert f"{lab.ns}/web   {ip}   {n1}" in table

        doc = json.loads(lbctl(control_plane, "status", "-o", "json").stdout)
        svc = next(s for s in doc["services"] if s["name"] == "web" and s["namespace"] == lab.ns)
        assert svc["addresses"][0]["bgp"] == [{"node": n1, "peers": ["tor1"]}]
        assert {(s["node"], s["state"]) for s in doc["bgpSessions"]} >= {(n1, "Established"), (n2, "Active")}

        why = lbctl(control_plane, "explain", f"{lab.ns}/web")
        assert why.returncode == 0, why.stderr
        assert f"      {n1}: advertises to tor1" in why.stdout
        assert f"      {n2}: does not advertise it; session to tor1 (198.18.0.1) is Active: Connection refused" \
            in why.stdout
        assert f"      {n3}: does not advertise it; peer tor1 skipped: its nodeSelectors do not select this node" \
            in why.stdout
    finally:
        for name in peers:
            kube.delete(f"{PEERS}/{name}")
        for node in (n1, n2, n3):
            kube.delete(f"{SPEAKERS}/{node}")
            kube.delete(f"{LEASES}/lbctl-speaker-{node}")
