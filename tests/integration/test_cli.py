"""`lbctl status`, `explain` and `preflight` against the real API server: states, documents, exit codes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lbctl.lab.controlplane import RELEASE, SA_NS, free_port
from lbctl.kube import config
from lbctl.kube.client import Kube
from lbctl.speaker.lease import LeaseRenewer, micro_time

SPEAKERS = "/apis/lbctl.io/v1alpha1/speakerstatuses"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{SA_NS}/leases"


def lbctl(cp, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbctl.cli", *args, "--kubeconfig", str(kubeconfig or cp.kubeconfig())],
                          capture_output=True, text=True, timeout=60)


def test_status_and_explain(lab, control_plane):
    lab.pool("cli", ["198.18.17.1"])
    lab.service("got")
    ip = lab.wait_ips("got")[0]
    lab.service("waits")
    lab.wait_event("waits", "AllocationFailed")
    out = lbctl(control_plane, "status")
    assert out.returncode == 1, out.stderr  # Pending and Unannounced need attention
    assert lab.pool_name("cli") in out.stdout and f"{lab.ns}/got" in out.stdout and ip in out.stdout
    assert f"{lab.ns}/waits" in out.stdout and "<pending>" in out.stdout
    assert f"Service {lab.ns}/waits: Pending" in out.stderr and f"Service {lab.ns}/got: {ip} Unannounced" in out.stderr

    why = lbctl(control_plane, "explain", f"{lab.ns}/waits")
    assert why.returncode == 1, why.stderr
    assert f"pending: no address available: IPPool {lab.pool_name('cli')}: IPv4 exhausted (1 of 1 assigned)" in why.stdout
    assert "Warning AllocationFailed" in why.stdout

    held = lbctl(control_plane, "explain", f"{lab.ns}/got", "-o", "json")
    doc = json.loads(held.stdout)
    assert doc["apiVersion"] == "lbctl.io/cli/v1" and doc["kind"] == "Explanation"
    assert doc["state"] == "Unannounced" and doc["ips"][0]["ip"] == ip and doc["ips"][0]["pool"] == lab.pool_name("cli")
    assert held.returncode == 1
    assert "holds " + ip in lbctl(control_plane, "explain", f"{lab.ns}/got").stdout
    assert lbctl(control_plane, "explain", f"{lab.ns}/nope").returncode == 1


def _speaker_status(kube, node: str, announced: list[tuple[str, str]], peers: list[str]) -> None:
    kube.create(SPEAKERS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "SpeakerStatus", "metadata": {"name": node},
                           "spec": {"node": node}})
    kube.patch(f"{SPEAKERS}/{node}/status", {"status": {
        "node": node, "announcedCount": len(announced), "livePeers": peers, "livePeerCount": len(peers),
        "announced": [{"ip": ip, "interface": "eth0", "mac": mac, "since": "2024-05-01T11:00:00Z", "services": []}
                      for ip, mac in announced]}})


def test_status_document_states_and_liveness(lab, control_plane, kube):
    """Real Leases written by the speaker's code as the chart's speaker ServiceAccount (RBAC on), hand-made
    SpeakerStatuses."""
    lab.pool("st", ["198.18.17.8-198.18.17.10"])
    for name in ("ok", "twice", "lost", "waits"):
        lab.service(name)
    ips = {name: lab.wait_ips(name)[0] for name in ("ok", "twice", "lost")}
    lab.wait_event("waits", "AllocationFailed")
    n1, n2, n3 = (f"{lab.ns}-n{i}" for i in (1, 2, 3))
    speaker_sa = control_plane.service_account_kubeconfig(SA_NS, f"{RELEASE}-speaker")  # the chart's RBAC
    try:
        _speaker_status(kube, n1, [(ips["ok"], "02:00:00:00:00:01"), (ips["twice"], "02:00:00:00:00:01")], [n1, n2])
        _speaker_status(kube, n2, [(ips["twice"], "02:00:00:00:00:02")], [n1, n2])
        _speaker_status(kube, n3, [(ips["lost"], "02:00:00:00:00:03")], [])

        async def leases() -> None:
            async with Kube(config.load(str(speaker_sa))) as sa:
                for node in (n1, n2, n3):
                    assert await LeaseRenewer(sa, node, SA_NS).renew(), "the speaker's RBAC must allow its Lease"
                assert await LeaseRenewer(sa, n1, SA_NS).renew()  # renewing an existing one: patch
        asyncio.run(leases())
        # n3 died two minutes ago: its Lease was last renewed then.
        old = micro_time(dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=2))
        kube.patch(f"{LEASES}/lbctl-speaker-{n3}", {"spec": {"renewTime": old}})

        out = lbctl(control_plane, "status", "-o", "json")
        doc = json.loads(out.stdout)
        assert out.returncode == 3, out.stderr  # a Conflict outranks everything else
        assert doc["apiVersion"] == "lbctl.io/cli/v1" and doc["kind"] == "Status" and doc["healthy"] is False
        assert {"pools", "services", "speakers"} <= set(doc)
        svcs = {s["name"]: s for s in doc["services"] if s["namespace"] == lab.ns}
        ok = svcs["ok"]["addresses"][0]
        assert (svcs["ok"]["state"], ok["node"], ok["interface"], ok["mac"], ok["since"]) == (
            "Announced", n1, "eth0", "02:00:00:00:00:01", "2024-05-01T11:00:00Z")
        assert svcs["twice"]["state"] == "Conflict" and [c["node"] for c in svcs["twice"]["addresses"][0]["claims"]] == [n1, n2]
        assert svcs["lost"]["state"] == "Unannounced" and svcs["waits"]["state"] == "Pending"
        sp = {s["node"]: s for s in doc["speakers"]}
        assert sp[n1]["alive"] and sp[n1]["announcedCount"] == 2 and sp[n1]["livePeers"] == sorted([n1, n2])
        assert not sp[n3]["alive"] and sp[n3]["reason"] == "lease expired" and sp[n3]["lastHeardSecondsAgo"] >= 119
        assert f"in Conflict (announced by {n1}, {n2})" in out.stderr

        as_yaml = yaml.safe_load(lbctl(control_plane, "status", "-o", "yaml").stdout)
        assert as_yaml["kind"] == "Status" and len(as_yaml["services"]) == len(doc["services"])
        table = lbctl(control_plane, "status").stdout
        assert f"{lab.ns}/twice" in table and "Conflict" in table and f"{n1},{n2}" in table

        async def stop() -> None:
            async with Kube(config.load(str(speaker_sa))) as sa:
                assert await LeaseRenewer(sa, n2, SA_NS).release()
        asyncio.run(stop())
        doc = json.loads(lbctl(control_plane, "status", "-o", "json").stdout)
        sp = {s["node"]: s for s in doc["speakers"]}
        # n2 stopped, but n1 (alive) still hears it: its heartbeats outlive its Lease.
        assert sp[n2]["alive"] and sp[n2]["heardBy"] == [n1] and sp[n2]["reason"] == "heard by peers (stopped)"
    finally:
        for node in (n1, n2, n3):
            kube.delete(f"{SPEAKERS}/{node}")
            kube.delete(f"{LEASES}/lbctl-speaker-{node}")


def test_exit_code_2_names_what_is_wrong(control_plane, tmp_path):
    bad = yaml.safe_load(control_plane.kubeconfig().read_text())
    bad["users"][0]["user"]["token"] = "not-a-token"
    (tmp_path / "bad-token").write_text(yaml.safe_dump(bad))
    (tmp_path / "apiserver.crt").write_bytes((control_plane.workdir / "apiserver.crt").read_bytes())
    out = lbctl(control_plane, "status", kubeconfig=tmp_path / "bad-token")
    assert out.returncode == 2 and "rejected the credentials" in out.stderr and "401" in out.stderr

    port = free_port()
    bad["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    (tmp_path / "closed").write_text(yaml.safe_dump(bad))
    out = lbctl(control_plane, "status", "-o", "json", kubeconfig=tmp_path / "closed")
    assert out.returncode == 2 and f"cannot reach the API server https://127.0.0.1:{port}" in out.stderr
    assert out.stdout == ""

    out = lbctl(control_plane, "explain", "x/y", "--context", "nope")
    assert out.returncode == 2 and "no context named 'nope'" in out.stderr
    out = lbctl(control_plane, "preflight", "--context", "nope")
    assert out.returncode == 2 and "no context named 'nope'" in out.stderr
    assert lbctl(control_plane, "status", "-o", "xml").returncode == 2  # usage


def test_preflight_checks_the_cluster(control_plane):
    out = lbctl(control_plane, "preflight")
    assert "PASS  CRD           ippools.lbctl.io installed" in out.stdout, out.stdout + out.stderr
    assert "strict ARP" in out.stdout and "raw sockets" in out.stdout
    doc = json.loads(lbctl(control_plane, "preflight", "-o", "json").stdout)
    assert doc["kind"] == "Preflight" and {"result": "PASS", "check": "CRD",
                                           "detail": "speakerstatuses.lbctl.io installed"} in doc["checks"]


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
def test_kubectl_plugin(control_plane, tmp_path):
    """`kubectl lbctl status`: kubectl finds `kubectl-lbctl` on PATH. The installed script when there is one,
    else the same two-line wrapper pip generates for [project.scripts]."""
    installed = Path(sys.executable).parent / "kubectl-lbctl"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    plugin = bindir / "kubectl-lbctl"
    if installed.exists():
        plugin.symlink_to(installed)
    else:
        plugin.write_text(f"#!{sys.executable}\nimport sys\nfrom lbctl.cli.main import kubectl_main\n"
                          "sys.exit(kubectl_main())\n")
        plugin.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]))
    assert "kubectl-lbctl" in subprocess.run(["kubectl", "plugin", "list"], env=env, capture_output=True,
                                             text=True).stdout
    out = subprocess.run(["kubectl", "lbctl", "status", "-o", "json", "--kubeconfig", str(control_plane.kubeconfig())],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 1, 3), out.stderr
    assert json.loads(out.stdout)["kind"] == "Status"
    usage = subprocess.run(["kubectl", "lbctl", "bogus"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: kubectl lbctl" in usage.stderr
