"""One machine-readable line per reliability figure, next to each test's human line; `python -m
benchmarks.reliability` runs the tests and tabulates these lines against their targets."""

from __future__ import annotations


def figure(name: str, value: float, unit: str) -> None:
    print(f"\nFIGURE {name}={round(value, 3) if isinstance(value, float) else value} {unit}", flush=True)
