"""Last step of the lab's kubelet: set up a pod's mounts and security context, then exec the container.

Run as root as `ip netns exec NS unshare --mount --propagation private python -m lbctl.lab.podexec RUN.json`:
the mount namespace is private, so nothing done here is seen by the host. Volumes are bind-mounted at their
mountPath; where that path does not exist on the host, its deepest existing ancestor gets an overlay whose
upper layer is tmpfs, so the host's directories are never created or changed. The container's user,
capabilities (bounding, inheritable and ambient sets cut to what it adds), no_new_privs and read-only root
are applied by util-linux `setpriv`, which then execs the command: the PID stays the one the launcher recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def _mount(*args: str) -> None:
    res = subprocess.run(["mount", *args], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"podexec: mount {' '.join(args)}: {res.stderr.strip()}")


def _deepest_existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def make_mountpoint(target: Path, scratch: Path, overlays: list[Path]) -> None:
    """Create `target` without touching the host: overlay the nearest existing ancestor unless one of ours
    already covers it."""
    if target.exists():
        return
    anchor = _deepest_existing(target)
    if not any(anchor == o or o in anchor.parents for o in overlays):
        if anchor == Path("/"):
            raise SystemExit(f"podexec: cannot create mount point {target}: it would need an overlay on /")
        layer = scratch / f"overlay{len(overlays)}"
        (layer / "upper").mkdir(parents=True)
        (layer / "work").mkdir()
        _mount("-t", "overlay", "overlay", "-o",
               f"lowerdir={anchor},upperdir={layer / 'upper'},workdir={layer / 'work'}", str(anchor))
        overlays.append(anchor)
    target.mkdir(parents=True)


def _blocks_others(path: Path) -> bool:
    return not os.stat(path).st_mode & 0o001


def expose(needed: list[Path], scratch: Path) -> None:
    """Let any user reach `needed` (this Python environment) although an ancestor is 0700 (a root-only home or
    temporary directory): such an ancestor is shadowed by a 0755 tmpfs into which only the needed children are
    bind-mounted back. Only this mount namespace sees it; the host's permissions stay as they are."""
    shadowed: set[Path] = set()
    pending = sorted({p.resolve() for p in needed})
    for target in pending:
        for anchor in [*reversed(target.parents), target][:-1]:
            if anchor in shadowed or not _blocks_others(anchor):
                continue
            if any(t == anchor or t in anchor.parents for t in pending):
                children = sorted(anchor.iterdir())  # needed as a whole (a source root): keep all it holds
            else:
                children = sorted({Path(anchor, t.relative_to(anchor).parts[0]) for t in pending
                                   if anchor in t.parents})
            keep = []
            for i, child in enumerate(children):
                held = scratch / f"keep{len(shadowed)}-{i}"
                held.mkdir(parents=True) if child.is_dir() else held.touch()
                _mount("--bind", str(child), str(held))
                keep.append((child, held))
            _mount("-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", str(anchor))
            for child, held in keep:
                child.mkdir() if held.is_dir() else child.touch()
                _mount("--bind", str(held), str(child))
            shadowed.add(anchor)


def python_paths() -> list[Path]:
    """What a process needs to run this Python: the environment and the interpreter's own installation."""
    return [Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parent]


def setpriv_argv(run: dict[str, Any]) -> list[str]:
    caps = ",".join(["-all"] + [f"+{c.lower()}" for c in run["caps"]])
    argv = ["setpriv", "--bounding-set", caps, "--inh-caps", "-all", "--ambient-caps", "-all"]
    if run["uid"] != 0:
        argv += ["--reuid", str(run["uid"]), "--regid", str(run["gid"]), "--clear-groups"]
    if run["no_new_privs"]:
        argv.append("--no-new-privs")
    return [*argv, "--", *run["argv"]]


def main() -> None:
    spec_file = Path(sys.argv[1])
    run = json.loads(spec_file.read_text())
    # A fresh scratch dir per start: a restarted pod must not trip over its predecessor's overlay layers.
    scratch = Path(tempfile.mkdtemp(prefix="mnt-", dir=spec_file.parent))
    overlays: list[Path] = []
    for m in sorted(run["mounts"], key=lambda m: m["target"]):
        # Resolve symlinks in the existing part (/var/run -> /run) so overlays land on real directories.
        target = Path(os.path.realpath(m["target"]))
        make_mountpoint(target, scratch, overlays)
        _mount("--bind", m["source"], str(target))
        if m["read_only"]:
            _mount("-o", "remount,bind,ro", str(target))
    if run["uid"] != 0:
        extra = [Path(p) for p in run["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        expose(python_paths() + extra, scratch)
    if run["read_only_root"]:
        _mount("-o", "remount,bind,ro", "/")
    os.chdir("/")
    argv = setpriv_argv(run)
    os.execvpe(argv[0], argv, run["env"])


if __name__ == "__main__":
    main()
