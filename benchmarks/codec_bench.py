"""Parse an ARP request and build the reply: lbctl's struct codec vs scapy, measured in one run; then the
heartbeat receive path, per beacon: the per-datagram path of before (recvmsg, decode to a Heartbeat with
hmac.digest, observe) vs the batched one (recvmmsg, Decoder.fields in place, observe_fields), over real UDP
on 127.0.0.1 from 500 simulated peers, idle and with another thread holding the GIL.

    python benchmarks/codec_bench.py [--seconds 1.0] [--peers 500] [--thread-seconds 10]

Last, the speaker's whole heartbeat thread (speaker/heartbeats.py: wake-ups, drains, deadlines, its own
beacons) against --peers simulated in another process at 10 beacons/s each: its CPU, per peer.

Also asserts both ARP paths produce the same reply bytes, and both heartbeat paths the same live set.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scapy.layers.l2 import ARP, Ether  # noqa: E402

from lbctl.core.arp import answer_arp, build_arp_reply, mac_to_bytes, parse_arp_request  # noqa: E402
from lbctl.core.heartbeat import (  # noqa: E402
    ECHO_ROTATION,
    ECHO_SLOTS,
    Decoder,
    Heartbeat,
    PeerTable,
    encode,
    incarnation_bytes,
)
from lbctl.core.heartbeat import Keyring  # noqa: E402
from lbctl.speaker.heartbeats import Heartbeats  # noqa: E402
from lbctl.speaker.metrics import Metrics  # noqa: E402
from lbctl.speaker.recvmmsg import BatchReceiver, enable_rx_metadata  # noqa: E402

OUR_MAC = "02:00:00:00:00:aa"
VIP = "192.0.2.100"
REQUEST = bytes(
    Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01")
    / ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="192.0.2.10", pdst=VIP)
)


MAC = mac_to_bytes(OUR_MAC)
OWNED = frozenset({bytes([192, 0, 2, 100])})


def hot(frame: bytes) -> bytes | None:
    """What the speaker's responder thread runs per request."""
    return answer_arp(frame, OWNED, MAC)


def ours(frame: bytes) -> bytes:
    """The decoded API: parse to an ArpRequest, then build."""
    req = parse_arp_request(frame)
    assert req is not None and req.target_ip in OWNED
    return build_arp_reply(MAC, req.target_ip, req)


def scapy(frame: bytes) -> bytes:
    a = Ether(frame)[ARP]
    assert a.op == 1 and a.pdst == VIP
    reply = Ether(dst=a.hwsrc, src=OUR_MAC) / ARP(op=2, hwsrc=OUR_MAC, psrc=VIP, hwdst=a.hwsrc, pdst=a.psrc)
    return bytes(reply).ljust(60, b"\x00")


def rate(fn, seconds: float) -> float:
    n, batch, start = 0, 1, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(batch):
            fn(REQUEST)
        n += batch
        batch = min(batch * 2, 10_000)
    return n / elapsed


# --- heartbeats -----------------------------------------------------------------------------------------

HB_KEY = b"k" * 32
ME = 0x9E3779B97F4A7C15  # incarnations are 64 random bits: so are the echoes here
OTHERS = [(0x9E3779B97F4A7C15 * (k + 2)) % (1 << 64) for k in range(140)]


def _decode_before(data: bytes, mine: bytes) -> Heartbeat | None:
    """The decode of before this change (one-shot hmac.digest, a copy, a Heartbeat per beacon), kept here
    as the baseline."""
    head = struct.Struct("!4sBBQQIBB")
    magic, version, flags, inc, seq, interval, nlen, ecount = head.unpack_from(data)
    names, end = head.size + nlen, head.size + nlen + 8 * ecount
    if magic != b"LBHB" or len(data) != end + 32:
        return None
    if not hmac.compare_digest(data[end:], hmac.digest(HB_KEY, data[:end], hashlib.sha256)):
        return None
    name = data[head.size:names].decode()
    at = data.find(mine, names, end)
    while at >= 0 and (at - names) % 8:
        at = data.find(mine, at + 1, end)
    return Heartbeat(name, inc, seq, interval, bool(flags & 1), at >= 0, 0)


