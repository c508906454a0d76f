"""Owner election: deterministic, even, minimal movement, and the node eligibility rules."""

from __future__ import annotations

import hashlib
from collections import Counter

from lbctl.core.election import EXCLUDE_LB_LABEL, NodeInfo, elect, eligible_nodes, owner, rank

NODES = ["node-a", "node-b", "node-c", "node-d"]


def test_fixed_order_is_stable_across_processes():
    # Literal values: a change here means speakers of different versions would disagree.
    assert rank("192.0.2.100", NODES) == ["node-b", "node-a", "node-c", "node-d"]
    assert rank("2001:db8::100", NODES) == ["node-c", "node-b", "node-d", "node-a"]


def test_order_matches_independent_sha256():
    for i in range(50):
        ip = f"10.0.{i}.1"
        expected = sorted(NODES, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).digest())
        assert rank(ip, reversed(NODES)) == expected
        assert owner(ip, set(NODES)) == expected[0]


def test_ipv6_spelling_does_not_change_owner():
    assert rank("2001:DB8:0::100", NODES) == rank("2001:db8::100", NODES)


def test_empty_and_duplicates():
    assert rank("192.0.2.1", []) == []
    assert owner("192.0.2.1", []) is None
    assert rank("192.0.2.1", ["x", "x", "y"]) in (["x", "y"], ["y", "x"])


def test_distribution_is_roughly_even():
    nodes = NODES[:3]
    counts = Counter(owner(f"10.1.{i // 256}.{i % 256}", nodes) for i in range(1000))
    assert set(counts) == set(nodes)
    assert all(250 <= c <= 420 for c in counts.values()), counts


def test_only_the_leaving_nodes_ips_move():
    ips = [f"10.2.{i // 256}.{i % 256}" for i in range(1000)]
    before = {ip: owner(ip, NODES) for ip in ips}
    after = {ip: owner(ip, NODES[:-1]) for ip in ips}
    for ip in ips:
        if before[ip] != "node-d":
            assert after[ip] == before[ip]
        else:
            assert after[ip] == rank(ip, NODES)[1]  # the runner-up takes over
    assert any(before[ip] == "node-d" for ip in ips)


def infos(**labels_by_node) -> dict[str, NodeInfo]:
    return {n: NodeInfo(n, labels_by_node.get(n.replace("-", "_"), {})) for n in NODES}


def test_eligible_all_live_known_nodes_by_default():
    nodes = infos()
    assert eligible_nodes({"node-a", "node-b", "ghost"}, nodes, None, False, None) == {"node-a", "node-b"}
    assert eligible_nodes(set(NODES), nodes, [], False, None) == set(NODES)


def test_exclude_label_any_value():
    nodes = infos(node_a={EXCLUDE_LB_LABEL: ""}, node_b={EXCLUDE_LB_LABEL: "false"})
    assert eligible_nodes(set(NODES), nodes, None, False, None) == {"node-c", "node-d"}


def test_network_unavailable():
    nodes = infos()
    nodes["node-c"] = NodeInfo("node-c", {}, network_unavailable=True)
    assert eligible_nodes(set(NODES), nodes, None, False, None) == {"node-a", "node-b", "node-d"}


def test_node_selectors_any_match():
    nodes = infos(node_a={"zone": "z1"}, node_b={"zone": "z2"}, node_c={"edge": "yes"})
    sels = [{"matchLabels": {"zone": "z1"}}, {"matchExpressions": [{"key": "edge", "operator": "Exists"}]}]
    assert eligible_nodes(set(NODES), nodes, sels, False, None) == {"node-a", "node-c"}
    assert eligible_nodes(set(NODES), nodes, [{}], False, None) == set(NODES)  # empty selector: all


def test_etp_local_needs_ready_endpoint():
    nodes = infos()
    assert eligible_nodes(set(NODES), nodes, None, True, {"node-b", "ghost"}) == {"node-b"}
    assert eligible_nodes(set(NODES), nodes, None, True, set()) == set()
    assert eligible_nodes(set(NODES), nodes, None, True, None) == set()
    # Endpoint readiness is ignored for Cluster policy.
    assert eligible_nodes(set(NODES), nodes, None, False, set()) == set(NODES)


def test_elect_combines_filters_and_ranking():
    nodes = infos(node_b={EXCLUDE_LB_LABEL: "true"})
    ip = "192.0.2.100"  # ranking: b, a, c, d
    assert elect(ip, set(NODES), nodes, None, False, None) == "node-a"
    assert elect(ip, {"node-c", "node-d"}, nodes, None, False, None) == "node-c"
    assert elect(ip, set(NODES), nodes, None, True, {"node-d"}) == "node-d"
    assert elect(ip, set(), nodes, None, False, None) is None
