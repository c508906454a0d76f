"""The lab itself: it comes up, Services get IPs, the client reaches them, one node answers ARP/NDP."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

from lbctl.lab import apiproxy, pods, probes, processes
from lbctl.lab.api import wait_for
from lbctl.lab.topology import IPVS_DEV, Topology

from .conftest import Lab, ipv4_of, ipv6_of

POOL4 = ipaddress.ip_network("198.18.0.0/24")


def ns_sysctl(netns: str, key: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-n", key], capture_output=True, text=True,
                          check=True).stdout.strip()


def ipvs_addresses(netns: str) -> str:
    return subprocess.run(["ip", "-n", netns, "addr", "show", "dev", IPVS_DEV], capture_output=True, text=True,
                          check=True).stdout


def test_lab_is_up(fresh: Lab) -> None:
    pids = processes.pidfiles()
    for name in ["etcd", "kube-apiserver", "controller"] + [f"{d}-{h.name}" for h in fresh.topo.node_hosts
                                                            for d in ("speaker", "httpd", "kubeproxy")]:
        assert processes.alive(pids.get(name)), f"{name} is not running"
    for h in fresh.topo.node_hosts:  # kube-proxy IPVS mode with strictARP
        assert ns_sysctl(h.netns, "net.ipv4.conf.all.arp_ignore") == "1"
        assert ns_sysctl(h.netns, "net.ipv4.conf.all.arp_announce") == "2"
        assert ns_sysctl(h.netns, "net.ipv6.conf.all.proxy_ndp") == "0"


def test_service_gets_ip_and_every_node_holds_it(fresh: Lab) -> None:
    svc = fresh.service("basic")
    ip = ipv4_of(svc)
    assert ipaddress.ip_address(ip) in POOL4 and 50 <= int(ip.rsplit(".", 1)[1]) <= 99
    for h in fresh.topo.node_hosts:  # the kube-proxy stand-in put it on kube-ipvs0
        wait_for(lambda: f"{ip}/32" in ipvs_addresses(h.netns), 10, f"{ip} on {h.name}'s {IPVS_DEV}")
    fresh.delete_service("basic")
    for h in fresh.topo.node_hosts:
        wait_for(lambda: f"{ip}/32" not in ipvs_addresses(h.netns), 10, f"{ip} gone from {h.name}")


def test_client_reaches_service(fresh: Lab) -> None:
    ip = ipv4_of(fresh.service("web"))
    body = wait_for(lambda: probes.node_answering(ip), 10, f"HTTP from {ip}")
    assert body in {h.name for h in fresh.topo.node_hosts}
    # Every request lands on the node that answers ARP.
    assert {probes.node_answering(ip) for _ in range(5)} == {body}
    assert fresh.arp_owners(ip) == {body}


def test_exactly_one_mac_answers_arp(fresh: Lab) -> None:
    ip = ipv4_of(fresh.service("one-mac"))
    fresh.wait_arp_owner(ip)
    macs: list[str] = []
    for _ in range(4):
        macs += probes.arping(ip, count=3)
    assert len(macs) >= 10, f"too few ARP replies: {macs}"  # 12 requests, allow a lost one or two
    assert len(set(macs)) == 1, f"more than one MAC answers ARP for {ip}: {sorted(set(macs))}"
    assert fresh.node_of(macs[0]) in {h.name for h in fresh.topo.node_hosts}


def test_ipv6_ndp_answered_by_one_node(fresh: Lab) -> None:
    fresh.service("dual", wait_ip=False, ipFamilyPolicy="PreferDualStack")
    svc = fresh.wait_ips("dual", count=2)
    ip6 = ipv6_of(svc)
    assert ip6, f"no IPv6 ingress: {svc['status']}"
    body = wait_for(lambda: probes.node_answering(ip6), 10, f"HTTP from [{ip6}]")
    entry = probes.neigh(ip6)
    assert entry and fresh.node_of(entry.mac) == body
    macs = fresh.ndp_macs(ip6)
    assert len(macs) == 1 and fresh.node_of(macs.pop()) == body


def test_status_command(fresh: Lab) -> None:
    ip = ipv4_of(fresh.service("shown"))
    res = subprocess.run([sys.executable, "-m", "lbctl.cli", "lab", "status"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "shown" in res.stdout and ip in res.stdout and "DEAD" not in res.stdout


def test_topology_matches_course_layout(lab: Lab) -> None:
    # The seed cluster (192.168.56.0/24) renumbered: control plane .11, nodes .21+, client .100.
    topo: Topology = lab.topo
    assert topo.host("cp").ip4 == "198.18.0.11"
    assert [h.ip4 for h in topo.node_hosts] == ["198.18.0.21", "198.18.0.22", "198.18.0.23"]


def _proc_status(pid: int) -> dict[str, str]:
    lines = open(f"/proc/{pid}/status").read().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines)}


NET_RAW = 1 << 13


def test_daemons_run_as_the_chart_says(fresh: Lab) -> None:
    """The lab's kubelet ran the chart's pods: ServiceAccount token at the in-cluster path, no kubeconfig
    flag, and the container securityContext applied (speaker: root with NET_RAW only; controller: non-root
    with no capabilities; both no_new_privs)."""
    for h in fresh.topo.node_hosts:
        pid = processes.pid_of(f"speaker-{h.name}")
        st = _proc_status(pid)
        assert st["Uid"].split()[0] == "0"
        assert int(st["CapEff"], 16) == NET_RAW and int(st["CapBnd"], 16) == NET_RAW, st
        assert st["NoNewPrivs"] == "1"
        cmdline = open(f"/proc/{pid}/cmdline").read().split("\0")
        assert "--kubeconfig" not in cmdline and cmdline[1].endswith("bin/lbctl-speaker")  # the script, run by python
        environ = dict(e.split("=", 1) for e in open(f"/proc/{pid}/environ").read().split("\0") if "=" in e)
        # The API server through the node's nginx, as kubespray's localhost proxy (lbctl.lab.apiproxy).
        assert environ["NODE_NAME"] == h.name and environ["KUBERNETES_SERVICE_HOST"] == apiproxy.HOST
        assert environ["KUBERNETES_SERVICE_PORT"] == str(apiproxy.PORT)
        mounts = open(f"/proc/{pid}/mountinfo").read()
        assert "/run/secrets/kubernetes.io/serviceaccount" in mounts
    ctl = _proc_status(processes.pid_of("controller"))
    assert ctl["Uid"].split()[0] != "0" and int(ctl["CapEff"], 16) == 0 and ctl["NoNewPrivs"] == "1"
    # The host never sees the pods' mount points.
    assert not os.path.exists("/run/secrets/kubernetes.io/serviceaccount")


def test_lab_kubectl_and_shell(fresh: Lab) -> None:
    fresh.service("byhand")
    out = subprocess.run([sys.executable, "-m", "lbctl.cli", "lab", "kubectl", "get", "ipp", "default",
                          "-o", "jsonpath={.spec.addresses}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "198.18.0.50-198.18.0.99" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "lbctl.cli", "lab", "kubectl", "-n", "default", "get", "svc",
                          "byhand", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"],
                         capture_output=True, text=True, timeout=60)
    ip = out.stdout.strip()
    assert out.returncode == 0 and ip.startswith("198.18.0."), out.stderr
    out = subprocess.run([sys.executable, "-m", "lbctl.cli", "lab", "shell", "client", "curl", "-sf", "-m", "3",
                          f"http://{ip}/"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().startswith("node"), (out.stdout, out.stderr)
    out = subprocess.run([sys.executable, "-m", "lbctl.cli", "lab", "shell", "cp", "sh", "-c", "echo $KUBECONFIG"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("kubeconfig-admin")


def test_addresses_outside_every_pool_are_not_announced(fresh: Lab) -> None:
    """Whoever can write services/status must not make the cluster answer ARP for any address: a status
    patched to a gateway-like address outside every IPPool is kept (IPRetained) but never announced."""
    fresh.service("hijack")
    outside = "198.18.0.1"  # nobody's: not a node, not in the pool
    fresh.api.call("PATCH", "/api/v1/namespaces/default/services/hijack/status",
                   {"status": {"loadBalancer": {"ingress": [{"ip": outside}]}}},
                   content_type="application/merge-patch+json")
    event = wait_for(lambda: next((e for e in fresh.api.get("/api/v1/namespaces/default/events",
                                                            fieldSelector="involvedObject.name=hijack")["items"]
                                   if e["reason"] == "NotAnnounced"), None), 15, "a NotAnnounced Event")
    assert outside in event["message"] and "outside every IPPool" in event["message"]
    time.sleep(1.0)  # a speaker that wrongly claimed it would have announced by now
    assert fresh.arp_owners(outside, count=3) == set()


def test_no_secret_or_token_in_logs_or_metrics(fresh: Lab) -> None:
    """The ServiceAccount tokens and the heartbeat key the pods were given never show up in what the daemons
    print or serve."""
    fresh.service("secrets-check")
    secrets_ = set()
    for run in pods.saved().values():
        for m in run.mounts:
            for f in Path(m.source).rglob("*") if Path(m.source).is_dir() else []:
                if f.is_file() and f.name in ("token", "key"):
                    secrets_.add(f.read_text().strip())
    assert len(secrets_) >= 2, "expected the SA tokens and the heartbeat key"
    texts = [p.read_text(errors="replace") for p in processes.LOGS.glob("*.log")]
    for name, run in pods.saved().items():
        if run.ready_url:
            metrics = subprocess.run(["ip", "netns", "exec", run.netns, "curl", "-sf", "-m", "3",
                                      run.ready_url.replace("/readyz", "/metrics")], capture_output=True, text=True)
            assert metrics.returncode == 0 and "# HELP" in metrics.stdout, name
            texts.append(metrics.stdout)
    for secret in secrets_:
        for piece in (secret, secret[:24], secret[-24:]):
            assert not any(piece in t for t in texts), "a secret appears in a log or in /metrics"
