"""lbctl/core/status: speaker liveness from Leases and peer reports, Service states from live claims."""

from __future__ import annotations

import datetime as dt
from typing import Any

from lbctl.core import status as st

NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def at(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease(node: str, renewed_ago: float | None, holder: str | None = None, duration: int = 30) -> dict[str, Any]:
    spec: dict[str, Any] = {"holderIdentity": node if holder is None else holder, "leaseDurationSeconds": duration}
    if renewed_ago is not None:
        spec["renewTime"] = at(renewed_ago)
    return {"metadata": {"name": f"lbctl-speaker-{node}", "namespace": "lbctl-system",
                         "labels": {**st.LEASE_LABELS, st.NODE_LABEL: node}}, "spec": spec}


def speaker_status(node: str, announced: list[tuple[str, str]] = (), peers: list[str] = ()) -> dict[str, Any]:
    return {"metadata": {"name": node}, "status": {
        "node": node, "announcedCount": len(announced), "livePeers": list(peers),
        "announced": [{"ip": ip, "interface": ifname, "mac": f"02:00:00:00:00:{len(node):02x}",
                       "since": "2024-05-01T11:00:00Z", "services": []} for ip, ifname in announced]}}


def service(name: str, ips: list[str] = (), ns: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"type": "LoadBalancer", **spec},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def by_node(speakers: list[st.Speaker]) -> dict[str, st.Speaker]:
    return {s.node: s for s in speakers}


def test_liveness_from_leases() -> None:
    sp = by_node(st.speakers(
        [speaker_status("a"), speaker_status("b"), speaker_status("c"), speaker_status("d")],
        [lease("a", 3), lease("b", 31), lease("c", 2, holder="")], NOW))
    assert sp["a"].alive and sp["a"].reason == "" and sp["a"].last_heard == NOW - dt.timedelta(seconds=3)
    assert not sp["b"].alive and sp["b"].reason == "lease expired"  # 31 s > leaseDurationSeconds 30
    assert not sp["c"].alive and sp["c"].reason == "stopped"  # released on SIGTERM
    assert not sp["d"].alive and sp["d"].reason == "no lease" and sp["d"].last_heard is None


def test_a_speaker_heard_by_a_live_peer_is_alive_even_with_a_stale_lease() -> None:
    sp = by_node(st.speakers(
        [speaker_status("a", peers=["a", "b", "newcomer"]), speaker_status("b", peers=["a", "b"]),
         speaker_status("dead", peers=["ghost"])],
        [lease("a", 1), lease("b", 300), lease("dead", 600)], NOW))
    assert sp["b"].alive and sp["b"].heard_by == ("a",) and sp["b"].reason == "heard by peers (lease expired)"
    # Known only from a live peer's report: still listed, alive.
    assert sp["newcomer"].alive and not sp["newcomer"].has_status
    # A dead speaker's stale peer list vouches for nobody.
    assert "ghost" not in sp and not sp["dead"].alive


def test_service_states() -> None:
    speakers = st.speakers(
        [speaker_status("a", [("198.18.0.50", "eth0"), ("198.18.0.52", "eth0"), ("2001:db8::5", "eth0")]),
         speaker_status("b", [("198.18.0.52", "eth1")]),
         speaker_status("dead", [("198.18.0.51", "eth0")])],
        [lease("a", 1), lease("b", 1), lease("dead", 120)], NOW)
    svcs = {s.name: s for s in st.services([
        service("ok", ["198.18.0.50"]),
        service("waiting"),
        service("orphaned", ["198.18.0.51"]),  # only a dead speaker still claims it
        service("twice", ["198.18.0.52"]),
        service("dual", ["198.18.0.50", "2001:db8:0::0:5"]),  # IPv6 in another spelling
        service("half", ["198.18.0.50", "198.18.0.53"]),
        {"metadata": {"name": "cip", "namespace": "shop"}, "spec": {"type": "ClusterIP"}},
        service("theirs", ["198.18.0.50"], loadBalancerClass="example.com/other"),
    ], speakers)}
    assert set(svcs) == {"ok", "waiting", "orphaned", "twice", "dual", "half"}
    ok = svcs["ok"]
    assert ok.state == st.ANNOUNCED and ok.addresses[0].nodes == ("a",)
    assert (ok.addresses[0].claims[0].interface, ok.addresses[0].claims[0].since) == ("eth0", "2024-05-01T11:00:00Z")
    assert svcs["waiting"].state == st.PENDING and svcs["waiting"].addresses == ()
    assert svcs["orphaned"].state == st.UNANNOUNCED and svcs["orphaned"].addresses[0].claims == ()
    assert svcs["twice"].state == st.CONFLICT and svcs["twice"].addresses[0].nodes == ("a", "b")
    assert svcs["dual"].state == st.ANNOUNCED and svcs["dual"].addresses[1].ip == "2001:db8::5"
    assert svcs["half"].state == st.UNANNOUNCED  # the worst address decides
    assert [s.name for s in st.services([service("theirs", [], loadBalancerClass="example.com/other")], speakers,
                                        lb_class="example.com/other")] == ["theirs"]


def test_one_node_on_two_interfaces_is_not_a_conflict() -> None:
    speakers = st.speakers([speaker_status("a", [("198.18.0.50", "eth0"), ("198.18.0.50", "eth1")])],
                           [lease("a", 0)], NOW)
    [svc] = st.services([service("web", ["198.18.0.50"])], speakers)
    assert svc.state == st.ANNOUNCED and [c.interface for c in svc.addresses[0].claims] == ["eth0", "eth1"]


def test_attention_names_each_problem() -> None:
    speakers = st.speakers([speaker_status("a", [("198.18.0.52", "eth0")]),
                            speaker_status("b", [("198.18.0.52", "eth0")]), speaker_status("gone")],
                           [lease("a", 0), lease("b", 0), lease("gone", 100)], NOW)
    svcs = st.services([service("twice", ["198.18.0.52"]), service("waiting"), service("lost", ["198.18.0.9"])],
                       speakers)
    pools = [{"metadata": {"name": "good"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
             {"metadata": {"name": "bad"}, "status": {"conditions": [
                 {"type": "Ready", "status": "False", "reason": "Overlap", "message": "overlaps good"}]}},
             {"metadata": {"name": "new"}}]
    assert st.attention(svcs, speakers, pools) == [
        "IPPool bad: not Ready (Overlap: overlaps good)",
        "IPPool new: not Ready (no status yet: is the controller running?)",
        "Service shop/lost: 198.18.0.9 Unannounced (no live speaker announces it)",
        "Service shop/twice: 198.18.0.52 in Conflict (announced by a, b)",
        "Service shop/waiting: Pending (no IP yet; `lbctl explain shop/waiting` says why)",
        "speaker gone: not alive (lease expired)",
    ]
    healthy = st.speakers([speaker_status("a", [("198.18.0.50", "eth0")])], [lease("a", 0)], NOW)
    assert st.attention(st.services([service("ok", ["198.18.0.50"])], healthy), healthy, pools[:1]) == []


def test_malformed_objects_do_not_break_the_view() -> None:
    speakers = st.speakers([{"metadata": {"name": "a"}, "status": {"announced": [{"ip": "not-an-ip"}, "junk"],
                                                                   "livePeers": [7, "b"]}}],
                           [{"metadata": {"name": "x"}, "spec": {"holderIdentity": "a", "renewTime": "yesterday"}}],
                           NOW)
    assert [(s.node, s.alive, s.reason, s.claims) for s in speakers] == [("a", False, "lease expired", ())]


def test_a_foreign_mac_claiming_an_announced_address_is_a_conflict() -> None:
    """One speaker announces the address and reports another MAC claiming it: Conflict, naming the MAC."""
    body = speaker_status("n1", [("198.18.0.100", "eth0"), ("198.18.0.101", "eth0")])
    body["status"]["conflicts"] = [{"ip": "198.18.0.100", "interface": "eth0", "foreignMAC": "02:00:00:00:00:66",
                                    "since": "2024-05-01T11:59:59Z"}, "junk", {"ip": "not an ip"}]
    sps = st.speakers([body], [lease("n1", 1)], NOW)
    svcs = {s.name: s for s in st.services([service("a", ["198.18.0.100"]), service("b", ["198.18.0.101"])], sps)}
    assert svcs["a"].state == st.CONFLICT and svcs["b"].state == st.ANNOUNCED
    addr = svcs["a"].addresses[0]
    assert addr.nodes == ("n1",) and [f.mac for f in addr.foreign] == ["02:00:00:00:00:66"]
    lines = st.attention(svcs.values(), sps, [])
    assert any("198.18.0.100 in Conflict" in line and "02:00:00:00:00:66" in line and "n1" in line for line in lines)
    # A dead speaker's old report is history, like its claims.
    dead = st.speakers([body], [lease("n1", 300)], NOW)
    assert st.services([service("a", ["198.18.0.100"])], dead)[0].state == st.UNANNOUNCED
