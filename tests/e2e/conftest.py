"""The e2e fixture: the real-cluster `lbctl lab` (3 workers and a tainted control plane, dual-stack) per test
module, always torn down.

The chart runs as users install it (kubelets, containerd, kube-proxy, the DaemonSet and Deployment
controllers), with `speaker.restartHold` 0: a speaker these tests stop hands over at once, as on a node being
drained (the hold has its own test in test_real_cluster.py). Every Service these tests make selects the lab's
backend (`web-<node>`, port 8080) with externalTrafficPolicy Local, so an HTTP answer names the node that owns
the address, and the control plane (labelled exclude-from-external-load-balancers, as kubeadm does) owns none.

Every lab client runs inside a lab namespace: API calls through lbctl.lab.apicall in lbctl-cp,
HTTP/ARP/NDP probes in lbctl-client. Nothing here dials a lab address from the root namespace.
"""

from __future__ import annotations

import ipaddress
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

from lbctl.lab import probes, processes, realcluster, realspeakers
from lbctl.lab.api import LabApi, wait_for
from lbctl.lab.lifecycle import TOPOLOGY_FILE
from lbctl.lab.realnode import RealNode
from lbctl.lab.topology import BRIDGE_NS, CLIENT_NS, CP_NS, Topology

NS = "default"
SERVICES = f"/api/v1/namespaces/{NS}/services"
IPPOOLS = "/apis/lbctl.io/v1alpha1/ippools"
EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbctl.cli", "lab", *args], capture_output=True, text=True,
                          timeout=timeout)


