"""The lbctl OCI image for tests: podman set up for this machine, a Debian base, the image, and containers.

Podman runs with runc and explicit ulimits (crun fails on hybrid cgroups; the defaults exceed what this kind of
VM allows), from a containers.conf in the cache, never /etc. No container registry is reachable, so the base
is Debian bookworm made with mmdebstrap from the host's own apt sources and imported once (cached by tag and
recipe label). Builds run with --network none: the dependency wheels are downloaded on the host first (this
machine reaches the package index through a TLS proxy whose CA only the host's trust store holds, so pip fails
certificate checks inside a build), and the default bridge network would add a bridge, NAT rules and ip_forward
to the host. Containers get --network none or an
existing network namespace; nothing here changes the host's network configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lbctl" / "image"
APT_PACKAGES = ("podman", "runc", "mmdebstrap")  # installed with --no-install-recommends
BASE_TAG = "localhost/lbctl-base:bookworm"
IMAGE_TAG = "localhost/lbctl:test"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
_BASE_DPKG_OPTS = ("path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
                   "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
SPEAKER_CAPS = ("NET_RAW",)


class PodmanError(RuntimeError):
    pass


def ensure_tools() -> None:
    """Install podman, runc and mmdebstrap from Debian when missing (needs root)."""
    missing = [p for p in APT_PACKAGES if shutil.which(p) is None]
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env,
                   capture_output=True, timeout=900)


def containers_conf() -> Path:
    path = CACHE / "containers.conf"
    if not path.is_file() or path.read_text() != _CONTAINERS_CONF:
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(_CONTAINERS_CONF)
        tmp.replace(path)
    return path


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CONTAINERS_CONF=str(containers_conf()))
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise PodmanError(f"podman {' '.join(args[:3])} … exited {proc.returncode}: {proc.stderr.strip()[-3000:]}")
    return proc


def _label(tag: str, key: str) -> str | None:
    proc = podman("image", "inspect", "--format", "{{json .Labels}}", tag, check=False)
    if proc.returncode != 0:
        return None
    return (json.loads(proc.stdout or "null") or {}).get(key)


def _debian_sources() -> list[str]:
    """The host's apt source files for bookworm, so the base comes from the mirror this machine already uses."""
    override = os.environ.get("LBCTL_DEBIAN_SOURCES")
    if override:
        return [override]
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.sources")),
             *sorted((apt / "sources.list.d").glob("*.list"))]
    found = [str(f) for f in files if f.is_file() and all(w in f.read_text() for w in ("bookworm", "/debian"))]
    if not found:
        raise PodmanError("no apt source for Debian bookworm in /etc/apt; set LBCTL_DEBIAN_SOURCES to a "
                          "sources.list or .sources file for bookworm")
    return found


def ensure_base() -> float:
    """Make BASE_TAG unless it exists with the current recipe; returns seconds spent (0.0 when cached)."""
    recipe = hashlib.sha256(json.dumps([BASE_PACKAGES, _BASE_DPKG_OPTS]).encode()).hexdigest()[:16]
    if _label(BASE_TAG, "lbctl.base.recipe") == recipe:
        return 0.0
    started = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / "base.tar"
    try:
        proc = subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                               *(f"--dpkgopt={o}" for o in _BASE_DPKG_OPTS), "bookworm", str(tarball),
                               *_debian_sources()], capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise PodmanError(f"mmdebstrap exited {proc.returncode}: {proc.stderr.strip()[-3000:]}")
        podman("import", "--change", f"ENV PATH={_PATH}", "--change", f"LABEL lbctl.base.recipe={recipe}",
               str(tarball), BASE_TAG, timeout=300)
    finally:
        tarball.unlink(missing_ok=True)
    return time.monotonic() - started


