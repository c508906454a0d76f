"""The speaker's heartbeat keyring from its command line (capability 4: key rotation)."""

from __future__ import annotations

import pytest

from lbctl.core.heartbeat import Heartbeat, decode, encode
from lbctl.speaker.cli import parse_args, read_keys


def keyfiles(tmp_path, *keys: bytes) -> list[str]:
    argv = []
    for i, key in enumerate(keys):
        f = tmp_path / f"k{i}"
        f.write_bytes(key + b"\n")
        argv += ["--heartbeat-key-file", str(f)]
    return argv


def test_repeated_key_files_make_a_ring_signing_with_the_first(tmp_path):
    new, old = b"n" * 32, b"o" * 32
    ring = read_keys(parse_args(["--node-name", "n1", *keyfiles(tmp_path, new, old)]))
    assert ring.keys == (new, old)
    wire = encode(Heartbeat("n1", 1, 1), ring)
    assert decode(wire, new) is not None and decode(wire, old) is None


def test_one_key_file_and_env_still_work(tmp_path, monkeypatch):
    assert read_keys(parse_args(["--node-name", "n1", *keyfiles(tmp_path, b"a" * 16)])).keys == (b"a" * 16,)
    monkeypatch.setenv("LBCTL_HEARTBEAT_KEY", "e" * 20)
    assert read_keys(parse_args(["--node-name", "n1"])).keys == (b"e" * 20,)


def test_bad_keys_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv("LBCTL_HEARTBEAT_KEY", raising=False)
    with pytest.raises(ValueError, match=r"k1 has 5"):
        read_keys(parse_args(["--node-name", "n1", *keyfiles(tmp_path, b"a" * 16, b"short")]))
    with pytest.raises(ValueError, match="LBCTL_HEARTBEAT_KEY has 0"):
        read_keys(parse_args(["--node-name", "n1"]))
    with pytest.raises(ValueError, match="cannot read --heartbeat-key-file"):
        read_keys(parse_args(["--node-name", "n1", "--heartbeat-key-file", str(tmp_path / "missing")]))
    with pytest.raises(ValueError, match="listed twice"):
        read_keys(parse_args(["--node-name", "n1", *keyfiles(tmp_path, b"a" * 16, b"a" * 16)]))
