"""Which routing daemon runs beside the speaker: FRR and BIRD 2 measured as the node's BGP speaker.

`python -m benchmarks.bgp_daemons` (root; Debian's frr, frr-pythontools, bird2; gobgpd only for its BFD check).
Two network namespaces, a router and a node, on one veth pair; each node daemon peers with the *other*
implementation as the router, so every figure is also an interoperability check:

- capabilities: the node daemon as a non-root user with no capabilities at all, then with the fewest that work;
  does the session reach Established and BFD Up, and which error does it print otherwise
- FIB: the node's routing tables (IPv4 and IPv6, every table) before the daemon starts and after the router
  has advertised its routes to it: they must be equal (export only)
- reloads: add and remove a prefix, change a community and a localPref, add a second peer, each applied the
  daemon's graceful way (birdc configure, frr-reload.py --reload), counted as session resets on the router
- memory (RSS of all the node daemon's processes) idle with 1 and with 1,000 exported /32s, the time until the
  router's kernel table holds the 1,000, startup to Established, and failover with BFD 100 ms x 3 (the node
  daemon SIGSTOPped: time until its route leaves the router's kernel table)
- installed size: the package set the image needs beyond a minimal Debian, from apt's metadata

The BIRD node's configuration is rendered by lbctl.core.bgp_render, the one the speaker will use.
Cleans up every namespace and process it started, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from lbctl.core.bgp_render import BfdProfile, BgpConfig, Export, Peer, render

PREFIX = os.environ.get("LBCTL_LAB_PREFIX", "bgpb-")
STATE = Path(os.environ.get("LBCTL_LAB_STATE", f"/dev/shm/{PREFIX}lab"))
RNS, NNS = f"{PREFIX}r", f"{PREFIX}n"
R4, N4, R6, N6 = "198.18.0.1", "198.18.0.2", "2001:db8::1", "2001:db8::2"
ROUTER_ASN, NODE_ASN = 64500, 64501
ADVERTISED_TO_NODE = ("198.19.100.0/24", "2001:db8:100::/48")  # the router's routes: must not reach the node
VIP, VIP2 = "198.18.10.1/32", "198.18.10.2/32"
BULK = tuple(f"198.19.{i // 256}.{i % 256}/32" for i in range(1000))
FRR_CAPS = "net_bind_service,net_admin,net_raw,sys_admin"  # what FRR 8.4's daemons ask for at start
BIRD_BFD_CAPS = "net_admin"
FAILOVER_TRIALS = 3


def sh(*args: str, check: bool = True, timeout: float = 30) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout).stdout


def in_ns(ns: str, *args: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *args, check=check)


def wait_for(what: str, cond: Callable[[], object], timeout: float, step: float = 0.02) -> float:
    """Seconds until cond() is truthy; raises TimeoutError naming `what`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(step)
    raise TimeoutError(f"{what}: not within {timeout} s")


def drop_privileges(caps: str) -> list[str]:
    """setpriv prefix: the caller's uid/gid, no_new_privs, and exactly `caps` (ambient) or none."""
    spec = "-all" + "".join(f",+{c}" for c in caps.split(",") if c)
    return ["--inh-caps", spec, "--ambient-caps", spec, "--bounding-set", spec, "--no-new-privs"]


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def kernel_routes(ns: str) -> str:
    return in_ns(ns, "ip", "route", "show", "table", "all") + in_ns(ns, "ip", "-6", "route", "show", "table", "all")


def router_has(prefix: str) -> bool:
    return bool(in_ns(RNS, "ip", "-6" if ":" in prefix else "-4", "route", "show", prefix).strip())


# --- the router: the other implementation, root in its namespace, learning into its kernel table (ECMP) ---

