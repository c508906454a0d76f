"""The lab's backend: a small HTTP server whose answer names the pod and node that served it.

It is the whole of the backend image (`python3 /backend.py`), so it uses the standard library only and
imports nothing from lbctl; it prints its few lifecycle lines to stderr (structlog is not in that image).

    GET /           200, one line of JSON: {"client": ..., "node": $NODE_NAME, "pod": $POD_NAME}
    GET /?delay=S   the same after S seconds (at most 30): a request that is in flight when SIGTERM comes
    GET /healthz    200 "ok", or 503 "draining" once SIGTERM has come (readiness fails first)

Port: --port, else $PORT, else 8080, on every address (IPv6 and IPv4). On SIGTERM (or SIGINT) it keeps
accepting for --drain-seconds ($DRAIN_SECONDS, default 0) while /healthz says 503, so the endpoint can leave
the Service first; then it stops accepting, serves the connections already queued, waits for every request
in flight and exits 0. One request per connection (HTTP/1.0), so no idle keep-alive holds the exit up.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_DELAY = 30.0


def _log(msg: str) -> None:
    print(f"backend: {msg}", file=sys.stderr, flush=True)


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the request threads: in-flight requests finish
    block_on_close = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, port: int, identity: dict[str, str]) -> None:
        self.identity = identity
        self.draining = threading.Event()
        try:
            socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
            self.address_family = socket.AF_INET6
            host = "::"
        except OSError:  # a namespace without IPv6
            self.address_family = socket.AF_INET
            host = "0.0.0.0"
        super().__init__((host, port), Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:  # one socket for both families, whatever bindv6only says
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def serve_queued(self) -> int:
        """Serve the connections the kernel has accepted but serve_forever() has not; returns how many."""
        self.socket.setblocking(False)
        served = 0
        while True:
            try:
                conn, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return served
            conn.setblocking(True)
            self.process_request(conn, addr)
            served += 1


class Handler(BaseHTTPRequestHandler):
    server: Server
    timeout = 10  # a client that connects and sends nothing cannot hold the exit up for longer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if url.path == "/healthz":
            draining = self.server.draining.is_set()
            self._reply(503 if draining else 200, "draining\n" if draining else "ok\n", "text/plain")
            return
        try:
            delay = min(max(float(parse_qs(url.query).get("delay", ["0"])[0]), 0.0), MAX_DELAY)
        except ValueError:
            self._reply(400, "delay must be a number of seconds\n", "text/plain")
            return
        if delay:
            time.sleep(delay)
        client = self.client_address[0]
        if client.startswith("::ffff:") and "." in client:  # IPv4 on the dual-stack socket: say it as IPv4
            client = client.removeprefix("::ffff:")
        body = json.dumps({**self.server.identity, "client": client}, sort_keys=True)
        self._reply(200, body + "\n", "application/json")

    def _reply(self, code: int, body: str, ctype: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:  # a line per request would drown the pod's log
        pass


def serve(port: int, drain_seconds: float, identity: dict[str, str]) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    srv = Server(port, identity)
    accept = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, name="accept")
    accept.start()
    _log(f"listening on port {port} as pod={identity['pod']} node={identity['node']}")
    while not stop.wait(0.2):  # a short wait: the signal handler runs in this (the main) thread
        pass
    srv.draining.set()
    _log(f"stopping: /healthz answers 503, still accepting for {drain_seconds:g} s")
    time.sleep(drain_seconds)
    srv.shutdown()
    accept.join()
    queued = srv.serve_queued()
    srv.server_close()  # closes the listening socket, then waits for the requests in flight
    _log(f"stopped (served {queued} queued connection(s) after the last accept)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="backend", description=__doc__.split("\n\n")[0])
    # String defaults go through `type` too: a bad $PORT gets argparse's error, not a traceback.
    p.add_argument("--port", type=int, default=os.environ.get("PORT") or "8080")
    p.add_argument("--drain-seconds", type=float, default=os.environ.get("DRAIN_SECONDS") or "0")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port {args.port}: not a TCP port")
    if args.drain_seconds < 0:
        p.error("--drain-seconds must not be negative")
    identity = {"pod": os.environ.get("POD_NAME") or socket.gethostname(),
                "node": os.environ.get("NODE_NAME") or "unknown"}
    return serve(args.port, args.drain_seconds, identity)


if __name__ == "__main__":
    sys.exit(main())
