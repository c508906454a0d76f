import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core.allocator import Allocator
from lbctl.core.pools import parse_pool
from lbctl.core.service import read_service


def svc(name, ns="ns", ips=(), annotations=None, ports=(80,), **spec):
    body = {"metadata": {"name": name, "namespace": ns, "uid": name, "annotations": annotations or {},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv4"], "selector": {"app": name},
                     "ports": [{"port": p, "protocol": "TCP"} for p in ports], **spec},
            "status": {"loadBalancer": {"ingress": [{"ip": i} for i in ips]}}}
    return read_service(body)


def alloc_with(*pools):
    a = Allocator()
    a.set_pools([parse_pool(n, spec, created=f"2026-01-0{i + 1}") for i, (n, spec) in enumerate(pools)])
    return a


def test_lowest_free_first_and_reuse_after_release():
    a = alloc_with(("p", {"addresses": ["198.18.0.10-198.18.0.12"]}))
    assert a.sync(svc("a"), {}).ips == ("198.18.0.10",)
    assert a.sync(svc("b"), {}).ips == ("198.18.0.11",)
    assert a.release("ns/a") == ("198.18.0.10",)
    assert a.sync(svc("c"), {}).ips == ("198.18.0.10",)


def test_exhaustion_reports_counts():
    a = alloc_with(("p", {"addresses": ["198.18.0.10"]}))
    a.sync(svc("a"), {})
    out = a.sync(svc("b"), {})
    assert not out.ips and "IPPool p: IPv4 exhausted (1 of 1 assigned)" in out.error


def test_sync_is_idempotent_and_stable():
    a = alloc_with(("p", {"addresses": ["198.18.0.0/28"]}))
    first = a.sync(svc("a"), {})
    again = a.sync(svc("a", ips=first.ips), {})
    assert again.ips == first.ips and not again.changed


def test_restore_never_moves_and_blocks_others():
    a = alloc_with(("p", {"addresses": ["198.18.0.10-198.18.0.11"]}))
    a.restore(svc("old", ips=("198.18.0.11",)))
    assert a.sync(svc("new"), {}).ips == ("198.18.0.10",)
    assert "exhausted" in a.sync(svc("third"), {}).error
    assert a.sync(svc("old", ips=("198.18.0.11",)), {}).ips == ("198.18.0.11",)


def test_requested_ip_rules():
    a = alloc_with(("p", {"addresses": ["198.18.0.10-198.18.0.20"]}), ("q", {"addresses": ["198.18.1.0/28"], "autoAssign": False}))
    ok = a.sync(svc("a", annotations={"lbctl.io/loadBalancerIPs": "198.18.0.15"}), {})
    assert ok.ips == ("198.18.0.15",)
    assert "in use by Service ns/a" in a.sync(svc("b", loadBalancerIP="198.18.0.15"), {}).error
    assert "not in any IPPool" in a.sync(svc("c", loadBalancerIP="198.18.9.9"), {}).error
    # autoAssign=false pools serve explicit requests and pool annotations only
    assert a.sync(svc("d", loadBalancerIP="198.18.1.3"), {}).ips == ("198.18.1.3",)
    assert a.sync(svc("e", annotations={"lbctl.io/address-pool": "q"}), {}).ips == ("198.18.1.0",)
    out = a.sync(svc("f", loadBalancerIP="198.18.0.16", annotations={"lbctl.io/address-pool": "q"}), {})
    assert "not in the requested IPPool q" in out.error


def test_sharing_rules():
    a = alloc_with(("p", {"addresses": ["198.18.0.10-198.18.0.20"]}))
    key = {"lbctl.io/allow-shared-ip": "k"}
    one = a.sync(svc("a", annotations=key, ports=(80,)), {})
    two = a.sync(svc("b", annotations=key, ports=(443,)), {})
    assert one.ips == two.ips  # compatible sharers join the same address
    clash = a.sync(svc("c", annotations=key, ports=(80,), loadBalancerIP=one.ips[0]), {})
    assert "already uses TCP/80" in clash.error
    other_key = a.sync(svc("d", annotations={"lbctl.io/allow-shared-ip": "z"}, loadBalancerIP=one.ips[0]), {})
    assert "sharing key 'k'" in other_key.error
    local = a.sync(svc("e", annotations=key, ports=(8080,), externalTrafficPolicy="Local",
                       loadBalancerIP=one.ips[0]), {})
    assert "externalTrafficPolicy differs" in local.error
    a.release("ns/a")
    assert a.holders(one.ips[0]) == ["ns/b"]


