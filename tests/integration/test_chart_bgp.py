"""The chart's BGP mode (bgp.enabled): the BIRD sidecar and its rights, as rendered and as the API server
grants them (`kubectl auth can-i` as the speaker's ServiceAccount of a release with and without BGP)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from lbctl import assets
from lbctl.lab import k8sbin
from lbctl.lab.controlplane import ControlPlane

CHART = str(assets.chart_dir())
PEER = {"name": "tor1", "myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.1.1"}


def template(values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(k8sbin.helm()), "template", "r", CHART, "--namespace", "ns", "--values", "-"],
                          input=json.dumps(values), capture_output=True, text=True)


def pod(values: dict[str, Any]) -> dict[str, Any]:
    res = template(values)
    assert res.returncode == 0, res.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(res.stdout) if d}
    return docs[("DaemonSet", "r-lbctl-speaker")]["spec"]["template"]["spec"]


def test_bgp_off_renders_no_sidecar() -> None:
    spec = pod({})
    assert [c["name"] for c in spec["containers"]] == ["speaker"]
    assert "--bgp" not in spec["containers"][0]["args"]
    assert [v["name"] for v in spec["volumes"]] == ["heartbeat-key"]


def test_bgp_on_adds_the_sidecar_with_no_capability() -> None:
    spec = pod({"bgp": {"enabled": True, "peers": [PEER], "sidecar": {"resources": {"limits": {"memory": "64Mi"}}}}})
    speaker, bgp = spec["containers"]
    assert bgp["name"] == "bgp" and bgp["image"] == speaker["image"]  # the same image
    assert bgp["command"] == ["python", "-m", "lbctl.speaker.bgpd"] and "--run-dir=/run/lbctl-bgp" in bgp["args"]
    assert {"--bgp", "--bgp-run-dir=/run/lbctl-bgp"} <= set(speaker["args"])
    assert bgp["securityContext"] == {"runAsUser": 0, "runAsGroup": 0, "privileged": False,
                                      "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                      "capabilities": {"drop": ["ALL"]}}
    assert bgp["resources"] == {"limits": {"memory": "64Mi"}}
    mounts = {c["name"]: [m["mountPath"] for m in c["volumeMounts"] if m["name"] == "bgp-run"] for c in (speaker, bgp)}
    assert mounts == {"speaker": ["/run/lbctl-bgp"], "bgp": ["/run/lbctl-bgp"]}
    assert {"name": "bgp-run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}} in spec["volumes"]


@pytest.mark.parametrize("peers,net_admin,want", [
    ([{**PEER, "bfdProfile": "fast"}], "auto", True),  # a peer with BFD: BIRD sets SO_PRIORITY on BFD sockets
    ([PEER], "auto", False),
    ([{**PEER, "bfdProfile": "fast"}], False, False),
    ([], True, True),  # peers made outside the chart that use BFD
])
def test_net_admin_only_for_bfd(peers: list, net_admin: Any, want: bool) -> None:
    spec = pod({"bgp": {"enabled": True, "peers": peers, "bfdProfiles": [{"name": "fast"}],
                        "sidecar": {"netAdmin": net_admin}}})
    caps = spec["containers"][1]["securityContext"]["capabilities"]
    assert caps.get("add", []) == (["NET_ADMIN"] if want else [])


@pytest.mark.parametrize("values,complaint", [
    ({"bgp": {"enabled": "yes"}}, "/bgp/enabled"),
    ({"bgp": {"sidecar": {"netAdmin": "maybe"}}}, "/bgp/sidecar/netAdmin"),
    ({"bgp": {"sidecar": {"nope": 1}}}, "nope"),
])
def test_schema_names_the_bad_bgp_value(values: dict, complaint: str) -> None:
    res = template(values)
    assert res.returncode != 0 and complaint in res.stderr, res.stderr


def can_i(cp: ControlPlane, sa: str, verb: str, resource: str, namespace: str) -> bool:
    res = subprocess.run([str(k8sbin.kubectl()), "--kubeconfig", str(cp.kubeconfig()), "auth", "can-i", verb,
                          resource, f"--as=system:serviceaccount:{sa}", "--namespace", namespace],
                         capture_output=True, text=True)
    return res.stdout.strip() == "yes"


def test_rbac_of_the_speaker_with_and_without_bgp(control_plane: ControlPlane) -> None:
    release, ns = "bgpc", "bgpc-system"
    on, off = f"{ns}:{release}-lbctl-speaker", "lbctl-system:lbctl-speaker"  # the session's release: BGP off
    try:
        control_plane.install_chart(release, ns, {"pools": [], "bgp": {"enabled": True}})
        for verb in ("list", "watch"):
            for resource in ("bgppeers.lbctl.io", "bfdprofiles.lbctl.io"):
                assert can_i(control_plane, on, verb, resource, "")
                assert not can_i(control_plane, off, verb, resource, "")
            assert can_i(control_plane, on, verb, "secrets", ns)  # the password Secrets live there
            assert not can_i(control_plane, on, verb, "secrets", "default")
            assert not can_i(control_plane, off, verb, "secrets", "lbctl-system")
        for verb in ("get", "create", "update", "patch", "delete"):
            assert not can_i(control_plane, on, verb, "secrets", ns)
            assert not can_i(control_plane, on, verb, "bgppeers.lbctl.io", "")
    finally:
        control_plane.helm("uninstall", release, "--namespace", ns, check=False)
