"""The ServiceAccount token (tokenFile) is cached: read again when the file changes (inode, mtime, size) or a
minute after the last read, as client-go does; never on every request."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lbctl.kube import config
from lbctl.kube.config import KubeConfig


def test_unchanged_token_file_is_not_read_again(tmp_path: Path, monkeypatch: Any) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    st = token.stat()
    cfg = KubeConfig(server="https://k.example", token_file=str(token))
    assert cfg.authorization() == "Bearer first"
    # Same inode, size and mtime, new bytes: a request must not have read the file again.
    with open(token, "r+") as f:
        f.write("FIRST")
    os.utime(token, ns=(st.st_atime_ns, st.st_mtime_ns))
    for _ in range(100):
        assert cfg.authorization() == "Bearer first"


def test_rotated_token_is_read_at_once(tmp_path: Path) -> None:
    # kubelet rotates a projected token by swapping the ..data symlink: a new inode behind the same path.
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "token").write_text("first\n")
    (tmp_path / "data").symlink_to("v1")
    cfg = KubeConfig(server="https://k.example", token_file=str(tmp_path / "data" / "token"))
    assert cfg.authorization() == "Bearer first"
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "token").write_text("secnd\n")  # same size
    (tmp_path / "new").symlink_to("v2")
    os.replace(tmp_path / "new", tmp_path / "data")
    assert cfg.authorization() == "Bearer secnd"


def test_token_is_read_again_after_a_minute_even_if_it_looks_unchanged(tmp_path: Path, monkeypatch: Any) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    st = token.stat()
    now = [1000.0]
    monkeypatch.setattr(config, "_monotonic", lambda: now[0])
    cfg = KubeConfig(server="https://k.example", token_file=str(token))
    assert cfg.authorization() == "Bearer first"
    with open(token, "r+") as f:
        f.write("FIRST")
    os.utime(token, ns=(st.st_atime_ns, st.st_mtime_ns))
    now[0] += 59.0
    assert cfg.authorization() == "Bearer first"
    now[0] += 1.0
    assert cfg.authorization() == "Bearer FIRST"


def test_a_token_file_that_went_away_is_a_config_error_naming_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    cfg = KubeConfig(server="https://k.example", token_file=str(token), source="test")
    assert cfg.authorization() == "Bearer first"
    token.unlink()
    try:
        cfg.authorization()
    except config.ConfigError as exc:
        assert str(token) in str(exc)
    else:
        raise AssertionError("no ConfigError")
