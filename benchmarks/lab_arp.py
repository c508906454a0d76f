"""ARP measurement helpers for benchmarks/lab_bench.py, run *inside* a lab namespace.

    ip netns exec lbctl-client python -m benchmarks.lab_arp rtt   --iface eth0 --mac M --ip A --targets T1,T2 ...
    ip netns exec lbctl-client python -m benchmarks.lab_arp blast --iface eth0 --mac M --ip A --target T ...
    ip netns exec NS python -m benchmarks.lab_arp respond --iface eth0 --mac M --ip A

Each prints one JSON object on stdout. Frames are built with struct (lbctl.core.arp's layout) and sent
on an AF_PACKET socket that only sees ARP replies (BPF), so the client's kernel ARP state is neither
used nor needed.

rtt:   alternates requests for the targets (so drift hits both alike), one outstanding at a time,
       timed with perf_counter_ns from just before send() to just after the matching recv().
blast: keeps --window requests outstanding for --duration seconds, one per window slot. Slot k asks
       with sender IP --ip + k, which every responder echoes as the reply's target IP, so a reply
       names its slot; a slot has one request in flight at a time. Requests unanswered after
       --expire-ms count as lost and free their slot. Sender and Ethernet source MAC are one made-up
       address (02:bb:00:00:00:01): the bridge learns it on the client's port, replies come straight
       back, and the client's kernel ignores them (PACKET_OTHERHOST) while AF_PACKET sees them. One
       stable MAC per sender IP is what real clients look like: the responder's neighbour entries for
       the slot IPs are refreshed, never rewritten, so the kernel baseline pays no churn for our matching.
respond: the baseline responder: one thread blocked in recv on an AF_PACKET socket with the speaker's kind of
       filter, answering --ip with the speaker's codec (answer_arp); prints {"event": "ready"}, then runs
       until killed. Beside a speaker it shows what the speaker's other threads cost its answers.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import select
import socket
import struct
import sys
import time

from lbctl.core.arp import (ARP_FRAME_LEN, answer_arp, arp_filter_for, ARPHRD_ETHER, ARPOP_REQUEST, BPF_JMP_JEQ_K, BPF_LD_H_ABS,
                            BPF_RET_K, BROADCAST_MAC, ETH_P_ARP, ETH_P_IP, PACKET_IGNORE_OUTGOING, SNAP_LEN,
                            SO_ATTACH_FILTER, SOL_PACKET, ZERO_MAC, bpf_bytes, mac_to_bytes)

ARPOP_REPLY = 2
_FRAME = struct.Struct("!6s6sHHHBBH6s4s6s4s")  # same layout as lbctl.core.arp
_PAD = bytes(60 - ARP_FRAME_LEN)
SHA_OFF, SPA_OFF, THA_OFF, TPA_OFF = 22, 28, 32, 38  # offsets in the Ethernet frame
BLAST_MAC = b"\x02\xbb\x00\x00\x00\x01"  # locally administered unicast, used by nothing else

# ethertype == ARP and op == reply, else drop (the bind to ETH_P_ARP already narrows to ARP).
REPLY_BPF = (
    (BPF_LD_H_ABS, 0, 0, 12),
    (BPF_JMP_JEQ_K, 0, 3, ETH_P_ARP),
    (BPF_LD_H_ABS, 0, 0, 20),
    (BPF_JMP_JEQ_K, 0, 1, ARPOP_REPLY),
    (BPF_RET_K, 0, 0, SNAP_LEN),
    (BPF_RET_K, 0, 0, 0),
)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach(sock: socket.socket, prog) -> None:
    """Attach a classic BPF program; our own frames are left out where the kernel can."""
    raw = bpf_bytes(prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(_SockFprog(len(prog), ctypes.addressof(buf))))
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass


def open_socket(ifname: str, rcvbuf: int = 4 << 20) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        attach(sock, REPLY_BPF)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((ifname, ETH_P_ARP))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def request(eth_src: bytes, sha: bytes, spa: bytes, tpa: bytes) -> bytearray:
    """Broadcast who-has tpa, tell spa (sha)."""
    return bytearray(_FRAME.pack(BROADCAST_MAC, eth_src, ETH_P_ARP, ARPHRD_ETHER, ETH_P_IP, 6, 4, ARPOP_REQUEST,
                                 sha, spa, ZERO_MAC, tpa) + _PAD)


def drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(256)
            n += 1
        except BlockingIOError:
            return n


def rtt(ifname: str, mac: bytes, ip: bytes, targets: list[bytes], count: int, gap_s: float,
        timeout_s: float, warmup: int) -> dict[str, object]:
    sock = open_socket(ifname)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    frames = [bytes(request(mac, mac, ip, t)) for t in targets]
    samples: list[list[int]] = [[] for _ in targets]
    lost = [0] * len(targets)
    stray = 0
    timeout_ns = int(timeout_s * 1e9)
    perf = time.perf_counter_ns
    try:
        for i in range((warmup + count) * len(targets)):
            k = i % len(targets)
            tgt = targets[k]
            stray += drain(sock)
            t0 = perf()
            sock.send(frames[k])
            got = None
            while got is None:
                left = timeout_ns - (perf() - t0)
                if left <= 0 or not poller.poll(max(1, left // 1_000_000)):
                    if perf() - t0 >= timeout_ns:
                        break
                    continue
                while True:
                    try:
                        data = sock.recv(256)
                    except BlockingIOError:
                        break
                    t1 = perf()
                    if data[SPA_OFF:SPA_OFF + 4] == tgt and data[TPA_OFF:TPA_OFF + 4] == ip \
                            and data[THA_OFF:THA_OFF + 6] == mac:
                        got = t1 - t0
                        break
                    stray += 1
            if i >= warmup * len(targets):
                if got is None:
                    lost[k] += 1
                else:
                    samples[k].append(got)
            if gap_s:
                time.sleep(gap_s)
    finally:
        sock.close()
    return {"targets": [socket.inet_ntoa(t) for t in targets], "rtt_ns": samples, "lost": lost, "stray": stray}


def blast(ifname: str, ip: bytes, target: bytes, duration: float, window: int, expire_s: float,
          tail_s: float) -> dict[str, object]:
    sock = open_socket(ifname)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    base = int.from_bytes(ip, "big")
    frames = [bytes(request(BLAST_MAC, BLAST_MAC, (base + k).to_bytes(4, "big"), target)) for k in range(window)]
    slot_of = {(base + k).to_bytes(4, "big"): k for k in range(window)}
    in_flight: list[int | None] = [None] * window  # slot -> send time (ns) of its outstanding request
    order: collections.deque[tuple[int, int]] = collections.deque()  # (slot, send time) in send order
    sent = matched = late = expired = send_err = 0
    rtt_sum = 0
    perf = time.perf_counter_ns
    expire_ns = int(expire_s * 1e9)
    send, recv_into = sock.send, sock.recv_into
    buf = bytearray(256)
    view = memoryview(buf)

    def send_one(k: int) -> None:
        nonlocal sent, send_err
        try:
            send(frames[k])
        except OSError:  # ENOBUFS under pressure: the slot stays free, retried below
            send_err += 1
            return
        now = perf()
        in_flight[k] = now
        order.append((k, now))
        sent += 1

    drain(sock)
    start = perf()
    end = start + int(duration * 1e9)
    stop_at = end + int(tail_s * 1e9)
    for k in range(window):
        send_one(k)
    while True:
        now = perf()
        sending = now < end
        if not sending and (not any(t is not None for t in in_flight) or now >= stop_at):
            break
        poller.poll(5)
        while True:
            try:
                n = recv_into(buf)
            except BlockingIOError:
                break
            if n < 42 or view[SPA_OFF:SPA_OFF + 4] != target or view[THA_OFF:THA_OFF + 6] != BLAST_MAC:
                continue
            k = slot_of.get(bytes(view[TPA_OFF:TPA_OFF + 4]))
            if k is None:
                continue
            t_sent = in_flight[k]
            if t_sent is None:
                late += 1  # answer to a request already expired
                continue
            in_flight[k] = None
            now = perf()
            matched += 1
            rtt_sum += now - t_sent
            if now < end:
                send_one(k)
        # Expire the oldest requests that will not be answered any more; each frees its slot.
        cutoff = perf() - expire_ns
        while order and (in_flight[order[0][0]] != order[0][1] or order[0][1] < cutoff):
            k, t = order.popleft()
            if in_flight[k] == t:
                in_flight[k] = None
                expired += 1
        if perf() < end:  # refill slots freed by expiry or by failed sends
            for k in range(window):
                if in_flight[k] is None:
                    send_one(k)
    elapsed = (min(perf(), end) - start) / 1e9
    unanswered = sum(t is not None for t in in_flight)
    sock.close()
    return {"target": socket.inet_ntoa(target), "duration_s": round(elapsed, 3), "window": window,
            "sent": sent, "matched": matched, "lost": sent - matched, "expired": expired, "late": late,
            "unanswered_at_end": unanswered, "send_errors": send_err,
            "rate_per_s": round(matched / elapsed, 1) if elapsed else 0.0,
            "loss_pct": round(100.0 * (sent - matched) / sent, 4) if sent else 100.0,
            "mean_rtt_us": round(rtt_sum / matched / 1000, 1) if matched else None}


def respond(ifname: str, mac: bytes, ip: bytes) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    attach(sock, arp_filter_for(frozenset((ip,)), mac))
    sock.bind((ifname, ETH_P_ARP))
    owned = frozenset((ip,))
    print(json.dumps({"event": "ready"}), flush=True)
    while True:
        reply = answer_arp(sock.recv(2048), owned, mac)
        if reply is not None:
            sock.send(reply)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="lab_arp", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("respond")
    r.add_argument("--iface", default="eth0")
    r.add_argument("--mac", required=True, help="the interface's MAC")
    r.add_argument("--ip", required=True, help="the address to answer for (not configured on the interface)")
    for name in ("rtt", "blast"):
        s = sub.add_parser(name)
        s.add_argument("--iface", default="eth0")
        if name == "rtt":
            s.add_argument("--mac", required=True, help="our MAC (Ethernet source and ARP sender)")
            s.add_argument("--ip", required=True, help="ARP sender IP")
            s.add_argument("--targets", required=True, help="comma-separated IPv4 targets, probed in turn")
            s.add_argument("--count", type=int, default=1000, help="probes per target")
            s.add_argument("--warmup", type=int, default=20)
            s.add_argument("--gap-ms", type=float, default=1.0)
            s.add_argument("--timeout-ms", type=float, default=200.0)
        else:
            s.add_argument("--ip", required=True, help="first sender IP; slot k uses this + k (keep them unused)")
            s.add_argument("--target", required=True)
            s.add_argument("--duration", type=float, default=10.0)
            s.add_argument("--window", type=int, default=64)
            s.add_argument("--expire-ms", type=float, default=200.0)
            s.add_argument("--tail-ms", type=float, default=500.0)
    a = p.parse_args(argv)
    ip = socket.inet_aton(a.ip)
    if a.mode == "respond":
        respond(a.iface, mac_to_bytes(a.mac), ip)
        return
    if a.mode == "rtt":
        out = rtt(a.iface, mac_to_bytes(a.mac), ip, [socket.inet_aton(t) for t in a.targets.split(",")], a.count,
                  a.gap_ms / 1000, a.timeout_ms / 1000, a.warmup)
    else:
        out = blast(a.iface, ip, socket.inet_aton(a.target), a.duration, a.window, a.expire_ms / 1000,
                    a.tail_ms / 1000)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
