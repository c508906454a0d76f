"""Malformed BGPPeers and BFDProfiles against the real API server and the real controller (as the chart's
ServiceAccount): what openAPI can say is refused at `kubectl apply`, the rest lands on the object's Valid
condition with the field and value named, with a Warning Event; a good peer is Valid; a restarted controller
rewrites nothing."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from lbctl.kube.client import ApiError
from lbctl.kube.sync import SyncKube
from lbctl.lab import k8sbin
from lbctl.lab.controlplane import ControlPlane
from tests.conftest import ControllerProcess
from tests.wait import wait_for

PEERS = "/apis/lbctl.io/v1alpha1/bgppeers"
PROFILES = "/apis/lbctl.io/v1alpha1/bfdprofiles"
GOOD = {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.7.1"}


def _peer(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "lbctl.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": name}, "spec": spec}


def _profile(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "lbctl.io/v1alpha1", "kind": "BFDProfile", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def made(kube: SyncKube) -> Iterator[list[str]]:
    """Paths of the objects a test creates; deleted afterwards."""
    paths: list[str] = []
    yield paths
    for path in paths:
        try:
            kube.delete(path)
        except ApiError:
            pass


def _create(kube: SyncKube, made: list[str], coll: str, doc: dict[str, Any]) -> None:
    kube.create(coll, doc)
    made.append(f"{coll}/{doc['metadata']['name']}")


def _valid(kube: SyncKube, coll: str, name: str, generation: int = 1) -> dict[str, Any] | None:
    obj = kube.get(f"{coll}/{name}")
    cond = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Valid"), None)
    return cond if cond and cond.get("observedGeneration") == generation else None


def _events(kube: SyncKube, name: str, kind: str = "BGPPeer") -> list[dict[str, Any]]:
    return kube.get("/api/v1/namespaces/default/events",
                    fieldSelector=f"involvedObject.name={name},involvedObject.kind={kind}")["items"]


def _writes(ctl: ControllerProcess, kind: str) -> float:
    m = re.search(rf'^lbctl_bgp_status_writes_total{{kind="{kind}"}} (\S+)$', ctl.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("bad,field", [
    ({"peerASN": 4294967296}, "spec.peerASN"),
    ({"peerPort": 0}, "spec.peerPort"),
    ({"holdTime": "90 seconds"}, "spec.holdTime"),
    ({"peerAddress": "tor1.example"}, "spec.peerAddress"),
])
def test_kubectl_apply_refuses_what_the_schema_can_say(control_plane: ControlPlane, kube: SyncKube,
                                                       bad: dict[str, Any], field: str) -> None:
    doc = _peer("it-bgp-refused", **{**GOOD, **bad})
    res = subprocess.run([str(k8sbin.kubectl()), "--kubeconfig", str(control_plane.kubeconfig()), "apply", "-f", "-"],
                         input=json.dumps(doc), capture_output=True, text=True)
    assert res.returncode != 0 and field in res.stderr, res.stderr
    assert not kube.exists(f"{PEERS}/it-bgp-refused")


@pytest.mark.parametrize("bad,field", [
    ({"detectMultiplier": 1}, "spec.detectMultiplier"),
    ({"receiveInterval": 5}, "spec.receiveInterval"),
    ({"echoMode": "yes"}, "spec.echoMode"),
])
def test_kubectl_apply_refuses_a_malformed_bfdprofile(control_plane: ControlPlane, kube: SyncKube,
                                                      bad: dict[str, Any], field: str) -> None:
    res = subprocess.run([str(k8sbin.kubectl()), "--kubeconfig", str(control_plane.kubeconfig()), "apply", "-f", "-"],
                         input=json.dumps(_profile("it-bgp-refused", **bad)), capture_output=True, text=True)
    assert res.returncode != 0 and field in res.stderr, res.stderr
    assert not kube.exists(f"{PROFILES}/it-bgp-refused")


INVALID = {  # accepted by the schema; the condition names the field and the value
    "it-bgp-keep": ({"holdTime": "9s", "keepaliveTime": "10s"}, ["spec.keepaliveTime (10s)", "spec.holdTime (9s)"]),
    "it-bgp-hold": ({"holdTime": "2s"}, ["spec.holdTime", "'2s'"]),
    "it-bgp-frac": ({"holdTime": "90.5s"}, ["spec.holdTime", "90.5s"]),
    "it-bgp-fam": ({"sourceAddress": "2001:db8::7"}, ["spec.sourceAddress", "2001:db8::7"]),
    "it-bgp-nobfd": ({"bfdProfile": "it-bgp-missing"}, ["spec.bfdProfile", "'it-bgp-missing'"]),
    "it-bgp-echo": ({"bfdProfile": "it-bgp-echo"}, ["BFDProfile 'it-bgp-echo' is invalid", "spec.echoMode"]),
    # unknown fields are kept (not pruned) so that they are named: MetalLB's plain-text password, a typo
    "it-bgp-pw": ({"password": "secret"}, ["spec.password is not a field", "passwordSecret"]),
    "it-bgp-typo": ({"holdtime": "30s"}, ["spec.holdtime is not a field", "holdTime"]),
}


def test_what_the_schema_cannot_say_lands_on_the_condition(kube: SyncKube, controller: ControllerProcess,
                                                           made: list[str]) -> None:
    _create(kube, made, PROFILES, _profile("it-bgp-echo", echoMode=True))
    _create(kube, made, PROFILES, _profile("it-bgp-typo", receiveIntervall=100))
    for i, (name, (spec, _)) in enumerate(INVALID.items()):
        _create(kube, made, PEERS, _peer(name, **{**GOOD, "peerAddress": f"198.18.7.{10 + i}", **spec}))
    _create(kube, made, PEERS, _peer("it-bgp-good", **GOOD, passwordSecret={"name": "tor-pw"}))
    _create(kube, made, PEERS, _peer("it-bgp-twin", **GOOD))  # same address and port as it-bgp-good

    good = wait_for(lambda: _valid(kube, PEERS, "it-bgp-good"), 20, what="it-bgp-good's Valid condition")
    assert good["status"] == "True" and good["reason"] == "Valid"
    assert good["message"].startswith("AS 64513 at 198.18.7.1:179") and "checked by the speakers" in good["message"]
    twin = wait_for(lambda: _valid(kube, PEERS, "it-bgp-twin"), 20, what="it-bgp-twin's Valid condition")
    assert twin["status"] == "False" and "duplicates BGPPeer it-bgp-good" in twin["message"]
    echo = wait_for(lambda: _valid(kube, PROFILES, "it-bgp-echo"), 20, what="the BFDProfile's Valid condition")
    assert echo["status"] == "False" and "spec.echoMode" in echo["message"]
    typo = wait_for(lambda: _valid(kube, PROFILES, "it-bgp-typo"), 20, what="the BFDProfile's Valid condition")
    assert typo["status"] == "False" and typo["message"].startswith("spec.receiveIntervall is not a field")
    for name, (_, named) in INVALID.items():
        cond = wait_for(lambda: _valid(kube, PEERS, name), 20, what=f"{name}'s Valid condition")
        assert cond["status"] == "False" and cond["reason"] == "Invalid", cond
        assert all(n in cond["message"] for n in named), (named, cond["message"])
        ev = wait_for(lambda: [e for e in _events(kube, name) if e["reason"] == "Invalid"], 20, what=f"{name}'s Event")
        assert ev[0]["type"] == "Warning" and ev[0]["message"] == cond["message"]
    assert kube.get(f"{PEERS}/it-bgp-good")["status"]["observedGeneration"] == 1

    # the missing profile appears: that peer turns Valid (a Normal Event), its generation unchanged
    _create(kube, made, PROFILES, _profile("it-bgp-missing"))
    fixed = wait_for(lambda: (c := _valid(kube, PEERS, "it-bgp-nobfd")) and c["status"] == "True" and c, 20,
                     what="it-bgp-nobfd Valid once its BFDProfile exists")
    assert fixed["reason"] == "Valid"
    wait_for(lambda: [e for e in _events(kube, "it-bgp-nobfd") if e["type"] == "Normal"], 20, what="a Normal Event")
    # a spec edit: judged again, observedGeneration follows
    kube.patch(f"{PEERS}/it-bgp-keep", {"spec": {"keepaliveTime": "3s"}})
    cond = wait_for(lambda: _valid(kube, PEERS, "it-bgp-keep", generation=2), 20, what="generation 2 judged")
    assert cond["status"] == "True"

    # A restarted controller finds every verdict written: it writes only the one new peer's status.
    controller.stop()
    controller.start()
    _create(kube, made, PEERS, _peer("it-bgp-late", **{**GOOD, "peerAddress": "198.18.7.99"}))
    wait_for(lambda: _valid(kube, PEERS, "it-bgp-late"), 20, what="the new peer's condition after the restart")
    assert (_writes(controller, "BGPPeer"), _writes(controller, "BFDProfile")) == (1.0, 0.0)
