"""The lab's stand-in workload: port 80 on every address (IPv4 and IPv6), answering with the node name."""

from __future__ import annotations

import argparse
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self) -> None:
        # One [::] socket that also takes IPv4 (mapped), whatever the namespace's bindv6only default is.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def handler(reply: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:  # one line per probe would drown the logs
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="lbctl-lab-httpd", description=__doc__)
    p.add_argument("--name", required=True, help="text to answer with (the node name)")
    p.add_argument("--port", type=int, default=80)
    args = p.parse_args(argv)
    with DualStackServer(("::", args.port), handler(f"{args.name}\n".encode())) as srv:
        srv.serve_forever()


if __name__ == "__main__":
    main()
