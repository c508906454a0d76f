"""The lab as a real cluster (lbctl.lab.realcluster): the chart's pods are created by the real DaemonSet and
Deployment controllers, bound by the real scheduler, run by real kubelets in runc containers with the chart's
securityContext, made Ready by the kubelets' probes; Services reach real pods through the real kube-proxy, with
endpoints from the real EndpointSlice controller.

`lbctl lab up` brings it up as users would see it: the backend (lbctl.lab.backend in its own image) runs as
one Deployment per worker, so "scale the backend to 0 on a node" is one scale of that node's Deployment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lbctl.lab import lifecycle, probes, realcluster
from lbctl.lab.api import LabApi, wait_for
from lbctl.lab.cluster import NAMESPACE
from lbctl.lab.realnode import RealNode
from lbctl.lab.topology import Topology

from .conftest import SERVICES, Lab, ingress_ips, ipv4_of, ipv6_of
from .test_partition import _ROUNDS

pytestmark = pytest.mark.timeout(900)

NS = "default"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
CAP_NET_RAW = 1 << 13
SERVICE_IP = "198.19.0.1"
TAKEOVER_S = 3.0  # default timing: dead-after and the first re-announce, with room for a loaded 2-CPU machine  # the `kubernetes` Service: the first address of the lab's Service range


class RealLab:
    def __init__(self, topo: Topology) -> None:
        self.topo, self.api = topo, LabApi()

    def node(self, name: str) -> RealNode:
        return RealNode.load(realcluster.NODES / name)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"]

    def speaker_pod(self, node: str) -> dict[str, Any] | None:
        """The speaker pod on `node`, None between a deletion and the DaemonSet controller's replacement."""
        return next((p for p in self.pods(NAMESPACE, "app.kubernetes.io/component=speaker")
                     if p["spec"].get("nodeName") == node), None)

    def speaker_restarts(self, node: str) -> int:
        pod = self.speaker_pod(node)
        return pod["status"]["containerStatuses"][0]["restartCount"] if pod else -1

    def process(self, node: str, needle: bytes) -> int | None:
        """A process of the node's containers whose command line holds `needle`."""
        for pid in self.node(node).pids_in_cgroup():
            try:
                if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                pass
        return None

    def owner(self, ip: str, not_: str | None = None, timeout: float = 15) -> str:
        def one() -> str | None:
            owners = {self.topo.node_by_mac(m) or m for m in probes.arping(ip, count=1, timeout=1)}
            return owners.pop() if len(owners) == 1 and not_ not in owners else None
        return wait_for(one, timeout, f"one ARP owner for {ip}" + (f" other than {not_}" if not_ else ""), 0.1)

    def scale(self, name: str, replicas: int) -> None:
        self.api.patch(f"{DEPLOYMENTS}/{name}", {"spec": {"replicas": replicas}})


def _ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions") or [])


