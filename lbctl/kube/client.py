"""A small async Kubernetes REST client on aiohttp, working in plain dicts.

Why not the generated clients: they deserialize into models (kubernetes 37 fails on the Status a 1.20
server returns for DELETE), weigh 40-70 MiB per process, and we only need a handful of verbs. kopf
already brings aiohttp, so controller, speaker and CLI share one HTTP stack.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from .config import KubeConfig

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class KubeError(Exception):
    """Whatever a request to the API server can end in, other than an answer: ApiError or Unreachable."""


class ApiError(KubeError):
    """The API server (or a proxy before it) answered, with an error status or a body that is not JSON."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class Gone(ApiError):
    """410: the resourceVersion is too old; re-list."""


class Unreachable(KubeError):
    """The request did not complete: refused, reset or dropped connection, TLS failure, a body cut short, a
    timeout. No answer came back, so a write may or may not have been applied. The cause is `__cause__`."""


# What aiohttp and the socket layer raise for a request that did not complete (TimeoutError is an OSError).
_TRANSPORT = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def _unreachable(exc: BaseException, method: str, path: str) -> Unreachable:
    what = str(exc) or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):
        what = "no answer in time"
    return Unreachable(f"{method} {path}: {what}")


class Kube:
    def __init__(self, cfg: KubeConfig, *, user_agent: str = "lbctl", timeout: float = 30.0,
                 concurrency: int = 32) -> None:
        self.cfg = cfg
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=5)
        self._user_agent = user_agent
        self._limit = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._tls_generation = 0  # of the exec plugin's client certificate the session was built with

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            conn = aiohttp.TCPConnector(ssl=self.cfg.ssl_context(refresh=False), limit=64)
            self._session = aiohttp.ClientSession(base_url=self.cfg.server, connector=conn,
                                                  headers={"User-Agent": self._user_agent})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        h = {"Accept": "application/json"}
        auth = self.cfg.authorization(refresh=False)  # _fresh_credentials ran just before
        if auth:
            h["Authorization"] = auth
        if content_type:
            h["Content-Type"] = content_type
        return h

    async def _fresh_credentials(self) -> None:
        """Exec plugins: re-run (off the event loop) once expired; a new client certificate needs a new session."""
        plugin = self.cfg.exec
        if plugin is None:
            return
        if plugin.stale():
            await asyncio.to_thread(plugin.credential)
        if plugin.generation != self._tls_generation:
            self._tls_generation = plugin.generation
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def send(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                   body: Any = None, content_type: str = "application/json",
                   timeout: float | None = None) -> tuple[int, str]:
        """One request: the HTTP status and the body as sent, whatever they are (no ApiError).

        Raises Unreachable when no whole answer came back. `timeout` (seconds) bounds this request as a whole,
        waiting for a connection slot included, below the client's own timeout."""
        data = json.dumps(body) if body is not None else None
        try:
            async with asyncio.timeout(timeout):
                for attempt in (1, 2):
                    await self._fresh_credentials()
                    async with self._limit:
                        async with self.session.request(method, path, params=_clean(params), data=data,
                                                        headers=self._headers(content_type if data else None),
                                                        server_hostname=self.cfg.tls_server_name,
                                                        timeout=self._timeout) as resp:
                            text = (await resp.read()).decode(errors="replace")
                            if resp.status == 401 and self.cfg.exec and attempt == 1:
                                self.cfg.exec.invalidate()  # revoked before it expired: run the plugin again, once
                                continue
                            return resp.status, text
        except _TRANSPORT as exc:
            raise _unreachable(exc, method, path) from exc
        raise AssertionError("unreachable")

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      timeout: float | None = None) -> dict[str, Any]:
        status, text = await self.send(method, path, params=params, body=body, content_type=content_type,
                                       timeout=timeout)
        if status >= 400:
            raise _error(status, text)
        return _json(status, text) if text else {}

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def list(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """The items of a collection (one page: pass `limit`/`continue` yourself for more)."""
        return (await self.request("GET", path, params=params)).get("items") or []

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PUT", path, body=body)

    async def patch(self, path: str, body: Any, content_type: str = MERGE) -> dict[str, Any]:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, **params: Any) -> dict[str, Any]:
        try:
            return await self.request("DELETE", path, params=params)
        except ApiError as exc:
            if exc.status == 404:
                return {}
            raise

    async def watch(self, path: str, resource_version: str, timeout_seconds: int = 300,
                    **params: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """One watch stream from `resource_version`; ends when the server closes it. Raises Gone on 410."""
        q = dict(params, watch="true", resourceVersion=resource_version, allowWatchBookmarks="true",
                 timeoutSeconds=str(timeout_seconds))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=timeout_seconds + 30)
        await self._fresh_credentials()
        try:
            async with self.session.get(path, params=_clean(q), headers=self._headers(), timeout=timeout,
                                        server_hostname=self.cfg.tls_server_name) as resp:
                if resp.status >= 400:
                    raise _error(resp.status, (await resp.read()).decode(errors="replace"))
                async for line in _lines(resp.content):
                    event = _json(resp.status, line)
                    if not isinstance(event, dict):
                        raise ApiError(resp.status, "InvalidResponse", f"watch line is not an event: {line[:200]!r}")
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise _error(int(status.get("code") or 500), json.dumps(status))
                    if not isinstance(event.get("object"), dict) or not isinstance(event.get("type"), str):
                        raise ApiError(resp.status, "InvalidResponse", f"watch event without type or object: "
                                       f"{line[:200]!r}")
                    yield event["type"], event["object"]
        except _TRANSPORT as exc:
            raise _unreachable(exc, "WATCH", path) from exc

    async def informer(self, path: str, **params: Any) -> AsyncIterator[tuple[str, Any]]:
        """LIST then WATCH forever. Yields ("SYNC", items) after every (re)list, then single events.

        Relists on 410 and after any failure of the list or the watch (with backoff): a stream cut, a line
        that is not JSON, a server error. Never returns; ERROR items carry the exception so callers can log
        and judge health.
        """
        backoff = 0.2
        while True:
            try:
                listing = await self.request("GET", path, params=params)
                rv = listing["metadata"]["resourceVersion"]
                yield "SYNC", listing.get("items") or []
                backoff = 0.2
                while True:
                    async for kind, obj in self.watch(path, rv, **params):
                        rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                        if kind != "BOOKMARK":
                            yield kind, obj
            except Gone:
                continue
            except Exception as exc:  # whatever breaks one stream, the next list-watch may work: never end here
                yield "ERROR", exc
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


