"""The one Kubernetes client, through its blocking facade and the lab's JSON batch runner, on the real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lbctl.lab.controlplane import RELEASE, SA_NS, ControlPlane, free_port
from lbctl.kube import config
from lbctl.kube.client import STRATEGIC, ApiError
from lbctl.kube.sync import SyncKube

NS = "kube-client-test"
CMS = f"/api/v1/namespaces/{NS}/configmaps"


@pytest.fixture(scope="module")
def ns(kube: SyncKube) -> str:
    if not kube.exists(f"/api/v1/namespaces/{NS}"):
        kube.create("/api/v1/namespaces", {"metadata": {"name": NS}})
    return NS


def test_verbs_and_errors(kube: SyncKube, ns: str) -> None:
    made = kube.create(CMS, {"metadata": {"name": "a", "labels": {"k": "v"}}, "data": {"x": "1"}})
    assert made["data"] == {"x": "1"} and kube.exists(f"{CMS}/a")
    with pytest.raises(ApiError) as err:
        kube.create(CMS, {"metadata": {"name": "a"}})
    assert err.value.status == 409 and err.value.reason == "AlreadyExists"

    assert kube.patch(f"{CMS}/a", {"data": {"y": "2"}})["data"] == {"x": "1", "y": "2"}
    assert kube.patch(f"{CMS}/a", {"metadata": {"labels": {"s": "t"}}}, STRATEGIC)["metadata"]["labels"] == \
        {"k": "v", "s": "t"}
    current = kube.get(f"{CMS}/a")
    replaced = kube.replace(f"{CMS}/a", {"metadata": {"name": "a", "resourceVersion": current["metadata"]["resourceVersion"]},
                                         "data": {"z": "3"}})
    assert replaced["data"] == {"z": "3"}
    with pytest.raises(ApiError) as err:  # a stale resourceVersion is a conflict, not a silent overwrite
        kube.replace(f"{CMS}/a", {"metadata": {"name": "a", "resourceVersion": current["metadata"]["resourceVersion"]}})
    assert err.value.status == 409

    kube.create(CMS, {"metadata": {"name": "b", "labels": {"k": "w"}}})
    assert [c["metadata"]["name"] for c in kube.list(CMS, labelSelector="k=w")] == ["b"]
    assert {"a", "b"} <= {c["metadata"]["name"] for c in kube.list(CMS)}

    with pytest.raises(ApiError) as err:
        kube.create(CMS, {"metadata": {"name": "Not_Valid"}})
    assert err.value.status == 422 and "Not_Valid" in err.value.message

    kube.delete(f"{CMS}/a")
    kube.delete(f"{CMS}/a")  # already gone: not an error
    assert not kube.exists(f"{CMS}/a")
    with pytest.raises(ApiError) as err:
        kube.get(f"{CMS}/a")
    assert err.value.status == 404
    kube.delete(f"{CMS}/b")


def test_rbac_applies_to_the_identity(control_plane: ControlPlane) -> None:
    with SyncKube(config.from_kubeconfig(control_plane.service_account_kubeconfig(SA_NS, f"{RELEASE}-speaker"))) as sp:
        with pytest.raises(ApiError) as err:
            sp.list("/api/v1/namespaces/kube-system/secrets")
        assert err.value.status == 403


def test_closed_facade_refuses_calls(control_plane: ControlPlane) -> None:
    k = SyncKube(config.from_kubeconfig(control_plane.kubeconfig()))
    assert k.get("/api/v1/namespaces/default")["metadata"]["name"] == "default"
    k.close()
    k.close()
    with pytest.raises(RuntimeError, match="closed"):
        k.get("/api/v1/namespaces/default")


def apicall(kubeconfig: Path, calls: list[dict]) -> list[dict]:
    res = subprocess.run([sys.executable, "-m", "lbctl.lab.apicall", str(kubeconfig)], input=json.dumps(calls),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_lab_apicall_contract(control_plane: ControlPlane, kube: SyncKube, ns: str) -> None:
    svcs = f"/api/v1/namespaces/{ns}/services"
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "applied", "namespace": ns},
           "spec": {"ports": [{"port": 80}]}}
    relabel = dict(svc, metadata=dict(svc["metadata"], labels={"v": "2"}))
    out = apicall(control_plane.kubeconfig(), [
        {"method": "APPLY", "path": svcs, "body": svc},
        {"method": "APPLY", "path": svcs, "body": relabel},  # exists: merge-patched, server-filled fields kept
        {"method": "GET", "path": svcs, "params": {"labelSelector": "v=2"}},
        {"method": "PATCH", "path": f"{svcs}/applied", "body": {"metadata": {"annotations": {"a": "b"}}},
         "content_type": "application/merge-patch+json"},
        {"method": "GET", "path": f"{svcs}/missing"},
        {"method": "GET", "path": "/readyz"},  # not JSON
        {"method": "DELETE", "path": f"{svcs}/applied"},
    ])
    assert [r["status"] for r in out] == [201, 200, 200, 200, 404, 200, 200]
    assert out[1]["body"]["metadata"]["labels"] == {"v": "2"}
    assert out[1]["body"]["spec"]["clusterIP"] == out[0]["body"]["spec"]["clusterIP"]
    assert [s["metadata"]["name"] for s in out[2]["body"]["items"]] == ["applied"]
    assert out[3]["body"]["metadata"]["annotations"] == {"a": "b"}
    assert out[4]["body"]["reason"] == "NotFound"
    assert out[5]["body"] == {"message": "ok"}
    assert not kube.exists(f"{svcs}/applied")


def test_lab_apicall_reports_an_unreachable_server(control_plane: ControlPlane, tmp_path: Path) -> None:
    doc = control_plane.kubeconfig().read_text().replace(control_plane.url, f"https://127.0.0.1:{free_port()}")
    (tmp_path / "kubeconfig").write_text(doc)
    (tmp_path / "apiserver.crt").write_bytes((control_plane.workdir / "apiserver.crt").read_bytes())
    [r] = apicall(tmp_path / "kubeconfig", [{"method": "GET", "path": "/api/v1/namespaces"}])
    assert r["status"] == 0 and r["body"]["message"]
