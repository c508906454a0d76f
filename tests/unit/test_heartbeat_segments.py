"""Which segment is alive: per-interface liveness, per-segment election, and the registered-peers check."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket

from lbctl.core.announce import IpIntent, owners, segment_live
from lbctl.core.election import NodeInfo, rank
from lbctl.core.heartbeat import Heartbeat, Keyring, encode, incarnation_bytes
from lbctl.core.registered import ShortfallLog, check_peers
from lbctl.speaker.heartbeats import Heartbeats
from lbctl.speaker.metrics import Metrics

KEY = b"k" * 32
NODES = {n: NodeInfo(n) for n in ("a", "b", "c")}


def ip_owned_by(node: str) -> str:
    """An address whose owner among a, b, c is `node` (rendezvous hashing is deterministic)."""
    for last in range(1, 250):
        ip = f"198.18.0.{last}"
        if rank(ip, NODES)[0] == node:
            return ip
    raise AssertionError("no address found")


def test_a_peer_heard_only_on_another_nic_loses_the_ips_of_the_dead_segment() -> None:
    # Seen from b: a's VIP NIC (segment of eth1) died, a still beacons on eth0.
    vip = ip_owned_by("a")
    intents = {vip: IpIntent(vip)}
    live = {"a", "b", "c"}
    assert owners(intents, live, NODES)[vip] == "a"  # one live set: a keeps an IP it cannot answer for
    live_on = {"eth0": {"a", "b", "c"}, "eth1": {"b", "c"}}
    won = owners(intents, live, NODES, segment_live({vip: ["eth1"]}, live_on))
    assert won[vip] == rank(vip, {"b", "c"})[0] != "a"
    # An address on eth0 still goes to a.
    assert owners(intents, live, NODES, segment_live({vip: ["eth0"]}, live_on))[vip] == "a"


def test_segment_live_unions_the_ips_interfaces_and_skips_untracked_ones() -> None:
    live_on = {"eth0": {"b", "a"}, "eth1": {"b", "c"}}
    got = segment_live({"198.18.0.1": ["eth0", "eth1"], "198.18.0.2": ["eth1", "v6only"],
                        "2001:db8::1": ["v6only"], "198.18.0.3": []}, live_on)
    assert got == {"198.18.0.1": {"a", "b", "c"}, "198.18.0.2": {"b", "c"}}
    # Untracked IPs keep today's rule: elected among everyone live.
    intents = {"2001:db8::1": IpIntent("2001:db8::1")}
    assert owners(intents, {"a", "b", "c"}, NODES, got)["2001:db8::1"] == rank("2001:db8::1", NODES)[0]


def _beacon(node: str, inc: int, seq: int, echo: int) -> bytes:
    return encode(Heartbeat(node, inc, seq), Keyring([KEY]), [echo])


def test_heartbeats_track_liveness_per_receiving_interface() -> None:
    async def scenario() -> None:
        hb = Heartbeats("b", Keyring([KEY]), 0, 0.1, 0.45, lambda: None, Metrics())
        pairs = {name: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for name in ("eth0", "eth1")}
        try:
            for name, (ours, _) in pairs.items():  # what set_targets does, without SO_BINDTODEVICE
                ours.setblocking(False)
                hb._socks[name] = (ours, ())
                hb.segments[name] = type(hb.peers)("b", 0.45, require_echo=False)
            me = int.from_bytes(incarnation_bytes(hb.incarnation), "big")
            a = _beacon("a", 7, 1, me)
            pairs["eth0"][1].send(a)  # a beacons on eth0 only
            pairs["eth0"][1].send(_beacon("c", 9, 1, me))
            pairs["eth1"][1].send(_beacon("c", 9, 1, me))  # the very same beacon on both NICs
            hb._drain(10.0, 9.9)
            assert hb._publish(10.0)  # what the thread does after each drain
            assert hb.live(10.0) == {"a", "b", "c"}
            assert hb.live_on(10.0) == {"eth0": {"a", "b", "c"}, "eth1": {"b", "c"}}
            # Past dead_after with nothing heard, every segment is back to ourselves.
            assert hb._publish(10.5)
            assert hb.live_on(10.5) == {"eth0": {"b"}, "eth1": {"b"}}
            # A closed interface's table goes with its socket.
            hb.set_targets({"eth0": ()})
            assert set(hb.segments) == {"eth0"}
        finally:
            for x, y in pairs.values():
                x.close()
                y.close()
    asyncio.run(scenario())


LEASE_NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def _lease(node: str, renewed: dt.datetime, holder: str | None = None) -> dict:
    return {"metadata": {"name": f"lbctl-speaker-{node}", "labels": {"lbctl.io/node": node}},
            "spec": {"holderIdentity": node if holder is None else holder, "leaseDurationSeconds": 30,
                     "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}


def test_registered_speakers_not_heard_are_named() -> None:
    leases = [_lease("a", LEASE_NOW), _lease("b", LEASE_NOW - dt.timedelta(seconds=5)),
              _lease("c", LEASE_NOW - dt.timedelta(seconds=60)),  # expired: not registered any more
              _lease("d", LEASE_NOW, holder="")]  # released on a graceful stop
    got = check_peers(leases, {"a"}, "a", LEASE_NOW)
    assert got.registered == {"a", "b"} and got.missing == ("b",)
    assert check_peers(leases, {"a", "b"}, "a", LEASE_NOW).missing == ()
    assert check_peers([], {"z"}, "z", LEASE_NOW).registered == {"z"}  # our own Lease not written yet


def test_shortfall_is_logged_on_change_then_rate_limited() -> None:
    log = ShortfallLog(every=60)
    assert log.due(("b",), 0.0)
    assert not log.due(("b",), 10.0)
    assert log.due(("b", "c"), 11.0)  # someone else went missing: at once
    assert not log.due(("b", "c"), 70.0)
    assert log.due(("b", "c"), 71.0)
    assert not log.due((), 72.0)
    assert log.due(("b",), 73.0)  # a new shortfall after a clean check


def test_ipv6_only_interfaces_beacon_to_the_link_local_group() -> None:
    from lbctl.core.netifs import heartbeat_targets, interfaces
    from lbctl.speaker.heartbeats import _destinations, _group6
    from lbctl.speaker.interfaces import HEARTBEAT_GROUP6
    up = 0x1 | 0x2 | 0x1000 | 0x10000  # UP BROADCAST MULTICAST LOWER_UP
    links = [{"index": i, "name": n, "flags": f, "type": 1, "address": f"02:00:00:00:00:0{i}", "port_of": None}
             for i, n, f in ((2, "dual", up), (3, "v6only", up), (4, "v6nomcast", up & ~0x1000), (5, "v4", up))]
    addrs = [{"index": 2, "address": "198.18.0.1", "prefixlen": 24}, {"index": 2, "address": "2001:db8::1", "prefixlen": 64},
             {"index": 3, "address": "fe80::3", "prefixlen": 64}, {"index": 4, "address": "2001:db8:1::4", "prefixlen": 64},
             {"index": 5, "address": "198.18.1.1", "prefixlen": 24}]
    cands = interfaces(links, addrs)
    got = heartbeat_targets(cands, HEARTBEAT_GROUP6)
    # Dual-stack keeps IPv4 broadcast only (one beacon per segment); without a group, IPv6-only stays silent.
    assert got == {"dual": ("198.18.0.255",), "v6only": ("ff02::114",), "v4": ("198.18.1.255",)}
    assert heartbeat_targets(cands) == {"dual": ("198.18.0.255",), "v4": ("198.18.1.255",)}
    assert _group6(got["v6only"]) == "ff02::114" and _group6(got["dual"]) is None
    assert _destinations("lo", ("ff02::114",), 7946) == (("ff02::114", 7946, 0, socket.if_nametoindex("lo")),)
    assert _destinations("x", ("198.18.0.255", "198.18.2.255"), 7946) == (("198.18.0.255", 7946), ("198.18.2.255", 7946))


def test_unicast_fallback_goes_on_the_interface_holding_the_peers_address() -> None:
    from lbctl.core.netifs import heartbeat_targets, interfaces
    from lbctl.speaker.interfaces import HEARTBEAT_GROUP6
    up = 0x1 | 0x2 | 0x1000 | 0x10000
    links = [{"index": 2, "name": "eth0", "flags": up, "type": 1, "address": "02:00:00:00:00:02", "port_of": None},
             {"index": 3, "name": "v6", "flags": up, "type": 1, "address": "02:00:00:00:00:03", "port_of": None}]
    addrs = [{"index": 2, "address": "198.18.0.1", "prefixlen": 24}, {"index": 2, "address": "2001:db8::1", "prefixlen": 64},
             {"index": 3, "address": "2001:db8:6::1", "prefixlen": 64}]
    cands = interfaces(links, addrs)
    peers = ["198.18.0.2", "2001:db8::2", "198.18.0.1", "2001:db8:6::2", "203.0.113.9", "junk", "198.18.0.2"]
    got = heartbeat_targets(cands, HEARTBEAT_GROUP6, peers)
    # eth0 beacons IPv4 (broadcast + the on-link peer, once; not ourselves, not off-link); v6 adds its peer.
    assert got == {"eth0": ("198.18.0.255", "198.18.0.2"), "v6": ("ff02::114", "2001:db8:6::2")}
    from lbctl.speaker.heartbeats import _destinations, _group6
    assert _group6(got["v6"]) == "ff02::114" and _group6(got["eth0"]) is None
    assert _destinations("lo", ("ff02::114", "2001:db8:6::2"), 1)[1] == ("2001:db8:6::2", 1, 0, 0)


def test_node_internal_ips_are_read_for_the_fallback() -> None:
    from lbctl.core.announce import node_info
    obj = {"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "198.18.0.2"}, {"type": "Hostname", "address": "n1"},
        {"type": "InternalIP", "address": "2001:DB8::2"}, {"type": "ExternalIP", "address": "203.0.113.1"},
        {"type": "InternalIP", "address": "not-an-ip"}, "junk"]}}
    assert node_info(obj).addresses == ("198.18.0.2", "2001:db8::2")
    assert node_info({"metadata": {"name": "n2"}, "status": {"addresses": "junk"}}).addresses == ()
