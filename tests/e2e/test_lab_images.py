"""The lab's images as `lbctl lab up` makes them (lbctl.lab.images): the backend answering in a network
namespace of its own and stopping cleanly on SIGTERM, the archive for containerd, the warm no-op, and the
lbctl image built from an installed wheel in an unrelated directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lbctl.lab import images
from lbctl.lab.topology import PREFIX
from tests.wait import wait_for

pytestmark = pytest.mark.timeout(900)

if os.geteuid() != 0:
    pytest.skip("podman builds and runs the images as root here, in network namespaces", allow_module_level=True)

NS = f"{PREFIX}bk"
REPO = Path(__file__).resolve().parents[2]
URL = f"http://127.0.0.1:{images.BACKEND_PORT}"


def _report(request: pytest.FixtureRequest, line: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown in CI's log, not only on failure
            reporter.write_line(line)


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> images.LabImages:
    made = images.ensure_lab_images()
    _report(request, "lab images: " + ", ".join(f"{k} {v:.1f} s" for k, v in made.timings.items()))
    return made


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[str]:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=30)  # a crashed run's
    _ip("netns", "add", NS)
    try:
        _ip("-n", NS, "link", "set", "lo", "up")
        yield NS
    finally:
        _ip("netns", "del", NS)


def curl(netns: str, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, "curl", "-sS", "--max-time", "10", *extra, url],
                          capture_output=True, text=True, timeout=30)


def _healthy(netns: str, name: str) -> bool:
    if not images.exists(name):
        raise AssertionError(f"the backend exited: {images.logs(name)[-2000:]}")
    return curl(netns, f"{URL}/healthz").stdout == "ok\n"


@contextmanager
def backend(netns: str, **env: str) -> Iterator[str]:
    """The backend container, answering on /healthz; removed on the way out."""
    name = f"{PREFIX}backend-{uuid.uuid4().hex[:8]}"
    try:
        images.run_backend(netns, name, {"POD_NAME": "web-7d9f-abcde", "NODE_NAME": "node3", **env})
        wait_for(lambda: _healthy(netns, name), 30, what="the backend's /healthz")
        yield name
    finally:
        images.stop(name, grace=1)
    assert not images.exists(name)


def test_backend_names_its_pod_and_node(lab: images.LabImages, netns: str) -> None:
    with backend(netns) as name:
        v4 = curl(netns, f"{URL}/", "-f")
        v6 = curl(netns, f"http://[::1]:{images.BACKEND_PORT}/", "-f")
        user = images.podman("exec", name, "id", "-u").stdout.strip()
    assert v4.returncode == 0, v4.stderr
    assert json.loads(v4.stdout) == {"pod": "web-7d9f-abcde", "node": "node3", "client": "127.0.0.1"}
    assert v4.stdout.count("\n") == 1
    assert v6.returncode == 0, v6.stderr
    assert json.loads(v6.stdout)["client"] == "::1"
    assert user == "65532"


def test_backend_sigterm_finishes_the_request_in_flight_and_exits_0(lab: images.LabImages, netns: str) -> None:
    with backend(netns) as name:
        code, out, err, logs = _sigterm_during_slow_request(netns, name)
    assert code == 0, logs
    assert json.loads(out)["node"] == "node3", err
    assert "stopped" in logs and "Traceback" not in logs, logs
    refused = curl(netns, f"{URL}/")
    assert refused.returncode == 7, refused  # curl: failed to connect: nothing listens any more


def _sigterm_during_slow_request(netns: str, name: str) -> tuple[int, str, str, str]:
    """SIGTERM while a 2 s request is in flight; returns the exit code, the request's output and the logs."""
    slow = subprocess.Popen(["ip", "netns", "exec", netns, "curl", "-sS", "-f", "--max-time", "20",
                             f"{URL}/?delay=2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Accepted by the kernel is enough: the server serves queued connections before it exits.
        wait_for(lambda: subprocess.run(["ip", "netns", "exec", netns, "ss", "-Htn", "state", "established",
                                         f"( sport = :{images.BACKEND_PORT} )"], capture_output=True, text=True,
                                        timeout=10).stdout.strip(), 10, what="the slow request's connection")
        images.podman("kill", "--signal", "TERM", name)
        # No SIGKILL follows a `podman kill`: a backend that hung on SIGTERM fails this wait.
        code = images.wait(name, timeout=15)
        out, err = slow.communicate(timeout=20)
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    assert slow.returncode == 0, err
    return code, out, err, images.logs(name)


def test_backend_drains_with_healthz_503_while_still_serving(lab: images.LabImages, netns: str) -> None:
    with backend(netns, DRAIN_SECONDS="3") as name:
        images.podman("kill", "--signal", "TERM", name)
        wait_for(lambda: curl(netns, f"{URL}/healthz").stdout == "draining\n", 5, what="/healthz to say draining")
        during = curl(netns, f"{URL}/", "-f")
        code = images.wait(name, timeout=15)
    assert during.returncode == 0 and json.loads(during.stdout)["pod"] == "web-7d9f-abcde", during
    assert code == 0


def test_archive_holds_every_lab_tag(lab: images.LabImages) -> None:
    with tarfile.open(lab.archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    by_tag = {t: entry["Config"] for entry in manifest for t in entry["RepoTags"]}
    assert set(by_tag) == set(images.LAB_TAGS)
    assert by_tag[images.LBCTL_TAG] == by_tag[images.LBCTL_NEXT_TAG]  # one image, two tags
    assert by_tag[images.BACKEND_TAG] != by_tag[images.LBCTL_TAG]
    ids = {t: images.image_id(t) for t in images.LAB_TAGS}
    assert {t: c.removesuffix(".json") for t, c in by_tag.items()} == ids


_CONTAINERD = """version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"""


def test_archive_imports_into_containerd(lab: images.LabImages, request: pytest.FixtureRequest) -> None:
    """What RealNode.import_image does, into a throwaway containerd (own root, state and socket, in a mount
    namespace of its own so the unpack's overlay mounts stay there; no CRI plugin)."""
    tmp = Path(tempfile.mkdtemp(prefix="lbctl-ctr-"))
    (tmp / "containerd.toml").write_text(_CONTAINERD.format(d=tmp))
    sock = str(tmp / "containerd.sock")
    with open(tmp / "containerd.log", "w") as log:
        daemon = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "containerd", "--config",
                                   str(tmp / "containerd.toml")], stdout=log, stderr=log)

    def ctr(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", sock, "--namespace", "k8s.io", *args], capture_output=True,
                              text=True, timeout=timeout)

    try:
        wait_for(lambda: daemon.poll() is not None or ctr("version").returncode == 0, 30, what="containerd")
        assert daemon.poll() is None, (tmp / "containerd.log").read_text()[-3000:]
        started = time.monotonic()
        imported = ctr("images", "import", str(lab.archive), timeout=600)
        assert imported.returncode == 0, imported.stderr
        _report(request, f"ctr images import of the lab archive: {time.monotonic() - started:.1f} s")
        assert set(images.LAB_TAGS) <= set(ctr("images", "ls", "--quiet").stdout.split())
        checked = {line.split()[0]: line for line in ctr("images", "check").stdout.splitlines()[1:]}
        for t in images.LAB_TAGS:  # every blob there, and unpacked for the runtime's snapshotter
            assert "complete" in checked[t] and checked[t].rstrip().endswith("true"), checked
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def test_warm_ensure_builds_and_saves_nothing(lab: images.LabImages) -> None:
    before = lab.archive.stat()
    again = images.ensure_lab_images()
    assert {k: v for k, v in again.timings.items() if k != "total"} == \
        {"tools": 0.0, "base": 0.0, "lbctl": 0.0, "backend": 0.0, "archive": 0.0}
    assert again.archive == lab.archive
    after = lab.archive.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_lab_image_runs_the_speaker(lab: images.LabImages) -> None:
    proc = images.run(images.LBCTL_TAG, ["lbctl-speaker", "--help"])
    assert proc.returncode == 0 and "usage: lbctl-speaker" in proc.stdout, proc.stderr


_BUILD_FROM_WHEEL = """
import sys
from lbctl import assets
from lbctl.lab import images
print(assets.build_files_dir())
print(images.build(sys.argv[1], force=True))
"""


def test_image_builds_from_an_installed_wheel(lab: images.LabImages, request: pytest.FixtureRequest) -> None:
    tag = f"localhost/lbctl:wheel-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="lbctl-wheel-"))  # 0700
    try:
        setuptools = images.wheels(images.python_version(images.BASE_TAG))  # the build backend, offline
        host = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*host, "wheel", "-q", "--no-deps", "--no-index", "--find-links", str(setuptools),
                        "--wheel-dir", str(tmp / "dist"), str(REPO)], check=True, capture_output=True, timeout=300)
        subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, capture_output=True,
                       timeout=300)
        wheel = next((tmp / "dist").glob("lbctl-*.whl"))
        # lbctl.lab.images needs only the standard library: no dependencies to install.
        subprocess.run([str(tmp / "venv/bin/pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       check=True, capture_output=True, timeout=300)
        elsewhere = tmp / "elsewhere"
        elsewhere.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        proc = subprocess.run([str(tmp / "venv/bin/python"), "-c", _BUILD_FROM_WHEEL, tag], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-3000:]
        files_dir, seconds = proc.stdout.split()
        assert Path(files_dir).is_relative_to(tmp / "venv"), files_dir  # the wheel's files, not this checkout's
        _report(request, f"image from the wheel: build {float(seconds):.1f} s")
        speaker = images.run(tag, ["lbctl-speaker", "--help"])
        assert speaker.returncode == 0 and "usage: lbctl-speaker" in speaker.stdout, speaker.stderr
        chart = images.run(tag, ["python3", "-c", "import lbctl.assets as a; print(sorted(p.name for p in "
                                 "a.chart_dir().iterdir()))"])
        assert "Chart.yaml" in chart.stdout and "templates" in chart.stdout, chart.stderr
    finally:
        images.podman("rmi", "--ignore", tag, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
