"""Kube.watch/informer against a loopback HTTP server that streams watch lines of any length.

The API server accepts objects far over aiohttp's 128 KiB line limit (a Service with 700 KiB of
annotations); a watch line that long must be an event like any other, and a broken stream must be retried.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from lbctl.kube.client import Kube
from lbctl.kube.config import KubeConfig

BIG = "x" * (700 * 1024)


def _svc(name: str, rv: str, note: str = "") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": rv,
                         "annotations": {"big": note} if note else {}}}


async def _serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/api/v1/services", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _stream(events: list[dict[str, Any]], chunk: int = 4096) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        resp = web.StreamResponse()
        await resp.prepare(request)
        data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        for i in range(0, len(data), chunk):  # in small pieces, as the network delivers them
            await resp.write(data[i:i + chunk])
        await asyncio.sleep(3600)  # a watch stays open
        return resp
    return handler


async def _take(it: Any, n: int, timeout: float = 10) -> list[tuple[str, Any]]:
    out = []
    async with asyncio.timeout(timeout):
        async for item in it:
            out.append(item)
            if len(out) == n:
                return out
    return out


def test_watch_yields_a_700_kib_line_between_small_ones() -> None:
    events = [{"type": "ADDED", "object": _svc("a", "2")}, {"type": "ADDED", "object": _svc("big", "3", BIG)},
              {"type": "ADDED", "object": _svc("b", "4")}]

    async def main() -> list[tuple[str, Any]]:
        runner, url = await _serve(_stream(events))
        try:
            async with Kube(KubeConfig(server=url)) as kube:
                return await _take(kube.watch("/api/v1/services", "1"), 3)
        finally:
            await runner.cleanup()

    got = asyncio.run(main())
    assert [(k, o["metadata"]["name"]) for k, o in got] == [("ADDED", "a"), ("ADDED", "big"), ("ADDED", "b")]
    assert got[1][1]["metadata"]["annotations"]["big"] == BIG


def test_watch_splits_lines_that_arrive_in_one_chunk() -> None:
    events = [{"type": "ADDED", "object": _svc(f"s{i}", str(i + 2))} for i in range(50)]

    async def main() -> list[tuple[str, Any]]:
        runner, url = await _serve(_stream(events, chunk=1 << 20))
        try:
            async with Kube(KubeConfig(server=url)) as kube:
                return await _take(kube.watch("/api/v1/services", "1"), 50)
        finally:
            await runner.cleanup()

    assert [o["metadata"]["name"] for _, o in asyncio.run(main())] == [f"s{i}" for i in range(50)]


def test_informer_survives_a_broken_stream_and_relists() -> None:
    """Any failure inside a watch (here: a line that is not JSON, then the stream cut) is an ERROR and a relist,
    never the end of the informer."""
    calls = {"list": 0, "watch": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            calls["list"] += 1
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": [_svc("a", "1")]})
        calls["watch"] += 1
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"{not json\n" if calls["watch"] == 1 else json.dumps(
            {"type": "ADDED", "object": _svc("big", "5", BIG)}).encode() + b"\n")
        await asyncio.sleep(3600)
        return resp

    async def main() -> list[tuple[str, Any]]:
        runner, url = await _serve(handler)
        try:
            async with Kube(KubeConfig(server=url)) as kube:
                return await _take(kube.informer("/api/v1/services"), 4)
        finally:
            await runner.cleanup()

    got = asyncio.run(main())
    assert [k for k, _ in got] == ["SYNC", "ERROR", "SYNC", "ADDED"], got
    assert got[3][1]["metadata"]["name"] == "big" and calls["list"] == 2