def _python_version(image: str) -> str:
    out = run(image, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout
    return out.strip()


def wheels(python_version: str) -> Path:
    """Every dependency of lbctl, and its build backend, as wheels for `python_version`, cached by requirement set.

    Downloaded on the host (which trusts its own CA store and index settings) for the build to use offline.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = sorted([*project["project"]["dependencies"], *project["build-system"]["requires"]])
    key = hashlib.sha256(json.dumps([python_version, reqs]).encode()).hexdigest()[:16]
    target = CACHE / f"wheels-{key}"
    if (target / ".complete").is_file():
        return target
    tmp = CACHE / f"wheels-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(tmp),
                           "--only-binary=:all:", "--python-version", python_version, *reqs],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise PodmanError(f"pip download of lbctl's dependencies failed: {proc.stderr.strip()[-3000:]}")
    (tmp / ".complete").write_text("\n".join(reqs) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target


def build(tag: str = IMAGE_TAG, base: str = BASE_TAG, context: Path = REPO) -> float:
    """Build the top-level Dockerfile offline on `base`; returns seconds spent. Replaces the previous `tag`."""
    started = time.monotonic()
    wheel_dir = wheels(_python_version(base))
    old = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    log = CACHE / "build.log"
    # --layers=false: no intermediate images pile up in the host's storage; a full build takes ~15 s.
    proc = podman("build", "--network", "none", "--pull=never", "--layers=false", "--force-rm",
                  "--file", str(context / "Dockerfile"), "--build-arg", f"BASE={base}", "--build-arg", "WHEELS=/wheels",
                  "--volume", f"{wheel_dir}:/wheels:ro", "--tag", tag, str(context), check=False, timeout=1200)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise PodmanError(f"podman build exited {proc.returncode} (log: {log}): {proc.stderr.strip()[-3000:]}")
    new = podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    if old and old != new:
        podman("rmi", old, check=False)  # the replaced build, unless something still uses it
    return time.monotonic() - started


_timings: dict[str, float] = {}


def ensure_image() -> dict[str, float]:
    """Tools, base and IMAGE_TAG built from this checkout, once per process; returns seconds spent per step."""
    if not _timings:
        ensure_tools()
        _timings["base"] = ensure_base()
        _timings["build"] = build()
    return dict(_timings)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def remove(name: str) -> None:
    podman("rm", "--force", "--ignore", "--time", "0", name, check=False, timeout=60)


def run(image: str, argv: Sequence[str], *, name: str | None = None, user: str | None = None,
        caps: Sequence[str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a throwaway container with no network; the container is removed even on failure.

    `caps`: None keeps podman's default set; a sequence drops ALL and adds exactly these.
    """
    name = name or _name("lbctl-run")
    args = ["run", "--rm", "--pull=never", "--name", name, "--network", "none"]
    if user is not None:
        args += ["--user", user]
    if caps is not None:
        args += ["--cap-drop", "ALL", *(a for c in caps for a in ("--cap-add", c))]
    try:
        return podman(*args, image, *argv, check=False, timeout=timeout)
    finally:
        remove(name)


def run_speaker(netns: str | None, mounts: Mapping[str | Path, str], env: Mapping[str, str], argv: Sequence[str],
                name: str, *, image: str = IMAGE_TAG, caps: Sequence[str] = SPEAKER_CAPS) -> str:
    """Start `argv` detached as the speaker's pod spec runs it; returns the container id.

    uid 0 with only `caps` (NET_RAW), read-only root, no privilege escalation, in the existing network namespace
    /run/netns/`netns` (None: no network). `mounts` are host path -> container path, read-only. A container
    left under `name` by an earlier run is replaced.
    """
    network = f"ns:/run/netns/{netns}" if netns else "none"
    args = ["run", "--detach", "--pull=never", "--name", name, "--network", network, "--user", "0", "--read-only",
            "--security-opt", "no-new-privileges", "--cap-drop", "ALL"]
    args += [a for c in caps for a in ("--cap-add", c)]
    args += [a for host, ctr in mounts.items() for a in ("--volume", f"{host}:{ctr}:ro")]
    args += [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
    remove(name)
    try:
        return podman(*args, image, *argv).stdout.strip()
    except BaseException:
        remove(name)
        raise


def wait(name: str, timeout: float = 60) -> int:
    """Wait for the container to exit; returns its exit code."""
    return int(podman("wait", name, timeout=timeout).stdout.strip())


def logs(name: str) -> str:
    proc = podman("logs", name, check=False)
    return proc.stdout + proc.stderr


def stop(name: str, grace: int = 5) -> str:
    """SIGTERM (SIGKILL after `grace` s), then remove; returns what the container printed. Safe to call twice."""
    podman("stop", "--ignore", "--time", str(grace), name, check=False, timeout=grace + 60)
    out = logs(name)
    remove(name)
    return out


def exists(name: str) -> bool:
    return podman("container", "exists", name, check=False).returncode == 0
