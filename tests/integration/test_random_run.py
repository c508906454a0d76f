"""Acceptance 2 of issue 12: the allocation promise on the real API server under a seeded random run.

tests/random_run.py drives Services, IPPools, Namespaces, hand-written statuses, SIGKILL/SIGTERM of either of
two real controller replicas and API server restarts; tests/lb_invariants.py judges each settled state from the
API. Short by default (CI); LBCTL_RANDOM_RUN_STEPS and LBCTL_RANDOM_RUN_SEED choose another run, and
`python -m benchmarks.random_run --steps 2000 --seed N` is the long form.
"""

from __future__ import annotations

import os
from pathlib import Path

from lbctl.lab.controlplane import ControlPlane
from tests.figures import figure
from tests.random_run import RandomRun

STEPS = int(os.environ.get("LBCTL_RANDOM_RUN_STEPS", "300"))
SEED = int(os.environ.get("LBCTL_RANDOM_RUN_SEED", "1"))


def test_random_run_keeps_every_address_promise(control_plane: ControlPlane, tmp_path: Path) -> None:
    fig = RandomRun(control_plane, tmp_path, SEED, STEPS).run()
    print("\n" + fig.summary())
    figure("random_run_steps", fig.steps, "count")
    figure("random_run_checks", fig.checks, "count")
    figure("random_run_violations", len(fig.violations), "count")
    assert fig.steps == STEPS
    assert not fig.violations, (f"seed {SEED}, {STEPS} steps (replay: LBCTL_RANDOM_RUN_SEED={SEED} "
                                f"LBCTL_RANDOM_RUN_STEPS={STEPS}); controller logs in {tmp_path}:\n" + fig.summary())
