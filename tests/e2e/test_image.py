"""The image built from the top-level Dockerfile with podman: entrypoints, user, Python, chart, speaker privileges.

No network namespaces here: containers run with --network none.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import image

pytestmark = pytest.mark.timeout(1800)

if os.geteuid() != 0:
    pytest.skip("podman builds and runs the image as root here (rootful storage, runc)", allow_module_level=True)


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> str:
    timings = image.ensure_image()
    base_s, build_s = timings["base"], timings["build"]
    size = image.podman("image", "inspect", "--format", "{{.Size}}", image.IMAGE_TAG).stdout.strip()
    line = (f"image timings: base {'cached' if base_s == 0 else f'{base_s:.1f} s'}, build {build_s:.1f} s; "
            f"{image.IMAGE_TAG} {int(size) / 2**20:.0f} MiB")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown in CI's log, not only on failure
            reporter.write_line(line)
    return image.IMAGE_TAG


def ok(tag: str, argv: list[str]) -> str:
    proc = image.run(tag, argv)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.parametrize(("argv", "expected"), [
    ([], ["usage: lbctl ", "status", "preflight", "lab"]),  # the default command is `lbctl --help`
    (["lbctl", "--help"], ["usage: lbctl ", "status", "preflight", "lab"]),
    (["lbctl-controller", "--help"], ["usage: lbctl-controller ", "--lb-class", "--http-port"]),
    (["lbctl-speaker", "--help"], ["usage: lbctl-speaker ", "--heartbeat-key-file", "--node-name"]),
])
def test_entrypoint_help(built: str, argv: list[str], expected: list[str]) -> None:
    out = ok(built, argv)
    for text in expected:
        assert text in out, f"{argv}: {text!r} missing from:\n{out}"


def test_entrypoints_are_the_venv_scripts(built: str) -> None:
    out = ok(built, ["sh", "-c", "for c in lbctl lbctl-controller lbctl-speaker python3; do command -v $c; done"]).split()
    assert out == ["/opt/lbctl/bin/lbctl", "/opt/lbctl/bin/lbctl-controller", "/opt/lbctl/bin/lbctl-speaker",
                   "/opt/lbctl/bin/python3"]


def test_default_user_is_not_root(built: str) -> None:
    assert ok(built, ["id", "-u"]).strip() == "65532"
    assert ok(built, ["id", "-g"]).strip() == "65532"


def test_python_is_at_least_3_11(built: str) -> None:
    major, minor = map(int, ok(built, ["python3", "-c", "import sys; print(*sys.version_info[:2])"]).split())
    assert (major, minor) >= (3, 11)


def test_run_removes_its_container_on_failure(built: str) -> None:
    name = f"lbctl-test-run-{uuid.uuid4().hex[:8]}"
    assert image.run(built, ["false"], name=name).returncode == 1
    assert not image.exists(name)


def test_runtime_has_no_compiler_or_pip(built: str) -> None:
    found = ok(built, ["sh", "-c", "for t in gcc cc pip pip3; do command -v $t || true; done"]).split()
    assert found == []


_CHART_DIGESTS = """
import hashlib, json, os, lbctl.assets as a
d = a.chart_dir()
files = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]
print(json.dumps({os.path.relpath(f, d): hashlib.sha256(open(f, 'rb').read()).hexdigest() for f in files}))
"""


def test_chart_ships_in_the_image(built: str) -> None:
    chart = image.REPO / "deploy" / "chart"
    if not chart.is_dir():
        pytest.skip("this checkout has no deploy/chart yet")
    expected = {str(p.relative_to(chart)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in chart.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert json.loads(ok(built, ["python3", "-c", _CHART_DIGESTS])) == expected


_PROBE = """
import json, os, socket
caps = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff'))
print(json.dumps({'uid': os.getuid(), 'capeff': int(caps, 16), 'env': os.environ.get('LBCTL_PROBE'),
                  'mount': open('/etc/lbctl/probe').read()}))
try:
    open('/written', 'w')
except OSError as e:
    print('rootfs', e.errno)
socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)).close()
print('AF_PACKET ok')
"""
CAP_NET_RAW = 1 << 13


@pytest.fixture
def speaker_name() -> Iterator[str]:
    name = f"lbctl-test-speaker-{uuid.uuid4().hex[:8]}"
    yield name
    image.stop(name, grace=1)
    assert not image.exists(name)


def _probe(built: str, name: str, tmp_path: Path, caps: tuple[str, ...]) -> tuple[int, str]:
    (tmp_path / "probe").write_text("mounted")
    image.run_speaker(None, {tmp_path / "probe": "/etc/lbctl/probe"}, {"LBCTL_PROBE": "set"},
                      ["python3", "-c", _PROBE], name, image=built, caps=caps)
    code = image.wait(name)
    return code, image.stop(name, grace=1)


def test_speaker_container_opens_af_packet_with_only_net_raw(built: str, speaker_name: str, tmp_path: Path) -> None:
    code, out = _probe(built, speaker_name, tmp_path, image.SPEAKER_CAPS)
    assert code == 0, out
    facts = json.loads(out.splitlines()[0])
    assert facts == {"uid": 0, "capeff": CAP_NET_RAW, "env": "set", "mount": "mounted"}
    assert "rootfs 30" in out  # EROFS: the root filesystem is read-only
    assert "AF_PACKET ok" in out
    assert not image.exists(speaker_name)  # stop() removed it


def test_speaker_container_without_net_raw_cannot_open_af_packet(built: str, speaker_name: str,
                                                                  tmp_path: Path) -> None:
    code, out = _probe(built, speaker_name, tmp_path, ())
    assert code != 0
    assert json.loads(out.splitlines()[0])["capeff"] == 0
    assert "PermissionError" in out and "AF_PACKET ok" not in out


def test_run_speaker_replaces_a_leftover_container(built: str, speaker_name: str) -> None:
    first = image.run_speaker(None, {}, {}, ["sleep", "600"], speaker_name, image=built)
    second = image.run_speaker(None, {}, {}, ["sleep", "600"], speaker_name, image=built)
    assert first != second
    assert image.podman("inspect", "--format", "{{.Id}} {{.State.Running}}", speaker_name).stdout.split() == \
        [second, "true"]
    assert image.podman("container", "exists", first, check=False).returncode != 0
