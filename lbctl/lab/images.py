"""The lab's container images, built with podman from what lbctl ships, and saved for containerd to import.

- BASE_TAG: Debian bookworm made with mmdebstrap from the host's own apt sources (no registry is reachable),
  imported once and cached by recipe label.
- LBCTL_TAG: the top-level Dockerfile. Its build context is assembled in a temp dir from the installed files
  (lbctl/assets.py), so a checkout and a pip-installed wheel build the same way: pyproject.toml, README.md,
  lbctl/, deploy/, controller/, speaker/. LBCTL_NEXT_TAG is the same image under a second tag (an upgrade
  to a new tag without a rebuild).
- BACKEND_TAG: lbctl/lab/backend.py on the base, the lab's HTTP workload.
- archive(): a docker-archive of some tags (`ctr images import` reads it), cached by image ID.

A build is skipped when the image under the tag carries the content key of what it would be built from
(the context's files and the base's ID) in its `lbctl.content` label; an image elsewhere with that label is
tagged instead of rebuilt. So a warm `lbctl lab up` spends a few podman inspects here, not a build.

Podman runs with runc and explicit ulimits (crun fails on hybrid cgroups; the defaults exceed what this kind of
VM allows), from a containers.conf in the cache, never /etc. Builds run with --network none: the dependency
wheels are downloaded on the host first (this machine reaches the package index through a TLS proxy whose CA
only the host's trust store holds, so pip fails certificate checks inside a build), and the default bridge
network would add a bridge, NAT rules and ip_forward to the host. Containers get --network none or an existing
network namespace; nothing here changes the host's network configuration. One file lock in the cache serialises
builds and saves between processes (a lab and a test building at once).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lbctl import assets

CACHE = Path(os.environ.get("LBCTL_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lbctl") / "image"
APT_PACKAGES = ("podman", "runc", "mmdebstrap")  # installed with --no-install-recommends
BASE_TAG = "localhost/lbctl-base:bookworm"
LBCTL_TAG = "localhost/lbctl:lab"
LBCTL_NEXT_TAG = "localhost/lbctl:lab-next"
BACKEND_TAG = "localhost/lbctl-backend:lab"
LAB_TAGS = (LBCTL_TAG, LBCTL_NEXT_TAG, BACKEND_TAG)
CONTENT_LABEL = "lbctl.content"
BACKEND_PORT = 8080
# bird2: the speaker's BGP sidecar; the Dockerfile cannot apt-get it in the lab's offline (--network none) build
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "bird2")
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

# The build context: these files from assets.build_files_dir(), the lbctl package as lbctl/, and the trees
# pyproject maps into it (package-dir) under their own top-level names, as in a checkout.
TOP_FILES = ("Dockerfile", "pyproject.toml", "README.md")
SHIPPED_TREES = ("deploy", "controller", "speaker")
_MAPPED_INTO_PACKAGE = (*SHIPPED_TREES, "buildctx")  # in a wheel these sit inside lbctl/: not lbctl's own files
_SKIP_DIRS = ("__pycache__",)
_SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")

_BACKEND_CONTAINERFILE = f"""\
ARG BASE
FROM ${{BASE}}
COPY backend.py /backend.py
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE {BACKEND_PORT}
CMD ["python3", "/backend.py"]
"""


class PodmanError(RuntimeError):
    pass


@dataclass(frozen=True)
class LabImages:
    """What ensure_lab_images() made: one archive holding every tag, and seconds per step (0.0: cached)."""
    archive: Path
    tags: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)


# --- the build context (pure but for reading the files) ---

def _tree(root: Path, prefix: str, skip_top: Iterable[str] = ()) -> dict[str, Path]:
    skip_top = set(skip_top)
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(_SKIP_SUFFIXES)
                             and not d.startswith(".") and not (here == root and d in skip_top))
        for name in filenames:
            if not name.endswith(_SKIP_SUFFIXES):
                path = here / name
                found[f"{prefix}/{path.relative_to(root).as_posix()}"] = path
    return found


def context_files(package: Path, trees: Mapping[str, Path], build_files: Path) -> dict[str, Path]:
    """{path in the build context: source file}. `package` is the lbctl package dir, `trees` the shipped trees
    by their top-level name, `build_files` the dir with TOP_FILES. The same for a checkout and a wheel."""
    files = {name: build_files / name for name in TOP_FILES}
    files.update(_tree(package, "lbctl", skip_top=_MAPPED_INTO_PACKAGE))
    for name, root in sorted(trees.items()):
        files.update(_tree(root, name))
    return files


def lbctl_context_files() -> dict[str, Path]:
    """The Dockerfile's context from the lbctl this process runs (a checkout or an installed wheel)."""
    return context_files(assets.package_dir(), {n: assets.shipped_dir(n) for n in SHIPPED_TREES},
                         assets.build_files_dir())


