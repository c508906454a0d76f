"""Objects as large as the API server accepts, for the watch tests (integration and e2e)."""

from __future__ import annotations

from typing import Any


def big_metadata(kib: int = 700) -> dict[str, Any]:
    """Labels and annotations whose JSON is about `kib` KiB (every label within the API server's limits)."""
    annotations = {"lbctl.io/test-padding": "a" * (200 * 1024)}
    labels, size = {}, 200 * 1024
    while size < kib * 1024:
        key = f"pad{len(labels):05d}.example.com/" + "k" * 50
        labels[key] = "v" * 63
        size += len(key) + 63 + 6
    return {"annotations": annotations, "labels": labels}
