"""The pieces of a real node that need no root: the pause image's archive and the missing-binary message."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from lbctl.lab import kubebins, ociarchive


def test_archive_is_a_docker_archive_with_one_layer(tmp_path: Path) -> None:
    out = tmp_path / "pause.tar"
    diff_id = ociarchive.write(out, "localhost/x:1", {"/pause": (b"\x7fELF-binary", 0o755)}, ["/pause"])
    with tarfile.open(out) as tar:
        [manifest] = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest["RepoTags"] == ["localhost/x:1"]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        layer = tar.extractfile(manifest["Layers"][0]).read()  # type: ignore[union-attr]
    assert config["rootfs"]["diff_ids"] == [diff_id] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/pause"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        [member] = inner.getmembers()
        assert (member.name, member.mode) == ("pause", 0o755)
        assert inner.extractfile(member).read() == b"\x7fELF-binary"  # type: ignore[union-attr]


def test_archive_is_reproducible(tmp_path: Path) -> None:
    files = {"/pause": (b"x", 0o755)}
    ociarchive.write(tmp_path / "a.tar", "t:1", files, ["/pause"])
    ociarchive.write(tmp_path / "b.tar", "t:1", files, ["/pause"])
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_missing_binaries_name_the_build_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LBCTL_CACHE", str(tmp_path))
    (tmp_path / "bin").mkdir()
    ok = tmp_path / "bin" / "kubelet"
    ok.write_text("#!/bin/sh\n")
    ok.chmod(0o755)
    assert kubebins.require("kubelet") == {"kubelet": ok}
    with pytest.raises(kubebins.MissingBinary) as err:
        kubebins.require("kubelet", "pause", "kube-scheduler")
    assert "build-apiserver.sh pause kube-scheduler`" in str(err.value)
    assert str(err.value).startswith("pause, kube-scheduler not built")
