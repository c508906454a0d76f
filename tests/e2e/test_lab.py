"""The lab itself: it comes up, Services get IPs, the client reaches them, one node answers ARP/NDP."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lbctl.lab import probes, processes, realcluster
from lbctl.lab.api import wait_for
from lbctl.lab.cluster import NAMESPACE
from lbctl.lab.topology import Topology

from .conftest import Lab, ipv4_of, ipv6_of

POOL4 = ipaddress.ip_network("198.18.0.0/24")


def ns_sysctl(netns: str, key: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-n", key], capture_output=True, text=True,
                          check=True).stdout.strip()


def iptables_nat(netns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "iptables-save", "-t", "nat"], capture_output=True,
                          text=True, check=True).stdout


def test_lab_is_up(fresh: Lab) -> None:
    pids = processes.pidfiles()
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert processes.alive(pids.get(name)), f"{name} is not running"
    for h in realcluster.hosts(fresh.topo):
        node = fresh.node(h.name)
        for daemon in ("containerd", "kubelet", "kube-proxy"):
            assert processes.alive(node.pid(daemon)), f"{daemon} of {h.name} is not running"
        assert fresh.speaker_pid(h.name), f"no speaker on {h.name}"
    for h in fresh.topo.node_hosts:  # strict ARP, as kubespray sets it for MetalLB-style L2
        assert ns_sysctl(h.netns, "net.ipv4.conf.all.arp_ignore") == "1"
        assert ns_sysctl(h.netns, "net.ipv4.conf.all.arp_announce") == "2"
        assert ns_sysctl(h.netns, "net.ipv6.conf.all.proxy_ndp") == "0"


def test_service_gets_ip_and_every_node_forwards_it(fresh: Lab) -> None:
    svc = fresh.service("basic")
    ip = ipv4_of(svc)
    assert ipaddress.ip_address(ip) in POOL4 and 50 <= int(ip.rsplit(".", 1)[1]) <= 99
    for h in fresh.topo.node_hosts:  # kube-proxy (iptables mode) on every node has a rule for the address
        wait_for(lambda: f"-d {ip}/32" in iptables_nat(h.netns), 10, f"{ip} in {h.name}'s kube-proxy rules")
    fresh.delete_service("basic")
    for h in fresh.topo.node_hosts:
        wait_for(lambda: f"-d {ip}/32" not in iptables_nat(h.netns), 10, f"{ip} gone from {h.name}'s rules")


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
KUBERNETES_SERVICE = "198.19.0.1"  # the `kubernetes` Service: the first address of the lab's Service range


def test_daemons_run_as_the_chart_says(fresh: Lab) -> None:
    """runc ran the chart's pods: the ServiceAccount token at the in-cluster path, no kubeconfig flag, the API
    server through the `kubernetes` Service, and the containers' securityContext applied (speaker: root with
    NET_RAW only; controller: non-root with no capabilities; both no_new_privs)."""
    for h in realcluster.hosts(fresh.topo):
        pid = fresh.speaker_pid(h.name)
        assert pid
        st = _proc_status(pid)
        assert st["Uid"].split()[0] == "0"
        assert int(st["CapEff"], 16) == NET_RAW and int(st["CapBnd"], 16) == NET_RAW, st
        assert st["NoNewPrivs"] == "1"
        cmdline = open(f"/proc/{pid}/cmdline").read().split("\0")
        assert "--kubeconfig" not in cmdline and cmdline[1].endswith("bin/lbctl-speaker")  # the script, run by python
        environ = dict(e.split("=", 1) for e in open(f"/proc/{pid}/environ").read().split("\0") if "=" in e)
        assert environ["NODE_NAME"] == h.name and environ["KUBERNETES_SERVICE_HOST"] == KUBERNETES_SERVICE
        mounts = open(f"/proc/{pid}/mountinfo").read()
        assert "/run/secrets/kubernetes.io/serviceaccount" in mounts
    ctl = next(p for h in fresh.topo.node_hosts for p in fresh.node(h.name).pids_in_cgroup()
               if b"lbctl-controller" in _cmdline(p))
    st = _proc_status(ctl)
    assert st["Uid"].split()[0] != "0" and int(st["CapEff"], 16) == 0 and st["NoNewPrivs"] == "1"
    # The host never sees the pods' mount points.
    assert not os.path.exists("/run/secrets/kubernetes.io/serviceaccount")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


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
    assert out.returncode == 0 and json.loads(out.stdout)["node"].startswith("node"), (out.stdout, out.stderr)
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
    """The ServiceAccount tokens and the heartbeat key the pods were given never show up in what the
    containers print (the kubelets' pod logs) or serve (/metrics)."""
    fresh.service("secrets-check")
    secrets_: set[bytes] = set()
    for sec in fresh.api.get(f"/api/v1/namespaces/{NAMESPACE}/secrets")["items"]:
        if sec["type"] == "kubernetes.io/service-account-token" or "key" in (sec.get("data") or {}):
            secrets_ |= {base64.b64decode(v) for k, v in sec["data"].items() if k in ("token", "key")}
    assert len(secrets_) >= 3, "expected the speaker's and controller's SA tokens and the heartbeat key"
    texts = [f.read_bytes() for h in realcluster.hosts(fresh.topo)
             for f in (fresh.node(h.name).workdir / "log" / "pods").rglob("*.log") if f.is_file()]
    assert any(b"lbctl-speaker" in t or b"speaker" in t for t in texts), "no pod logs found"
    for h in realcluster.hosts(fresh.topo):
        metrics = subprocess.run(["ip", "netns", "exec", h.netns, "curl", "-sf", "-m", "3", fresh.speaker_url(h.name)],
                                 capture_output=True)
        assert metrics.returncode == 0 and b"# HELP" in metrics.stdout, h.name
        texts.append(metrics.stdout)
    for secret in secrets_:
        for piece in (secret, secret[:24], secret[-24:]):
            assert not any(piece in t for t in texts), "a secret appears in a log or in /metrics"
