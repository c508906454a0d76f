"""Frames on the lab wire for the conflict, link-flap and handover tests: a rogue host on the lab bridge,
an ARP recorder on every bridge port, and a client that ARPs for an address in a tight loop.

Each runs as a small Python process inside a lab namespace (never in the root one); timestamps are
CLOCK_MONOTONIC, which all namespaces share, so they compare with the test's time.monotonic().
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from lbctl.lab.topology import BRIDGE_NS, PREFIX, in_ns, sh

ROGUE_NS = f"{PREFIX}rogue"
ROGUE_PORT = "v-rogue"
ROGUE_MAC = "02:66:00:00:00:66"
ROGUE_IP = "198.18.0.200"  # outside the lab's pool (.50-.99) and hosts


@dataclass(frozen=True)
class Frame:
    t: float
    port: str  # the bridge port it entered by: who sent it
    op: int
    sha: str
    spa: str
    tha: str
    tpa: str

    @property
    def gratuitous(self) -> bool:
        return self.spa == self.tpa


_RECORD = r"""
import json, socket, struct, sys, time
stop = time.monotonic() + float(sys.argv[1])
# ETH_P_ALL: frames entering a bridge port reach only taps before the bridge takes them.
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.settimeout(0.2)
print("ready", flush=True)
out = []
mac = lambda b: ":".join(f"{x:02x}" for x in b)
while time.monotonic() < stop:
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        continue
    if addr[2] == socket.PACKET_OUTGOING or addr[0] == "br0" or len(data) < 42 or data[12:14] != b"\x08\x06":
        continue  # each frame once: where it entered the bridge
    op = struct.unpack("!H", data[20:22])[0]
    out.append([time.monotonic(), addr[0], op, mac(data[22:28]), socket.inet_ntoa(data[28:32]), mac(data[32:38]),
                socket.inet_ntoa(data[38:42])])
print(json.dumps(out), flush=True)
"""


class Recorder:
    """Every ARP frame crossing the lab bridge for `seconds` (started when the constructor returns)."""

    def __init__(self, seconds: float) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", BRIDGE_NS, sys.executable, "-c", _RECORD, str(seconds)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready", self.proc.stderr.read() if self.proc.stderr else ""

    def frames(self, timeout: float = 120) -> list[Frame]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return [Frame(*row) for row in json.loads(out.strip().splitlines()[-1])]


_CLAIM = r"""
import socket, sys, time
from lbctl.core.arp import ARP_FRAME_LEN, build_gratuitous, mac_to_bytes
ip, mac = socket.inet_aton(sys.argv[1]), mac_to_bytes(sys.argv[2])
seconds, every = float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind(("eth0", 0))
start = time.monotonic()
print(start, flush=True)
n = 0
while time.monotonic() - start < seconds:
    # What a misconfigured host or a second installation sends: both GARP forms, over and over.
    s.send(build_gratuitous(mac, ip, reply=(n % 2 == 1)))
    n += 1
    time.sleep(every)
print(n, flush=True)
"""


_ADVERTISE = r"""
import sys, time
from scapy.all import Ether, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6, conf
ip6, mac, seconds, every = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
frame = (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src="fe80::66", dst="ff02::1", hlim=255)
         / ICMPv6ND_NA(tgt=ip6, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=mac))
s = conf.L2socket(iface="eth0")
start = time.monotonic()
print(start, flush=True)
while time.monotonic() - start < seconds:
    s.send(frame)
    time.sleep(every)
"""


class RogueHost:
    """A host of our own on the lab LAN: its own namespace, a veth into the bridge namespace's br0."""

    def __init__(self) -> None:
        sh("ip", "netns", "add", ROGUE_NS)
        try:
            sh("ip", "-n", BRIDGE_NS, "link", "add", ROGUE_PORT, "type", "veth", "peer", "name", "eth0",
               "netns", ROGUE_NS)
            sh("ip", "-n", BRIDGE_NS, "link", "set", ROGUE_PORT, "master", "br0", "up")
            in_ns(ROGUE_NS, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                  "net.ipv6.conf.default.disable_ipv6=1")
            sh("ip", "-n", ROGUE_NS, "link", "set", "eth0", "address", ROGUE_MAC)
            sh("ip", "-n", ROGUE_NS, "addr", "add", f"{ROGUE_IP}/24", "dev", "eth0")
            sh("ip", "-n", ROGUE_NS, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise

    def claim(self, ip: str, seconds: float, every: float = 0.2) -> tuple[subprocess.Popen[str], float]:
        """Announce `ip` as ours for `seconds`; returns the process and the monotonic time of the first frame."""
        return self._run(_CLAIM, ip, seconds, every)

    def advertise(self, ip6: str, seconds: float, every: float = 0.2) -> tuple[subprocess.Popen[str], float]:
        """Unsolicited Neighbor Advertisements (override set) of `ip6` with the rogue MAC, to all-nodes."""
        return self._run(_ADVERTISE, ip6, seconds, every)

    @staticmethod
    def _run(script: str, ip: str, seconds: float, every: float) -> tuple[subprocess.Popen[str], float]:
        proc = subprocess.Popen(["ip", "netns", "exec", ROGUE_NS, sys.executable, "-c", script, ip, ROGUE_MAC,
                                 str(seconds), str(every)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the monotonic time of its first frame
        assert line.strip(), proc.stderr.read() if proc.stderr else ""
        return proc, float(line)

    def close(self) -> None:
        sh("ip", "-n", BRIDGE_NS, "link", "del", ROGUE_PORT, check=False)
        sh("ip", "netns", "del", ROGUE_NS, check=False)


_ASK = r"""
import socket, sys, time
from lbctl.core.arp import build_arp_request
ip, src = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2])
seconds, every = float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind(("eth0", 0))
start = time.monotonic()
n = 0
while time.monotonic() - start < seconds:
    # Each request from its own locally administered MAC: a reply names the request it answers.
    n += 1
    mac = bytes([0x02, 0x99, 0, (n >> 16) & 255, (n >> 8) & 255, n & 255])
    s.send(build_arp_request(mac, src, ip))
    time.sleep(every)
print(n, flush=True)
"""


def asker(ip: str, src_ip: str, seconds: float, every: float = 0.005) -> subprocess.Popen[str]:
    """From the client's namespace: broadcast who-has `ip` every `every` s, each from a numbered MAC."""
    from lbctl.lab.topology import CLIENT_NS
    return subprocess.Popen(["ip", "netns", "exec", CLIENT_NS, sys.executable, "-c", _ASK, ip, src_ip, str(seconds),
                             str(every)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def asker_seq(mac: str) -> int | None:
    """The request number a reply to `mac` answers, or None if `mac` is not an asker's."""
    parts = mac.split(":")
    if parts[:3] != ["02", "99", "00"]:
        return None
    return int("".join(parts[3:]), 16)
