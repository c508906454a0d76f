"""What ships in the wheel works from the wheel: `pip install .` (not editable) into a fresh venv, then
`lbctl lab demo` from an unrelated directory — the chart, CRDs and API server build script come from the
installed package, not from this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def venv() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    # mkdtemp makes it 0700, like a root-only home: the chart runs the controller as a non-root user, and the
    # lab must still let it reach this Python environment.
    d = Path(tempfile.mkdtemp(prefix="lbctl-wheel-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(d / "venv")], check=True)
        res = subprocess.run([str(d / "venv" / "bin" / "pip"), "install", "-q", str(REPO)], capture_output=True,
                             text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_installed_package_carries_its_files(venv: Path) -> None:
    out = subprocess.run([str(venv / "venv" / "bin" / "python"), "-c",
                          "import lbctl.assets as a, lbctl; print(a.chart_dir()); print(lbctl.__file__)"],
                         capture_output=True, text=True, cwd=venv, check=True).stdout.split()
    chart, module = Path(out[0]), Path(out[1])
    assert str(REPO) not in str(module) and str(venv) in str(chart), out
    assert (chart / "Chart.yaml").is_file() and list((chart / "crds").glob("*.yaml"))
    assert (chart / "templates").is_dir()


def test_wheel_installs_nothing_but_lbctl_at_the_top(venv: Path) -> None:
    """Top-level `controller` and `speaker` packages would collide with any other distribution's."""
    py = venv / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    record = next(site.glob("lbctl-*.dist-info")) / "RECORD"
    paths = [line.split(",")[0] for line in record.read_text().splitlines()]
    tops = {p.split("/", 1)[0] for p in paths if "/" in p and not p.startswith("../")}  # ../ = scripts in bin/
    assert tops <= {"lbctl", record.parent.name}, sorted(tops)
    for entry in ("lbctl-controller", "lbctl-speaker"):
        res = subprocess.run([str(venv / "venv" / "bin" / entry), "--help"], capture_output=True, text=True,
                             cwd=venv)
        assert res.returncode == 0 and "usage" in res.stdout, res.stderr[-2000:]


def test_lab_demo_from_the_wheel(venv: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    res = subprocess.run([str(venv / "venv" / "bin" / "lbctl"), "lab", "demo"], capture_output=True, text=True,
                         cwd=venv, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    assert "OK:" in res.stdout and "moved from node" in res.stdout
    # The real cluster, running the images built from what the wheel ships (lbctl.lab.images).
    assert "images: localhost/lbctl:lab" in res.stdout and "Ready (cp tainted" in res.stdout, res.stdout[-4000:]
