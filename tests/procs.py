"""The real controller as a subprocess, for tests and benchmarks."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from lbctl.lab.controlplane import RELEASE, SA_NS, ControlPlane, free_port
from lbctl.lab.processes import terminate  # noqa: F401 - the tests import it from here
from tests import httpget


_ids = itertools.count()




class ControllerProcess:
    """The real controller as a subprocess, authenticated as the chart's ServiceAccount (its RBAC applies).

    Each instance keeps one leader-election identity across restarts, as a pod keeps its name across
    container restarts (so a restarted sole controller takes its own Lease back at once).
    """

    def __init__(self, cp: ControlPlane, logdir: Path, *extra: str, identity: str | None = None) -> None:
        self.cp, self.logdir, self.extra = cp, logdir, extra
        # identity "": none given, the controller makes one up (as outside a pod, without POD_NAME)
        self.identity = f"test-controller-{os.getpid()}-{next(_ids)}" if identity is None else identity
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    def start(self, timeout: float = 30.0) -> float:
        self.port = free_port()
        self.starts += 1
        log = open(self.logdir / f"controller-{self.starts}.log", "wb")
        kubeconfig = self.cp.service_account_kubeconfig(SA_NS, f"{RELEASE}-controller")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lbctl.controller", "--kubeconfig", str(kubeconfig),
             "--http-host", "127.0.0.1", "--http-port", str(self.port), "--log-format", "json",
             *(["--leader-election-id", self.identity] if self.identity else []), *self.extra],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited {self.proc.returncode}: {self.log()[-3000:]}")
            if httpget.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1)[0] == 200:
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"controller not ready in {timeout}s: {self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc:
            terminate(self.proc, 10)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc
        self.proc.send_signal(sig)

    def log(self) -> str:
        return (self.logdir / f"controller-{self.starts}.log").read_text(errors="replace")

    def metrics(self) -> str:
        status, text = httpget.get(f"http://127.0.0.1:{self.port}/metrics")
        if status != 200:
            raise RuntimeError(f"controller /metrics answered {status}")
        return text

    def rss_mib(self) -> float:
        assert self.proc
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def is_leader(c: ControllerProcess) -> bool | None:
    """The metric; None when the process is gone or stopped."""
    if not c.proc or c.proc.poll() is not None:
        return None
    try:
        m = re.search(r"^lbctl_controller_leader (\S+)$", c.metrics(), re.M)
    except (OSError, RuntimeError):
        return None
    return bool(m and float(m.group(1)) == 1.0)


class ConfinedSpeaker:
    """The real speaker in Kubernetes mode as the chart's ServiceAccount, confined to an interface that does not
    exist: no raw socket is opened and no heartbeat leaves on any network (no root or namespaces needed)."""

    def __init__(self, cp: ControlPlane, node: str, workdir: Path) -> None:
        self.node, self.port, self.log_file = node, free_port(), workdir / "speaker.log"
        key = workdir / "key"
        key.write_text(os.urandom(32).hex())
        key.chmod(0o400)
        self.kubeconfig = cp.service_account_kubeconfig(SA_NS, f"{RELEASE}-speaker")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lbctl.speaker", "--node-name", node, "--kubeconfig", str(self.kubeconfig),
             "--heartbeat-key-file", str(key), "--interfaces", "lbctl-none0", "--http-host", "127.0.0.1",
             "--http-port", str(self.port), "--log-format", "json"],
            stdout=open(self.log_file, "wb"), stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log()[-3000:]
        return httpget.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1)[0] == 200

    def stop(self) -> None:
        terminate(self.proc, 15)
