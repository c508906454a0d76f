"""From watched objects to per-IP intents and owners; the static debug config."""

from __future__ import annotations

import pytest

from lbctl.core.announce import ClusterModel, StaticConfigError, owners, static_intents
from lbctl.core.election import EXCLUDE_LB_LABEL, rank


def svc(name: str, ips: list[str], etp: str = "Cluster", lb_class: str | None = None, ns: str = "default") -> dict:
    spec = {"type": "LoadBalancer", "externalTrafficPolicy": etp}
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    return {"metadata": {"namespace": ns, "name": name, "uid": f"uid-{name}"}, "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def node(name: str, labels: dict | None = None, unavailable: bool = False) -> dict:
    conds = [{"type": "NetworkUnavailable", "status": "True" if unavailable else "False"}]
    return {"metadata": {"name": name, "labels": labels or {}}, "status": {"conditions": conds}}


def pool(name: str, addresses: list[str], layer2: dict | None = None, created: str = "2024-01-01T00:00:00Z") -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"addresses": addresses, **({"layer2": layer2} if layer2 else {})}}


def eps(svc_name: str, nodes: list[str]) -> dict:
    return {"metadata": {"namespace": "default", "name": f"{svc_name}-x",
                         "labels": {"kubernetes.io/service-name": svc_name}},
            "endpoints": [{"conditions": {"ready": True}, "nodeName": n} for n in nodes]}


def model() -> ClusterModel:
    m = ClusterModel()
    m.apply("Node", "SYNC", [node("a", {"zone": "x"}), node("b", {"zone": "y"}), node("c", {"zone": "x"})])
    m.apply("IPPool", "SYNC", [pool("p", ["198.18.0.0/24"], {"nodeSelector": {"matchLabels": {"zone": "x"}},
                                                           "interfaces": ["eth1"]}),
                               pool("q", ["2001:db8::/64"])])
    m.apply("Service", "SYNC", [svc("web", ["198.18.0.10"]), svc("dns", ["198.18.0.10"], etp="Local"),
                                svc("other", ["198.18.0.11"], lb_class="someone-else"),
                                svc("v6", ["2001:DB8::0:5"])])
    m.apply("EndpointSlice", "SYNC", [eps("dns", ["c"])])
    return m


def test_shared_ip_collapses_and_takes_pool_layer2() -> None:
    intents = model().intents(None)
    assert set(intents) == {"198.18.0.10", "2001:db8::5"}  # other class skipped, v6 canonicalised
    i = intents["198.18.0.10"]
    assert [s.key for s in i.services] == ["default/dns", "default/web"]
    assert i.pool == "p" and i.interfaces == ("eth1",) and i.etp_local and i.ready_nodes == {"c"}
    assert intents["2001:db8::5"].pool == "q" and intents["2001:db8::5"].node_selectors == ()


def test_owners_apply_every_rule() -> None:
    m = model()
    live = {"a", "b", "c"}
    won = owners(m.intents(None), live, m.nodes)
    assert won["198.18.0.10"] == "c"  # zone x and the only ready endpoint
    assert won["2001:db8::5"] == rank("2001:db8::5", live)[0]
    m.apply("Node", "MODIFIED", node("c", {"zone": "x"}, unavailable=True))
    assert owners(m.intents(None), live, m.nodes)["198.18.0.10"] is None
    m.apply("Node", "MODIFIED", node("c", {"zone": "x", EXCLUDE_LB_LABEL: ""}))
    assert owners(m.intents(None), live, m.nodes)["198.18.0.10"] is None
    assert owners(m.intents(None), {"a"}, m.nodes)["2001:db8::5"] == "a"  # dead peers are not candidates


def test_changes_are_reported_and_deletes_work() -> None:
    m = model()
    assert not m.apply("Service", "MODIFIED", svc("web", ["198.18.0.10"]))  # same content
    assert m.apply("Service", "DELETED", svc("web", ["198.18.0.10"]))
    assert m.apply("Service", "DELETED", svc("dns", ["198.18.0.10"]))
    assert "198.18.0.10" not in m.intents(None)


