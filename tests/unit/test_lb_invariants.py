"""The random run's oracle (tests/lb_invariants.py) on hand-made API views: it must see each kind of violation."""

from __future__ import annotations

from typing import Any

from tests.lb_invariants import Oracle, rewritten, snapshot


def svc(name: str, ips: list[str], rv: str = "1", key: str | None = None, ports: tuple[int, ...] = (80,),
        **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "resourceVersion": rv,
                         "annotations": {"lbctl.io/allow-shared-ip": key} if key else {}},
            "spec": {"type": "LoadBalancer", "selector": {"app": name},
                     "ports": [{"port": p, "protocol": "TCP"} for p in ports], **spec},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def kinds(violations: list[Any]) -> list[str]:
    return sorted(v.kind for v in violations)


def test_two_holders_without_a_common_key_are_a_duplicate_and_valid_sharers_are_not() -> None:
    o = Oracle()
    assert kinds(o.check(1, [svc("a", ["198.18.230.1"]), svc("b", ["198.18.230.1"])])) == ["duplicate"]
    assert o.check(2, [svc("c", ["198.18.230.2"], key="k", ports=(80,)),
                       svc("d", ["198.18.230.2"], key="k", ports=(443,))]) == []
    assert kinds(o.check(3, [svc("e", ["198.18.230.3"], key="k", ports=(80,)),
                             svc("f", ["198.18.230.3"], key="k", ports=(80,))])) == ["duplicate"]
    assert kinds(o.check(4, [svc("g", ["198.18.230.4"], key="k", ports=(80,), externalTrafficPolicy="Local"),
                             svc("h", ["198.18.230.4"], key="k", ports=(443,))])) == ["duplicate"]


def test_a_move_is_a_violation_unless_the_service_asked() -> None:
    o = Oracle()
    assert o.check(1, [svc("a", ["198.18.230.1"]), svc("b", ["198.18.230.2"])]) == []
    moved_b = svc("b", ["198.18.230.5"])
    moved_b["metadata"]["annotations"] = {"lbctl.io/loadBalancerIPs": "198.18.230.5"}  # b asked
    out = o.check(2, [svc("a", ["198.18.230.3"]), moved_b])
    assert [(v.kind, v.detail.split()[0]) for v in out] == [("moved", "ns/a")]


def test_a_request_change_seen_before_the_move_still_covers_it() -> None:
    o = Oracle()
    o.check(1, [svc("a", ["198.18.230.1"])])
    asks = svc("a", ["198.18.230.1"])
    asks["metadata"]["annotations"] = {"lbctl.io/address-pool": "other"}
    assert o.check(2, [asks]) == []
    moved = svc("a", ["198.18.230.9"])
    moved["metadata"]["annotations"] = asks["metadata"]["annotations"]
    assert o.check(3, [moved]) == []
    assert kinds(o.check(4, [svc("a", ["198.18.230.7"])])) == []  # asked again (annotation removed)
    assert kinds(o.check(5, [svc("a", ["198.18.230.7"])])) == []
    assert kinds(o.check(6, [svc("a", ["198.18.230.8"])])) == ["moved"]


def test_pending_without_a_warning_is_a_violation_with_one_it_is_not() -> None:
    o = Oracle()
    assert kinds(o.check(1, [svc("a", [])])) == ["no-warning"]
    o.saw_warnings([{"type": "Warning", "reason": "AllocationFailed", "message": "exhausted",
                     "metadata": {"resourceVersion": "5"}, "involvedObject": {"uid": "u-a"}}])
    assert o.check(2, [svc("a", [])]) == []
    assert o.check(3, [svc("x", [], type="ClusterIP")]) == []  # not ours


def test_a_hand_written_status_excuses_the_moves_it_causes_and_is_tagged_in_duplicates() -> None:
    o = Oracle()
    o.check(1, [svc("old", ["198.18.230.2"]), svc("new", ["198.18.230.1"])])
    o.hand_edited("u-old", ("198.18.230.2",))
    out = o.check(2, [svc("old", ["198.18.230.1"]), svc("new", ["198.18.230.1"])])
    assert kinds(out) == ["duplicate-by-hand"]
    # The older claimant keeps it and the newer moves: the admin's doing, not a violation.
    assert o.check(3, [svc("old", ["198.18.230.1"]), svc("new", ["198.18.230.6"])]) == []


def test_any_write_across_a_quiet_restart_is_reported() -> None:
    before = snapshot([svc("a", ["198.18.230.1"], rv="7"), svc("b", ["198.18.230.2"], rv="8")])
    out = rewritten(3, before, [svc("a", ["198.18.230.1"], rv="7"), svc("b", ["198.18.230.2"], rv="9")], "SIGKILL")
    assert [(v.kind, v.detail.split()[0]) for v in out] == [("rewritten", "ns/b")]


def test_handing_out_an_address_a_hand_written_status_shows_is_the_controllers_duplicate() -> None:
    o = Oracle()
    o.check(1, [svc("pending", [])])
    o.hand_edited("u-pending", ())
    o.check(2, [svc("pending", ["198.18.230.9"])])
    out = o.check(3, [svc("pending", ["198.18.230.9"]), svc("new", ["198.18.230.9"])])
    assert kinds(out) == ["duplicate"]


def test_sharers_split_by_one_changing_its_key_and_told_why_are_a_note() -> None:
    o = Oracle()
    o.check(1, [svc("a", ["198.18.230.3"], key="k1", ports=(80,)),
                svc("b", ["198.18.230.3"], key="k1", ports=(443,))])
    o.saw_warnings([{"type": "Warning", "reason": "AllocationFailed", "message": "cannot move: exhausted",
                     "metadata": {"resourceVersion": "5"}, "involvedObject": {"uid": "u-a"}}])
    out = o.check(2, [svc("a", ["198.18.230.3"], key="k2", ports=(80,)),
                      svc("b", ["198.18.230.3"], key="k1", ports=(443,))])
    assert kinds(out) == ["kept-by-request"]
