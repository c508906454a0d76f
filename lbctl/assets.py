"""Files that ship with lbctl besides code: the Helm chart (with the CRDs) and the API server build script.

In a checkout they sit at the top (deploy/); in an installed wheel pyproject maps deploy/ to lbctl/deploy/.
Everything that needs them asks here, so `pip install .` works from any directory.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def deploy_dir() -> Path:
    for candidate in (_HERE / "deploy", _HERE.parent / "deploy"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"lbctl's deploy/ files are missing (looked in {_HERE / 'deploy'} and "
                            f"{_HERE.parent / 'deploy'}); reinstall lbctl")


def chart_dir() -> Path:
    return deploy_dir() / "chart"


def crd_dir() -> Path:
    return chart_dir() / "crds"


def apiserver_build_script() -> Path:
    return _HERE / "lab" / "build-apiserver.sh"
