"""The real cluster's dual-stack addressing, without root: each host's pod ranges, the CNI config that gives
pods an address of each family, and kube-proxy's cluster CIDRs."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from lbctl.lab import realcluster, realnode
from lbctl.lab.topology import Topology

SERVICE_RANGES = ("198.19.0.0/16", "2001:db8:ffff::/112")  # the lab API server's --service-cluster-ip-range
HOSTS6 = "2001:db8:18::/64"


def test_every_host_has_an_ipv4_and_an_ipv6_pod_range_clear_of_the_rest() -> None:
    topo = Topology.plan(3, ipv6=True)
    ranges = [realcluster.pod_cidrs(topo, h) for h in realcluster.hosts(topo)]
    assert ranges[0] == ["198.18.128.0/24", "2001:db8:80::/64"] and ranges[3] == ["198.18.131.0/24",
                                                                                    "2001:db8:80:3::/64"]
    nets = [ipaddress.ip_network(c) for pair in ranges for c in pair]
    assert len(set(nets)) == len(nets)
    pod6 = ipaddress.ip_network(realcluster.POD_NET6)
    for net in (n for n in nets if n.version == 6):
        assert net.subnet_of(pod6)  # type: ignore[arg-type]
    for other in (*SERVICE_RANGES, HOSTS6):
        assert not any(n.overlaps(ipaddress.ip_network(other)) for n in nets if n.version == 6), other  # type: ignore[arg-type]
    assert realcluster.cluster_cidrs(topo) == f"{realcluster.POD_NET},{realcluster.POD_NET6}"


def test_ipv4_only_lab_keeps_one_range_per_host() -> None:
    topo = Topology.plan(2, ipv6=False)
    assert [realcluster.pod_cidrs(topo, h) for h in realcluster.hosts(topo)] == [
        ["198.18.128.0/24"], ["198.18.129.0/24"], ["198.18.130.0/24"]]
    assert realcluster.cluster_cidrs(topo) == realcluster.POD_NET


def _node(tmp_path: Path, cidrs: list[str], ip6: str) -> realnode.RealNode:
    return realnode.RealNode("node1", "rn-node1", "198.18.0.21", tmp_path / "w", tmp_path / "kc", cidrs, [], ip6)


def test_dual_stack_node_gives_pods_both_families_and_its_kubelet_the_gate(tmp_path: Path) -> None:
    node = _node(tmp_path, ["198.18.129.0/24", "2001:db8:80:1::/64"], "2001:db8:18::21")
    node._prepare()
    conf = json.loads((node.workdir / "cni" / "10-lbctl.conflist").read_text())
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "198.18.129.0/24"}],
                                                    [{"subnet": "2001:db8:80:1::/64"}]]
    argv = node._kubelet_argv(Path("kubelet"))
    assert "--node-ip=198.18.0.21,2001:db8:18::21" in argv and "--feature-gates=IPv6DualStack=true" in argv


def test_ipv4_only_node_runs_its_kubelet_as_before(tmp_path: Path) -> None:
    node = _node(tmp_path, ["198.18.129.0/24"], "")
    node._prepare()
    conf = json.loads((node.workdir / "cni" / "10-lbctl.conflist").read_text())
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "198.18.129.0/24"}]]
    argv = node._kubelet_argv(Path("kubelet"))
    assert "--node-ip=198.18.0.21" in argv and not any(a.startswith("--feature-gates") for a in argv)


def test_a_node_started_before_dual_stack_can_still_be_stopped(tmp_path: Path) -> None:
    """`lab down` of a lab whose node.json has the old single `pod_cidr` (seen: a KeyError, the lab left up)."""
    (tmp_path / "node.json").write_text(json.dumps({"name": "node1", "netns": "rn-node1", "ip": "198.18.0.21",
                                                    "kubeconfig": "kc", "pod_cidr": "198.18.129.0/24"}))
    node = realnode.RealNode.load(tmp_path)
    assert (node.pod_cidrs, node.ip6) == (["198.18.129.0/24"], "")
