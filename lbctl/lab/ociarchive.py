"""A one-layer image as a docker-archive tarball (what `docker save`/`podman save` write and `ctr images import`
reads), made from files on the host: the lab's pause image is the static pause binary alone, and no registry
or image builder is needed for it.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
from pathlib import Path

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0  # mtime 0: the same files give the same digest
    tar.addfile(info, io.BytesIO(data))


def write(out: Path, tag: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str]) -> str:
    """Write `files` ({path in image: (content, mode)}) as one layer of image `tag` to `out`; returns the
    layer's digest."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, (data, mode) in sorted(files.items()):
            _add(tar, path.lstrip("/"), data, mode)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": _ARCH.get(platform.machine(), platform.machine()), "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]).encode()
    with tarfile.open(out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _add(tar, layer_name, layer_bytes)
        _add(tar, config_name, config)
        _add(tar, "manifest.json", manifest)
    return diff_id
