"""`lbctl lab kubectl` and `lbctl lab shell`: use the running lab by hand, from the inside.

The lab's API server listens on a lab address, which must only be dialled from a lab namespace: both
commands exec into one (lbctl-cp by default) with the admin kubeconfig, kubectl and helm on PATH.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import k8sbin
from .cluster import ADMIN_KUBECONFIG
from .lifecycle import LabError, load_topology, require_root
from .processes import STATE


def _namespace(where: str) -> str:
    topo = load_topology()
    names = [h.name for h in topo.hosts]
    if where not in names:
        raise LabError(f"no lab host {where!r}; choose one of {', '.join(names)}")
    return topo.host(where).netns


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(Path(k8sbin.kubectl()).parent), str(Path(sys.executable).parent),
                            os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
    return dict(os.environ, KUBECONFIG=str(ADMIN_KUBECONFIG), PATH=path)


def kubectl(args: list[str], where: str = "cp") -> int:
    require_root()
    ns = _namespace(where)
    os.execvpe("ip", ["ip", "netns", "exec", ns, str(k8sbin.kubectl()), *args], _env())


def shell(where: str = "cp", command: list[str] | None = None) -> int:
    require_root()
    ns = _namespace(where)
    if command:
        os.execvpe("ip", ["ip", "netns", "exec", ns, *command], _env())
    rc = STATE / "shellrc"
    rc.write_text(f"[ -f ~/.bashrc ] && . ~/.bashrc\nPS1='[lbctl-lab {where}] \\w\\$ '\n"
                  f"echo 'lab namespace {ns}; KUBECONFIG, kubectl, helm and lbctl are set up. exit to leave.'\n")
    os.execvpe("ip", ["ip", "netns", "exec", ns, "bash", "--rcfile", str(rc), "-i"], _env())
