"""`python -m benchmarks [codec|controller|lab ...]`: run the benchmarks in one go (all by default)."""

from __future__ import annotations

import importlib
import sys

ALL = ["codec", "controller", "controller_scale", "election", "simulation", "speaker_scale", "speaker_churn",
       "arp_among_peers", "status", "fuzz", "lab", "allocation_model", "random_run", "faults",
       "upgrade", "bgp_daemons", "bgp_speaker",
       "reliability"]  # reliability: the figures table; speaker_scale ~7 min,
# random_run ~10 min, upgrade ~6 min (the real cluster: a helm roll, then node events), bgp_daemons ~2 min

MODULES = {name: f"benchmarks.{name}" for name in (
    "reliability", "simulation", "speaker_scale", "speaker_churn", "controller_scale", "arp_among_peers",
    "allocation_model", "random_run", "faults", "upgrade", "bgp_daemons", "bgp_speaker")}
# the others are benchmarks.<name>_bench


def main() -> None:
    names = sys.argv[1:] or ALL
    for name in names:
        if name not in ALL:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(ALL)}")
        print(f"\n=== {name} ===", flush=True)
        module_name = MODULES.get(name, f"benchmarks.{name}_bench")
        module = importlib.import_module(module_name)
        sys.argv = [module_name]
        module.main()


if __name__ == "__main__":
    main()