def content_key(files: Mapping[str, Path], *extra: str) -> str:
    """A digest of the files' names, exec bits and contents, and `extra` (e.g. the base image's ID)."""
    h = hashlib.sha256()
    for name in sorted(files):
        path = files[name]
        executable = os.access(path, os.X_OK)
        h.update(f"{name}\0{int(executable)}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    for e in extra:
        h.update(f"extra\0{e}\n".encode())
    return h.hexdigest()[:24]


def assemble(dest: Path, files: Mapping[str, Path]) -> None:
    """Copy `files` into `dest` (their context paths), keeping the exec bit."""
    for name, src in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        target.chmod(0o755 if os.access(src, os.X_OK) else 0o644)


# --- podman ---

def ensure_tools() -> float:
    """Install podman, runc and mmdebstrap from Debian when missing (needs root); returns seconds spent."""
    missing = [p for p in APT_PACKAGES if shutil.which(p) is None]
    if not missing:
        return 0.0
    started = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env,
                   capture_output=True, timeout=900)
    return time.monotonic() - started


def containers_conf() -> Path:
    path = CACHE / "containers.conf"
    if not path.is_file() or path.read_text() != _CONTAINERS_CONF:
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(_CONTAINERS_CONF)
        tmp.replace(path)
    return path


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CONTAINERS_CONF=str(containers_conf()))
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise PodmanError(f"podman {' '.join(args[:3])} … exited {proc.returncode}: {proc.stderr.strip()[-3000:]}")
    return proc


def image_id(tag: str) -> str | None:
    proc = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def _label(tag: str, key: str) -> str | None:
    proc = podman("image", "inspect", "--format", "{{json .Labels}}", tag, check=False)
    if proc.returncode != 0:
        return None
    return (json.loads(proc.stdout or "null") or {}).get(key)


_thread_lock = threading.RLock()
_lock_depth = 0


@contextmanager
def _locked() -> Iterator[None]:
    """Builds, tags and saves one at a time across processes (re-entrant within one)."""
    global _lock_depth
    with _thread_lock:
        if _lock_depth:
            _lock_depth += 1
            try:
                yield
            finally:
                _lock_depth -= 1
            return
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            _lock_depth = 1
            try:
                yield
            finally:
                _lock_depth = 0


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
    with _locked():
        if _label(BASE_TAG, "lbctl.base.recipe") == recipe:
            return 0.0
        started = time.monotonic()
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


