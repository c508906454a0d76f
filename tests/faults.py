"""A loopback HTTP server that breaks requests the way a proxy in front of a restarting API server does, and a
TCP proxy that can stall. Real sockets, real aiohttp client: no mock of the client.

Modes of `FaultServer` (set `.mode` at any time; each request reads it once its headers arrived):
- "disconnect": close the connection once the request is read, before any byte of an answer
- "truncate":   send headers promising a body, half of it, then close
- "reset":      send headers promising a body, then an RST (SO_LINGER 0)
- "stall":      read the request and never answer
- "ok":         answer 200 with `.body` (JSON)
- "forbidden":  answer 403 with a Status, as a restarted API server does until its RBAC cache is filled
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from typing import Any


class FaultServer:
    def __init__(self, mode: str = "disconnect", body: Any = None) -> None:
        self.mode, self.body = mode, body if body is not None else {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request read
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def __aenter__(self) -> FaultServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
                               if k.lower() == "content-length"), 0)
                if length:
                    await reader.readexactly(length)
                self.requests.append((method, path))
                mode = self.mode
                body = json.dumps(self.body).encode()
                ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                if mode == "ok":
                    writer.write(ok + body)
                    await writer.drain()
                    continue
                if mode == "forbidden":
                    status = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                                         "reason": "Forbidden", "message": "events is forbidden"}).encode()
                    writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(status) + status)
                    await writer.drain()
                    continue
                if mode == "stall":
                    await asyncio.sleep(3600)
                if mode in ("truncate", "reset"):
                    writer.write(ok + (body[:len(body) // 2] if mode == "truncate" else b""))
                    await writer.drain()
                if mode == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
                return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()
        finally:
            self._writers.discard(writer)

    async def wait_requests(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.requests) < n:
                await asyncio.sleep(0.01)


class StallingProxy:
    """TCP proxy to `upstream` (host, port). `stall = True` stops forwarding in both directions (bytes wait in
    the proxy, connections stay open), as a hung proxy or a black-holed network path does."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.stall = False
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                while self.stall:
                    await asyncio.sleep(0.02)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()
