"""Interface selection for announcements and heartbeats, from rtnetlink link and address records."""

from __future__ import annotations

import asyncio

from lbctl import netlink
from lbctl.core.netifs import (flag_names, heartbeat_targets, interfaces, interfaces_for, links, skip_reason, usable,
                               with_addresses)

UP, BROADCAST, LOOPBACK, POINTOPOINT, NOARP, MULTICAST, LOWER_UP = 0x1, 0x2, 0x8, 0x10, 0x80, 0x1000, 0x10000
ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 65534
UP_ETH = BROADCAST | MULTICAST | UP | LOWER_UP


def link(name: str, idx: int, flags: int = UP_ETH, kind: int = ETHER, mac: str = "02:00:00:00:00:01",
         port_of: str | None = None) -> dict:
    return {"index": idx, "name": name, "flags": flags, "type": kind, "address": mac, "port_of": port_of}


def addr(idx: int, ip: str, plen: int, broadcast: str | None = None, peer: str | None = None) -> dict:
    # IPv4: IFA_LOCAL is ours, IFA_ADDRESS the peer on point-to-point links; IPv6 carries IFA_ADDRESS only.
    if ":" in ip:
        return {"index": idx, "address": ip, "local": None, "prefixlen": plen, "broadcast": None}
    return {"index": idx, "address": peer or ip, "local": ip, "prefixlen": plen, "broadcast": broadcast}


LINKS = [
    link("lo", 1, LOOPBACK | UP | LOWER_UP, ARPHRD_LOOPBACK, "00:00:00:00:00:00"),
    link("eth0", 2),
    link("eth1", 3, BROADCAST | MULTICAST | UP),  # no carrier
    link("kube-ipvs0", 4, BROADCAST | NOARP),
    link("veth123", 5),
    link("cali9", 6),
    link("dummy0", 7, BROADCAST | NOARP | UP | LOWER_UP),
    link("br0", 8),
    link("port1", 9, port_of="bridge"),
    link("tun0", 10, POINTOPOINT | UP | LOWER_UP, ARPHRD_NONE, ""),
    link("bond0", 11),
    link("enp1", 12, port_of="bond"),
    link("vrfport", 13, port_of="vrf"),  # a VRF member is still a real L2 interface
]
ADDRS = [
    addr(1, "127.0.0.1", 8),
    addr(2, "198.18.0.1", 24, "198.18.0.255"), addr(2, "2001:db8::1", 64), addr(2, "fe80::1", 64),
    addr(3, "198.19.0.1", 24, "198.19.0.255"),
    addr(4, "198.18.0.50", 32),
    addr(5, "198.18.0.7", 24),
    addr(7, "198.18.0.9", 24),
    addr(8, "198.18.1.1", 24),  # no IFA_BROADCAST given: derived from the prefix
    addr(10, "198.18.2.1", 32, peer="198.18.2.2"),
    addr(11, "198.18.3.1", 24, "198.18.3.255"),
]


def test_flags_decode_like_ip_link() -> None:
    assert flag_names(0x11043) == {"UP", "BROADCAST", "RUNNING", "MULTICAST", "LOWER_UP"}
    assert flag_names(0) == frozenset()


def test_records_keep_addresses_and_compute_broadcast() -> None:
    ifs = {i.name: i for i in interfaces(LINKS, ADDRS)}
    assert ifs["eth0"].broadcasts == ("198.18.0.255",) and ifs["eth0"].mac == "02:00:00:00:00:01"
    assert [str(n) for n in ifs["eth0"].networks] == ["198.18.0.1/24", "2001:db8::1/64", "fe80::1/64"]
    assert ifs["br0"].broadcasts == ("198.18.1.255",)
    assert ifs["kube-ipvs0"].broadcasts == ()  # a /32 has no broadcast address
    assert [str(n) for n in ifs["tun0"].networks] == ["198.18.2.1/32"]  # our end (IFA_LOCAL), not the peer's
    assert ifs["lo"].link_type == "loopback" and ifs["tun0"].link_type == "none" and ifs["eth0"].link_type == "ether"
    assert ifs["cali9"].networks == ()