def test_odd_objects_do_not_raise() -> None:
    m = ClusterModel()
    for kind in ("Service", "EndpointSlice", "Node", "IPPool"):
        m.apply(kind, "ADDED", None)
        m.apply(kind, "ADDED", {})
        m.apply(kind, "ADDED", {"metadata": None, "spec": "x", "status": 3})
        m.apply(kind, "SYNC", [None, 1, {}])
    m.apply("IPPool", "ADDED", pool("bad", ["not a range"]))
    m.apply("IPPool", "ADDED", pool("good", ["198.18.0.0/28"]))
    m.apply("Service", "ADDED", svc("weird", ["not-an-ip", "198.18.0.1"]))
    assert set(m.intents(None)) == {"198.18.0.1"}


def test_only_addresses_of_a_usable_pool_are_announced() -> None:
    """Whoever can write services/status must not make the cluster answer ARP for any address."""
    m = model()
    m.apply("Service", "ADDED", svc("gateway", ["198.18.1.1"]))  # outside every pool
    intents, withheld = m.intents(None), m.withheld(None)
    assert "198.18.1.1" not in intents
    reason, refs = withheld["198.18.1.1"]
    assert reason == "it is outside every IPPool" and [r.key for r in refs] == ["default/gateway"]
    assert "198.18.0.10" in intents and "198.18.0.10" not in withheld
    # A pool the controller marked not Ready (Invalid, Overlap) withdraws its addresses, saying why.
    unready = pool("q", ["2001:db8::/64"])
    unready["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "Overlap",
                                         "message": "2001:db8::/64 overlaps IPPool r"}]}
    assert m.apply("IPPool", "MODIFIED", unready)
    assert "2001:db8::5" not in m.intents(None)
    assert m.withheld(None)["2001:db8::5"][0] == "IPPool q is not Ready: 2001:db8::/64 overlaps IPPool r"
    unready["status"]["conditions"][0]["status"] = "True"
    assert m.apply("IPPool", "MODIFIED", unready)
    assert "2001:db8::5" in m.intents(None)
    # An unusable spec (the controller may not have said so yet): withheld too.
    m.apply("IPPool", "MODIFIED", pool("p", ["198.18.0.9-198.18.0.1"]))
    assert "198.18.0.10" not in m.intents(None) and "198.18.0.10" in m.withheld(None)


def test_pool_node_selector_list_form() -> None:
    m = model()
    m.apply("IPPool", "MODIFIED", pool("p", ["198.18.0.0/24"], {"nodeSelector": [
        {"matchLabels": {"zone": "y"}}, {"matchLabels": {"zone": "nowhere"}}]}))
    m.apply("Service", "DELETED", svc("dns", ["198.18.0.10"]))
    assert owners(m.intents(None), {"a", "b", "c"}, m.nodes)["198.18.0.10"] == "b"


def test_static_config() -> None:
    intents, nodes = static_intents({
        "nodes": ["n1", {"name": "n2", "labels": {"k": "v"}, "networkUnavailable": True}],
        "ips": {"198.18.0.5": {"services": ["ns/a", "b"], "etp_local": True, "ready_nodes": ["n1"],
                               "node_selector": {"matchLabels": {"k": "v"}}, "interfaces": ["eth0"]},
                "2001:db8::0:1": None}})
    assert set(nodes) == {"n1", "n2"} and nodes["n2"].network_unavailable
    i = intents["198.18.0.5"]
    assert [s.key for s in i.services] == ["ns/a", "default/b"] and i.etp_local and i.interfaces == ("eth0",)
    assert "2001:db8::1" in intents
    for bad in ([], {"ips": {"nope": {}}}, {"nodes": [3]}, {"ips": []}):
        with pytest.raises(StaticConfigError):
            static_intents(bad)


def test_a_bgp_only_pool_is_not_announced_by_arp_or_ndp() -> None:
    """spec.layer2.enabled false (a pool announced by BGP alone): no node answers ARP/NDP for its addresses."""
    m = model()
    m.apply("IPPool", "MODIFIED", pool("q", ["2001:db8::/64"], {"enabled": False}))
    assert "2001:db8::5" not in m.intents(None)
    assert m.withheld(None)["2001:db8::5"][0] == "IPPool q is announced by BGP only (spec.layer2.enabled: false)"
    m.apply("IPPool", "MODIFIED", pool("q", ["2001:db8::/64"], {"enabled": True}))
    assert "2001:db8::5" in m.intents(None)
