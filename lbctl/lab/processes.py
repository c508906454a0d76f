"""Lab daemons: each runs in its own process group inside a namespace, with a pidfile.

Pidfiles (not parent/child bookkeeping) let `lbctl lab down` kill everything even after the process
that started the lab crashed; `ip netns pids` catches anything the pidfiles missed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .topology import lab_namespaces, sh

# tmpfs: the lab's tokens, keys and etcd data must never reach a disk (/run is not tmpfs everywhere).
STATE = Path(os.environ.get("LBCTL_LAB_STATE", "/dev/shm/lbctl-lab"))
PIDS, LOGS = STATE / "pids", STATE / "logs"


def spawn(name: str, netns: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    record(name, proc.pid)
    return proc.pid


def record(name: str, pid: int) -> None:
    """`ip netns exec` execs the command, so this pid is the daemon's and leads its process group."""
    PIDS.mkdir(parents=True, exist_ok=True)
    (PIDS / f"{name}.pid").write_text(f"{pid}\n")


def pid_of(name: str) -> int | None:
    try:
        return int((PIDS / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def terminate(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; safe on a process that already ended."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        # A zombie still answers kill(0); it is dead for our purposes.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def pidfiles() -> dict[str, int | None]:
    return {p.stem: pid_of(p.stem) for p in sorted(PIDS.glob("*.pid"))} if PIDS.is_dir() else {}


def signal_group(pid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False


def kill(name: str, sig: signal.Signals = signal.SIGTERM) -> bool:
    pid = pid_of(name)
    return bool(pid and alive(pid) and signal_group(pid, sig))


def netns_pids() -> list[int]:
    pids: list[int] = []
    for ns in lab_namespaces():
        out = sh("ip", "netns", "pids", ns, check=False).stdout
        pids += [int(p) for p in out.split() if p.isdigit()]
    return pids


def kill_all(grace: float = 5.0) -> int:
    """SIGTERM every lab process (pidfiles, then whatever else runs in a lab namespace, e.g. daemons
    started before a crash could record them), SIGKILL what is left after `grace`. Returns how many."""
    targets = {pid for pid in pidfiles().values() if pid and alive(pid)} | set(netns_pids())
    for pid in targets:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in targets | set(netns_pids())):
        time.sleep(0.1)
    for pid in targets | set(netns_pids()):
        if alive(pid):
            signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in targets | set(netns_pids())):
        time.sleep(0.05)
    return len(targets)