def test_records_survive_garbage() -> None:
    assert links("nope") == [] and links(None) == []  # type: ignore[arg-type]
    assert links([{"name": "x"}, 3, None, {"index": "z", "name": "y", "flags": 0, "type": 1},
                  {"index": 2, "name": "", "flags": 0, "type": 1}, {"index": 3, "name": "a", "flags": True, "type": 1}]) == []
    [eth] = links([link("eth9", 9)])
    bad = [{"index": 9, "address": "not-an-ip", "prefixlen": 24}, {"index": 9, "address": "198.18.0.1"}, "x", None,
           {"index": 9, "address": "198.18.0.1", "prefixlen": 99}]
    [same] = with_addresses([eth], bad + [addr(9, "198.18.0.2", 24)])  # the link stays, bad addresses go
    assert [str(n) for n in same.networks] == ["198.18.0.2/24"]
    assert with_addresses([eth], "garbage") == [eth]  # type: ignore[arg-type]


def test_duplicate_records_collapse() -> None:
    [eth] = with_addresses(links([link("eth0", 2)]), [addr(2, "198.18.0.1", 24)] * 3)
    assert len(eth.networks) == 1 and eth.broadcasts == ("198.18.0.255",)


def test_skip_rules() -> None:
    ifs = {i.name: i for i in interfaces(LINKS, ADDRS)}
    reasons = {n: skip_reason(i) for n, i in ifs.items()}
    assert reasons == {"lo": "reserved", "eth0": None, "eth1": "down", "kube-ipvs0": "reserved",
                       "veth123": "container plumbing", "cali9": "container plumbing", "dummy0": "NOARP",
                       "br0": None, "port1": "bridge port", "tun0": "not ethernet", "bond0": None,
                       "enp1": "bond port", "vrfport": None}
    assert [i.name for i in usable(ifs.values(), allowed={"br0", "lo"})] == ["br0"]


def test_interface_for_ip_by_subnet_or_pool() -> None:
    cands = usable(interfaces(LINKS, ADDRS))
    assert [i.name for i in interfaces_for("198.18.0.50", cands)] == ["eth0"]
    assert [i.name for i in interfaces_for("2001:db8::50", cands)] == ["eth0"]
    assert interfaces_for("198.18.9.9", cands) == []
    assert interfaces_for("fe80::99", cands) == []  # link-local subnets never qualify
    assert interfaces_for("garbage", cands) == []
    # A pool naming interfaces overrides subnets, but never resurrects an unusable one.
    assert [i.name for i in interfaces_for("203.0.113.5", cands, ["br0", "veth123"])] == ["br0"]


def test_heartbeat_targets() -> None:
    cands = usable(interfaces(LINKS, ADDRS))
    assert heartbeat_targets(cands) == {"eth0": ("198.18.0.255",), "br0": ("198.18.1.255",),
                                        "bond0": ("198.18.3.255",)}


def test_netlink_reads_loopback_of_this_namespace() -> None:
    """Real rtnetlink, read only: `lo` is in every namespace with 127.0.0.1/8; addresses are fetched only
    for the links the caller wants (the kernel filters them by index)."""
    every = {i.name: i for i in asyncio.run(netlink.read(lambda i: i.name == "lo"))}
    lo = every["lo"]
    assert lo.index == 1 and lo.link_type == "loopback" and "LOOPBACK" in lo.flags and "UP" in lo.flags
    assert "127.0.0.1/8" in [str(n) for n in lo.networks]
    assert skip_reason(lo) == "reserved"
    assert all(i.networks == () for n, i in every.items() if n != "lo")
    assert netlink.read_sync(lambda _: False)[0].networks == ()
