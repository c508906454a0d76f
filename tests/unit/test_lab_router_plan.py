"""The lab's BGP mode on paper (no root): where the router and the client sit, the chart values that point the
speakers at the router (checked by the core's own parsers), and the router's FRR configuration."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from lbctl.core.bfdprofiles import parse_bfd_profile
from lbctl.core.bgp_advertisements import unknown_peers
from lbctl.core.bgppeers import judge_peers
from lbctl.core.pools import parse_pool
from lbctl.lab import cluster, realcluster, router
from lbctl.lab.topology import NET4, POOL4, Topology

TAKEN = ("198.18.0.0/24", realcluster.POD_NET, "198.19.0.0/16", "2001:db8:18::/64", realcluster.POD_NET6,
         "2001:db8:ffff::/112")  # the bridge, pods, Services (both families)


def test_bgp_puts_the_router_on_the_bridge_and_the_client_behind_it() -> None:
    topo = Topology.plan(3, ipv6=True, bgp=True)
    r, client = topo.host("router"), topo.host("client")
    assert (r.ip4, r.ip6) == (realcluster.GATEWAY, realcluster.GATEWAY6)  # the nodes' default gateway already
    assert r in topo.bridged and client not in topo.bridged
    for address in (client.ip4, client.ip6):
        assert not any(ipaddress.ip_address(address) in ipaddress.ip_network(t) for t in TAKEN), address
    assert router.node_of(topo, "198.18.0.22") == "node2" and router.node_of(topo, "2001:db8:18::23") == "node3"


def test_without_bgp_the_lab_is_as_before() -> None:
    topo = Topology.plan(3, ipv6=True)
    assert [h.name for h in topo.hosts] == ["cp", "node1", "node2", "node3", "client"]
    assert topo.host("client").ip4 == f"{NET4}.100" and topo.bridged == topo.hosts
    values = cluster.lab_values(topo, ("img", "tag"))
    assert "bgp" not in values and set(values["pools"][0]) == {"name", "addresses"}


def test_bgp_mode_is_kept_in_the_topology_file(tmp_path: Path) -> None:
    topo = Topology.plan(2, ipv6=False, bgp=True)
    topo.save(tmp_path / "t.json")
    assert Topology.load(tmp_path / "t.json") == topo
    (tmp_path / "old.json").write_text((tmp_path / "t.json").read_text().replace('"bgp": true', '"x": 0'))
    assert Topology.load(tmp_path / "old.json").bgp is False  # a lab written before BGP mode


def test_ipv6_next_hops_are_the_nodes_link_local_addresses() -> None:
    # As the router's kernel showed them: `nexthop via fe80::18:ff:fe00:21 dev eth0`.
    assert router.link_local("02:18:00:00:00:21") == "fe80::18:ff:fe00:21"
    assert router.node_of(Topology.plan(2, bgp=True), "fe80::18:ff:fe00:22") == "node2"


def test_lab_values_peer_every_node_with_the_router_and_announce_the_pool_by_bgp_only() -> None:
    for ipv6, peers in ((True, ["router", "router-v6"]), (False, ["router"])):
        topo = Topology.plan(3, ipv6=ipv6, bgp=True)
        values = cluster.lab_values(topo, ("img", "tag"))
        bgp = values["bgp"]
        assert bgp["enabled"] is True
        assert [p["name"] for p in bgp["peers"]] == peers
        profiles = [parse_bfd_profile(p["name"], {k: v for k, v in p.items() if k != "name"})
                    for p in bgp["bfdProfiles"]]
        verdicts = judge_peers([(p["name"], {k: v for k, v in p.items() if k != "name"}) for p in bgp["peers"]],
                               [p.name for p in profiles])
        assert all(v.ready for v in verdicts.values()), verdicts
        assert {(p["peerAddress"], p["peerASN"], p["myASN"], p["bfdProfile"]) for p in bgp["peers"]} <= {
            (router.ROUTER_IP4, 64500, 64512, "lab"), (router.ROUTER_IP6, 64500, 64512, "lab")}
        assert profiles[0].detect_multiplier * profiles[0].receive_interval <= 300  # sub-second failover
        pool = values["pools"][0]
        spec = parse_pool(pool["name"], {k: v for k, v in pool.items() if k != "name"})
        assert spec.error is None and not spec.layer2_enabled and spec.bgp
        assert unknown_peers(spec.bgp, peers) == []
        assert pool["addresses"][0] == POOL4


def test_frr_config_listens_for_every_node_with_bfd_and_ecmp() -> None:
    conf = router.frr_conf(Topology.plan(3, ipv6=True, bgp=True))
    bgp = conf["bgpd"]
    for line in (f"router bgp {router.ROUTER_ASN}", "bgp listen range 198.18.0.0/24 peer-group NODES",
                 "bgp listen range 2001:db8:18::/64 peer-group NODES6", "neighbor NODES remote-as external",
                 "neighbor NODES bfd profile lab", "neighbor NODES6 bfd profile lab", "bgp graceful-restart-disable",
                 f"maximum-paths {router.MAXIMUM_PATHS}", "bgp log-neighbor-changes", "route-map NOTHING deny 10"):
        assert line in bgp, line
    assert "receive-interval 100" in conf["bfdd"] and "detect-multiplier 3" in conf["bfdd"]
    v4only = router.frr_conf(Topology.plan(3, ipv6=False, bgp=True))["bgpd"]
    assert "NODES6" not in v4only and "ipv6" not in v4only