class Lab:
    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.api = LabApi()

    # --- API (inside lbctl-cp) ---
    def service(self, name: str, wait_ip: bool = True, annotations: dict[str, str] | None = None,
                **spec: Any) -> dict[str, Any]:
        """A LoadBalancer Service for the lab's backend on every worker (externalTrafficPolicy Local: the owner's
        own backend answers); `spec` overrides any of it, e.g. selector={"app": "web", "node": "node2"}."""
        body = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": NS, "annotations": annotations or {}},
                "spec": {"type": "LoadBalancer", "selector": {"app": realcluster.BACKEND},
                         "externalTrafficPolicy": "Local",
                         "ports": [{"name": "http", "port": 80, "targetPort": realcluster.BACKEND_PORT,
                                    "protocol": "TCP"}], **spec}}
        self.api.create(SERVICES, body)
        return self.wait_ips(name) if wait_ip else body

    def wait_ips(self, name: str, count: int = 1, timeout: float = 20) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            svc = self.api.get(f"{SERVICES}/{name}")
            return svc if len(ingress_ips(svc)) >= count else None
        return wait_for(ready, timeout, f"{count} ingress IP(s) on Service {name}")

    def wait_served(self, ip: str, timeout: float = 10) -> str:
        """The node whose backend answers HTTP on `ip`, once one does: kube-proxy programs a new address on its
        own sync, a moment after the Service has it."""
        return wait_for(lambda: probes.node_answering(ip), timeout, f"an HTTP answer from {ip}", interval=0.1)

    def delete_service(self, name: str) -> None:
        self.api.delete(f"{SERVICES}/{name}")

    def select(self, service: str, node: str | None) -> None:
        """Point `service` at the backend on `node` alone (None: at no pod); the EndpointSlice controller and
        the kubelets' readiness probes make the endpoints."""
        self.api.patch(f"{SERVICES}/{service}", {"spec": {"selector": {"app": realcluster.BACKEND,
                                                                         "node": node or "none"}}})

    def label_node(self, node: str, key: str, value: str | None) -> None:
        """value None removes the label."""
        self.api.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {key: value}}})

    def pool(self, name: str, spec: dict[str, Any]) -> None:
        self.api.apply(IPPOOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": name},
                                 "spec": spec})

    # --- the client's view (inside lbctl-client) ---
    def node_of(self, mac: str | None) -> str | None:
        return self.topo.node_by_mac(mac) if mac else None

    def arp_owners(self, ip: str, count: int = 3) -> set[str]:
        """Node names whose MAC replied to `count` broadcast ARP requests."""
        return {self.node_of(m) or m for m in probes.arping(ip, count=count)}

    def wait_arp_owner(self, ip: str, timeout: float = 10, not_: str | None = None) -> str:
        def one() -> str | None:
            owners = {self.node_of(m) or m for m in probes.arping(ip, count=1, timeout=1)}
            return owners.pop() if len(owners) == 1 and not_ not in owners else None
        return wait_for(one, timeout, f"a single ARP owner for {ip}" + (f" other than {not_}" if not_ else ""),
                        interval=0.05)

    def ndp_macs(self, ip6: str, timeout: float = 1.0) -> set[str]:
        """MACs of every Neighbor Advertisement answering one multicast NS for `ip6` (scapy, in lbctl-client)."""
        client = self.topo.host("client")
        res = subprocess.run(["ip", "netns", "exec", CLIENT_NS, sys.executable, "-c", _NDP_PROBE, ip6, client.ip6,
                              client.mac, str(timeout)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return set(json.loads(res.stdout))

    # --- the real nodes (lbctl.lab.realspeakers) ---
    def node(self, name: str) -> RealNode:
        return realspeakers.node(name)

    def speaker_pid(self, node: str) -> int | None:
        return realspeakers.pid(node)

    def speaker_url(self, node: str, path: str = "/metrics") -> str:
        return realspeakers.url(self.topo, node, path)

    def speaker_log(self, node: str) -> str:
        return realspeakers.log(self.api, node)

    def speaker_pods(self) -> dict[str, dict[str, Any]]:
        return realspeakers.pods(self.api)

    # --- breaking things ---
    def kill_speaker(self, node: str, sig: signal.Signals) -> None:
        """Signal `node`'s speaker and keep it down until restore() (realspeakers.kill)."""
        realspeakers.kill(node, sig)

    def restore(self) -> None:
        """Bring back everything a test broke: the API server, unplugged links, stopped kubelets (which restart
        the speakers they find dead); then every speaker pod Ready."""
        if not processes.alive(processes.pid_of("kube-apiserver")):
            self.restart_apiserver()
        for h in self.topo.node_hosts:
            subprocess.run(["ip", "-n", BRIDGE_NS, "link", "set", h.port, "up"], check=True)
        realspeakers.restore(self.api, self.topo)

    def kill_apiserver(self) -> list[str]:
        """SIGKILL kube-apiserver; returns its argv so restart_apiserver can bring the same one back."""
        pid = processes.pid_of("kube-apiserver")
        assert pid and processes.alive(pid)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        (processes.STATE / "kube-apiserver.argv").write_text(json.dumps([a.decode() for a in argv]))
        processes.kill("kube-apiserver", signal.SIGKILL)
        wait_for(lambda: not processes.alive(pid), 5, "kube-apiserver to die")
        return [a.decode() for a in argv]

    def restart_apiserver(self) -> None:
        argv = json.loads((processes.STATE / "kube-apiserver.argv").read_text())
        processes.spawn("kube-apiserver", CP_NS, argv)
        wait_for(lambda: self.api.batch([{"method": "GET", "path": "/readyz"}])[0]["status"] == 200, 60,
                 "kube-apiserver to come back", interval=0.5)


def ingress_ips(svc: dict[str, Any]) -> list[str]:
    return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]


def ipv4_of(svc: dict[str, Any]) -> str:
    return next(ip for ip in ingress_ips(svc) if ipaddress.ip_address(ip).version == 4)


def ipv6_of(svc: dict[str, Any]) -> str | None:
    return next((ip for ip in ingress_ips(svc) if ipaddress.ip_address(ip).version == 6), None)


_NDP_PROBE = r"""
import json, socket, sys
import time
from scapy.all import AsyncSniffer, Ether, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6, in6_getnsma, in6_getnsmac, sendp
target, src, mac, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
nsma = socket.inet_ntop(socket.AF_INET6, in6_getnsma(socket.inet_pton(socket.AF_INET6, target)))
dst = in6_getnsmac(socket.inet_pton(socket.AF_INET6, nsma))
pkt = Ether(src=mac, dst=dst) / IPv6(src=src, dst=nsma, hlim=255) / ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=mac)
sn = AsyncSniffer(iface="eth0", filter="icmp6", store=True)
sn.start()
time.sleep(0.3)  # let the capture attach before asking
sendp(pkt, iface="eth0", verbose=0)
time.sleep(timeout)
sn.stop()
macs = {p[Ether].src for p in sn.results if p.haslayer(ICMPv6ND_NA) and p[ICMPv6ND_NA].tgt == target}
print(json.dumps(sorted(macs)))
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("e2e tests need root: they create network namespaces")
    try:
        res = _cli("up", "--nodes", "3", "--restart-hold", "0")
        if res.returncode:
            pytest.fail(f"lbctl lab up failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        yield Lab(Topology.load(TOPOLOGY_FILE))
    finally:
        _cli("down", timeout=60)


@pytest.fixture
def fresh(lab: Lab) -> Iterator[Lab]:
    """A lab with everything a previous test broke put back, and its Services removed afterwards."""
    lab.restore()
    before = {s["metadata"]["name"] for s in lab.api.get(SERVICES)["items"]}
    yield lab
    lab.restore()
    for s in lab.api.get(SERVICES)["items"]:
        if s["metadata"]["name"] not in before:
            lab.delete_service(s["metadata"]["name"])


def wait_neigh_change(ip: str, old_mac: str, timeout: float) -> tuple[probes.Neighbour, float]:
    """Poll the client's neighbour table (passively: sends nothing) until `ip` maps to another MAC."""
    start = time.monotonic()
    entry = wait_for(lambda: (n := probes.neigh(ip)) and n.mac and n.mac != old_mac and n, timeout,
                     f"the client's neighbour entry for {ip} to leave {old_mac}", interval=0.02)
    return entry, time.monotonic() - start
