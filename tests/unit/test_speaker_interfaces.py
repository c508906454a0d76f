"""Interface selection for announcements and heartbeats, from `ip -j addr` documents."""

from __future__ import annotations

from lbctl.core.netifs import heartbeat_targets, interfaces_for, parse_ip_addr, skip_reason, usable


def link(name: str, idx: int, addrs: list[tuple[str, str, int]], flags: tuple[str, ...] = ("BROADCAST", "UP", "LOWER_UP"),
         link_type: str = "ether", mac: str = "02:00:00:00:00:01") -> dict:
    return {"ifindex": idx, "ifname": name, "flags": list(flags), "link_type": link_type, "address": mac,
            "addr_info": [{"family": fam, "local": ip, "prefixlen": plen} for fam, ip, plen in addrs]}


DOC = [
    link("lo", 1, [("inet", "127.0.0.1", 8)], ("LOOPBACK", "UP", "LOWER_UP"), "loopback", "00:00:00:00:00:00"),
    link("eth0", 2, [("inet", "198.18.0.1", 24), ("inet6", "2001:db8::1", 64), ("inet6", "fe80::1", 64)]),
    link("eth1", 3, [("inet", "198.19.0.1", 24)], ("BROADCAST", "UP")),  # no carrier
    link("kube-ipvs0", 4, [("inet", "198.18.0.50", 32)], ("BROADCAST", "NOARP")),
    link("veth123", 5, [("inet", "198.18.0.7", 24)]),
    link("cali9", 6, []),
    link("dummy0", 7, [("inet", "198.18.0.9", 24)], ("BROADCAST", "NOARP", "UP", "LOWER_UP")),
    link("br0", 8, [("inet", "198.18.1.1", 24)]),
    link("port1", 9, []),
    link("tun0", 10, [("inet", "198.18.2.1", 24)], ("POINTOPOINT", "UP", "LOWER_UP"), "none", ""),
]


def test_parse_keeps_addresses_and_computes_broadcast() -> None:
    ifs = {i.name: i for i in parse_ip_addr(DOC)}
    assert ifs["eth0"].broadcasts == ("198.18.0.255",)
    assert [str(n) for n in ifs["eth0"].networks] == ["198.18.0.1/24", "2001:db8::1/64", "fe80::1/64"]
    assert ifs["kube-ipvs0"].broadcasts == ()  # a /32 has no broadcast address


def test_parse_survives_garbage() -> None:
    assert parse_ip_addr("nope") == []
    assert parse_ip_addr([{"ifname": "x"}, 3, None, {"ifname": "y", "ifindex": "z"}]) == []
    odd = link("eth9", 9, [])
    odd["addr_info"] = [{"family": "inet", "local": "not-an-ip", "prefixlen": 24}]
    assert parse_ip_addr([odd]) == []


def test_skip_rules() -> None:
    ifs = {i.name: i for i in parse_ip_addr(DOC)}
    ports = {"port1"}
    reasons = {n: skip_reason(i, ports) for n, i in ifs.items()}
    assert reasons == {"lo": "reserved", "eth0": None, "eth1": "down", "kube-ipvs0": "reserved",
                       "veth123": "container plumbing", "cali9": "container plumbing", "dummy0": "NOARP",
                       "br0": None, "port1": "bridge port", "tun0": "not ethernet"}
    assert [i.name for i in usable(ifs.values(), ports, allowed={"br0", "lo"})] == ["br0"]


def test_interface_for_ip_by_subnet_or_pool() -> None:
    cands = usable(parse_ip_addr(DOC), {"port1"})
    assert [i.name for i in interfaces_for("198.18.0.50", cands)] == ["eth0"]
    assert [i.name for i in interfaces_for("2001:db8::50", cands)] == ["eth0"]
    assert interfaces_for("198.18.9.9", cands) == []
    assert interfaces_for("fe80::99", cands) == []  # link-local subnets never qualify
    assert interfaces_for("garbage", cands) == []
    # A pool naming interfaces overrides subnets, but never resurrects an unusable one.
    assert [i.name for i in interfaces_for("203.0.113.5", cands, ["br0", "veth123"])] == ["br0"]


def test_heartbeat_targets() -> None:
    cands = usable(parse_ip_addr(DOC), {"port1"})
    assert heartbeat_targets(cands) == {"eth0": ("198.18.0.255",), "br0": ("198.18.1.255",)}
