"""A client of BIRD's control socket (what `birdc` speaks), one connection per command.

BIRD greets with `0001 BIRD x ready.`, then answers each command with lines `DDDD-text` (more follows),
` text` (continuation of the previous code) and a last `DDDD text`. Codes 8xxx and 9xxx are errors. The text
is given back as birdc prints it (codes stripped), so lbctl.core.bird_status reads either.
"""

from __future__ import annotations

import asyncio

READ_LIMIT = 1 << 24  # `show protocols all` grows with the peers, not with the prefixes


class BirdError(Exception):
    """BIRD refused the command (or could not be reached); the message is BIRD's."""


async def command(socket_path: str, line: str, timeout: float = 5.0) -> str:
    """Run one command; its reply text, or BirdError (also for OSError and a timeout)."""
    try:
        return await asyncio.wait_for(_command(socket_path, line), timeout)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise BirdError(f"{line.split()[0]}: {type(exc).__name__}: {exc}") from None


async def _command(socket_path: str, line: str) -> str:
    reader, writer = await asyncio.open_unix_connection(socket_path, limit=READ_LIMIT)
    try:
        code, _ = await _reply(reader)  # the greeting
        if code != 1:
            raise BirdError(f"unexpected greeting code {code:04d}")
        writer.write(line.encode() + b"\n")
        await writer.drain()
        code, text = await _reply(reader)
    finally:
        writer.close()
    if code >= 8000:
        raise BirdError(text.strip().splitlines()[-1] if text.strip() else f"error {code:04d}")
    return text


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    out: list[str] = []
    while True:
        raw = await reader.readuntil(b"\n")
        text = raw.decode(errors="replace").rstrip("\n")
        if len(text) >= 5 and text[:4].isdigit() and text[4] in " -":
            code = int(text[:4])
            out.append(text[5:])
            if text[4] == " ":
                return code, "\n".join(out)
        else:
            out.append(text[1:] if text.startswith(" ") else text)


async def configure(socket_path: str, conf: str, check_only: bool = False) -> str:
    """`configure [check] "conf"`; BirdError with BIRD's message on a config it refuses."""
    if '"' in conf or "\n" in conf:
        raise BirdError(f"unusable config path {conf!r}")
    return await command(socket_path, f'configure {"check " if check_only else ""}"{conf}"', timeout=30.0)
