"""Files that ship with lbctl besides code: the Helm chart (with the CRDs), the API server build script, and
what the image build needs (the Dockerfile, pyproject.toml, README.md and the shells' sources).

In a checkout they sit at the top (deploy/, controller/, speaker/, Dockerfile ...); in an installed wheel
pyproject maps deploy/ to lbctl/deploy/, the shells to lbctl/controller and lbctl/speaker, and the three top
files to lbctl/buildctx/. Everything that needs them asks here, so `pip install .` works from any directory.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """deploy, controller or speaker: lbctl/<name> in a wheel, <name> beside lbctl/ in a checkout."""
    for candidate in (_HERE / name, _HERE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"lbctl's {name}/ files are missing (looked in {_HERE / name} and "
                            f"{_HERE.parent / name}); reinstall lbctl")


def deploy_dir() -> Path:
    return shipped_dir("deploy")


def package_dir() -> Path:
    return _HERE


def build_files_dir() -> Path:
    """Where the Dockerfile, pyproject.toml and README.md are: lbctl/buildctx in a wheel, the checkout's top."""
    for candidate in (_HERE / "buildctx", _HERE.parent):
        if all((candidate / f).is_file() for f in ("Dockerfile", "pyproject.toml", "README.md")):
            return candidate
    raise FileNotFoundError(f"the Dockerfile lbctl ships is missing (looked in {_HERE / 'buildctx'} and "
                            f"{_HERE.parent}); reinstall lbctl")


def chart_dir() -> Path:
    return deploy_dir() / "chart"


def crd_dir() -> Path:
    return chart_dir() / "crds"


def apiserver_build_script() -> Path:
    return _HERE / "lab" / "build-apiserver.sh"
