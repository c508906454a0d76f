"""The Kubernetes binaries build-apiserver.sh builds from Debian's source and caches (kube-apiserver, kubelet,
kube-controller-manager, kube-scheduler, kube-proxy, pause), and the Debian packages a real node runs.

A missing one is an error naming the command that builds it: building takes minutes and needs the heavy lock
on a shared machine, so nothing but the API server (ensure_apiserver) builds on demand.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lbctl import assets

BUILT = ("kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "pause")
# Debian packages a real node needs (binary -> package).
PACKAGED = {"containerd": "containerd", "ctr": "containerd", "runc": "runc", "nsenter": "util-linux",
            "unshare": "util-linux", "iptables": "iptables"}
CNI_BIN = Path("/usr/lib/cni")  # containernetworking-plugins


class MissingBinary(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("LBCTL_CACHE") or Path.home() / ".cache" / "lbctl") / "bin"


def build_command(*names: str) -> str:
    return f"bash {assets.apiserver_build_script()} {' '.join(names)}".strip()


def require(*names: str) -> dict[str, Path]:
    """Paths of the named binaries (built ones from the cache, packaged ones from PATH); MissingBinary names
    every one that is missing and how to get it."""
    found: dict[str, Path] = {}
    unbuilt, packages = [], set()
    for name in names:
        if name in BUILT:
            path = cache_dir() / name
            if os.access(path, os.X_OK):
                found[name] = path
            else:
                unbuilt.append(name)
        elif name in PACKAGED:
            which = shutil.which(name)
            if which:
                found[name] = Path(which)
            else:
                packages.add(PACKAGED[name])
        else:
            raise ValueError(f"unknown binary {name!r}")
    if "containerd" in names and not (CNI_BIN / "bridge").exists():  # containerd's CRI needs the plugins
        packages.add("containernetworking-plugins")
    hints = []
    if unbuilt:
        hints.append(f"{', '.join(unbuilt)} not built: run `{build_command(*unbuilt)}` (minutes)")
    if packages:
        hints.append(f"missing Debian packages: run `apt-get install {' '.join(sorted(packages))}`")
    if hints:
        raise MissingBinary("; ".join(hints))
    return found
