"""Rolling upgrades on the real-cluster lab: `helm upgrade` of the running release to another image tag (or
other values), and waiting for the DaemonSet and Deployment controllers to finish rolling it out."""

from __future__ import annotations

import time
from typing import Any

import yaml

from .api import LabApi
from .cluster import NAMESPACE, RELEASE
from .controlplane import ControlPlane
from .processes import STATE
from .topology import CP_IP4, CP_NS

APPS = f"/apis/apps/v1/namespaces/{NAMESPACE}"


class RolloutError(RuntimeError):
    pass


def control_plane() -> ControlPlane:
    """The running lab's API server as helm reaches it (the admin kubeconfig, from inside the lab)."""
    return ControlPlane(host=CP_IP4, port=6443, netns=CP_NS, workdir=STATE / "cp")


def values() -> dict[str, Any]:
    return yaml.safe_load(control_plane().helm("get", "values", RELEASE, "-n", NAMESPACE, "-o", "yaml").stdout) or {}


def upgrade(changes: dict[str, Any]) -> None:
    """`helm upgrade` of the release with its current values and `changes` merged in (on stdin)."""
    merged = _merge(values(), changes)
    cp = control_plane()
    cp.helm("upgrade", RELEASE, str(_chart()), "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump(merged))


def _chart() -> Any:
    from lbctl import assets  # noqa: PLC0415
    return assets.chart_dir()


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def rolled_out(obj: dict[str, Any]) -> bool:
    """The controller has seen the latest spec and every pod is updated and available."""
    st, meta = obj.get("status") or {}, obj["metadata"]
    if st.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    if obj["kind"] == "DaemonSet":
        want = st.get("desiredNumberScheduled", 0)
        return want > 0 and st.get("updatedNumberScheduled") == want == st.get("numberAvailable") \
            and not st.get("numberUnavailable")
    want = (obj.get("spec") or {}).get("replicas", 1)
    return st.get("updatedReplicas") == want == st.get("availableReplicas") == st.get("replicas")


def wait(api: LabApi, kind: str, name: str, timeout: float = 300) -> float:
    """Wait until the DaemonSet/Deployment `name` is rolled out; returns the seconds it took."""
    path = f"{APPS}/{kind.lower()}s/{name}"
    started = time.monotonic()
    while True:
        obj = api.get(path)
        obj.setdefault("kind", kind)
        if rolled_out(obj):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RolloutError(f"{kind} {name} not rolled out after {timeout:.0f} s: {obj.get('status')}")
        time.sleep(0.25)
