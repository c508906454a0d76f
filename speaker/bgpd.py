"""`python -m lbctl.speaker.bgpd`: the BGP sidecar. Runs BIRD in the foreground and withdraws everything
when the speaker goes.

Shared with the speaker through one directory (an emptyDir in the pod, --run-dir):
- `bird.ctl`: BIRD's control socket; the speaker writes `bird.conf` and runs `configure` there.
- `withdraw.conf`: written by the speaker beside every bird.conf: the same peers, no exports.
- `speaker.sock`: the speaker holds a connection to it while it runs. The kernel closes it when the speaker
  process ends in any way (SIGKILL and OOM included), so when the last one closes, BIRD is reconfigured with
  withdraw.conf at once: the sessions stay up and the routers drop this node's routes (no stale routes, and
  no session reset when the restarted speaker renders again).

BIRD starts on a bootstrap config without protocols; the speaker pushes its own as soon as it connects. On
SIGTERM the sidecar withdraws, waits LINGER_S for the updates to leave, then stops BIRD (which closes the
sessions with a Cease). BIRD ending on its own ends the sidecar (non-zero: the kubelet restarts the container,
and the speaker, seeing its connection close, pushes its config to the new BIRD).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

from lbctl import log

from . import bird_control

logger = log.get("bgpd")
CONTROL, CONFIG, WITHDRAW, BOOTSTRAP, LINK = "bird.ctl", "bird.conf", "withdraw.conf", "bootstrap.conf", "speaker.sock"
BOOTSTRAP_TEXT = ("# lbctl: no protocols until the speaker writes bird.conf\n"
                  "router id 0.0.0.1;\nlog stderr { info, remote, warning, error, auth, fatal, bug };\n"
                  "protocol device lbctl_device {}\n")  # BIRD refuses a config without any protocol
LINGER_S = 0.3  # after a withdrawing configure, for the UPDATEs to reach the routers before BIRD stops
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # BIRD must not outlive its wrapper (no pid namespace outside a pod): it would keep announcing.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Sidecar:
    def __init__(self, run_dir: Path, bird: str) -> None:
        self.dir, self.bird = run_dir, bird
        self.socket = str(run_dir / CONTROL)
        self.links = 0
        self.stopping = False
        self._writers: set[asyncio.StreamWriter] = set()
        self.proc: asyncio.subprocess.Process | None = None

    async def withdraw(self, why: str) -> None:
        conf = self.dir / WITHDRAW
        target = conf if conf.exists() else self.dir / BOOTSTRAP
        try:
            await bird_control.configure(self.socket, str(target))
            logger.warning("withdrawn", reason=why, config=target.name)
        except bird_control.BirdError as exc:
            logger.error("withdraw_failed", reason=why, error=str(exc))

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.links += 1
        self._writers.add(writer)
        logger.info("speaker_connected", links=self.links)
        try:
            writer.write(b"ready\n")  # the speaker pushes its config only after this: no withdraw can follow it
            await writer.drain()
            while await reader.read(4096):
                pass
        except OSError:
            pass
        finally:
            self.links -= 1
            self._writers.discard(writer)
            writer.close()
            logger.info("speaker_disconnected", links=self.links)
            if self.links == 0 and not self.stopping:
                await self.withdraw("the speaker's connection closed")

    async def run(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / BOOTSTRAP).write_text(BOOTSTRAP_TEXT)
        for name in (CONTROL, LINK):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()
        # TZ=UTC: BIRD prints local times in `show protocols`, which lbctl.core.bird_status reads as UTC.
        self.proc = await asyncio.create_subprocess_exec(
            self.bird, "-f", "-c", str(self.dir / BOOTSTRAP), "-s", self.socket,
            env={**os.environ, "TZ": "UTC"}, preexec_fn=_die_with_parent)
        logger.info("bird_started", pid=self.proc.pid, control=self.socket)
        server = await asyncio.start_unix_server(self._link, str(self.dir / LINK))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stopper, ended = asyncio.create_task(stop.wait()), asyncio.create_task(self.proc.wait())
        await asyncio.wait({stopper, ended}, return_when=asyncio.FIRST_COMPLETED)
        server.close()
        if ended.done():
            stopper.cancel()
            logger.error("bird_ended", code=self.proc.returncode)
            return self.proc.returncode or 1
        self.stopping = True
        await self.withdraw("SIGTERM")
        await asyncio.sleep(LINGER_S)
        self.proc.terminate()
        code = await self.proc.wait()
        for writer in list(self._writers):  # the speaker sees us go and waits for our successor
            writer.close()
        await asyncio.sleep(0)
        logger.info("stopped", bird_code=code)
        return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="lbctl-bgpd", description="Runs BIRD for the speaker (BGP sidecar).")
    p.add_argument("--run-dir", default=os.environ.get("LBCTL_BGP_RUN_DIR", "/run/lbctl-bgp"),
                   help="directory shared with the speaker (control socket, configs)")
    p.add_argument("--bird", default="bird", help="the bird binary")
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    log.setup(args.log_format, args.log_level)
    try:
        code = asyncio.run(Sidecar(Path(args.run_dir), args.bird).run())
    except OSError as exc:
        print(f"lbctl-bgpd: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
