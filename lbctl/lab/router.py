"""The lab's top-of-rack router (BGP mode): FRR in its own namespace on the lab bridge, peering with every node.

A different implementation from the speakers' BIRD on purpose: every session is an interoperability check. The
router listens passively for any node on the bridge (dynamic neighbours: `bgp listen range`), one peer group per
family, eBGP from any ASN but its own, BFD on every session (FRR's bfdd), and puts what it learns into its own
kernel table through zebra, with ECMP across the nodes (`maximum-paths`). It sends the nodes nothing.

Isolated from the host's FRR: every path FRR would take from /etc/frr or /run/frr is given on the command line
(config file, pid file, vty socket directory, zebra's API socket, bfdd's control socket) and points into the
lab's state dir; the TCP vty is off (-P 0). The daemons run under lbctl.lab.processes (pidfiles), so
`lbctl lab down` stops them with everything else.

The query helpers read what tests, benchmarks and the demo check: the sessions (`show bgp summary json`), the
resets (the log's neighbour changes: a dynamic neighbour's counters die with its session) and the kernel's
routes with one next hop per advertising node.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import tables
from . import processes
from .processes import LOGS, STATE
from .topology import ROUTER_IP4, ROUTER_IP6, ROUTER_NS, Topology, in_ns

ROUTER_ASN = 64500
NODE_ASN = 64512  # the lab's BGPPeers' myASN; the router takes any ASN but its own
BFD_PROFILE = "lab"
BFD_INTERVAL_MS, BFD_MULTIPLIER = 100, 3  # down after 300 ms without a packet
DIR = STATE / "router"
DAEMONS = ("zebra", "bfdd", "bgpd")  # in start order: bgpd and bfdd talk to each other through zebra
FRR_BIN = Path("/usr/lib/frr")
VTY_GROUP = "frrvty"  # Debian's frr package creates it
# FRR 8.4 keeps a crash log dir per process at this fixed path (no option moves it); a daemon running as root
# without CAP_DAC_OVERRIDE cannot remove its own there (the dir is frr's), so stop() does.
FRR_TMP = Path("/var/tmp/frr")
MAXIMUM_PATHS = 64  # more than the lab can have (29 nodes and the control plane); Debian's FRR 8.4 accepts it
_ADJ = re.compile(r"%ADJCHANGE: neighbor (\S+?)(?:\(\S*\))? in vrf \S+ (Up|Down)")
_NOTIFICATION = re.compile(r"%NOTIFICATION: sent to neighbor (\S+) \d+/\d+ \(([^)]*)\)")


class RouterError(RuntimeError):
    pass


def peer_names(topo: Topology) -> list[str]:
    """The lab's BGPPeers: one per family, as a session carries one family."""
    return ["router", *(["router-v6"] if topo.ipv6 else [])]


def chart_values(topo: Topology) -> dict[str, Any]:
    """The chart's `bgp` values for the lab: a BGPPeer per family to the router, with the BFD profile `lab`."""
    addresses = [ROUTER_IP4, *([ROUTER_IP6] if topo.ipv6 else [])]
    return {"enabled": True,
            "peers": [{"name": name, "peerAddress": address, "peerASN": ROUTER_ASN, "myASN": NODE_ASN,
                       "bfdProfile": BFD_PROFILE} for name, address in zip(peer_names(topo), addresses)],
            "bfdProfiles": [{"name": BFD_PROFILE, "receiveInterval": BFD_INTERVAL_MS,
                             "transmitInterval": BFD_INTERVAL_MS, "detectMultiplier": BFD_MULTIPLIER}]}


def pool_values(topo: Topology) -> dict[str, Any]:
    """What the lab's pool adds in BGP mode: announced by BGP to the router only, not by layer 2, so that no ARP
    answer on the bridge can stand in for a missing route."""
    return {"layer2": {"enabled": False}, "bgp": {"advertisements": [{"peers": peer_names(topo)}]}}


