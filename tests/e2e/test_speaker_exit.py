"""Bug 6: a speaker whose task dies must exit non-zero (as the controller does), so the kubelet restarts it.

A real speaker process (--static-config) in a network namespace of its own (`unshare -n`: it goes with the
process), with one of its tasks made to die by a wrapper: the process must end by itself, with exit status 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DIE = """
import sys
import lbctl.speaker.main as m

async def broken(self):
    raise RuntimeError("conflict sweeper broke")

m.Speaker.sweep_conflicts = broken
m.main(sys.argv[1:])
"""


def test_speaker_exits_nonzero_when_a_task_dies(tmp_path: Path) -> None:
    cfg = tmp_path / "static.json"
    cfg.write_text(json.dumps({"nodes": ["n1"], "ips": {}}))
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", DIE, "--node-name", "n1", "--static-config", str(cfg),
         "--heartbeat-key-file", str(key), "--http-host", "127.0.0.1", "--log-format", "json"],
        capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert "task_ended" in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.returncode == 1, f"exit status {proc.returncode}: {proc.stderr[-2000:]}"
