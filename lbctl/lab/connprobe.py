"""Connection prober for rolling upgrades: a NEW TCP connection to every target each --interval.

    ip netns exec <client ns> python -m lbctl.lab.connprobe 198.18.0.50 198.18.0.51:8080 [2001:db8::50]:80 \
        [--interval 0.01] [--timeout 1.0] [--duration S] [--path /]

Each attempt connects, sends `GET <path> HTTP/1.1` with `Connection: close`, reads the answer to EOF and is
recorded with its start time (time.monotonic: CLOCK_MONOTONIC is system-wide, so the launcher can line
attempts up with what it did when), outcome, latency and who answered (the node named in the lab backend's JSON, else the body's first line). Outcomes: ok, refused, reset, timeout, bad_answer, or the errno's name (EHOSTUNREACH..).

All attempts run at once on non-blocking sockets under one selector: a target that stalls for a second never
delays the attempts to the others. It runs for --duration seconds, or until SIGTERM/SIGINT, or until EOF on
stdin when stdin is a pipe (a launcher that closes it or dies stops the prober); then lets the attempts in
flight finish (at most --timeout), prints one JSON document (lbctl.core.connsummary.encode) and exits 0.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import selectors
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from lbctl.core.connsummary import Attempt, Run, decode, encode
from lbctl.lab.prober import who

MAX_ANSWER = 65536  # more than any lab backend sends; a bigger answer is cut here and judged on its head
_NAMES = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.EPIPE: "reset", errno.ETIMEDOUT: "timeout"}


@dataclass(frozen=True)
class Target:
    label: str  # ip:port, [ip6]:port
    family: int
    addr: tuple[str, int]
    request: bytes


def parse_target(text: str, path: str = "/") -> Target:
    """`ip`, `ip:port`, `ip6`, `[ip6]` or `[ip6]:port`; port 80 by default."""
    host, port = text, 80
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad target {text!r}: want [ip6]:port")
        if rest:
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    ip = ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {text!r}")
    label = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    host_header = f"[{ip}]" if ip.version == 6 else str(ip)
    request = (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: lbctl-connprobe\r\n"
               f"Connection: close\r\n\r\n").encode()
    return Target(label, family, (str(ip), port), request)


def outcome_of(err: int) -> str:
    return _NAMES.get(err) or errno.errorcode.get(err, f"errno{err}")


def classify(data: bytes) -> tuple[str, str | None]:
    """(outcome, body's first line or what was wrong) for a whole answer. Never raises."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return "bad_answer", f"no end of headers in {len(data)} bytes: {data[:40]!r}"
    lines = head.split(b"\r\n")
    status = lines[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/"):
        return "bad_answer", f"status line {lines[0][:60]!r}"
    if status[1] != b"200":
        return "bad_answer", f"HTTP {status[1][:10].decode(errors='replace')}"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                want = int(value.strip())
            except ValueError:
                return "bad_answer", f"Content-Length {value.strip()[:20]!r}"
            if len(body) < want:
                return "bad_answer", f"truncated: {len(body)} of {want} bytes"
    return "ok", who(body.split(b"\n", 1)[0].strip().decode(errors="replace"))[:120]


class _Conn:
    __slots__ = ("target", "sock", "t0", "deadline", "out", "buf", "size", "done")

    def __init__(self, target: Target, sock: socket.socket, t0: float, deadline: float) -> None:
        self.target, self.sock, self.t0, self.deadline = target, sock, t0, deadline
        self.out, self.buf, self.size, self.done = target.request, [], 0, False


class Prober:
    def __init__(self, targets: Sequence[Target], interval: float, timeout: float) -> None:
        self.targets, self.interval, self.timeout = list(targets), interval, timeout
        self.sel = selectors.DefaultSelector()
        self.inflight: deque[_Conn] = deque()  # start order = deadline order (one timeout for all)
        self.attempts: list[Attempt] = []
        self.late_ticks = 0
        self.stop_reason: str | None = None
        self.stdin_fd: int | None = None
        self.started = time.monotonic()

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason

    def watch_stdin(self, fd: int) -> None:
        self.stdin_fd = fd
        self.sel.register(fd, selectors.EVENT_READ, None)

    # --- one attempt ---
    def _record(self, c: _Conn, outcome: str, body: str | None, now: float) -> None:
        self.attempts.append(Attempt(c.target.label, c.t0, outcome, (now - c.t0) * 1000, body))

    def _finish(self, c: _Conn, outcome: str, body: str | None = None) -> None:
        now = time.monotonic()
        c.done = True
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        self._record(c, outcome, body, now)

    def _start(self, target: Target, now: float) -> None:
        try:
            sock = socket.socket(target.family, socket.SOCK_STREAM)
        except OSError as exc:  # EMFILE and the like: a failed attempt, not a crash
            self.attempts.append(Attempt(target.label, now, outcome_of(exc.errno or 0), 0.0, None))
            return
        sock.setblocking(False)
        c = _Conn(target, sock, now, now + self.timeout)
        err = sock.connect_ex(target.addr)
        if err not in (0, errno.EINPROGRESS):
            self._finish(c, outcome_of(err))
            return
        self.sel.register(sock, selectors.EVENT_WRITE, c)
        self.inflight.append(c)

    def _writable(self, c: _Conn) -> None:
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._finish(c, outcome_of(err))
            return
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._finish(c, outcome_of(exc.errno or 0))
            return
        c.out = c.out[sent:]
        if not c.out:
            self.sel.modify(c.sock, selectors.EVENT_READ, c)

    def _readable(self, c: _Conn) -> None:
        try:
            chunk = c.sock.recv(MAX_ANSWER)
        except BlockingIOError:
            return
        except OSError as exc:
            # A reset after a complete answer (Content-Length met) lost the user nothing.
            outcome, body = classify(b"".join(c.buf))
            if outcome == "ok" and c.buf:
                self._finish(c, outcome, body)
            else:
                self._finish(c, outcome_of(exc.errno or 0))
            return
        if chunk:
            c.buf.append(chunk)
            c.size += len(chunk)
            if c.size < MAX_ANSWER:
                return
        self._finish(c, *classify(b"".join(c.buf)))

    def _expire(self, now: float) -> None:
        q = self.inflight
        while q and (q[0].done or q[0].deadline <= now):
            c = q.popleft()
            if not c.done:
                self._finish(c, "timeout")

    def _stdin(self) -> None:
        assert self.stdin_fd is not None
        try:
            data = os.read(self.stdin_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(self.stdin_fd)
            self.stdin_fd = None
            self.request_stop("eof")

    # --- the loop ---
    def run(self, duration: float | None) -> Run:
        self.started = tick = time.monotonic()
        end = self.started + duration if duration is not None else None
        while True:
            now = time.monotonic()
            if end is not None and now >= end:
                self.request_stop("duration")
            if self.stop_reason:
                break
            if now >= tick:
                if now - tick > self.interval:  # starved: count it, and keep the rhythm from here
                    self.late_ticks += 1
                    tick = now
                for t in self.targets:
                    self._start(t, now)
                tick += self.interval
            self._poll(tick)
        stopped = time.monotonic()
        drain_end = stopped + self.timeout
        while any(not c.done for c in self.inflight) and time.monotonic() < drain_end:
            self._poll(drain_end)
        return self.result(stopped)

    def result(self, stopped: float) -> Run:
        """Attempts still in flight (a second signal cut the drain short) count as `unfinished`."""
        for c in list(self.inflight):
            if not c.done:
                self._finish(c, "unfinished")
        self.inflight.clear()
        return Run([t.label for t in self.targets], self.interval, self.timeout, self.started, stopped,
                   self.stop_reason or "duration", self.late_ticks, self.attempts)

    def _poll(self, until: float) -> None:
        now = time.monotonic()
        self._expire(now)
        wait = min(until, self.inflight[0].deadline if self.inflight else until) - now
        for key, events in self.sel.select(max(0.0, wait)):
            c = key.data
            if c is None:
                self._stdin()
            elif c.done:
                continue
            elif events & selectors.EVENT_WRITE:
                self._writable(c)
            else:
                self._readable(c)
        self._expire(time.monotonic())


def _stdin_is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lbctl.lab.connprobe", description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="+", metavar="TARGET", help="ip, ip:port, [ip6] or [ip6]:port (port 80)")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between rounds (default 0.01)")
    p.add_argument("--timeout", type=float, default=1.0, help="per-attempt timeout in seconds (default 1)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: at a signal or EOF)")
    p.add_argument("--path", default="/", help="request path (default /)")
    args = p.parse_args(argv)
    if not 0.001 <= args.interval <= 60 or not 0 < args.timeout <= 60 or (args.duration is not None
                                                                            and args.duration < 0):
        p.error("want 0.001 <= --interval <= 60, 0 < --timeout <= 60, --duration >= 0")
    try:
        targets = [parse_target(t, args.path) for t in args.targets]
    except ValueError as exc:
        p.error(str(exc))
    prober = Prober(targets, args.interval, args.timeout)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if prober.stop_reason:  # a second signal: stop draining too
            raise KeyboardInterrupt
        prober.request_stop("signal")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if _stdin_is_pipe(0):
        os.set_blocking(0, False)
        prober.watch_stdin(0)
    try:
        run = prober.run(args.duration)
    except KeyboardInterrupt:
        run = prober.result(time.monotonic())
    sys.stdout.write(json.dumps(encode(run), separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0


# --- for launchers in the root namespace (tests, benchmarks): they start it and read its document ---

def launch(netns: str, targets: Sequence[str], interval: float = 0.01, timeout: float = 1.0,
           duration: float | None = None) -> subprocess.Popen[str]:
    """Start the prober in `netns`. Without a duration its stdin is a pipe, so `finish` (or our death) stops it;
    with one it runs it out and `finish` waits for it."""
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "lbctl.lab.connprobe", *targets,
            "--interval", str(interval), "--timeout", str(timeout)]
    if duration is not None:
        argv += ["--duration", str(duration)]
    return subprocess.Popen(argv, stdin=subprocess.PIPE if duration is None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], wait: float = 30.0) -> Run:
    """Stop a launched prober (EOF on its stdin), or wait for one with a duration, and read its run."""
    try:
        out, err = proc.communicate(timeout=wait)  # closes its stdin, if a pipe
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"connprobe did not stop within {wait:.0f} s") from None
    if proc.returncode:
        raise RuntimeError(f"connprobe exited {proc.returncode}: {err.strip()[-2000:]}")
    return decode(json.loads(out))


if __name__ == "__main__":
    sys.exit(main())
