"""The lab's pods run as non-root users from a Python environment and a source tree that may sit under a 0700
directory (a clone in `mktemp -d`): podexec.expose makes both reachable, in the pod's own mount namespace only,
without hiding what a needed directory holds and without opening what is not needed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = "65534"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root: a private mount namespace and another user")
    root = tmp_path / "clone"
    for sub in (".venv", "lbctl", "secret"):
        (root / sub).mkdir(parents=True)
        (root / sub / "marker").write_text(sub)
        (root / sub).chmod(0o755)
        (root / sub / "marker").chmod(0o644)
    root.chmod(0o700)  # as mktemp -d makes it
    return root


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="lbctl-expose-") as d:  # as the lab's state dir
        yield Path(d)


def as_nobody(needed: list[Path], scratch: Path, *reads: Path) -> list[int]:
    """expose(needed) in a private mount namespace, then `cat` each path as nobody: their exit codes."""
    script = textwrap.dedent(f"""
        import json, subprocess
        from pathlib import Path
        from lbctl.lab.podexec import expose
        expose([Path(p) for p in {[str(p) for p in needed]!r}], Path({str(scratch)!r}))
        print(json.dumps([subprocess.run(["setpriv", "--reuid", "{NOBODY}", "--regid", "{NOBODY}", "--clear-groups",
                                          "--", "cat", p], capture_output=True).returncode
                          for p in {[str(p) for p in reads]!r}]))
    """)
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    return [int(rc) for rc in res.stdout.strip()[1:-1].split(",")]


def test_source_root_that_holds_the_environment(tree: Path, scratch: Path) -> None:
    # The pod's PYTHONPATH is the source root, the 0700 directory itself, and its environment is root/.venv:
    # shadowing the root to expose .venv must not hide the source next to it.
    assert as_nobody([tree / ".venv", tree], scratch,
                     tree / ".venv" / "marker", tree / "lbctl" / "marker") == [0, 0]
    assert oct(tree.stat().st_mode & 0o777) == "0o700"  # the host's permissions are untouched


def test_environment_alone_under_a_0700_directory(tree: Path, scratch: Path) -> None:
    assert as_nobody([tree / ".venv"], scratch, tree / ".venv" / "marker", tree / "secret" / "marker") == [0, 1]