def python_version(image: str) -> str:
    """The major.minor of `image`'s python3."""
    out = run(image, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout
    return out.strip()


def wheels(version: str, pyproject: Path | None = None) -> Path:
    """Every dependency of lbctl, and its build backend, as wheels for Python `version`, cached by requirements.

    Downloaded on the host (which trusts its own CA store and index settings) for the build to use offline.
    """
    project = tomllib.loads((pyproject or assets.build_files_dir() / "pyproject.toml").read_text())
    reqs = sorted([*project["project"]["dependencies"], *project["build-system"]["requires"]])
    key = hashlib.sha256(json.dumps([version, reqs]).encode()).hexdigest()[:16]
    target = CACHE / f"wheels-{key}"
    with _locked():
        if (target / ".complete").is_file():
            return target
        tmp = CACHE / f"wheels-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(tmp),
                               "--only-binary=:all:", "--python-version", version, *reqs],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise PodmanError(f"pip download of lbctl's dependencies failed: {proc.stderr.strip()[-3000:]}")
        (tmp / ".complete").write_text("\n".join(reqs) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.replace(target)
        return target


def _build(tag: str, key: str, make_context: Callable[[Path], list[str]], *, force: bool) -> float:
    """podman build of the context make_context(dir) writes (it returns extra build args), labelled `key`.

    Skipped (0.0) when `tag` already has the label; tags an image that has it instead of building. Returns
    seconds spent building. The image `tag` named before is removed unless something else still uses it.
    """
    with _locked():
        old = image_id(tag)
        if not force:
            if old and _label(tag, CONTENT_LABEL) == key:
                return 0.0
            same = [i.removeprefix("sha256:") for i in podman(
                "images", "--quiet", "--no-trunc", "--filter", f"label={CONTENT_LABEL}={key}", check=False).stdout.split()]
            if same:
                podman("tag", same[0], tag)
                if old and old != same[0]:
                    podman("rmi", old, check=False)
                return 0.0
        started = time.monotonic()
        CACHE.mkdir(parents=True, exist_ok=True)
        log = CACHE / f"build-{tag.rsplit('/', 1)[-1].replace(':', '-')}.log"
        with tempfile.TemporaryDirectory(prefix="context-", dir=CACHE) as tmp:
            ctx = Path(tmp)
            extra = make_context(ctx)
            # --layers=false: no intermediate images pile up in the host's storage.
            proc = podman("build", "--network", "none", "--pull=never", "--layers=false", "--force-rm",
                          "--label", f"{CONTENT_LABEL}={key}", *extra, "--tag", tag, str(ctx),
                          check=False, timeout=1200)
        log.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise PodmanError(f"podman build of {tag} exited {proc.returncode} (log: {log}): "
                              f"{proc.stderr.strip()[-3000:]}")
        new = image_id(tag)
        if old and old != new:
            podman("rmi", old, check=False)  # the replaced build, unless another tag or a container uses it
        return time.monotonic() - started


def build(tag: str = LBCTL_TAG, base: str = BASE_TAG, *, force: bool = False) -> float:
    """The top-level Dockerfile, built offline on `base` from the installed lbctl's files; returns seconds spent
    building (0.0: `tag` or another image already had this content). `force` builds even so."""
    with _locked():
        files = lbctl_context_files()
        base_id = image_id(base)
        if base_id is None:
            raise PodmanError(f"no base image {base}: run ensure_base() first")
        key = content_key(files, f"base={base_id}")

        def context(ctx: Path) -> list[str]:
            assemble(ctx, files)
            wheel_dir = wheels(python_version(base), files["pyproject.toml"])
            return ["--file", str(ctx / "Dockerfile"), "--build-arg", f"BASE={base}", "--build-arg", "WHEELS=/wheels",
                    "--volume", f"{wheel_dir}:/wheels:ro"]

        return _build(tag, key, context, force=force)


def backend_source() -> Path:
    return Path(__file__).resolve().with_name("backend.py")


def build_backend(tag: str = BACKEND_TAG, base: str = BASE_TAG, *, force: bool = False) -> float:
    """The backend image: lbctl/lab/backend.py as /backend.py on `base`, user 65532; returns seconds spent."""
    with _locked():
        base_id = image_id(base)
        if base_id is None:
            raise PodmanError(f"no base image {base}: run ensure_base() first")
        source = backend_source()
        h = hashlib.sha256(source.read_bytes() + _BACKEND_CONTAINERFILE.encode() + base_id.encode())
        key = "backend-" + h.hexdigest()[:24]

        def context(ctx: Path) -> list[str]:
            shutil.copyfile(source, ctx / "backend.py")
            (ctx / "Containerfile").write_text(_BACKEND_CONTAINERFILE)
            return ["--file", str(ctx / "Containerfile"), "--build-arg", f"BASE={base}"]

        return _build(tag, key, context, force=force)


def tag(source: str, target: str) -> None:
    """Point `target` at `source`'s image; the image `target` named before goes unless still used."""
    with _locked():
        old, new = image_id(target), image_id(source)
        if new is None:
            raise PodmanError(f"no image {source}")
        if old == new:
            return
        podman("tag", new, target)
        if old:
            podman("rmi", old, check=False)


def _archive(tags: Sequence[str]) -> tuple[Path, bool]:
    ids = {t: image_id(t) for t in tags}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise PodmanError(f"cannot save {', '.join(missing)}: no such image")
    tagset = hashlib.sha256(json.dumps(sorted(tags)).encode()).hexdigest()[:8]
    key = hashlib.sha256(json.dumps(sorted(ids.items())).encode()).hexdigest()[:16]
    out = CACHE / "archives" / f"{tagset}-{key}.tar"
    if out.is_file():
        return out, False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        # -m: every name is an image of its own (several images in one docker-archive, shared layers once);
        # two tags of one image become one entry with both RepoTags.
        podman("save", "--format", "docker-archive", "--multi-image-archive", "--output", str(tmp), *tags,
               timeout=600)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    for stale in out.parent.glob(f"{tagset}-*.tar"):
        if stale != out:
            stale.unlink(missing_ok=True)  # the same tags' earlier images
    return out, True


def archive(tags: str | Sequence[str]) -> Path:
    """A docker-archive tarball of the images under `tags` (one or several), as `ctr images import` reads it.

    Cached under the cache dir by the images' IDs: the same images under the same tags are saved once; a
    newer save of the same tags replaces the older file.
    """
    with _locked():
        return _archive([tags] if isinstance(tags, str) else list(tags))[0]


def ensure_lab_images() -> LabImages:
    """Everything the lab's nodes import: tools, base, LBCTL_TAG (also as LBCTL_NEXT_TAG) and BACKEND_TAG, and
    one archive of the three tags. Returns seconds per step: tools, base, lbctl, backend, archive, total
    (0.0: cached)."""
    started = time.monotonic()
    timings: dict[str, float] = {}
    with _locked():
        timings["tools"] = ensure_tools()
        timings["base"] = ensure_base()
        timings["lbctl"] = build(LBCTL_TAG)
        timings["backend"] = build_backend(BACKEND_TAG)
        tag(LBCTL_TAG, LBCTL_NEXT_TAG)
        t0 = time.monotonic()
        path, made = _archive(LAB_TAGS)
        timings["archive"] = time.monotonic() - t0 if made else 0.0
    timings["total"] = time.monotonic() - started
    return LabImages(archive=path, tags=LAB_TAGS, timings=timings)


# --- containers ---

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
                name: str, *, image: str = LBCTL_TAG, caps: Sequence[str] = SPEAKER_CAPS) -> str:
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
    return _start(name, args, image, argv)


def _start(name: str, args: Sequence[str], image: str, argv: Sequence[str]) -> str:
    """podman run --detach `args`: replaces a leftover container `name`, removes it again if the run fails."""
    remove(name)
    try:
        return podman(*args, image, *argv).stdout.strip()
    except BaseException:
        remove(name)
        raise


def run_backend(netns: str, name: str, env: Mapping[str, str], *, image: str = BACKEND_TAG,
                argv: Sequence[str] = ()) -> str:
    """Start the backend detached in /run/netns/`netns` as a pod would run it (its default user, no
    capabilities, read-only root); returns the container id. A leftover container `name` is replaced."""
    args = ["run", "--detach", "--pull=never", "--name", name, "--network", f"ns:/run/netns/{netns}",
            "--read-only", "--security-opt", "no-new-privileges", "--cap-drop", "ALL"]
    args += [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
    return _start(name, args, image, argv)


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
