"""The lab's fault injector: a small asyncio proxy between every nginx (lbctl.lab.apiproxy) and the API server.

    ip netns exec lbctl-cp python -m lbctl.lab.faultproxy --ca STATE/cp/apiserver.crt

It listens in the control-plane namespace on CP_IP4:6480 in plaintext HTTP (nginx sends one request per
connection, `Connection: close`), dials the API server with TLS, and forwards bytes both ways. Seeing plaintext
lets it break responses where a test wants them: after N bytes of a body, in the middle of a watch event's
line, or with a status of its own. The daemons are untouched: they meet the faults through nginx, exactly as
they would meet a failing API server or load balancer.

A test switches the fault over a unix socket (`set_fault`, `stats`). Faults, each for watch streams only,
other responses only, or both (`watch`: true/false/null), and with `drop` also aborting the matching open
connections at once:
  pass     forward everything
  reset    forward `after` bytes of the body, then RST both sides (nginx cuts its client's response short)
  cut      forward half of the next body read (mid-line for a watch event), then close cleanly (FIN)
  stall    forward nothing (requests still reach the API server) until the fault changes
  trickle  forward `rate` bytes per second
  status   answer new requests with `status` (e.g. 429 with Retry-After `retry_after`, 503) without the API server
When the API server is down the upstream dial fails and the connection is closed: nginx answers 502.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lbctl import log

from . import processes
from .processes import STATE
from .topology import CP_IP4, CP_NS

PORT = 6480
CONTROL = STATE / "faultproxy.sock"
KINDS = ("pass", "reset", "cut", "stall", "trickle", "status")
UPSTREAM_NAME = "kubernetes.default.svc"  # a name the API server's self-signed certificate carries
REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}
logger = log.get(__name__)


@dataclass
class Fault:
    kind: str = "pass"
    watch: bool | None = None  # None: every response; True: watch streams only; False: all but watch streams
    after: int = 0  # reset: body bytes forwarded first
    rate: int = 200  # trickle: bytes per second
    status: int = 429
    retry_after: int | None = 1
    drop: bool = False  # abort the matching open connections when the fault is set

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, not {self.kind!r}")

    def hits(self, conn: Conn) -> bool:
        return self.kind != "pass" and (self.watch is None or self.watch == conn.watch)


class Closed(Exception):
    """The fault ended this connection."""


@dataclass(eq=False)
class Conn:
    path: str
    watch: bool
    down: asyncio.StreamWriter
    up: asyncio.StreamWriter | None = None
    head: bytes = b""  # response head until it is complete
    head_done: bool = False
    body: int = 0  # body bytes forwarded

    def abort(self) -> None:
        """RST, not FIN: what a crashed proxy or API server leaves its peers."""
        for w in (self.down, self.up):
            if w is not None and not w.is_closing():
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()


@dataclass
class Stats:
    connections: int = 0
    upstream_failures: int = 0
    resets: int = 0
    cuts: int = 0
    statuses: int = 0
    stalled_bytes: int = 0
    events: list[tuple[float, str, str, int]] = field(default_factory=list)  # (monotonic, what, path, status)

    def event(self, what: str, path: str, status: int = 0) -> None:
        self.events.append((time.monotonic(), what, path, status))
        del self.events[:-5000]


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], ctx: ssl.SSLContext | None) -> None:
        self.upstream, self.ctx = upstream, ctx
        self.fault = Fault()
        self.changed = asyncio.Event()
        self.conns: set[Conn] = set()
        self.stats = Stats()

    def set(self, fault: Fault) -> None:
        self.fault = fault
        self.changed.set()
        self.changed = asyncio.Event()
        logger.info("fault", **asdict(fault))
        if fault.drop:
            for c in [c for c in self.conns if fault.watch is None or fault.watch == c.watch]:
                self.stats.resets += 1
                self.stats.event("drop", c.path)
                c.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode(errors="replace") if b" " in head else "?"
        conn = Conn(target, "watch=true" in target or "watch=1" in target or "/watch/" in target, writer)
        if self.fault.kind == "status" and self.fault.hits(conn):
            await self._answer(conn)
            return
        try:
            up_r, conn.up = await asyncio.wait_for(asyncio.open_connection(
                *self.upstream, ssl=self.ctx, server_hostname=UPSTREAM_NAME if self.ctx else None), 5)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.stats.upstream_failures += 1
            self.stats.event("upstream-failed", target)
            logger.info("upstream_failed", path=target, error=str(exc) or type(exc).__name__)
            conn.abort()
            return
        self.conns.add(conn)
        conn.up.write(head)
        requests = asyncio.create_task(self._pump_requests(reader, conn))
        try:
            while True:
                chunk = await up_r.read(65536)
                if not chunk:
                    break
                await self._forward(conn, chunk)
            await conn.down.drain()
        except (Closed, OSError, ConnectionError):
            pass
        finally:
            self.conns.discard(conn)
            requests.cancel()
            for w in (conn.down, conn.up):
                if not w.is_closing():
                    w.close()

    async def _pump_requests(self, reader: asyncio.StreamReader, conn: Conn) -> None:
        assert conn.up is not None
        try:
            while chunk := await reader.read(65536):
                conn.up.write(chunk)
                await conn.up.drain()
        except (OSError, ConnectionError):
            pass

    async def _answer(self, conn: Conn) -> None:
        f = self.fault
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": f.status,
                           "reason": "TooManyRequests" if f.status == 429 else "InternalError",
                           "message": f"lbctl lab fault proxy: {f.status}"}).encode()
        retry = f"Retry-After: {f.retry_after}\r\n" if f.retry_after is not None else ""
        conn.down.write(f"HTTP/1.1 {f.status} {REASONS.get(f.status, 'Error')}\r\nContent-Type: application/json\r\n"
                        f"{retry}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        self.stats.statuses += 1
        self.stats.event("status", conn.path, f.status)
        try:
            await conn.down.drain()
        except OSError:
            pass
        conn.down.close()

    async def _forward(self, conn: Conn, chunk: bytes) -> None:
        if not conn.head_done:  # the response head passes untouched: the faults act on bodies
            conn.head += chunk
            end = conn.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, chunk = conn.head[:end + 4], conn.head[end + 4:]
            conn.head_done = True
            status = int(head.split(b" ", 2)[1]) if head.count(b" ") >= 2 else 0
            self.stats.event("watch" if conn.watch else "response", conn.path, status)
            conn.down.write(head)
        while chunk:
            f = self.fault
            if not f.hits(conn) or f.kind == "status":
                conn.down.write(chunk)
                conn.body += len(chunk)
                break
            if f.kind == "stall":
                self.stats.stalled_bytes += len(chunk)
                await conn.down.drain()
                await self.changed.wait()
                self.stats.stalled_bytes -= len(chunk)
                continue
            if f.kind == "trickle":
                piece = max(1, f.rate // 10)
                conn.down.write(chunk[:piece])
                conn.body += len(chunk[:piece])
                chunk = chunk[piece:]
                await conn.down.drain()
                await asyncio.sleep(0.1)
                continue
            if f.kind == "reset":
                room = max(0, f.after - conn.body)
                conn.down.write(chunk[:room])
                conn.body += len(chunk[:room])
                if room >= len(chunk):
                    break
                await conn.down.drain()
                self.stats.resets += 1
                self.stats.event("reset", conn.path)
                conn.abort()
                raise Closed
            if f.kind == "cut":
                conn.down.write(chunk[:max(1, len(chunk) // 2)])
                await conn.down.drain()
                self.stats.cuts += 1
                self.stats.event("cut", conn.path)
                conn.down.close()
                raise Closed
        await conn.down.drain()

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = json.loads(await reader.readline())
            if "fault" in req:
                self.set(Fault(**req["fault"]))
            since = float(req.get("since", 0))
            stats = asdict(self.stats)
            stats["events"] = [e for e in self.stats.events if e[0] >= since]
            out: dict[str, Any] = {"fault": asdict(self.fault), "stats": stats, "open": len(self.conns)}
        except (ValueError, TypeError) as exc:
            out = {"error": str(exc)}
        writer.write(json.dumps(out).encode() + b"\n")
        await writer.drain()
        writer.close()


def request(msg: dict[str, Any], path: Path = CONTROL, timeout: float = 5) -> dict[str, Any]:
    """One control request (from the test, in any namespace: a unix socket is a file)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(msg).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            more = s.recv(65536)
            if not more:
                break
            data += more
    out = json.loads(data)
    if "error" in out:
        raise ValueError(out["error"])
    return out


