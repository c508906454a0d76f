"""Real frames against real speaker processes: three network namespaces on a bridge.

    [switch ns: br0] -- node1 ns (speaker "node1") -- node2 ns (speaker "node2") -- client ns (probes)

The speakers run with --static-config (their documented test/debug mode): the data plane and the
heartbeat election are exercised for real, without the API server, which only listens on the root
namespace's loopback. The client crafts and reads frames on an AF_PACKET socket it opens inside its
namespace (setns on the test thread), so nothing ever touches the root namespace's links.
Addresses: 198.18.0.0/24 and 2001:db8::/64, inside the namespaces only.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbctl.core.election import rank
from lbctl.core.heartbeat import Heartbeat, decode, encode
from tests.wait import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

ROOT = Path(__file__).resolve().parents[2]
KEY = b"e2e-heartbeat-key-0123456789abcdef"
PORT = 7946
NODES = ["node1", "node2"]
GHOST = "node3"  # in the node list, but no speaker runs for it
CLONE_NEWNET = 0x40000000
# As the chart runs it: root holding CAP_NET_RAW and nothing else, no privilege escalation.
NET_RAW_ONLY = ["setpriv", "--bounding-set", "-all,+net_raw", "--inh-caps", "-all", "--ambient-caps", "-all",
                "--no-new-privs", "--"]
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block (this thread only) in netns `name`; sockets made here stay there."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{name}") as target:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back failed")


def pick_ip(prefix: str, first: str, second: str | None = None, start: int = 50) -> str:
    """An address in prefix whose election order starts with `first` (then `second`)."""
    for i in range(start, start + 200):
        ip = f"{prefix}{i:x}" if ":" in prefix else f"{prefix}{i}"
        order = rank(ip, [*NODES, GHOST])
        if order[0] == first and (second is None or order[1] == second):
            return ip
    raise AssertionError("no suitable address")


class Lab:
    def __init__(self, tmp: Path) -> None:
        tag = f"{os.getpid() % 100000}"
        self.sw, self.client = f"lbsw{tag}", f"lbcl{tag}"
        self.ns = {n: f"lb{n[-1]}x{tag}" for n in NODES}
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.macs: dict[str, str] = {}
        self.created: list[str] = []

    def setup(self) -> None:
        for ns in (self.sw, *self.ns.values(), self.client):
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
               "net.ipv6.conf.default.accept_dad=0")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")
        hosts = [(n, self.ns[n], i + 1) for i, n in enumerate(NODES)] + [("client", self.client, 9)]
        for name, ns, idx in hosts:
            sh("ip", "-n", self.sw, "link", "add", f"p{idx}", "type", "veth", "peer", "name", f"e{idx}")
            sh("ip", "-n", self.sw, "link", "set", f"e{idx}", "netns", ns)
            sh("ip", "-n", ns, "link", "set", f"e{idx}", "name", "eth0")
            sh("ip", "-n", self.sw, "link", "set", f"p{idx}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"198.18.0.{idx}/24", "brd", "+", "dev", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"2001:db8::{idx}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            self.macs[name] = json.loads(sh("ip", "-n", ns, "-j", "link", "show", "eth0"))[0]["address"]

    def start(self, node: str, config: dict) -> None:
        cfg = self.tmp / "static.json"
        cfg.write_text(json.dumps(config))
        keyfile = self.tmp / "key"
        keyfile.write_bytes(KEY)
        log = open(self.tmp / f"{node}.log", "ab")
        self.procs[node] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[node], *NET_RAW_ONLY, sys.executable, "-m", "lbctl.speaker", "--node-name", node,
             "--static-config", str(cfg), "--heartbeat-key-file", str(keyfile), "--http-host", "127.0.0.1",
             "--log-format", "json", "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        wait_for(lambda: self.ready(node), timeout=20, what=f"{node} /readyz")

    def ready(self, node: str) -> bool:
        proc = self.procs[node]
        if proc.poll() is not None:
            raise AssertionError(f"{node} exited {proc.returncode}: {self.log(node)[-3000:]}")
        try:
            return self.http(node, "/readyz").startswith("ready")
        except OSError:
            return False

    def http(self, node: str, path: str) -> str:
        with in_netns(self.ns[node]):
            with urllib.request.urlopen(f"http://127.0.0.1:7473{path}", timeout=2) as r:
                return r.read().decode()

    def log(self, node: str) -> str:
        return (self.tmp / f"{node}.log").read_text(errors="replace")

    def stop(self, node: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs.pop(node)
        if proc.poll() is None:
            proc.send_signal(sig)  # `ip netns exec` execs the command, so this is the speaker itself
            try:
                return proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def cleanup(self) -> None:
        for node in list(self.procs):
            self.stop(node, signal.SIGKILL)
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    # --- client side --------------------------------------------------------------------------
    def raw(self) -> socket.socket:
        with in_netns(self.client):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.bind(("eth0", 0))
        s.settimeout(0.05)
        return s

    def arp_who_has(self, ip: str, wait: float = 0.3) -> set[str]:
        from scapy.layers.l2 import ARP, Ether
        cmac = self.macs["client"]
        with self.raw() as s:
            s.send(bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=cmac) /
                         ARP(op=1, hwsrc=cmac, psrc="198.18.0.9", pdst=ip)))
            return {p[ARP].hwsrc for p in self._collect(s, wait)
                    if ARP in p and p[ARP].op == 2 and p[ARP].psrc == ip and p[Ether].dst == cmac}

    def ndp_solicit(self, ip: str, hlim: int = 255, wait: float = 0.3) -> set[str]:
        from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6, in6_getnsma, in6_getnsmac
        from scapy.layers.l2 import Ether
        from scapy.utils6 import inet_pton
        cmac = self.macs["client"]
        group = in6_getnsma(inet_pton(socket.AF_INET6, ip))
        frame = (Ether(dst=in6_getnsmac(group), src=cmac) /
                 IPv6(src="2001:db8::9", dst=socket.inet_ntop(socket.AF_INET6, group), hlim=hlim) /
                 ICMPv6ND_NS(tgt=ip) / ICMPv6NDOptSrcLLAddr(lladdr=cmac))
        with self.raw() as s:
            s.send(bytes(frame))
            return {p[Ether].src for p in self._collect(s, wait)
                    if ICMPv6ND_NA in p and p[ICMPv6ND_NA].tgt == ip and p[ICMPv6ND_NA].S == 1}

    @staticmethod
    def _collect(s: socket.socket, wait: float) -> list:
        from scapy.layers.l2 import Ether
        out, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                out.append(Ether(s.recv(2048)))
            except TimeoutError:
                continue
        return out

    def send_frames(self, frames: list[bytes]) -> None:
        with self.raw() as s:
            for f in frames:
                with contextlib.suppress(OSError):
                    s.send(f)

    def beacons(self, seconds: float = 0.5) -> list[bytes]:
        """Heartbeats the speakers broadcast, as the client hears them."""
        with in_netns(self.client):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", PORT))
            s.settimeout(0.05)
            out, deadline = [], time.monotonic() + seconds
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    out.append(s.recv(2048))
        return out

    def broadcast(self, payloads: list[bytes]) -> None:
        with in_netns(self.client):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            for p in payloads:
                s.sendto(p, ("198.18.0.255", PORT))


VIP1 = pick_ip("198.18.0.", "node1")
VIP2 = pick_ip("198.18.0.", "node2")
VIP_GHOST = pick_ip("198.18.0.", GHOST, "node1")  # node1 owns it unless the ghost looks alive
VIP6 = pick_ip("2001:db8::", "node2")
CONFIG = {"nodes": [*NODES, GHOST], "ips": {VIP1: {"services": ["default/one"]}, VIP2: {},
                                              VIP_GHOST: {}, VIP6: {"services": ["default/six"]}}}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("speaker-lab"))
    try:
        lab.setup()
        for node in NODES:
            lab.start(node, CONFIG)
        yield lab
    finally:
        lab.cleanup()


def owner_is(lab: Lab, ip: str, node: str) -> bool:
    return lab.arp_who_has(ip) == {lab.macs[node]}


def test_exactly_one_mac_answers_each_owned_ip(lab: Lab) -> None:
    wait_for(lambda: owner_is(lab, VIP1, "node1") and owner_is(lab, VIP2, "node2"), timeout=5,
             what="each VIP answered by its owner only")
    for _ in range(5):
        assert lab.arp_who_has(VIP1) == {lab.macs["node1"]}
        assert lab.arp_who_has(VIP2) == {lab.macs["node2"]}
    assert lab.arp_who_has("198.18.0.200") == set()  # not assigned: nobody answers
    metrics = lab.http("node1", "/metrics")
    assert "lbctl_speaker_arp_replies_total" in metrics and "lbctl_speaker_live_peers 2.0" in metrics
    for node in NODES:  # and all of it with CAP_NET_RAW alone
        status = Path(f"/proc/{lab.procs[node].pid}/status").read_text()
        assert re.search(r"^CapEff:\s+0000000000002000$", status, re.M), status


def arp_requests_seen(lab: Lab, node: str) -> float:
    found = re.findall(r'^lbctl_speaker_arp_requests_total\{[^}]*\} ([0-9.e+]+)$', lab.http(node, "/metrics"), re.M)
    return sum(float(v) for v in found)


def test_kernel_filter_keeps_other_nodes_asleep(lab: Lab) -> None:
    """Requests for node1's VIP reach node1's responder only; node2 (announcing VIP2) never sees them."""
    wait_for(lambda: owner_is(lab, VIP1, "node1") and owner_is(lab, VIP2, "node2"), timeout=5, what="owners")
    time.sleep(0.7)  # responders publish their counters at least every 0.5 s when idle
    before = {n: arp_requests_seen(lab, n) for n in ("node1", "node2")}
    for _ in range(20):
        assert lab.arp_who_has(VIP1, wait=0.05) == {lab.macs["node1"]}
    time.sleep(0.7)
    after = {n: arp_requests_seen(lab, n) for n in ("node1", "node2")}
    assert after["node1"] - before["node1"] >= 20
    assert after["node2"] == before["node2"]


def test_ndp_solicitation_answered_by_owner_only(lab: Lab) -> None:
    wait_for(lambda: lab.ndp_solicit(VIP6) == {lab.macs["node2"]}, timeout=5, what="NA from node2")
    assert lab.ndp_solicit(VIP6, hlim=64) == set()  # RFC 4861: routed solicitations are ignored


def test_garbage_frames_do_not_kill_it(lab: Lab) -> None:
    from scapy.layers.l2 import ARP, Ether
    rnd = random.Random(7)
    cmac = lab.macs["client"]
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=cmac) / ARP(op=1, hwsrc=cmac, psrc="198.18.0.9", pdst=VIP1))
    frames = [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(14, 200))) for _ in range(500)]
    frames += [arp[:n] for n in range(14, len(arp))]  # truncated requests
    frames += [arp[:21] + bytes([b]) + arp[22:] for b in range(256)]  # every opcode low byte
    frames += [bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="01:00:5e:00:00:01") /
                     ARP(op=1, hwsrc="01:00:5e:00:00:01", psrc="198.18.0.9", pdst=VIP1))]  # multicast sender
    frames += [bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=cmac, type=0x86DD)) + os.urandom(60) for _ in range(50)]
    lab.heartbeat_garbage = [os.urandom(rnd.randint(0, 400)) for _ in range(100)]  # type: ignore[attr-defined]
    lab.send_frames(frames)
    lab.broadcast(lab.heartbeat_garbage)  # type: ignore[attr-defined]
    for node in NODES:
        assert lab.ready(node)
    assert lab.arp_who_has(VIP1) == {lab.macs["node1"]}
    assert lab.ndp_solicit(VIP6) == {lab.macs["node2"]}


def test_forged_heartbeat_is_ignored(lab: Lab) -> None:
    wait_for(lambda: owner_is(lab, VIP_GHOST, "node1"), timeout=5, what="node1 owns the ghost's VIP")
    inc = random.getrandbits(63)
    # A real peer echoes the incarnations it hears; liveness needs that echo, so the ghost echoes the speakers'.
    heard = {hb.incarnation for b in lab.beacons() if (hb := decode(b, KEY)) is not None}
    assert heard, "no beacons captured from the speakers"

    def beats(key: bytes, seq0: int, n: int = 12) -> None:
        for i in range(n):
            lab.broadcast([encode(Heartbeat(GHOST, inc, seq0 + i), key, echo=sorted(heard))])
            time.sleep(0.05)

    beats(b"not-the-key-" * 3, 1)  # forged: wrong HMAC key
    assert owner_is(lab, VIP_GHOST, "node1")
    # Control: a correctly signed ghost makes both speakers step back, which proves the check above matters.
    beats(KEY, 100)
    assert lab.arp_who_has(VIP_GHOST, wait=0.2) == set()
    wait_for(lambda: owner_is(lab, VIP_GHOST, "node1"), timeout=3, what="node1 back after the ghost went quiet")


def test_sigterm_hands_over_quickly(lab: Lab) -> None:
    wait_for(lambda: owner_is(lab, VIP1, "node1"), timeout=5, what="node1 owns VIP1")
    proc = lab.procs["node1"]
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: lab.macs["node2"] in lab.arp_who_has(VIP1, wait=0.05), timeout=3, interval=0.01,
             what="node2 answering VIP1")
    took = time.monotonic() - started
    assert proc.wait(10) == 0, lab.log("node1")[-2000:]
    lab.procs.pop("node1")
    assert took < 1.0, f"handover took {took:.2f}s"
    assert lab.arp_who_has(VIP1) == {lab.macs["node2"]}