def test_selectors_and_priority():
    a = alloc_with(
        ("general", {"addresses": ["198.18.0.10-198.18.0.20"]}),
        ("gold", {"addresses": ["198.18.1.10-198.18.1.20"], "serviceAllocation": {"priority": 1, "namespaceSelector": {"matchLabels": {"tier": "gold"}}}}),
        ("silver", {"addresses": ["198.18.2.10-198.18.2.20"], "serviceAllocation": {"priority": 2, "namespaceSelector": {"matchLabels": {"tier": "gold"}}}}),
        ("teamx", {"addresses": ["198.18.3.10"], "serviceAllocation": {"namespaces": ["x"]}}),
    )
    assert a.sync(svc("g", ns="rich"), {"tier": "gold"}).pool == "gold"
    assert a.sync(svc("n", ns="plain"), {}).pool == "general"
    assert a.sync(svc("x", ns="x"), {}).pool == "teamx"
    refused = a.sync(svc("y", ns="plain", annotations={"lbctl.io/address-pool": "teamx"}), {})
    assert "does not admit" in refused.error


def test_dual_stack_policies():
    a = alloc_with(("v4", {"addresses": ["198.18.0.10"]}), ("dual", {"addresses": ["198.18.1.10-198.18.1.11", "2001:db8::10-2001:db8::11"]}))
    out = a.sync(svc("d", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"]), {})
    assert out.pool == "dual" and out.ips == ("198.18.1.10", "2001:db8::10")
    out = a.sync(svc("p", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv6", "IPv4"]), {})
    assert out.ips == ("2001:db8::11", "198.18.1.11")
    # IPv6 exhausted: PreferDualStack still gets its primary family, RequireDualStack waits.
    b = alloc_with(("v4only", {"addresses": ["198.18.0.10-198.18.0.11"]}))
    assert b.sync(svc("p", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4", "IPv6"]), {}).ips == ("198.18.0.10",)
    req = b.sync(svc("r", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"]), {})
    assert "has no IPv6 addresses" in req.error


def test_pool_edit_and_delete_retain_addresses():
    a = alloc_with(("p", {"addresses": ["198.18.0.10-198.18.0.20"]}))
    held = a.sync(svc("a"), {}).ips
    a.set_pools([parse_pool("p", {"addresses": ["198.18.0.15-198.18.0.20"]})])  # edit excludes .10
    out = a.sync(svc("a", ips=held), {})
    assert out.ips == held and out.retained == held and not out.changed
    a.set_pools([])  # pool deleted
    out = a.sync(svc("a", ips=held), {})
    assert out.ips == held and out.retained == held
    assert "no usable IPPool" in a.sync(svc("b"), {}).error


def test_changed_request_moves_only_when_new_address_is_free():
    a = alloc_with(("p", {"addresses": ["198.18.0.10-198.18.0.20"]}))
    held = a.sync(svc("a"), {}).ips
    a.sync(svc("b", loadBalancerIP="198.18.0.15"), {})
    blocked = a.sync(svc("a", ips=held, loadBalancerIP="198.18.0.15"), {})
    assert blocked.ips == held and "cannot move" in blocked.error
    moved = a.sync(svc("a", ips=held, loadBalancerIP="198.18.0.16"), {})
    assert moved.ips == ("198.18.0.16",) and moved.changed and moved.released == ()
    # The old address stays reserved while the status shows it (the write may not land), free once it does not.
    assert "in use by Service ns/a" in a.sync(svc("c", loadBalancerIP=held[0]), {}).error
    assert a.sync(svc("a", ips=moved.ips, loadBalancerIP="198.18.0.16"), {}).released == held


def test_type_change_releases():
    a = alloc_with(("p", {"addresses": ["198.18.0.10"]}))
    held = a.sync(svc("a"), {}).ips
    out = a.sync(svc("a", ips=held, type="ClusterIP"), {})
    assert out.ips == () and out.changed and out.released == ()
    assert "exhausted" in a.sync(svc("b"), {}).error  # until the status write lands
    assert a.sync(svc("a", type="ClusterIP"), {}).released == held
    assert a.sync(svc("b"), {}).ips == held


def test_overlapping_pool_hands_out_nothing():
    a = alloc_with(("old", {"addresses": ["198.18.0.10"]}), ("new", {"addresses": ["198.18.0.10-198.18.0.12"]}))
    assert not a.verdicts["new"].ready
    a.sync(svc("a"), {})
    assert "exhausted" in a.sync(svc("b"), {}).error


# ----- properties ------------------------------------------------------------------------------
ops = st.lists(st.one_of(
    st.tuples(st.just("create"), st.integers(0, 15), st.sampled_from([None, "k1", "k2"]), st.integers(1, 3),
              st.sampled_from([None, "198.18.0.3", "198.18.0.250", "198.18.1.2", "2001:db8::5"]),
              st.sampled_from(["SingleStack", "PreferDualStack", "RequireDualStack"])),
    st.tuples(st.just("delete"), st.integers(0, 15)),
    st.tuples(st.just("pools"), st.sampled_from([0, 1, 2])),
), max_size=60)

POOLSETS = [
    [("a", {"addresses": ["198.18.0.0-198.18.0.5", "2001:db8::0-2001:db8::3"]}), ("b", {"addresses": ["198.18.1.0/30"], "avoidBuggyIPs": True})],
    [("a", {"addresses": ["198.18.0.2-198.18.0.8"]})],
    [("a", {"addresses": ["198.18.0.0-198.18.0.5"]}), ("c", {"addresses": ["198.18.0.4-198.18.0.9", "2001:db8::/126"]})],
]


@settings(max_examples=300, deadline=None)
@given(ops)
def test_no_address_is_ever_held_twice_and_new_ones_lie_in_their_pool(operations):
    a = Allocator()
    a.set_pools([parse_pool(n, s, created=str(i)) for i, (n, s) in enumerate(POOLSETS[0])])
    status: dict[str, tuple[str, ...]] = {}
    specs = {}
    # A Service whose changed request cannot be met keeps its address with a warning (never moved
    # silently); its new spec may then disagree with its sharers, so it is exempt from the check.
    kept_with_error: set[str] = set()
    for op in operations:
        if op[0] == "create":
            _, n, key, port, ip, policy = op
            ann = {"lbctl.io/allow-shared-ip": key} if key else {}
            extra = {"loadBalancerIP": ip} if ip and not ip.startswith("2001") else {}
            specs[n] = dict(annotations=ann, ports=(port,), ipFamilyPolicy=policy, ipFamilies=["IPv4", "IPv6"], **extra)
            req = svc(f"s{n}", ips=status.get(f"ns/s{n}", ()), **specs[n])
            out = a.sync(req, {})
            if out.error and out.ips:
                kept_with_error.add(req.key)
            else:
                kept_with_error.discard(req.key)
            if out.ips:
                was = status.get(req.key, ())
                status[req.key] = out.ips
                for ip_ in out.ips:
                    if ip_ not in was and ip_ not in out.retained:
                        pool = a.pools[out.pool]
                        addr = ipaddress.ip_address(ip_)
                        assert a.usable(pool.name) and pool.range_of(addr.version, int(addr)), (ip_, out.pool)
        elif op[0] == "delete":
            a.release(f"ns/s{op[1]}")
            status.pop(f"ns/s{op[1]}", None)
            kept_with_error.discard(f"ns/s{op[1]}")
        else:
            a.set_pools([parse_pool(n, s, created=str(i)) for i, (n, s) in enumerate(POOLSETS[op[1]])])
        # Invariant: an address is held by several Services only if they may share it.
        owners: dict[str, list[str]] = {}
        for key_, ips in a.assignments().items():
            for ip_ in ips:
                owners.setdefault(ip_, []).append(key_)
        for ip_, keys in owners.items():
            if len(keys) > 1 and not kept_with_error & set(keys):
                sharing = {specs[int(k.split("/s")[1])]["annotations"].get("lbctl.io/allow-shared-ip") for k in keys}
                assert len(sharing) == 1 and None not in sharing, (ip_, keys)
                ports = [specs[int(k.split("/s")[1])]["ports"] for k in keys]
                assert len(set(ports)) == len(ports), (ip_, keys, ports)
        # The table and the status we would have written agree.
        assert {k: v for k, v in a.assignments().items() if v} == {k: v for k, v in status.items() if k in a.assignments()}


# ----- the derived indexes (set_pools) answer exactly as a scan of every pool and holder would ----------------
RULED = [
    ("r1", {"addresses": ["198.18.0.0-198.18.0.5", "2001:db8::0-2001:db8::3"],
            "serviceAllocation": {"namespaces": ["ns", "x"], "priority": 5}}),
    ("r2", {"addresses": ["198.18.1.0/30"], "avoidBuggyIPs": True,
            "serviceAllocation": {"namespaceSelector": {"matchLabels": {"tier": "gold"}}}}),
    ("r3", {"addresses": ["198.18.0.4-198.18.0.9"]}),  # overlaps r1: Overlap when r1 is older
    ("r4", {"addresses": ["198.18.2.0-198.18.2.3"], "autoAssign": False}),
    ("r5", {"addresses": ["198.18.3.0-198.18.3.1"], "serviceAllocation": {"namespaces": ["y"]}}),
]


def scan_pool_of(a, addr):
    return next((p for p in a.pools.values() if a.usable(p.name) and p.range_of(*addr)), None)


def scan_candidates(a, ns, labels):
    pools = [p for p in a.pools.values() if a.usable(p.name) and p.auto_assign and p.admits(ns, labels, {})]
    return sorted(pools, key=lambda p: (not p.has_allocation_rules, p.priority if p.priority is not None else 1 << 31,
                                        p.created, p.name))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("create"), st.integers(0, 12), st.sampled_from(["ns", "x", "y", "z"])),
    st.tuples(st.just("delete"), st.integers(0, 12), st.just("")),
    st.tuples(st.just("pools"), st.sets(st.integers(0, len(RULED) - 1)), st.permutations(range(len(RULED)))),
), max_size=40))
def test_indexes_agree_with_a_full_scan(operations):
    a = Allocator()
    a.set_pools([parse_pool(n, s, created=str(i)) for i, (n, s) in enumerate(RULED)])
    gold = {"tier": "gold"}
    for op in operations:
        if op[0] == "create":
            a.sync(svc(f"s{op[1]}", ns=op[2], ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4", "IPv6"]), gold)
        elif op[0] == "delete":
            for key in [k for k in a.assignments() if k.endswith(f"/s{op[1]}")]:
                a.release(key)
        else:  # a subset of the pools, created in another order (changes who wins an overlap)
            chosen, order = op[1], op[2]
            a.set_pools([parse_pool(RULED[i][0], RULED[i][1], created=str(order[i])) for i in sorted(chosen)])
        for value in range(int(ipaddress.ip_address("198.18.0.0")) - 1, int(ipaddress.ip_address("198.18.3.2")) + 1):
            assert a.pool_of((4, value)) is scan_pool_of(a, (4, value))
        for value in range(int(ipaddress.ip_address("2001:db8::")) - 1, int(ipaddress.ip_address("2001:db8::4")) + 1):
            assert a.pool_of((6, value)) is scan_pool_of(a, (6, value))
        expected = {name: {f: 0 for f in p.families} for name, p in a.pools.items()}
        for addr in a._holders:
            if (pool := scan_pool_of(a, addr)) is not None:
                expected[pool.name][addr[0]] += 1
        assert {name: u.assigned for name, u in a.usage().items()} == expected
        for ns in ("ns", "x", "y", "z"):
            for labels in (gold, {}):
                req = svc("probe", ns=ns)
                got, _ = a._candidate_pools(req, labels)
                assert [p.name for p in got] == [p.name for p in scan_candidates(a, ns, labels)]


def test_an_invalid_request_keeps_what_it_holds_and_is_told_why():
    a = alloc_with(("p", {"addresses": ["198.18.0.10-198.18.0.11"]}))
    held = a.sync(svc("a"), {}).ips
    typo = svc("a", ips=held, annotations={"lbctl.io/loadBalancerIPs": "198.18.0.300"})
    out = a.sync(typo, {})
    assert out.ips == held and not out.changed and "invalid" in out.error and "keeps 198.18.0.10" in out.error
    # After a restart the table is rebuilt from statuses, the typo included: nobody else gets the address.
    b = alloc_with(("p", {"addresses": ["198.18.0.10-198.18.0.11"]}))
    b.restore(typo)
    assert b.sync(svc("other"), {}).ips == ("198.18.0.11",)