# Far above any object the API server stores (its request body limit is 3 MiB, etcd's 1.5 MiB); only a
# runaway stream reaches it, and that stream is then dropped and relisted, not kept growing in memory.
MAX_LINE = 64 << 20


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Newline-separated lines of any length (aiohttp's readline stops at 128 KiB with LineTooLong)."""
    buf = bytearray()
    async for chunk in stream.iter_any():
        scan = len(buf)  # bytes before this chunk hold no newline
        buf += chunk
        start = 0
        while (end := buf.find(b"\n", scan)) != -1:
            if buf[start:end].strip():
                yield bytes(buf[start:end])
            start = scan = end + 1
        del buf[:start]
        if len(buf) > MAX_LINE:
            raise ApiError(200, "InvalidResponse", f"watch line longer than {MAX_LINE} bytes")
    if buf.strip():
        yield bytes(buf)


def _clean(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    return {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in params.items() if v is not None}


def _json(status: int, text: str | bytes) -> Any:
    """A body that is not JSON (a proxy's error page under a 200, a line cut short) is the server's error."""
    try:
        return json.loads(text)
    except ValueError:
        raise ApiError(status, "InvalidResponse", f"not JSON: {text[:200]!r}") from None


def _error(status: int, text: str) -> ApiError:
    try:
        doc = json.loads(text)
        reason, message = doc.get("reason", ""), doc.get("message", text)
    except ValueError:
        reason, message = "", text[:500]
    cls = Gone if status == 410 else ApiError
    return cls(status, reason, message)
