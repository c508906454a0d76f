"""The wire side of benchmarks/speaker_scale.py, run inside the simulator's namespace (never the root one).

    ip netns exec NS python -m benchmarks.scale_wire --iface eth0 --mac M --ip A \
        --metrics-url http://198.18.0.2:7473/metrics

Streams every gratuitous ARP seen on the segment as it arrives, and on request ARP-probes addresses or
scrapes the speaker's /metrics (over the segment, as Prometheus would):

stdin, one per line:  probe IP,IP,...  (paced who-has requests; answers collected until 0.5 s after the last)
                      | metrics | quit
stdout, JSON lines:   {"event": "ready"} | {"event": "garp", "t", "ip", "mac"}
                      | {"event": "probe", "answers": {ip: [mac, ...]}} (answered addresses only)
                      | {"event": "metrics", "text"} ; t is CLOCK_MONOTONIC (shared by every namespace)
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time
import urllib.request

from lbctl.core.arp import ARPOP_REPLY, ETH_P_ARP, mac_to_bytes

from .lab_arp import request

PROBE_RATE = 2000  # requests per second: well under what the speaker's responder drains
PROBE_TAIL = 0.5
SCRAPE_TIMEOUT = 15  # a speaker starved of CPU answers late; late is still an answer


def _mac(b: bytes) -> str:
    return b.hex(":")


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Wire:
    def __init__(self, iface: str, mac: str, ip: str, metrics_url: str) -> None:
        self.metrics_url = metrics_url
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((iface, ETH_P_ARP))
        self.sock.setblocking(False)
        self.mac, self.ip = mac_to_bytes(mac), socket.inet_aton(ip)  # this namespace's own: asks as itself
        self.answers: dict[str, set[str]] | None = None  # while probing

    def read(self) -> None:
        for _ in range(4096):
            try:
                frame = self.sock.recv(128)
            except (BlockingIOError, InterruptedError):
                return
            if len(frame) < 42 or frame[6:12] == self.mac:
                continue
            now = time.monotonic()
            op, sha, spa, tpa = int.from_bytes(frame[20:22], "big"), frame[22:28], frame[28:32], frame[38:42]
            if spa == tpa:
                emit({"event": "garp", "t": now, "ip": socket.inet_ntoa(spa), "mac": _mac(sha)})
            elif op == ARPOP_REPLY and self.answers is not None and tpa == self.ip:
                self.answers.setdefault(socket.inet_ntoa(spa), set()).add(_mac(sha))

    def probe(self, ips: list[str], poller: select.poll) -> dict[str, list[str]]:
        self.answers = {}
        frames = [bytes(request(self.mac, self.mac, self.ip, socket.inet_aton(ip))) for ip in ips]
        start = time.monotonic()
        for k, frame in enumerate(frames):
            wait = start + k / PROBE_RATE - time.monotonic()
            if wait > 0:
                poller.poll(wait * 1000)
            self.read()
            try:
                self.sock.send(frame)
            except OSError:
                pass  # counted as unanswered
        end = time.monotonic() + PROBE_TAIL
        while (left := end - time.monotonic()) > 0:
            poller.poll(left * 1000)
            self.read()
        answers, self.answers = self.answers, None
        return {ip: sorted(macs) for ip, macs in answers.items()}

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=SCRAPE_TIMEOUT) as r:
                return r.read().decode()
        except OSError as exc:
            return f"# unreachable: {exc}"

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        stdin = sys.stdin.fileno()
        poller.register(stdin, select.POLLIN)
        pending = b""
        emit({"event": "ready", "pid": os.getpid()})
        while True:
            for fd, _ in poller.poll(1000):
                if fd != stdin:
                    self.read()
                    continue
                chunk = os.read(stdin, 1 << 20)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    cmd, _, arg = line.decode().strip().partition(" ")
                    if cmd == "quit":
                        return
                    if cmd == "probe":
                        emit({"event": "probe", "answers": self.probe([a for a in arg.split(",") if a], poller)})
                    elif cmd == "metrics":
                        emit({"event": "metrics", "text": self.metrics()})
                    else:
                        emit({"event": "error", "error": f"unknown control {cmd!r}: probe IPS, metrics, quit"})


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_wire")
    p.add_argument("--iface", default="eth0")
    p.add_argument("--mac", required=True, help="the interface's MAC")
    p.add_argument("--ip", required=True, help="the interface's IPv4 address")
    p.add_argument("--metrics-url", required=True)
    args = p.parse_args()
    try:
        Wire(args.iface, args.mac, args.ip, args.metrics_url).run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