def set_fault(kind: str = "pass", **kw: Any) -> dict[str, Any]:
    return request({"fault": {"kind": kind, **kw}})


def stats(since: float = 0.0) -> dict[str, Any]:
    return request({"since": since})


async def serve(listen: tuple[str, int], upstream: tuple[str, int], ca: Path, control: Path) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    proxy = FaultProxy(upstream, ctx)
    server = await asyncio.start_server(proxy.handle, *listen, reuse_address=True)
    control.unlink(missing_ok=True)
    ctl = await asyncio.start_unix_server(proxy.control, str(control))
    control.chmod(0o600)
    logger.info("listening", listen=f"{listen[0]}:{listen[1]}", upstream=f"{upstream[0]}:{upstream[1]}")
    async with server, ctl:
        await asyncio.gather(server.serve_forever(), ctl.serve_forever())


def spawn(timeout: float = 10) -> None:
    """Start the injector as a lab daemon in the control-plane namespace; returns once its control socket is up."""
    processes.spawn("faultproxy", CP_NS, [sys.executable, "-m", "lbctl.lab.faultproxy"])
    deadline = time.monotonic() + timeout
    while not CONTROL.exists():
        if time.monotonic() > deadline or not processes.alive(processes.pid_of("faultproxy")):
            log_file = processes.LOGS / "faultproxy.log"
            raise RuntimeError("faultproxy did not start: "
                               + (log_file.read_text(errors="replace")[-2000:] if log_file.exists() else "no log"))
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="lbctl-lab-faultproxy", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default=f"{CP_IP4}:{PORT}")
    p.add_argument("--upstream", default=f"{CP_IP4}:6443")
    p.add_argument("--ca", type=Path, default=STATE / "cp" / "apiserver.crt")
    p.add_argument("--control", type=Path, default=CONTROL)
    args = p.parse_args(argv)
    log.setup("json")

    def hostport(s: str) -> tuple[str, int]:
        host, port = s.rsplit(":", 1)
        return host, int(port)
    asyncio.run(serve(hostport(args.listen), hostport(args.upstream), args.ca, args.control))


if __name__ == "__main__":
    main()
