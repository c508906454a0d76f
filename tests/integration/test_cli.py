"""`lbctl status`, `explain` and `preflight` against the real API server."""

from __future__ import annotations

import subprocess
import sys


def lbctl(cp, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbctl.cli", *args, "--kubeconfig", str(cp.kubeconfig())],
                          capture_output=True, text=True, timeout=60)


def test_status_and_explain(lab, control_plane):
    lab.pool("cli", ["198.18.17.1"])
    lab.service("got")
    ip = lab.wait_ips("got")[0]
    lab.service("waits")
    lab.wait_event("waits", "AllocationFailed")
    out = lbctl(control_plane, "status")
    assert out.returncode == 0, out.stderr
    assert lab.pool_name("cli") in out.stdout and f"{lab.ns}/got" in out.stdout and ip in out.stdout
    assert f"{lab.ns}/waits" in out.stdout and "<pending>" in out.stdout

    why = lbctl(control_plane, "explain", f"{lab.ns}/waits")
    assert why.returncode == 0, why.stderr
    assert f"pending: no address available: IPPool {lab.pool_name('cli')}: IPv4 exhausted (1 of 1 assigned)" in why.stdout
    assert "Warning AllocationFailed" in why.stdout

    held = lbctl(control_plane, "explain", f"{lab.ns}/got")
    assert f"holds {ip}" in held.stdout and f"IPPool {lab.pool_name('cli')}" in held.stdout
    assert lbctl(control_plane, "explain", f"{lab.ns}/nope").returncode == 1


def test_preflight_checks_the_cluster(control_plane):
    out = lbctl(control_plane, "preflight")
    assert "PASS  CRD           ippools.lbctl.io installed" in out.stdout, out.stdout + out.stderr
    assert "strict ARP" in out.stdout and "raw sockets" in out.stdout
