"""The lab's fault injector (lbctl/lab/faultproxy.py) does to a response what each fault says, on loopback.

A tiny upstream answers a plain response (Content-Length) or a watch (chunked, one JSON line per event); the
injector runs between it and a raw client, without TLS upstream (ctx None). The e2e test trusts these faults.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from lbctl.lab.faultproxy import Fault, FaultProxy

BODY = b'{"kind":"Lease","padding":"' + b"x" * 200 + b'"}'
EVENT = b'{"type":"ADDED","object":{"kind":"Service","metadata":{"name":"web"}}}\n'


async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    if b"watch=true" in head:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the head first, then an event, as the API server flushes them
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(EVENT), EVENT))
    else:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
    await writer.drain()
    writer.close()


def run(fault: Fault, path: str, during: Callable[[FaultProxy], Awaitable[None]] | None = None) -> bytes:
    """What a client reads through the injector set to `fault` (b"" plus what came before a reset)."""
    async def main() -> bytes:
        up = await asyncio.start_server(upstream, "127.0.0.1", 0)
        proxy = FaultProxy(up.sockets[0].getsockname()[:2], None)
        proxy.set(fault)
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        async with up, server:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            if during:
                await during(proxy)
            got = b""
            try:
                while chunk := await asyncio.wait_for(reader.read(65536), 5):
                    got += chunk
            except ConnectionResetError:
                pass
            writer.close()
            return got
    return asyncio.run(main())


def body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


def test_pass_forwards_everything() -> None:
    assert body(run(Fault(), "/lease")) == BODY


def test_reset_forwards_the_head_and_n_body_bytes_then_resets() -> None:
    assert body(run(Fault("reset", after=64), "/lease")) == BODY[:64]


def test_reset_of_watches_leaves_other_responses_alone() -> None:
    assert body(run(Fault("reset", watch=True), "/lease")) == BODY


def test_cut_ends_a_watch_stream_in_the_middle_of_an_event_line() -> None:
    got = body(run(Fault("cut", watch=True), "/api/v1/services?watch=true"))
    assert got and EVENT not in got and not got.endswith(b"\n")


def test_status_answers_without_the_upstream() -> None:
    raw = run(Fault("status", status=429, retry_after=1), "/lease")
    assert raw.startswith(b"HTTP/1.1 429 Too Many Requests\r\n") and b"\r\nRetry-After: 1\r\n" in raw


def test_stall_holds_the_body_until_the_fault_changes() -> None:
    async def release(proxy: FaultProxy) -> None:
        await asyncio.sleep(0.3)
        assert proxy.stats.stalled_bytes == len(BODY)  # held, not lost
        proxy.set(Fault())
    assert body(run(Fault("stall"), "/lease", release)) == BODY


def test_an_unknown_fault_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="fault kind must be one of"):
        Fault("explode")