def frr_conf(topo: Topology) -> dict[str, str]:
    """Each daemon's configuration file (non-integrated: a daemon reading another's commands complains)."""
    v6 = topo.ipv6
    node_net4 = ipaddress.ip_interface(f"{ROUTER_IP4}/24").network
    node_net6 = ipaddress.ip_interface(f"{ROUTER_IP6}/64").network
    groups = [("NODES", node_net4, "ipv4")] + ([("NODES6", node_net6, "ipv6")] if v6 else [])
    bgp = ["frr defaults traditional", "hostname lab-router", "!", f"router bgp {ROUTER_ASN}",
           f" bgp router-id {ROUTER_IP4}",
           " bgp log-neighbor-changes",  # the reset count (sessions())
           " no bgp ebgp-requires-policy",
           " no bgp default ipv4-unicast",
           " bgp graceful-restart-disable",  # a dead node's routes must go at once, not be kept as stale
           " bgp bestpath as-path multipath-relax"]  # ECMP also across nodes of different ASNs
    for group, net, _ in groups:
        bgp += [f" neighbor {group} peer-group", f" neighbor {group} remote-as external",
                f" neighbor {group} bfd", f" neighbor {group} bfd profile {BFD_PROFILE}",
                f" bgp listen range {net} peer-group {group}"]
    for group, _, family in groups:
        bgp += [f" address-family {family} unicast", f"  neighbor {group} activate",
                f"  neighbor {group} route-map NOTHING out", f"  maximum-paths {MAXIMUM_PATHS}",
                " exit-address-family"]
    bgp += ["!", "route-map NOTHING deny 10", "!"]
    bfd = ["frr defaults traditional", "hostname lab-router", "!", "bfd", f" profile {BFD_PROFILE}",
           f"  receive-interval {BFD_INTERVAL_MS}", f"  transmit-interval {BFD_INTERVAL_MS}",
           f"  detect-multiplier {BFD_MULTIPLIER}", " exit", "exit", "!"]
    zebra = ["frr defaults traditional", "hostname lab-router", "!"]
    return {"zebra": "\n".join(zebra) + "\n", "bfdd": "\n".join(bfd) + "\n", "bgpd": "\n".join(bgp) + "\n"}


def _args(daemon: str) -> list[str]:
    d = DIR
    # As root: user frr could not reach the state dir (0700, it holds the lab's keys). FRR checks that its user
    # is in the vty group (frrvty); -g makes it so.
    args = [str(FRR_BIN / daemon), "-u", "root", "-g", VTY_GROUP,
            "-f", str(d / f"{daemon}.conf"), "-i", str(d / f"{daemon}.pid"),
            "--vty_socket", str(d), "-z", str(d / "zserv.api"), "-A", "127.0.0.1", "-P", "0",
            "--log", "stdout", "--log-level", "info"]
    if daemon == "bfdd":
        args += ["--bfdctl", str(d / "bfdd.sock")]
    return args


def start(topo: Topology, timeout: float = 20) -> float:
    """Start zebra, bfdd and bgpd in the router namespace (built by lbctl.lab.topology); returns the seconds until
    bgpd answered. Raises RouterError with the daemon's log when one does not come up."""
    if not (FRR_BIN / "bgpd").exists():
        raise RouterError(f"FRR is not installed ({FRR_BIN / 'bgpd'} missing): apt-get install frr")
    started = time.monotonic()
    DIR.mkdir(parents=True, exist_ok=True)
    for daemon, text in frr_conf(topo).items():
        (DIR / f"{daemon}.conf").write_text(text)
    for daemon in DAEMONS:
        pid = processes.spawn(f"router-{daemon}", ROUTER_NS, _args(daemon))
        deadline = time.monotonic() + timeout
        while not (DIR / f"{daemon}.vty").exists():
            if not processes.alive(pid) or time.monotonic() > deadline:
                raise RouterError(f"the router's {daemon} did not start:\n{log(daemon)}")
            time.sleep(0.02)
    deadline = time.monotonic() + timeout
    while True:
        try:
            summary()
            return time.monotonic() - started
        except RouterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def log(daemon: str = "bgpd") -> str:
    path = LOGS / f"router-{daemon}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def vtysh(*commands: str, timeout: float = 10) -> str:
    """Commands through the router's own vty sockets (never the host's FRR)."""
    res = in_ns(ROUTER_NS, "vtysh", "--vty_socket", str(DIR), *[a for c in commands for a in ("-c", c)],
                check=False, timeout=timeout)
    if res.returncode:
        raise RouterError(f"vtysh {' '.join(commands)}: {(res.stderr or res.stdout).strip()}")
    return res.stdout


def summary() -> dict:
    try:
        return json.loads(vtysh("show bgp summary json"))
    except json.JSONDecodeError as e:
        raise RouterError(f"show bgp summary json: not JSON ({e})") from None


@dataclass(frozen=True)
class Session:
    peer: str  # the node's address
    family: str  # ipv4Unicast / ipv6Unicast
    state: str  # Established, Active, ...
    uptime_s: float
    prefixes_received: int
    resets: int  # times this neighbour's session went down (the router's log)
    asn: int


def sessions() -> dict[str, Session]:
    """Every neighbour the router has now, by address. A dynamic neighbour exists only while it is connected or
    connecting: FRR deletes it with its counters when the session drops, so resets come from the log."""
    downs = resets()
    out = {}
    for family, data in summary().items():
        for peer, p in (data.get("peers") or {}).items() if isinstance(data, dict) else ():
            out[peer] = Session(peer, family, p.get("state", "?"), p.get("peerUptimeMsec", 0) / 1000,
                                int(p.get("pfxRcd", 0)), downs.get(peer, 0), int(p.get("remoteAs", 0)))
    return out


