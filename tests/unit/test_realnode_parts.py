"""The pieces of a real node that need no root: the pause image's archive and the missing-binary message."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from lbctl.lab import kubebins, ociarchive, realnode


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


def test_cgroup_walk_survives_a_cgroup_removed_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """runc deletes a dead container's cgroup while stop() lists the node's processes (seen: a teardown error)."""
    hierarchy = tmp_path / "pids"
    for d, pids in (("rn-node", "1\n"), ("rn-node/kubepods", "2\n"), ("rn-node/kubepods/gone", "3\n")):
        (hierarchy / d).mkdir(parents=True)
        (hierarchy / d / "cgroup.procs").write_text(pids)
    mounts = tmp_path / "mounts"
    mounts.write_text(f"cgroup {hierarchy} cgroup rw,pids 0 0\n")
    monkeypatch.setattr(realnode, "CGROUP_MOUNTS", mounts)
    real_scandir = os.scandir

    def vanishing(path: Any) -> Any:
        if str(path).endswith("/gone"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", vanishing)
    node = realnode.RealNode("node", "rn-node", "198.18.0.21", tmp_path / "w", tmp_path / "kc")
    assert node.pids_in_cgroup() >= {1, 2}


def test_stop_runs_every_step_when_one_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A teardown error (the cgroup walk above) once left containerd and the namespace holder running."""
    node = realnode.RealNode("node", "rn-none", "198.18.0.21", tmp_path / "w", tmp_path / "kc")
    killed: list[int | None] = []
    monkeypatch.setattr(realnode.RealNode, "_pid", lambda self, name: {"kubelet": 1, "containerd": 2,
                                                                       "holder": 3}[name])
    monkeypatch.setattr(realnode.RealNode, "_kill", lambda self, pid, grace: killed.append(pid))

    def broken(self: realnode.RealNode, find: Any) -> None:
        raise FileNotFoundError("a cgroup vanished")
    monkeypatch.setattr(realnode.RealNode, "_kill_all", broken)
    monkeypatch.setattr(realnode, "_remove_cgroups", lambda name: [])
    with pytest.raises(FileNotFoundError):
        node.stop()
    assert killed == [1, 2, 3]