class FrrRouter:
    name = "FRR"

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        self.dir = STATE / "router-frr"
        self.dir.mkdir(parents=True)
        (self.dir / "frr.conf").write_text(f"""frr defaults traditional
hostname router
log file {self.dir}/frr.log
{"".join(f"{'ipv6' if ':' in p else 'ip'} route {p} blackhole{chr(10)}" for p in ADVERTISED_TO_NODE)}bfd
 profile fast
  receive-interval 100
  transmit-interval 100
  detect-multiplier 3
router bgp {ROUTER_ASN}
 bgp router-id {R4}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 bgp graceful-restart-disable
 neighbor nodes peer-group
 neighbor nodes remote-as {NODE_ASN}
 neighbor nodes passive
 neighbor {N4} peer-group nodes
 neighbor {N6} peer-group nodes
 neighbor {N4} bfd profile fast
 neighbor {N6} bfd profile fast
 address-family ipv4 unicast
  network {ADVERTISED_TO_NODE[0]}
  neighbor nodes activate
  maximum-paths 16
 address-family ipv6 unicast
  network {ADVERTISED_TO_NODE[1]}
  neighbor nodes activate
  maximum-paths 16
""")
        shutil.chown(self.dir, "frr", "frr")
        for daemon in ("zebra", "bfdd", "staticd", "bgpd"):  # zebra first, as frrinit.sh does: it relays BFD
            procs.append(subprocess.Popen(["ip", "netns", "exec", RNS, f"/usr/lib/frr/{daemon}", *self._args(daemon)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_for(f"FRR router's {daemon}", lambda: (self.dir / f"{daemon}.vty").exists(), 20)
        wait_for("FRR router's vty", lambda: all((self.dir / f"{d}.vty").exists() for d in ("bgpd", "bfdd")), 20)

    def _args(self, daemon: str) -> list[str]:
        d = self.dir
        return ["-f", f"{d}/frr.conf", "--vty_socket", str(d), "-z", f"{d}/zserv.api", "-i", f"{d}/{daemon}.pid",
                "-A", "127.0.0.1", "-P", "0"]

    def vtysh(self, *commands: str) -> str:
        args = [a for c in commands for a in ("-c", c)]
        return in_ns(RNS, "vtysh", "--vty_socket", str(self.dir), *args, check=False)

    def _neighbor(self, peer: str) -> dict:
        try:
            return json.loads(self.vtysh(f"show bgp neighbors {peer} json")).get(peer, {})
        except json.JSONDecodeError:
            return {}

    def established(self, peer: str) -> bool:
        return self._neighbor(peer).get("bgpState") == "Established"

    def resets(self, peer: str) -> int:
        return int(self._neighbor(peer).get("connectionsDropped", 0))

    def bfd_text(self) -> str:
        return self.vtysh("show bfd peers brief")

    def bfd_up(self, peer: str) -> bool:
        try:
            return any(p.get("peer") == peer and p.get("status") == "up"
                       for p in json.loads(self.vtysh("show bfd peers json")))
        except json.JSONDecodeError:
            return False

    def sent(self, peer: str) -> int:
        families = self._neighbor(peer).get("addressFamilyInfo", {})
        return sum(int(f.get("sentPrefixCounter", 0)) for f in families.values())

    def route_text(self, prefix: str) -> str:
        family = "ipv6" if ":" in prefix else "ipv4"
        return self.vtysh(f"show bgp {family} unicast {prefix}")


class BirdRouter:
    name = "BIRD"
    protocols = {N4: "n4", N6: "n6"}

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        self.dir = STATE / "router-bird"
        self.dir.mkdir(parents=True)
        self.log = self.dir / "bird.log"
        (self.dir / "bird.conf").write_text(f"""router id {R4};
log "{self.log}" all;
protocol device {{}}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
protocol kernel {{ ipv6 {{ import none; export all; }}; merge paths on; }}
protocol static rs4 {{ ipv4; route {ADVERTISED_TO_NODE[0]} blackhole; }}
protocol static rs6 {{ ipv6; route {ADVERTISED_TO_NODE[1]} blackhole; }}
protocol bfd {{ interface "*" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }}; }}
template bgp nodes {{ local as {ROUTER_ASN}; passive on; bfd on; graceful restart off; debug {{ states }};
  error wait time 1, 5; }}
protocol bgp n4 from nodes {{ neighbor {N4} as {NODE_ASN}; ipv4 {{ import all; export where proto = "rs4"; }}; }}
protocol bgp n6 from nodes {{ neighbor {N6} as {NODE_ASN}; ipv6 {{ import all; export where proto = "rs6"; }}; }}
""")
        procs.append(subprocess.Popen(["ip", "netns", "exec", RNS, "bird", "-f", "-c", f"{self.dir}/bird.conf",
                                       "-s", f"{self.dir}/bird.ctl"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for("BIRD router's socket", lambda: "ready" in self.birdc("show status"), 20)

    def birdc(self, *command: str) -> str:
        return in_ns(RNS, "birdc", "-s", f"{self.dir}/bird.ctl", *command, check=False)

    def established(self, peer: str) -> bool:
        return "Established" in self.birdc("show", "protocols", self.protocols[peer])

    def resets(self, peer: str) -> int:
        """Times the protocol left Established (`debug { states }` logs every change)."""
        text = self.log.read_text() if self.log.exists() else ""
        return len(re.findall(rf"{self.protocols[peer]}: State changed to stop", text))

    def bfd_text(self) -> str:
        return self.birdc("show", "bfd", "sessions")

    def bfd_up(self, peer: str) -> bool:
        return any(line.split()[:1] == [peer] and " Up " in line
                   for line in self.birdc("show", "bfd", "sessions").splitlines())

    def sent(self, peer: str) -> int:
        m = re.search(r"(\d+) exported", self.birdc("show", "protocols", "all", self.protocols[peer]))
        return int(m[1]) if m else 0

    def route_text(self, prefix: str) -> str:
        return self.birdc("show", "route", prefix, "all")


# --- the node: the candidate, non-root, given exactly the capabilities asked for ---

@dataclass
class NodeState:
    """What the node exports; `peers` is the router addresses it peers with."""

    prefixes: dict[str, tuple[int | None, tuple[str, ...]]] = field(default_factory=lambda: {VIP: (None, ())})
    peers: tuple[str, ...] = (R4,)


class BirdNode:
    name = "BIRD"
    needs = BIRD_BFD_CAPS

    def __init__(self, tag: str) -> None:
        self.dir = STATE / f"node-bird-{tag}"
        self.dir.mkdir(parents=True)
        shutil.chown(self.dir, "nobody", "nogroup")
        self.conf, self.log = self.dir / "bird.conf", self.dir / "bird.log"
        self.procs: list[subprocess.Popen] = []

    def write(self, state: NodeState) -> None:
        exports = tuple(Export(p, lp, c) for p, (lp, c) in state.prefixes.items())
        peers = tuple(Peer(f"router-{'v6' if ':' in a else 'v4'}", a, ROUTER_ASN,
                           source_address=N6 if ":" in a else N4, bfd=BfdProfile("fast", 100, 100, 3),
                           exports=tuple(e for e in exports if (":" in e.prefix) == (":" in a)))
                      for a in state.peers)
        self.conf.write_text(render(BgpConfig(N4, NODE_ASN, peers)))

    def start(self, caps: str) -> None:
        with open(self.log, "ab") as log:
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", NNS, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 *drop_privileges(caps), "bird", "-f", "-c", str(self.conf), "-s", f"{self.dir}/bird.ctl"],
                stdout=log, stderr=subprocess.STDOUT))

    def apply(self, state: NodeState) -> None:
        self.write(state)
        out = in_ns(NNS, "birdc", "-s", f"{self.dir}/bird.ctl", "configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise RuntimeError(f"birdc configure: {out.strip()}")

    def tail(self) -> str:
        return self.log.read_text()[-1500:]

    def errors(self) -> list[str]:
        return sorted({line.split("> ", 1)[-1] for line in self.log.read_text().splitlines()
                       if "<ERR>" in line or "rror" in line})

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]


class FrrNode:
    name = "FRR"
    needs = FRR_CAPS
    daemons = ("zebra", "bfdd", "bgpd")  # zebra first, as frrinit.sh does: it relays BFD between bgpd and bfdd

    def __init__(self, tag: str) -> None:
        self.dir = STATE / f"node-frr-{tag}"
        self.dir.mkdir(parents=True)
        shutil.chown(self.dir, "frr", "frr")
        self.conf = self.dir / "frr.conf"
        self.procs: list[subprocess.Popen] = []
        self.canonical = True  # False: leave out the bare `neighbor X bfd` that FRR's running config shows

    def write(self, state: NodeState) -> None:
        # frr-reload.py diffs against FRR's own rendering of the running config: every line that FRR shows
        # differently (`bgp no-rib` from -n, the bare `neighbor X bfd`) becomes a delete that resets the session.
        lines = ["frr defaults traditional", "hostname node", f"log file {self.dir}/frr.log", "bgp no-rib", "bfd",
                 " profile fast", "  receive-interval 100", "  transmit-interval 100", "  detect-multiplier 3",
                 f"router bgp {NODE_ASN}", f" bgp router-id {N4}", " no bgp ebgp-requires-policy",
                 " no bgp default ipv4-unicast", " no bgp network import-check", " bgp graceful-restart-disable"]
        for peer in state.peers:
            lines += [f" neighbor {peer} remote-as {ROUTER_ASN}", *([f" neighbor {peer} bfd"] * self.canonical),
                      f" neighbor {peer} bfd profile fast",
                      f" neighbor {peer} timers connect 5"]
        maps = []
        for family in ("ipv4", "ipv6"):
            lines.append(f" address-family {family} unicast")
            for prefix, (lp, comms) in sorted(state.prefixes.items()):
                if (":" in prefix) == (family == "ipv6") and not (lp or comms):
                    lines.append(f"  network {prefix}")
                elif (":" in prefix) == (family == "ipv6"):
                    name = "EXPORT-" + re.sub(r"[.:/]", "-", prefix)
                    lines.append(f"  network {prefix} route-map {name}")
                    maps += [f"route-map {name} permit 10"] + ([f" set local-preference {lp}"] if lp else []) + (
                        [f" set community {' '.join(comms)}"] if comms else [])
            for peer in state.peers:
                if (":" in peer) == (family == "ipv6"):
                    lines += [f"  neighbor {peer} activate", f"  neighbor {peer} route-map IMPORT-NONE in"]
            lines.append(" exit-address-family")
        lines += ["route-map IMPORT-NONE deny 10", *maps]
        self.conf.write_text("\n".join(lines) + "\n")
        shutil.chown(self.conf, "frr", "frr")

    def start(self, caps: str) -> None:
        for daemon in self.daemons:
            extra = ["-p", "0", "-n"] if daemon == "bgpd" else []  # no listener; never install received routes
            with open(self.dir / f"{daemon}.out", "ab") as out:
                self.procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", NNS, "setpriv", "--reuid=frr", "--regid=frr", "--init-groups",
                     *drop_privileges(caps), f"/usr/lib/frr/{daemon}", "-f", str(self.conf), "--vty_socket",
                     str(self.dir), "-z", f"{self.dir}/zserv.api", "-i", f"{self.dir}/{daemon}.pid",
                     "-A", "127.0.0.1", "-P", "0", *extra], stdout=out, stderr=subprocess.STDOUT))
            proc = self.procs[-1]  # without its capabilities it exits at once: errors() says why
            wait_for(f"FRR node's {daemon}", lambda: (self.dir / f"{daemon}.vty").exists() or proc.poll() is not None,
                     20)

    def apply(self, state: NodeState) -> None:
        self.write(state)
        proc = subprocess.run(["ip", "netns", "exec", NNS, "/usr/lib/frr/frr-reload.py", "--reload",
                               "--vty_socket", str(self.dir), "--confdir", str(self.dir), "--rundir", str(self.dir),
                               "--bindir", "/usr/bin", "--stdout", str(self.conf)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode:
            raise RuntimeError(f"frr-reload.py exited {proc.returncode}: {(proc.stdout + proc.stderr)[-500:]}")

    def tail(self) -> str:
        log = self.dir / "frr.log"
        return log.read_text()[-1500:] if log.exists() else ""

    def errors(self) -> list[str]:
        out = []
        for daemon in self.daemons:
            text = (self.dir / f"{daemon}.out").read_text()
            out += [f"{daemon}: {line}" for line in text.splitlines() if "privs" in line or "caps" in line]
        return out

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]


def stop_all(procs: list[subprocess.Popen]) -> None:
    """`ip netns exec` and setpriv exec the daemon, so each Popen's pid is the daemon's own."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a frozen daemon cannot act on SIGTERM
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    procs.clear()


def netns_up() -> None:
    sh("ip", "netns", "add", RNS)
    sh("ip", "netns", "add", NNS)
    for ns in (RNS, NNS):  # link-local addresses usable at once: FRR ignores one that was tentative at its start
        in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
    sh("ip", "link", "add", f"{PREFIX}r0", "netns", RNS, "type", "veth", "peer", "name", f"{PREFIX}n0",
       "netns", NNS)
    for ns, dev, a4, a6 in ((RNS, f"{PREFIX}r0", R4, R6), (NNS, f"{PREFIX}n0", N4, N6)):
        sh("ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", dev)
        sh("ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", dev, "nodad")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", dev, "up")


def netns_down() -> None:
    for ns in (RNS, NNS):
        sh("ip", "netns", "del", ns, check=False)


# --- the measurements ---

def measure(node_cls, router_cls) -> dict:
    r: dict = {"node": node_cls.name, "router": router_cls.name}
    procs: list[subprocess.Popen] = []
    nodes = []
    try:
        netns_up()
        router = router_cls(procs)
        # 1. no capabilities at all
        bare = node_cls("nocaps")
        nodes.append(bare)
        bare.write(NodeState())
        bare.start("")
        try:
            wait_for("Established without capabilities", lambda: router.established(N4), 12)
            r["nocaps_bgp"] = "Established"
        except TimeoutError:
            r["nocaps_bgp"] = "no session"
        try:
            wait_for("BFD Up without capabilities", lambda: router.bfd_up(N4), 5 if r["nocaps_bgp"] != "no session"
                     else 0.1)
            r["nocaps_bfd"] = "Up"
        except TimeoutError:
            r["nocaps_bfd"] = "not Up"
        r["nocaps_errors"] = bare.errors()
        stop_all(bare.procs)
        wait_for("router sees the session go", lambda: not router.established(N4), 15)
        # 2. the fewest capabilities that work, as a non-root user
        before = kernel_routes(NNS)
        node = node_cls("min")
        nodes.append(node)
        state = NodeState()
        node.write(state)
        start = time.monotonic()
        node.start(node.needs)
        wait_for("Established", lambda: router.established(N4), 30)
        r["startup_established_s"] = time.monotonic() - start
        try:
            wait_for("BFD Up", lambda: router.bfd_up(N4), 15)
            r["startup_bfd_s"] = time.monotonic() - start
        except TimeoutError:
            r["startup_bfd_s"] = None
            r.setdefault("step_logs", []).append(f"BFD not Up 15 s after start: router: {router.bfd_text()}")
        r["caps"] = node.needs
        wait_for("node's route on the router", lambda: router_has(VIP), 10)
        time.sleep(2)  # the router's own routes reach the node within this (it sends them at once)
        r["router_sent"] = router.sent(N4)
        r["fib_unchanged"] = kernel_routes(NNS) == before
        r["node_pids"] = len(node.pids())
        r["rss_idle_1_kib"] = rss_kib(node.pids())
        # 3. changes, each applied gracefully; resets counted by the router
        resets0 = router.resets(N4)
        steps = []

        def step(what: str, new: NodeState, done: Callable[[], bool]) -> None:
            t0 = time.monotonic()
            node.apply(new)
            try:
                wait_for(what, done, 40)
                steps.append((what, f"{time.monotonic() - t0:.2f} s"))
            except TimeoutError:
                steps.append((what, "NOT within 40 s"))
                r.setdefault("step_logs", []).append(f"{what}: {node.tail()}")

        state = replace(state, prefixes={**state.prefixes, VIP2: (None, ())})
        step("add a prefix", state, lambda: router_has(VIP2))
        state = replace(state, prefixes={**state.prefixes, VIP: (None, ("65000:2",))})
        step("change a community", state, lambda: "65000:2" in router.route_text(VIP).replace(",", ":")
             .replace("(", "").replace(")", ""))
        state = replace(state, prefixes={**state.prefixes, VIP: (300, ("65000:2",))})
        step("change localPref (eBGP: not sent)", state, lambda: True)
        state = replace(state, prefixes={VIP: state.prefixes[VIP]})
        step("remove a prefix", state, lambda: not router_has(VIP2))
        state = replace(state, peers=(R4, R6), prefixes={**state.prefixes, "2001:db8:10::1/128": (None, ())})
        step("add a second peer (IPv6)", state, lambda: router.established(N6) and router_has("2001:db8:10::1/128"))
        time.sleep(1)
        r["steps"] = steps
        r["resets"] = router.resets(N4) - resets0
        r["established_after"] = router.established(N4)
        # 4. 1,000 exported /32s
        state = replace(state, prefixes={**state.prefixes, **{p: (None, ()) for p in BULK}})
        t0 = time.monotonic()
        node.apply(state)
        r["bulk_apply_s"] = time.monotonic() - t0
        wait_for("1,000 routes on the router", lambda: len(in_ns(RNS, "ip", "route", "show", "root",
                                                                 "198.19.0.0/22").splitlines()) >= 1000, 60,
                 step=0.05)
        r["bulk_1000_s"] = time.monotonic() - t0
        time.sleep(2)
        r["rss_idle_1000_kib"] = rss_kib(node.pids())
        after = kernel_routes(NNS)
        r["fib_unchanged_1000"] = after == before
        r["fib_diff"] = sorted(set(after.splitlines()) ^ set(before.splitlines()))
        r["forwarding"] = " ".join(in_ns(NNS, "sysctl", "-n", "net.ipv4.ip_forward",
                                         "net.ipv6.conf.all.forwarding").split())
        # 5. failover: the node daemon frozen; time until its route leaves the router's kernel table
        state = replace(state, prefixes={VIP: (None, ())}, peers=(R4,))
        node.apply(state)
        wait_for("bulk withdrawn", lambda: not router_has(BULK[0]), 30)
        times = []
        for _ in range(FAILOVER_TRIALS):
            try:
                wait_for("BFD Up before a trial", lambda: router.bfd_up(N4) and router_has(VIP), 30)
            except TimeoutError:
                r.setdefault("step_logs", []).append(f"failover: BFD not Up in 30 s: {router.bfd_text()}")
                break
            time.sleep(0.5)
            pids = node.pids()
            t0 = time.monotonic()
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                wait_for("route withdrawn after the freeze", lambda: not router_has(VIP), 30, step=0.01)
                times.append(time.monotonic() - t0)
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
        r["failover_s"] = times
        # 6. FRR only: the same config without a line FRR adds when it shows it (frr-reload.py deletes it)
        if isinstance(node, FrrNode):
            wait_for("Established before the non-canonical reload", lambda: router.established(N4), 30)
            resets0 = router.resets(N4)
            node.canonical = False
            node.apply(state)
            time.sleep(3)
            r["noncanonical_resets"] = router.resets(N4) - resets0
        return r
    finally:
        for n in nodes:
            stop_all(n.procs)
        stop_all(procs)
        netns_down()


def gobgp_bfd() -> str:
    """GoBGP 3.10: BFD words in gobgpd are only zebra (FRR ZAPI) message names; its config has no BFD."""
    if not shutil.which("gobgpd"):
        return "gobgpd not installed"
    words = set(re.findall(r"[A-Za-z_]*[Bb][Ff][Dd][A-Za-z_]*", sh("strings", shutil.which("gobgpd"))))
    zapi = {w for w in words if w.startswith("_") or "Dest" in w or "Client" in w}
    return f"no BFD: {len(words - zapi)} BFD identifiers outside FRR's zebra protocol names ({len(zapi)} inside)"


def _closure(roots: set[str]) -> set[str]:
    """Depends/PreDepends closure as apt resolves it: the first alternative of each `a | b` group."""
    seen: set[str] = set()
    todo = set(roots)
    while todo:
        out = sh("apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
                 "--no-replaces", "--no-enhances", *sorted(todo), timeout=120)
        seen |= todo
        todo = set()
        alternative = False
        for line in out.splitlines():
            m = re.match(r"\s+(\|?)(?:Pre)?Depends: (\S+)", line)
            if not m:
                continue
            if not alternative and not m[2].startswith("<") and m[2] not in seen:
                todo.add(m[2])
            alternative = m[1] == "|"  # the next line is this group's next alternative: skip it
    return seen


def installed_size(roots: list[str]) -> tuple[int, list[str]]:
    """KiB the image needs for roots beyond a minimal Debian (Essential and Priority required, with their
    dependencies), from the installed packages' Installed-Size."""
    fields = sh("dpkg-query", "-W", "-f", "${Package}\t${Essential}\t${Priority}\t${Installed-Size}\n")
    rows = [line.split("\t") for line in fields.splitlines()]
    base = _closure({name for name, essential, priority, _ in rows if essential == "yes" or priority == "required"})
    sizes = {name: int(size or 0) for name, _, _, size in rows}
    extra = sorted(_closure(set(roots)) - base)
    return sum(sizes.get(name, 0) for name in extra), extra


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root: it creates network namespaces")
    STATE.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for node_cls, router_cls in ((BirdNode, FrrRouter), (FrrNode, BirdRouter)):
            print(f"measuring {node_cls.name} on the node, {router_cls.name} as the router ...", flush=True)
            results.append(measure(node_cls, router_cls))
    finally:
        netns_down()
        shutil.rmtree(STATE, ignore_errors=True)
    sizes = {"BIRD": installed_size(["bird2"]), "FRR": installed_size(["frr", "frr-pythontools"])}
    rows = [
        ("BGP session, no capabilities", lambda r: r["nocaps_bgp"]),
        ("BFD, no capabilities", lambda r: r["nocaps_bfd"]),
        ("errors without capabilities", lambda r: "; ".join(r["nocaps_errors"])[:160] or "-"),
        ("fewest capabilities that work (non-root)", lambda r: r["caps"]),
        ("node routing table unchanged (1 / 1,000 exported)",
         lambda r: f"{r['fib_unchanged']} / {r['fib_unchanged_1000']} (router sent it {r['router_sent']} route)"),
        ("node's ip_forward / IPv6 forwarding while it runs (a new namespace has 0 0)", lambda r: r["forwarding"]),
        ("session resets over 5 changes", lambda r: f"{r['resets']} (still Established: {r['established_after']})"),
        *[(f"  {what}: applied in", (lambda i: lambda r: r["steps"][i][1])(i))
          for i, what in enumerate(w for w, _ in results[0]["steps"])],
        ("resets: the same config without `neighbor X bfd` (FRR shows it, so frr-reload.py deletes BFD)",
         lambda r: str(r.get("noncanonical_resets", "-"))),
        ("processes", lambda r: str(r["node_pids"])),
        ("RSS idle, 1 prefix", lambda r: f"{r['rss_idle_1_kib'] / 1024:.1f} MiB"),
        ("RSS idle, 1,000 /32s", lambda r: f"{r['rss_idle_1000_kib'] / 1024:.1f} MiB"),
        ("1,000 /32s: reload command took / on the router's kernel table in",
         lambda r: f"{r['bulk_apply_s']:.2f} s / {r['bulk_1000_s']:.2f} s"),
        ("start to Established / BFD Up", lambda r: f"{r['startup_established_s']:.2f} s / "
         + (f"{r['startup_bfd_s']:.2f} s" if r["startup_bfd_s"] is not None else "not within 15 s")),
        ("failover, BFD 100 ms x 3 (daemon frozen)",
         lambda r: " ".join(f"{t:.3f}" for t in r["failover_s"]) + (
             f" s (median {statistics.median(r['failover_s']):.3f})" if r["failover_s"] else "no trial: BFD not Up")),
        ("installed size beyond minimal Debian", lambda r: f"{sizes[r['node']][0] / 1024:.1f} MiB "
                                                           f"({len(sizes[r['node']][1])} packages)"),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"\n{'node daemon (router)':<{width}} | " + " | ".join(f"{r['node']} ({r['router']})" for r in results))
    for label, cell in rows:
        print(f"{label:<{width}} | " + " | ".join(cell(r) for r in results))
    for r in results:
        if r["fib_diff"]:
            print(f"{r['node']} node: routing table lines changed: {r['fib_diff'][:10]}")
        for line in r.get("step_logs", []):
            print(f"{r['node']} node, failed step: {line}")
    print(f"\nGoBGP 3.10: {gobgp_bfd()}")
    for name, (_, pkgs) in sizes.items():
        print(f"{name} packages: {' '.join(pkgs)}")
    ratio = sizes["FRR"][0] / max(1, sizes["BIRD"][0])
    mem = results[1]["rss_idle_1_kib"] / max(1, results[0]["rss_idle_1_kib"])
    print(f"FRR / BIRD: installed size {ratio:.1f}x, idle RSS {mem:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