def sessions_table(topo: Topology) -> str:
    """The router's sessions, one row per neighbour with the node it is."""
    rows = [[s.peer, node_of(topo, s.peer) or "?", s.state, f"{s.uptime_s:.0f}s", str(s.prefixes_received),
             str(s.resets)] for s in sorted(sessions().values(), key=lambda s: (s.family, s.peer))]
    return tables.table(["PEER", "NODE", "STATE", "UP", "PREFIXES", "RESETS"], rows)


def hops_table(topo: Topology, addresses: list[str]) -> str:
    """Each address's route on the router: the nodes it goes to (ECMP), or none."""
    rows = [[a, ", ".join(sorted(node_of(topo, h) or h for h in next_hops(a))) or "no route"] for a in addresses]
    return tables.table(["IP", "ROUTER'S NEXT HOPS"], rows)


def resets() -> dict[str, int]:
    """Per neighbour address, how often its session went down since the router started (bgpd logs every
    neighbour change with `bgp log-neighbor-changes`)."""
    out: dict[str, int] = {}
    for peer, change in _ADJ.findall(log("bgpd")):
        if change == "Down":
            out[peer] = out.get(peer, 0) + 1
    return out


def notifications_sent() -> dict[str, list[str]]:
    """Per neighbour address, why the router closed its sessions, oldest first: "Cease/BFD Down" when BFD
    took it down (a dynamic neighbour's own Down line only says "Neighbor deleted")."""
    out: dict[str, list[str]] = {}
    for peer, reason in _NOTIFICATION.findall(log("bgpd")):
        out.setdefault(peer, []).append(reason)
    return out


def established(peers: list[str]) -> bool:
    now = sessions()
    return all(peer in now and now[peer].state == "Established" for peer in peers)


def routes(family: int = 4) -> dict[str, list[str]]:
    """The router's kernel table (main): destination -> next hop addresses (one per advertising node for an ECMP
    route). IPv6 next hops are the nodes' link-local addresses (see node_of)."""
    res = in_ns(ROUTER_NS, "ip", "-j", f"-{family}", "route", "show", "table", "main", check=False)
    out = {}
    for r in json.loads(res.stdout or "[]"):
        dst = r.get("dst", "")
        if dst == "default":
            continue
        if "/" not in dst:
            dst = f"{dst}/{32 if family == 4 else 128}"
        hops = [h["gateway"] for h in r.get("nexthops") or [] if h.get("gateway")]
        if r.get("gateway"):
            hops.append(r["gateway"])
        out[dst] = sorted(hops)
    return out


def next_hops(address: str) -> list[str]:
    """Next hops of the route for exactly `address` (a /32 or /128 the nodes advertise); [] when none."""
    net = ipaddress.ip_network(address)
    return routes(net.version).get(str(net), [])


def wait_next_hops(address: str, count: int, timeout: float = 15, interval: float = 0.01) -> tuple[list[str], float]:
    """Wait until the route for `address` has exactly `count` next hops (0: the route is gone); returns them and
    the seconds it took. Raises TimeoutError with what the table had."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        hops = next_hops(address)
        if len(hops) == count:
            return hops, time.monotonic() - started
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} on the router: {len(hops)} next hops {hops}, not {count}, after "
                               f"{timeout:.0f} s")
        time.sleep(interval)


def link_local(mac: str) -> str:
    """The EUI-64 link-local address the kernel gives an interface with `mac` (the nodes' IPv6 next hops)."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def node_of(topo: Topology, hop: str) -> str | None:
    """The host a next hop is: its IPv4 or IPv6 address, or the link-local address of its MAC."""
    return next((h.name for h in topo.hosts if hop in (h.ip4, h.ip6, link_local(h.mac))), None)


def stop(timeout: float = 5) -> int:
    """Stop the router's daemons (bgpd first: its sessions close with a notification), SIGKILL what is left after
    `timeout`, and remove their crash log dirs. Safe to repeat, and after a crash (pidfiles). Returns how many
    were running."""
    pids = {d: processes.pid_of(f"router-{d}") for d in reversed(DAEMONS)}
    running = [p for p in pids.values() if processes.alive(p)]
    for pid in running:
        processes.signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(processes.alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids.values():
        if processes.alive(pid):
            processes.signal_group(pid, signal.SIGKILL)
    for daemon, pid in pids.items():
        if pid:
            shutil.rmtree(FRR_TMP / f"{daemon}.{pid}", ignore_errors=True)
    return len(running)


def running() -> bool:
    return any(processes.alive(processes.pid_of(f"router-{d}")) for d in DAEMONS)


def bfd_peers() -> list[dict]:
    """bfdd's sessions (peer, status, timers)."""
    try:
        return json.loads(vtysh("show bfd peers json"))
    except json.JSONDecodeError:
        return []
