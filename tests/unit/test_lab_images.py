"""The lab images' pure parts: the Dockerfile's build context (the same from a checkout and from an installed
wheel) and the content key that decides whether a build is needed; the backend's argument checks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from lbctl import assets
from lbctl.lab import backend, images

CHECKOUT_ONLY = {"lbctl.egg-info/PKG-INFO": "x", "tests/test_x.py": "x", "docs/a.md": "x"}
SOURCES = {
    "lbctl/__init__.py": "", "lbctl/core/pools.py": "pools", "lbctl/lab/build-apiserver.sh": "#!/bin/sh\n",
    "deploy/chart/Chart.yaml": "name: lbctl", "deploy/chart/.helmignore": "*.orig", "deploy/chart/crds/a.yaml": "a",
    "controller/__init__.py": "", "controller/main.py": "c", "speaker/main.py": "s",
}
TOP = {"Dockerfile": "FROM x", "pyproject.toml": "[project]", "README.md": "# lbctl"}
JUNK = ("lbctl/__pycache__/assets.cpython-311.pyc", "controller/__pycache__/main.cpython-311.pyc", "lbctl/x.pyc")


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if name.endswith(".sh"):
            path.chmod(0o755)


def _checkout(root: Path) -> dict[str, Path]:
    _write(root, {**TOP, **SOURCES, **CHECKOUT_ONLY, **dict.fromkeys(JUNK, "junk")})
    return images.context_files(root / "lbctl", {n: root / n for n in images.SHIPPED_TREES}, root)


def _wheel(site: Path) -> dict[str, Path]:
    """What pyproject's package-dir mapping installs: everything under lbctl/."""
    pkg = site / "lbctl"
    moved = {(k if k.startswith("lbctl/") else f"lbctl/{k}"): v for k, v in SOURCES.items()}
    _write(site, {**moved, **{f"lbctl/buildctx/{k}": v for k, v in TOP.items()},
                  **{f"lbctl/{j.removeprefix('lbctl/')}": "junk" for j in JUNK}})
    return images.context_files(pkg, {n: pkg / n for n in images.SHIPPED_TREES}, pkg / "buildctx")


def test_checkout_context_is_the_wheel_inputs_only(tmp_path: Path) -> None:
    assert set(_checkout(tmp_path)) == {*TOP, *SOURCES}


def test_wheel_and_checkout_give_the_same_context_and_key(tmp_path: Path) -> None:
    checkout, wheel = _checkout(tmp_path / "repo"), _wheel(tmp_path / "site")
    assert set(wheel) == set(checkout)
    assert {k: p.read_bytes() for k, p in wheel.items()} == {k: p.read_bytes() for k, p in checkout.items()}
    assert images.content_key(wheel, "base=1") == images.content_key(checkout, "base=1")


def test_wheel_context_does_not_nest_the_mapped_trees_in_lbctl(tmp_path: Path) -> None:
    names = set(_wheel(tmp_path))
    assert not {n for n in names if n.startswith(("lbctl/deploy/", "lbctl/controller/", "lbctl/speaker/",
                                                  "lbctl/buildctx/"))}


def test_content_key_follows_content_exec_bit_and_extra(tmp_path: Path) -> None:
    files = _checkout(tmp_path)
    key = images.content_key(files, "base=1")
    assert images.content_key(dict(reversed(list(files.items()))), "base=1") == key
    assert images.content_key(files, "base=2") != key
    script = files["lbctl/lab/build-apiserver.sh"]
    script.chmod(0o644)
    assert images.content_key(files, "base=1") != key
    script.chmod(0o755)
    assert images.content_key(files, "base=1") == key
    files["controller/main.py"].write_text("changed")
    assert images.content_key(files, "base=1") != key


def test_assemble_copies_files_with_their_exec_bit(tmp_path: Path) -> None:
    files = _checkout(tmp_path / "repo")
    images.assemble(tmp_path / "ctx", files)
    got = {p.relative_to(tmp_path / "ctx").as_posix() for p in (tmp_path / "ctx").rglob("*") if p.is_file()}
    assert got == set(files)
    assert (tmp_path / "ctx/lbctl/lab/build-apiserver.sh").stat().st_mode & 0o111
    assert not (tmp_path / "ctx/controller/main.py").stat().st_mode & 0o111


def test_this_lbctl_context_holds_every_source_the_dockerfile_copies() -> None:
    files = images.lbctl_context_files()
    dockerfile = files["Dockerfile"].read_text()
    sources = [s for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M) for s in line.split()[:-1]]
    assert sources, dockerfile
    for src in sources:
        assert src in files or any(k.startswith(f"{src.rstrip('/')}/") for k in files), src
    assert not [k for k in files if "__pycache__" in k or k.endswith(".pyc")]


def test_pyproject_ships_what_the_context_needs() -> None:
    project = tomllib.loads((assets.build_files_dir() / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "lbctl.buildctx" in project["packages"]
    assert project["package-dir"]["lbctl.buildctx"] == "."
    assert sorted(project["package-data"]["lbctl.buildctx"]) == sorted(images.TOP_FILES)
    for tree in images.SHIPPED_TREES:
        assert project["package-dir"][f"lbctl.{tree}"] == tree


@pytest.mark.parametrize("argv", [["--port", "0"], ["--port", "65536"], ["--port", "x"], ["--drain-seconds", "-1"]])
def test_backend_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        backend.main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_backend_rejects_a_bad_port_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PORT", "http")
    with pytest.raises(SystemExit):
        backend.main([])
    assert "invalid int value: 'http'" in capsys.readouterr().err