@pytest.fixture(scope="module")
def real() -> Iterator[RealLab]:
    if os.geteuid() != 0:
        pytest.skip("a real cluster needs root: network and mount namespaces, cgroups")
    try:
        res = subprocess.run([sys.executable, "-m", "lbctl.cli", "lab", "up", "--nodes", "3"], capture_output=True,
                             text=True, timeout=600)
        if res.returncode:
            pytest.fail(f"lbctl lab up failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        print(res.stdout)
        yield RealLab(Topology.load(lifecycle.TOPOLOGY_FILE))
    finally:
        subprocess.run([sys.executable, "-m", "lbctl.cli", "lab", "down"], capture_output=True, timeout=120)


def test_chart_pods_come_from_the_real_controllers_and_scheduler(real: RealLab) -> None:
    speakers = real.pods(NAMESPACE, "app.kubernetes.io/component=speaker")
    # The DaemonSet controller put one on every node, the tainted control plane included (the chart's
    # tolerations), and the scheduler bound the controller's pod to a worker (it has no toleration).
    assert sorted(p["spec"]["nodeName"] for p in speakers) == ["cp", "node1", "node2", "node3"]
    assert {(o["kind"], o["controller"]) for p in speakers for o in p["metadata"]["ownerReferences"]} == \
        {("DaemonSet", True)}
    [ctl] = real.pods(NAMESPACE, "app.kubernetes.io/component=controller")
    assert [o["kind"] for o in ctl["metadata"]["ownerReferences"]] == ["ReplicaSet"]
    assert ctl["spec"]["nodeName"] in {"node1", "node2", "node3"}
    events = real.api.get(f"/api/v1/namespaces/{NAMESPACE}/events")["items"]
    scheduled = {e["involvedObject"]["name"] for e in events if e["reason"] == "Scheduled"
                 and (e.get("reportingComponent") or e["source"].get("component")) == "default-scheduler"}
    assert ctl["metadata"]["name"] in scheduled
    cp = real.api.get("/api/v1/nodes/cp")
    assert {"key": realcluster.CP_ROLE, "effect": "NoSchedule"} in \
        [{k: t[k] for k in ("key", "effect")} for t in cp["spec"]["taints"]]


def test_speaker_runs_in_runc_with_net_raw_only(real: RealLab) -> None:
    pid = wait_for(lambda: real.process("node1", b"lbctl-speaker"), 10, "the speaker's process on node1")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert int(status["CapEff"], 16) == CAP_NET_RAW and int(status["CapBnd"], 16) == CAP_NET_RAW
    assert status["Uid"].split()[0] == "0" and status["NoNewPrivs"].strip() == "1"
    # hostNetwork: the node's namespace; its root filesystem is read-only.
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{real.topo.host('node1').netns}").st_ino
    root = next(line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                if line.split()[4] == "/")
    assert "ro" in root[5].split(","), root
    ctl_pid = wait_for(lambda: next((p for n in ("node1", "node2", "node3")
                                     if (p := real.process(n, b"lbctl-controller"))), None), 10, "the controller")
    ctl = dict(line.split(":", 1) for line in Path(f"/proc/{ctl_pid}/status").read_text().splitlines())
    assert int(ctl["CapEff"], 16) == 0 and ctl["Uid"].split()[0] != "0"


def test_kubelet_probe_decides_speaker_readiness(real: RealLab) -> None:
    """A speaker that cannot reach the API server through the `kubernetes` Service never becomes Ready (its
    /readyz answers 503 to the kubelet's probe); once it can, the kubelet marks it Ready."""
    ns = real.topo.host("node2").netns
    # Only the Service's traffic: the kubelet dials the API server's own address and must keep reporting.
    rule = ["OUTPUT", "-m", "conntrack", "--ctorigdst", SERVICE_IP, "-j", "REJECT"]
    subprocess.run(["ip", "netns", "exec", ns, "iptables", "-I", *rule], check=True)
    try:
        old = real.speaker_pod("node2")
        assert old
        real.api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{old['metadata']['name']}")
        new = wait_for(lambda: (p := real.speaker_pod("node2")) and p["metadata"]["uid"] != old["metadata"]["uid"]
                       and p["status"].get("containerStatuses") and p["status"]["containerStatuses"][0].get("state", {})
                       .get("running") and p, 60, "a new speaker pod running on node2")
        # Two of the chart's probe periods (5 s) after it started: still not Ready.
        time.sleep(12)
        pod = real.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{new['metadata']['name']}")
        assert not _ready(pod), pod["status"]
        assert "Readiness probe failed" in (real.node("node2").logs / "kubelet.log").read_text() or \
            any(e["reason"] == "Unhealthy" for e in real.api.get(f"/api/v1/namespaces/{NAMESPACE}/events")["items"]
                if e["involvedObject"]["name"] == new["metadata"]["name"])
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "iptables", "-D", *rule], check=False)
    wait_for(lambda: _ready(real.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{new['metadata']['name']}")), 60,
             "the speaker Ready once the API server is reachable")


def _serve(real: RealLab, name: str, **spec: Any) -> str:
    real.api.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
                               "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                                        "ports": [{"port": 80, "targetPort": realcluster.BACKEND_PORT}], **spec}})
    svc = wait_for(lambda: (s := real.api.get(f"{SERVICES}/{name}")) and ingress_ips(s) and s, 30,
                   f"an address for Service {name}")
    return ipv4_of(svc)


def test_vip_reaches_pods_through_kube_proxy(real: RealLab) -> None:
    ip = _serve(real, "via-proxy")
    try:
        owner = real.owner(ip)
        assert owner in {"cp", "node1", "node2", "node3"}
        # The client's connection is DNATed by the owner's kube-proxy rules to a web pod on any node.
        wait_for(lambda: probes.curl(ip, timeout=2) is not None, 20, f"HTTP through {ip}")
        # No address of the VIP on any interface: iptables mode answers it from the nat table alone.
        for h in realcluster.hosts(real.topo):
            out = subprocess.run(["ip", "-n", h.netns, "-o", "addr"], capture_output=True, text=True).stdout
            assert f" {ip}/" not in out, (h.name, out)
    finally:
        real.api.delete(f"{SERVICES}/via-proxy")


def test_etp_local_follows_real_endpoint_readiness(real: RealLab) -> None:
    ip = _serve(real, "local", externalTrafficPolicy="Local")
    try:
        owner = real.owner(ip)
        assert owner in {"node1", "node2", "node3"}, "only nodes with a local endpoint may own it (not cp)"
        wait_for(lambda: probes.curl(ip, timeout=2) is not None, 20, f"HTTP through {ip} on {owner}")
        real.scale(f"web-{owner}", 0)
        try:
            moved = real.owner(ip, not_=owner, timeout=30)
            assert moved in {"node1", "node2", "node3"}
            wait_for(lambda: probes.curl(ip, timeout=2) is not None, 20, f"HTTP through {ip} on {moved}")
        finally:
            real.scale(f"web-{owner}", 1)
        wait_for(lambda: any(_ready(p) for p in real.pods(NS, f"app=web,node={owner}")), 60, f"web on {owner} back")
    finally:
        real.api.delete(f"{SERVICES}/local")


def test_killed_owner_speaker_fails_over_and_kubelet_restarts_it(real: RealLab) -> None:
    """SIGKILL of the owner's speaker container: another node answers ARP until the kubelet's restart (no
    back-off on a first restart) is back and warm; the handover is watched in ARP rounds every 50 ms."""
    ip = _serve(real, "failover")
    try:
        owner = real.owner(ip)
        pid = real.process(owner, b"lbctl-speaker")
        assert pid
        before = real.speaker_restarts(owner)
        client = real.topo.host("client")
        probe = subprocess.Popen(["ip", "netns", "exec", client.netns, sys.executable, "-c", _ROUNDS,
                                  json.dumps([ip]), client.mac, client.ip4, "8"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        out, _ = probe.communicate(timeout=60)
        after = [(t - killed, {real.topo.node_by_mac(m) or m for m in seen[ip]}) for t, seen in json.loads(out)
                 if t >= killed]
        takeover = next((t for t, nodes in after if nodes and owner not in nodes), None)
        assert takeover is not None, f"no other node answered for {ip} after {owner}'s speaker was killed: {after}"
        assert takeover <= TAKEOVER_S, after
        assert all(len(nodes) <= 1 for _, nodes in after), f"two nodes answered in one round: {after}"
        print(f"real cluster: {owner}'s speaker SIGKILLed, another node answers after {takeover * 1000:.0f} ms")
        wait_for(lambda: real.speaker_restarts(owner) > before and _ready(real.speaker_pod(owner) or {}), 90,
                 f"the kubelet restarting {owner}'s speaker, Ready again")
    finally:
        real.api.delete(f"{SERVICES}/failover")


def test_restarted_speaker_claims_no_address_of_a_live_peer(real: RealLab) -> None:
    """A speaker pod replaced (as in a rolling update) must not answer, even for a moment, for an address whose
    owner is alive: its new incarnation must first be verified by its peers (they echo it) before it elects,
    else it takes them for dead and GARPs their addresses (a move and back, each resetting connections in
    flight). ARP rounds every 50 ms watch every address while the pod is replaced."""
    names = [f"keep-{i}" for i in range(4)]
    ips = [_serve(real, n) for n in names]
    try:
        owners = {ip: real.owner(ip) for ip in ips}
        victim = next(n for n in ("node1", "node2", "node3") if list(owners.values()).count(n) < len(ips))
        watched = [ip for ip, o in owners.items() if o != victim]
        old = real.speaker_pod(victim)
        assert old
        client = real.topo.host("client")
        probe = subprocess.Popen(["ip", "netns", "exec", client.netns, sys.executable, "-c", _ROUNDS,
                                  json.dumps(watched), client.mac, client.ip4, "25"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        real.api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{old['metadata']['name']}")
        out, _ = probe.communicate(timeout=60)
        new = real.speaker_pod(victim)
        assert new and new["metadata"]["uid"] != old["metadata"]["uid"] and _ready(new), \
            "the replacement speaker was not Ready within the 25 s watched"
        wrong = [(round(t, 2), ip, sorted(real.topo.node_by_mac(m) or m for m in seen[ip]))
                 for t, seen in json.loads(out) for ip in watched
                 if any((real.topo.node_by_mac(m) or m) != owners[ip] for m in seen[ip])]
        assert not wrong, f"{victim}'s new speaker (or another node) answered for addresses of live peers: {wrong[:10]}"
    finally:
        for n in names:
            real.api.delete(f"{SERVICES}/{n}")


def test_lab_status_shows_each_hosts_daemons_and_pods(real: RealLab) -> None:
    res = subprocess.run([sys.executable, "-m", "lbctl.cli", "lab", "status"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    for host in ("cp", "node1", "node2", "node3"):
        row = next(line.split() for line in lines if line.split()[:1] == [host] and "running" in line)
        assert row[1] == "True" and row[-3:] == ["running"] * 3, row
    assert any("lbctl-speaker" in line and "True" in line for line in lines), res.stdout


def _sysctl(netns: str, **values: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w",
                    *(f"net.ipv4.conf.{k.replace('__', '.')}={v}" for k, v in values.items())], check=True)


def test_ipvs_mode_strict_arp_problem_on_one_node(real: RealLab) -> None:
    """kube-proxy runs in iptables mode here (this kernel has no IPVS). What IPVS mode does to a node is put
    every Service address on `kube-ipvs0`; without strict ARP the kernel then answers ARP for a LoadBalancer
    IP on eth0 too, beside the speaker's owner. Shown on one node, with `lbctl preflight` failing there, then
    fixed by strict ARP (arp_ignore=1, arp_announce=2: kube-proxy's strictARP)."""
    ip = _serve(real, "ipvs-demo")
    owner = real.owner(ip)
    other = next(n for n in ("node1", "node2", "node3") if n != owner)
    ns = real.topo.host(other).netns
    ip_cmd = ["ip", "-n", ns]
    try:
        # The lab gives every node a kube-ipvs0 (an ifb where the kernel has no dummy links), empty.
        assert subprocess.run([*ip_cmd, "link", "show", "kube-ipvs0"], capture_output=True).returncode == 0
        subprocess.run([*ip_cmd, "addr", "add", f"{ip}/32", "dev", "kube-ipvs0"], check=True)
        _sysctl(ns, all__arp_ignore="0", all__arp_announce="0", eth0__arp_ignore="0", eth0__arp_announce="0")
        macs = {real.topo.node_by_mac(m) or m for m in probes.arping(ip, count=3)}
        assert macs == {owner, other}, f"without strict ARP both should answer for {ip}: {macs}"
        pre = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "lbctl.cli", "preflight", "--node-only"],
                             capture_output=True, text=True, timeout=60)
        assert pre.returncode != 0 and "arp_ignore" in pre.stdout, pre.stdout + pre.stderr
        _sysctl(ns, all__arp_ignore="1", all__arp_announce="2", eth0__arp_ignore="1", eth0__arp_announce="2")
        macs = {real.topo.node_by_mac(m) or m for m in probes.arping(ip, count=3)}
        assert macs == {owner}, f"with strict ARP only the speaker's owner answers for {ip}: {macs}"
        pre = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "lbctl.cli", "preflight", "--node-only"],
                             capture_output=True, text=True, timeout=60)
        assert "arp_ignore" not in "".join(l for l in pre.stdout.splitlines() if l.startswith("FAIL")), pre.stdout
    finally:
        subprocess.run([*ip_cmd, "addr", "del", f"{ip}/32", "dev", "kube-ipvs0"], capture_output=True)
        _sysctl(ns, all__arp_ignore="1", all__arp_announce="2", eth0__arp_ignore="1", eth0__arp_announce="2")
        real.api.delete(f"{SERVICES}/ipvs-demo")


def test_replaced_owner_speaker_keeps_its_address_no_move(real: RealLab) -> None:
    """The restart hold: the owner's speaker pod is deleted (what a rolling update does to each node). Its peers
    hold its address until the new pod's speaker is live, so no other node ever answers for it, then the
    owner answers again with the same MAC; nothing else claimed it meanwhile."""
    ip = _serve(real, "held")
    try:
        owner = real.owner(ip)
        old = real.speaker_pod(owner)
        assert old
        client = real.topo.host("client")
        probe = subprocess.Popen(["ip", "netns", "exec", client.netns, sys.executable, "-c", _ROUNDS,
                                  json.dumps([ip]), client.mac, client.ip4, "40"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        deleted = time.monotonic()
        real.api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{old['metadata']['name']}")
        out, _ = probe.communicate(timeout=60)
        rounds = [(t - deleted, {real.topo.node_by_mac(m) or m for m in seen[ip]}) for t, seen in json.loads(out)]
        others = [(round(t, 2), n) for t, n in rounds if n - {owner}]
        assert not others, f"another node answered for {ip} while {owner}'s speaker was replaced: {others[:10]}"
        silent = [t for t, n in rounds if t > 0 and not n]
        back = next((t for t, n in rounds if t > (silent[0] if silent else 0) and n == {owner}), None)
        assert back is not None, f"{owner} did not answer for {ip} again within the 40 s watched: {rounds[-5:]}"
        print(f"real cluster: {owner}'s speaker pod replaced; {ip} unanswered for {len(silent) * 0.05:.1f} s of "
              f"ARP rounds, answered again by {owner} {back:.1f} s after the delete, by no other node meanwhile")
    finally:
        real.api.delete(f"{SERVICES}/held")


def _serve_dual(real: RealLab, name: str, selector: dict[str, str], **spec: Any) -> str:
    """A PreferDualStack LoadBalancer Service; returns its IPv6 ingress address once it has both families."""
    real.api.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
                               "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "PreferDualStack",
                                        "selector": selector,
                                        "ports": [{"port": 80, "targetPort": realcluster.BACKEND_PORT}], **spec}})
    svc = wait_for(lambda: (s := real.api.get(f"{SERVICES}/{name}")) and len(ingress_ips(s)) >= 2 and s, 30,
                   f"an IPv4 and an IPv6 address for Service {name}")
    ip6 = ipv6_of(svc)
    assert ip6, svc["status"]
    return ip6


def _ndp_owner(real: RealLab, ip6: str, timeout: float = 20) -> str:
    """The one node whose MAC answers a Neighbor Solicitation for `ip6` (from the client namespace)."""
    lab = Lab(real.topo)

    def one() -> str | None:
        owners = {real.topo.node_by_mac(m) or m for m in lab.ndp_macs(ip6)}
        return owners.pop() if len(owners) == 1 else None
    return wait_for(one, timeout, f"one NDP owner for {ip6}", 0.1)


def _answer(ip6: str) -> dict[str, Any]:
    body = wait_for(lambda: probes.curl(ip6, timeout=2), 20, f"HTTP through [{ip6}]")
    return json.loads(body)


def test_dual_stack_service_reaches_its_backend_over_ipv6(real: RealLab) -> None:
    """As on a kubespray dual-stack cluster: the pods have an address of each family, the EndpointSlice controller
    fills an IPv6 slice, and kube-proxy's ip6tables rules carry the client's IPv6 connection to the LoadBalancer
    IP (answered over NDP by one speaker) to the selected pod."""
    [pod] = real.pods(NS, "app=web,node=node1")
    assert [":" in a["ip"] for a in pod["status"]["podIPs"]] == [False, True], pod["status"]["podIPs"]
    ip6 = _serve_dual(real, "dual", {"app": "web", "node": "node1"})
    try:
        owner = _ndp_owner(real, ip6)
        assert owner in {"cp", "node1", "node2", "node3"}
        got = _answer(ip6)
        assert (got["node"], got["pod"]) == ("node1", pod["metadata"]["name"]), got
        print(f"real cluster: curl http://[{ip6}]/ (NDP owner {owner}) -> {got}")
    finally:
        real.api.delete(f"{SERVICES}/dual")


def test_etp_local_over_ipv6_names_the_owner_node(real: RealLab) -> None:
    """externalTrafficPolicy Local over IPv6: only a node with a Ready local pod owns the address, and its pod
    answers with the client's own IPv6 address (no masquerade)."""
    ip6 = _serve_dual(real, "local6", {"app": "web"}, externalTrafficPolicy="Local")
    try:
        owner = _ndp_owner(real, ip6)
        assert owner in {"node1", "node2", "node3"}, "only nodes with a local endpoint may own it (not cp)"
        got = _answer(ip6)
        assert (got["node"], got["client"]) == (owner, real.topo.host("client").ip6), got
    finally:
        real.api.delete(f"{SERVICES}/local6")
