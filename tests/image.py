"""The lbctl OCI image for tests: lbctl.lab.images (podman set up for this machine, the Debian base, the
image, containers) with the tests' own tag, built from this checkout.

An unchanged checkout builds nothing: the image with the same content (e.g. the lab's) is tagged instead.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lbctl.lab import images
from lbctl.lab.images import (BASE_TAG, SPEAKER_CAPS, PodmanError, ensure_base, ensure_tools, exists, logs,  # noqa: F401
                              podman, remove, run, stop, wait)

REPO = Path(__file__).resolve().parent.parent
IMAGE_TAG = "localhost/lbctl:test"

run_speaker = functools.partial(images.run_speaker, image=IMAGE_TAG)

_timings: dict[str, float] = {}


def ensure_image() -> dict[str, float]:
    """Tools, base and IMAGE_TAG built from this checkout, once per process; returns seconds spent per step."""
    if not _timings:
        ensure_tools()
        _timings["base"] = ensure_base()
        _timings["build"] = images.build(IMAGE_TAG)
    return dict(_timings)
