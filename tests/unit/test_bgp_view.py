"""BGP in `lbctl status` and `lbctl explain` (lbctl/core/bgp_view.py, lbctl/cli): SpeakerStatus documents in the
speakers' shape, `status.bgp = {sessions, advertised, skipped}`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lbctl.cli import explain, status
from lbctl.cli.snapshot import Snapshot
from lbctl.core import bgp_view
from lbctl.core.status import LEASE_LABELS, NODE_LABEL

NOW = dt.datetime(2026, 12, 5, 9, 0, 0, tzinfo=dt.timezone.utc)
VIP = "198.18.20.1"


def _lease(node: str) -> dict[str, Any]:
    return {"metadata": {"name": f"lbctl-speaker-{node}", "labels": {**LEASE_LABELS, NODE_LABEL: node}},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 30, "renewTime": "2026-12-05T08:59:58Z"}}


def _session(peer: str, state: str = "Established", error: str = "", sent: int = 1) -> dict[str, Any]:
    return {"peer": peer, "address": {"tor1": "198.18.0.1", "tor2": "198.18.0.2"}.get(peer, "198.18.0.9"),
            "state": state, "since": "2026-12-05T08:00:00Z" if state == "Established" else None,
            "prefixesSent": sent, "lastError": error}


def _speaker(node: str, bgp: dict[str, Any] | None, announced: list[str] = ()) -> dict[str, Any]:
    st_: dict[str, Any] = {"livePeers": [], "announced": [
        {"ip": ip, "interface": "eth0", "mac": "02:00:00:00:00:0a", "since": "2026-12-05T08:58:00Z"} for ip in announced]}
    if bgp is not None:
        st_["bgp"] = bgp
    return {"metadata": {"name": node}, "status": st_}


def _bgp(sessions: list[dict[str, Any]], advertised: dict[str, list[str]], skipped: dict[str, str] | None = None):
    return {"sessions": sessions, "advertised": [{"ip": ip, "peers": p} for ip, p in advertised.items()],
            "skipped": skipped or {}}


def _svc(name: str = "web", ip: str = VIP, etp: str = "Cluster") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "uid": f"u-{name}", "creationTimestamp": "2026-12-05T08:00:00Z"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "externalTrafficPolicy": etp,
                     "selector": {"app": name}},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}


def _pool(advertisements: list[dict[str, Any]] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"addresses": ["198.18.20.0/24"]}
    if advertisements is not None:
        spec.update(layer2={"enabled": False}, bgp={"advertisements": advertisements})
    return {"metadata": {"name": "web", "creationTimestamp": "2026-12-05T07:00:00Z"}, "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Valid", "message": ""}]}}


def _node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def _slice(svc: str, nodes: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": f"{svc}-x", "namespace": "shop", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": [{"addresses": [f"198.18.128.{i + 2}"], "nodeName": n,
                                                  "conditions": {"ready": True}} for i, n in enumerate(nodes)]}


N1 = _bgp([_session("tor1"), _session("tor2")], {VIP: ["tor1", "tor2"]})
N2 = _bgp([_session("tor1"), _session("tor2", "Active", "Connection refused", 0)], {VIP: ["tor1"]})


def test_status_shows_sessions_and_who_advertises_to_whom():
    snap = Snapshot(services=[_svc()], pools=[_pool([{}])], speakers=[_speaker("n1", N1), _speaker("n2", N2)],
                    leases=[_lease("n1"), _lease("n2")])
    doc = status.build(snap, NOW)
    assert doc["services"][0]["state"] == "Announced"  # by BGP from two nodes: ECMP, not a conflict
    assert doc["services"][0]["addresses"][0]["bgp"] == [{"node": "n1", "peers": ["tor1", "tor2"]},
                                                         {"node": "n2", "peers": ["tor1"]}]
    assert doc["bgpSessions"][3] == {"node": "n2", "speakerAlive": True, "peer": "tor2", "address": "198.18.0.2",
                                     "state": "Active", "since": None, "sinceSeconds": None, "prefixesSent": 0,
                                     "lastError": "Connection refused"}
    assert doc["bgpSessions"][0]["sinceSeconds"] == 3600.0
    assert doc["attention"] == ["BGP session n2 -> tor2 (198.18.0.2): Active (Connection refused)"]
    assert status.exit_code(doc) == 1
    text = status.render(doc)
    assert "n1     tor1       198.18.0.1   Established   60m     1               -" in text
    assert "n2     tor2       198.18.0.2   Active        -       0               Connection refused" in text
    assert "shop/web   198.18.20.1   n1              tor1,tor2" in text
    assert "shop/web   198.18.20.1   n2              tor1" in text
    assert "shop/web   198.18.20.1   Announced   n1,n2   (BGP)" in text


def test_invalid_bgppeers_need_attention():
    def peer(name: str, valid: str | None) -> dict[str, Any]:
        conds = [{"type": "Valid", "status": valid, "message": "spec.holdTime must be 0 or from 3s"}] if valid else []
        return {"metadata": {"name": name}, "spec": {}, "status": {"conditions": conds}}
    snap = Snapshot(services=[], pools=[], speakers=[], leases=[],
                    bgppeers=[peer("b", "False"), peer("a", "True"), peer("c", None), {"metadata": {"name": "d"}}])
    doc = status.build(snap, NOW)
    assert doc["attention"] == ["BGPPeer b: Invalid (spec.holdTime must be 0 or from 3s)"]
    assert status.exit_code(doc) == 1


def test_layer2_output_is_unchanged_without_bgp():
    snap = Snapshot(services=[_svc()], pools=[_pool(None)], speakers=[_speaker("n1", None, [VIP])],
                    leases=[_lease("n1")])
    doc = status.build(snap, NOW)
    assert not {"bgpSessions", "bgpSkipped"} & set(doc)
    assert "bgp" not in doc["services"][0]["addresses"][0]
    assert "BGP" not in status.render(doc) and len(status.render(doc).split("\n\n")) == 3
    assert "bgp" not in explain.explain(snap, "shop/web", None, NOW)["ips"][0]


def test_a_dead_speakers_advertisements_do_not_count():
    snap = Snapshot(services=[_svc()], pools=[_pool([{}])], speakers=[_speaker("n1", N1)], leases=[])
    doc = status.build(snap, NOW)
    assert doc["services"][0]["state"] == "Unannounced" and doc["services"][0]["addresses"][0]["bgp"] == []
    assert "n1 (not alive)" in status.render(doc)


def _why(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in doc["ips"][0]["bgp"]["nodes"]}


def test_explain_says_why_each_node_does_or_does_not_advertise():
    skipped = _bgp([_session("tor1")], {}, {"tor2": "its password Secret tor2-pw could not be read"})
    snap = Snapshot(
        services=[_svc(etp="Local")],
        pools=[_pool([{"peers": ["tor1", "tor2"], "nodeSelectors": [{"matchLabels": {"bgp": "yes"}}]}])],
        speakers=[_speaker("n1", N1), _speaker("n2", N2), _speaker("n3", N1), _speaker("n4", skipped),
                  _speaker("n5", None)],
        leases=[_lease(n) for n in ("n1", "n2", "n3", "n4", "n5")],
        nodes=[_node("n1", bgp="yes"), _node("n2", bgp="yes"), _node("n3"), _node("n4", bgp="yes"),
               _node("n5", bgp="yes"), _node("n6", bgp="yes")],
        slices=[_slice("web", ["n1", "n2", "n4", "n5", "n6"]) ])
    doc = explain.explain(snap, "shop/web", None, NOW)
    why = _why(doc)
    assert why["n1"] == {"node": "n1", "advertisedTo": ["tor1", "tor2"], "reasons": []}
    assert why["n2"]["advertisedTo"] == ["tor1"]
    assert why["n2"]["reasons"] == ["session to tor2 (198.18.0.2) is Active: Connection refused"]
    assert why["n3"]["reasons"] == ["not selected by the nodeSelectors of IPPool web's BGP advertisements"]
    assert why["n4"]["reasons"] == ["not advertised to tor1 yet (session Established; the speaker has not reported it)",
                                    "peer tor2 skipped: its password Secret tor2-pw could not be read"]
    assert why["n5"]["reasons"] == ["its speaker reports no BGP (no BGPPeer selects this node, or BGP is off)"]
    assert why["n6"]["reasons"] == ["no live speaker on this node"]
    text = explain.render(doc)
    assert "      n2: advertises to tor1; session to tor2 (198.18.0.2) is Active: Connection refused" in text
    # the endpoint leaves n1: ETP Local withdraws it there
    snap.slices = [_slice("web", ["n2"])]
    assert _why(explain.explain(snap, "shop/web", None, NOW))["n1"]["reasons"] == [
        "externalTrafficPolicy Local and no ready endpoint on this node"]


def test_explain_a_pool_without_bgp_advertisement():
    snap = Snapshot(services=[_svc()], pools=[_pool(None)], speakers=[_speaker("n1", N1)], leases=[_lease("n1")],
                    nodes=[_node("n1")])
    doc = explain.explain(snap, "shop/web", None, NOW)
    assert doc["ips"][0]["bgp"] == {"reason": "IPPool web has no BGP advertisement (spec.bgp.advertisements is "
                                              "empty)", "nodes": []}
    assert "198.18.20.1: not advertised by BGP: IPPool web has no BGP advertisement" in explain.render(doc)


junk = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(
                        ["sessions", "advertised", "skipped", "peer", "ip", "peers", "state", "since",
                         "prefixesSent", "lastError", "address"]), c, max_size=4), max_leaves=20)


@given(junk)
def test_a_malformed_bgp_block_never_breaks_the_view(block):
    snap = Snapshot(services=[_svc()], pools=[_pool([{}])], speakers=[_speaker("n1", block)], leases=[_lease("n1")],
                    nodes=[_node("n1")])
    status.render(status.build(snap, NOW))
    explain.render(explain.explain(snap, "shop/web", None, NOW))
    assert set(bgp_view.read_bgp(snap.speakers)) <= {"n1"}
