"""The CLI's documents, tables and exit codes, from hand-made snapshots (no API server)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbctl import tables
from lbctl.cli import explain, main, status
from lbctl.cli.output import emit
from lbctl.cli.snapshot import Snapshot
from lbctl.core.status import LEASE_LABELS, NODE_LABEL

NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def _svc(name: str, ips: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "creationTimestamp": "2024-05-01T10:00:00Z"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def _speaker(node: str, ips: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": node}, "status": {"livePeers": [node], "announced": [
        {"ip": ip, "interface": "eth0", "mac": "02:00:00:00:00:0a", "since": "2024-05-01T11:58:00Z"} for ip in ips]}}


def _lease(node: str, ago: float) -> dict[str, Any]:
    return {"metadata": {"name": f"lbctl-speaker-{node}", "labels": {**LEASE_LABELS, NODE_LABEL: node}},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 30,
                     "renewTime": (NOW - dt.timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}


POOL = {"metadata": {"name": "default", "creationTimestamp": "2024-05-01T09:00:00Z"},
        "spec": {"addresses": ["198.18.0.50-198.18.0.51"]},
        "status": {"assigned": 1, "available": "1/IPv4", "ipv4": {"capacity": "2", "assigned": 1, "available": "1"},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Valid", "message": ""}]}}


def snapshot(services: list[dict[str, Any]], speakers: list[dict[str, Any]], leases: list[dict[str, Any]]) -> Snapshot:
    return Snapshot(services=services, pools=[POOL], speakers=speakers, leases=leases)


def test_healthy_status_document() -> None:
    doc = status.build(snapshot([_svc("web", ["198.18.0.50"])], [_speaker("n1", ["198.18.0.50"])], [_lease("n1", 4)]),
                       NOW)
    assert doc["apiVersion"] == "lbctl.io/cli/v1" and doc["kind"] == "Status" and doc["generatedAt"] == "2024-05-01T12:00:00Z"
    assert doc["healthy"] is True and doc["attention"] == [] and status.exit_code(doc) == 0
    assert doc["pools"] == [{"name": "default", "addresses": ["198.18.0.50-198.18.0.51"], "ready": True,
                             "reason": "Valid", "message": "", "assigned": 1, "available": "1/IPv4",
                             "ipv4": {"capacity": "2", "assigned": 1, "available": "1"}, "ipv6": None}]
    assert doc["services"] == [{"namespace": "shop", "name": "web", "state": "Announced", "ips": ["198.18.0.50"],
                                "addresses": [{"ip": "198.18.0.50", "state": "Announced", "node": "n1",
                                               "interface": "eth0", "mac": "02:00:00:00:00:0a",
                                               "since": "2024-05-01T11:58:00Z",
                                               "claims": [{"node": "n1", "interface": "eth0",
                                                           "mac": "02:00:00:00:00:0a",
                                                           "since": "2024-05-01T11:58:00Z"}],
                                               "foreign": []}]}]
    assert doc["speakers"] == [{"node": "n1", "alive": True, "reason": None, "lastHeard": "2024-05-01T11:59:56Z",
                                "lastHeardSecondsAgo": 4.0, "heardBy": [], "announcedCount": 1,
                                "livePeers": ["n1"]}]
    text = status.render(doc)
    assert "shop/web   198.18.0.50   Announced   n1     eth0        02:00:00:00:00:0a   2m" in text
    assert "n1        yes     4s ago       1" in text


def test_exit_codes_follow_the_worst_state() -> None:
    pending = status.build(snapshot([_svc("web", [])], [], []), NOW)
    assert status.exit_code(pending) == 1 and "Service shop/web: Pending" in pending["attention"][0]
    assert "<pending>" in status.render(pending)
    dead = status.build(snapshot([_svc("web", ["198.18.0.50"])], [_speaker("n1", ["198.18.0.50"])],
                                 [_lease("n1", 45)]), NOW)
    assert status.exit_code(dead) == 1 and dead["services"][0]["state"] == "Unannounced"
    assert "speaker n1: not alive (lease expired)" in dead["attention"]
    conflict = status.build(snapshot([_svc("web", ["198.18.0.50"]), _svc("late", [])],
                                     [_speaker("n1", ["198.18.0.50"]), _speaker("n2", ["198.18.0.50"])],
                                     [_lease("n1", 1), _lease("n2", 1)]), NOW)
    assert status.exit_code(conflict) == 3
    assert conflict["services"][1]["addresses"][0]["node"] is None  # no single owner to name


def test_json_and_yaml_are_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    doc = status.build(snapshot([_svc("web", ["198.18.0.50"])], [], []), NOW)
    emit(doc, "json", status.render)
    assert json.loads(capsys.readouterr().out) == doc
    emit(doc, "yaml", status.render)
    out = capsys.readouterr().out
    assert out.startswith("apiVersion: lbctl.io/cli/v1\nkind: Status\n") and yaml.safe_load(out) == doc


def test_explain_documents() -> None:
    snap = snapshot([_svc("web", ["198.18.0.50"]), _svc("late", [])], [_speaker("n1", ["198.18.0.50"])],
                    [_lease("n1", 1)])
    snap.nodes = [{"metadata": {"name": "n1"}}]
    doc = explain.explain(snap, "shop/web", None, NOW)
    assert (doc["kind"], doc["state"], doc["liveSpeakers"]) == ("Explanation", "Announced", ["n1"])
    assert doc["ips"][0] | {"eligible": ["n1"], "elected": "n1", "announcedBy": ["n1"], "pool": "default"} == doc["ips"][0]
    assert explain.exit_code(doc) == 0 and "elected n1; announced by n1" in explain.render(doc)
    late = explain.explain(snap, "shop/late", None, NOW)
    assert late["state"] == "Pending" and late["freeNow"] == {"ips": ["198.18.0.51"], "pool": "default"}
    assert explain.exit_code(late) == 1
    missing = explain.explain(snap, "shop/none", None, NOW)
    assert explain.exit_code(missing) == 1 and explain.render(missing) == "Service shop/none does not exist"


def test_ages() -> None:
    assert [tables.age(s) for s in (None, 0, 59, 60, 119, 120, 7199, 7200, 86400 * 2 + 5)] == [
        "-", "0s", "59s", "60s", "119s", "2m", "119m", "2h", "2d"]


def test_bad_kubeconfig_is_exit_2_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["status", "--kubeconfig", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"lbctl status: kubeconfig: kubeconfig {tmp_path / 'none'} does not exist\n"
    (tmp_path / "k").write_text(yaml.safe_dump({"clusters": [{"name": "c", "cluster": {"server": "https://x"}}],
                                                "contexts": [{"name": "a", "context": {"cluster": "c"}}]}))
    assert main.main(["explain", "a/b", "--kubeconfig", str(tmp_path / "k"), "--context", "b"]) == 2
    assert "no context named 'b'" in capsys.readouterr().err


def test_kubectl_plugin_entry_point(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["kubectl-lbctl", "status", "--help"])
    with pytest.raises(SystemExit) as exit_:
        main.kubectl_main()
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: kubectl lbctl status")
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'kubectl-lbctl = "lbctl.cli.main:kubectl_main"' in pyproject