def _rounds(peers: int, rounds: int) -> list[list[bytes]]:
    """Each peer's beacon per round, echoing ECHO_SLOTS-or-more others, and us every ECHO_ROTATION-th."""
    echoes = max(ECHO_SLOTS, -(-peers // ECHO_ROTATION))
    out = []
    for r in range(rounds):
        out.append([encode(Heartbeat(f"node-{i:04d}.example.internal", 10_000 + i, r + 1, 100),
                           HB_KEY, [ME] * ((i + r) % ECHO_ROTATION == 0) + OTHERS[:echoes - 1])
                    for i in range(peers)])
    return out


def _before(sock: socket.socket, table: PeerTable, n: int, now: float) -> None:
    mine = incarnation_bytes(ME)
    for _ in range(n):
        data, _anc, _flags, _addr = sock.recvmsg(2048, 64)
        hb = _decode_before(data, mine)
        if hb is not None:
            table.observe(hb, now)


def _after(sock: socket.socket, table: PeerTable, n: int, now: float, rx: BatchReceiver, dec: Decoder) -> None:
    got = 0
    fields, buf, view, sizes = dec.fields, rx.buf, rx.view, rx.sizes
    while got < n:
        k = rx.recv(sock)
        for i in range(k):
            f = fields(buf, i * 2048, sizes[i], view)
            if f is not None:
                table.observe_fields(f[0], f[1], f[2], f[4], f[5], now, f[3])
        got += k


def heartbeat_bench(peers: int, rounds: int, hog: bool) -> tuple[float, float, set[str], set[str]]:
    """us per beacon (before, after) and the live sets each path ended with."""
    rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx_sock.bind(("127.0.0.1", 0))
    enable_rx_metadata(rx_sock)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx_sock.getsockname())
    if rx_sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < peers * 2304 * 2:
        sys.exit(f"receive buffer too small for {peers} queued beacons: raise net.core.rmem_max")
    beacons = _rounds(peers, rounds)
    stop = threading.Event()

    def spin() -> None:  # the event loop electing: pure Python, holding the GIL whenever it can
        x = 0
        while not stop.is_set():
            x += 1

    results = []
    for path in ("before", "after"):
        table, rx, dec = PeerTable("me"), BatchReceiver(), Decoder(HB_KEY, [incarnation_bytes(ME)])
        spent = 0.0
        hogger = threading.Thread(target=spin, daemon=True) if hog else None
        if hogger:
            stop.clear()
            hogger.start()
        for r, wires in enumerate(beacons):
            rx_sock.setblocking(True)
            for w in wires:
                tx.send(w)
            rx_sock.setblocking(path == "before")
            t0 = time.perf_counter()
            if path == "before":
                _before(rx_sock, table, len(wires), 0.1 * r)
            else:
                _after(rx_sock, table, len(wires), 0.1 * r, rx, dec)
            spent += time.perf_counter() - t0
        if hogger:
            stop.set()
            hogger.join()
        results.append((spent / (peers * rounds) * 1e6, table.live(0.1 * (rounds - 1))))
    rx_sock.close()
    tx.close()
    return results[0][0], results[1][0], results[0][1], results[1][1]


_PEERS_PROCESS = r"""
import socket, sys, time
sys.path.insert(0, sys.argv[5])
from lbctl.core.heartbeat import ECHO_ROTATION, ECHO_SLOTS, Heartbeat, encode
port, me, peers, seconds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
others = [(0x9E3779B97F4A7C15 * (k + 2)) % (1 << 64) for k in range(1, max(ECHO_SLOTS, -(-peers // ECHO_ROTATION)))]
start, phases = time.monotonic(), 20  # peers beacon at their own phase: 20 groups 5 ms apart
for r in range(int(seconds / 0.1)):
    for g in range(phases):
        for i in range(g, peers, phases):
            echo = [me] + others if (i + r) % ECHO_ROTATION == 0 or r < 5 else others + [others[0] ^ 1]
            tx.sendto(encode(Heartbeat(f"node-{i:04d}.example.internal", 10_000 + i, r + 1, 100), b"k" * 32,
                             echo), ("127.0.0.1", port))
        time.sleep(max(0.0, start + 0.1 * r + 0.1 * (g + 1) / phases - time.monotonic()))
"""


def _thread_cpu(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def heartbeat_thread_bench(peers: int, seconds: float, stall: float = 0.0) -> tuple[float, int, int, float]:
    """(CPU % of a core of the heartbeat thread, speakers it counts live at the end, the fewest it published
    after warm-up, kernel drops). `stall`: the event loop computes (holding the GIL) that long every second,
    as a full election among 200 peers did."""
    async def run() -> tuple[float, int, int, float]:
        metrics = Metrics()
        fewest = [peers + 1]
        hb: Heartbeats

        def changed() -> None:
            fewest[0] = min(fewest[0], len(hb.live(0)))

        hb = Heartbeats("me", Keyring([HB_KEY]), 0, 0.1, 0.45, changed, metrics)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        enable_rx_metadata(sock)
        sock.setblocking(False)
        hb._socks["lo"] = (sock, ())  # what set_targets does, without SO_BINDTODEVICE; our beacons go nowhere
        hb._socks_version += 1
        hb.segments["lo"] = PeerTable("me", 0.45, require_echo=False)
        hb._size_rcvbuf(sock, peers)
        hb.start()
        sender = subprocess.Popen([sys.executable, "-c", _PEERS_PROCESS, str(sock.getsockname()[1]),
                                   str(hb.incarnation), str(peers), str(seconds + 2), str(ROOT)])
        try:
            await asyncio.sleep(2)  # everyone heard and verified
            fewest[0] = len(hb.live(0))
            tid = hb._thread.native_id
            cpu0, t0 = _thread_cpu(tid), time.monotonic()
            while time.monotonic() - t0 < seconds:
                end = time.monotonic() + stall
                x = 0
                while time.monotonic() < end:  # pure Python, as the election was
                    x += 1
                await asyncio.sleep(1.0 - stall)
            cpu = (_thread_cpu(tid) - cpu0) / (time.monotonic() - t0) * 100
            live = len(hb.live(0))
        finally:
            sender.wait()
            hb.close()
        return cpu, live, fewest[0], metrics.registry.get_sample_value("lbctl_speaker_heartbeat_drops_total")
    return asyncio.run(run())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="time budget per codec")
    p.add_argument("--peers", type=int, default=500, help="simulated heartbeat peers")
    p.add_argument("--rounds", type=int, default=20, help="beacons per peer")
    p.add_argument("--thread-seconds", type=float, default=10.0, help="heartbeat thread run (0: skip)")
    args = p.parse_args()
    assert hot(REQUEST) == ours(REQUEST) == scapy(REQUEST), "codecs disagree"
    r_hot, r_ours, r_scapy = rate(hot, args.seconds), rate(ours, args.seconds), rate(scapy, args.seconds)
    print(f"hot path (answer_arp):  {r_hot:>12,.0f} replies/s ({1e6 / r_hot:.2f} us each)")
    print(f"parse + build:          {r_ours:>12,.0f} replies/s ({1e6 / r_ours:.2f} us each)")
    print(f"scapy (baseline):       {r_scapy:>12,.0f} replies/s ({1e6 / r_scapy:.2f} us each)")
    print(f"ratio hot path / scapy: {r_hot / r_scapy:>12,.0f}x")
    print(f"\nheartbeat receive path, {args.peers} peers x {args.rounds} beacons over UDP on 127.0.0.1, per beacon:")
    for hog in (False, True):
        before, after, live_b, live_a = heartbeat_bench(args.peers, args.rounds, hog)
        assert live_b == live_a and len(live_a) == args.peers + 1, "heartbeat paths disagree"
        label = "another thread holding the GIL" if hog else "idle"
        print(f"  {label}:")
        print(f"    before (recvmsg + decode + observe):        {before:8.2f} us")
        print(f"    after  (recvmmsg + fields + observe_fields): {after:8.2f} us  ({before / after:.1f}x)")
        if not hog:
            cpu = after * 10 / 1e6 * 100  # 10 beacons/s per peer at the default interval
            print(f"    CPU per peer at 10 beacons/s: {cpu:.4f} % of a core "
                  f"(x{args.peers} = {cpu * args.peers:.2f} %; before {before * 10 / 1e4 * args.peers:.2f} %)")

    if args.thread_seconds > 0:
        for n in sorted({min(50, args.peers), min(200, args.peers), args.peers}):
            cpu, live, fewest, drops = heartbeat_thread_bench(n, args.thread_seconds)
            print(f"heartbeat thread, {n} peers at 10 beacons/s for {args.thread_seconds:g} s: {cpu:.2f} % of a core "
                  f"({cpu / n * 1000:.1f} m% per peer), {live - 1} of {n} live, {drops:.0f} kernel drops")
        cpu, live, fewest, drops = heartbeat_thread_bench(args.peers, args.thread_seconds, stall=0.66)
        print(f"  the same, event loop computing 0.66 s of every 1 s: {fewest - 1} of {args.peers} live at the "
              f"worst, {live - 1} at the end, {drops:.0f} kernel drops")


if __name__ == "__main__":
    main()
