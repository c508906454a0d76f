"""The allocation model (tests/unit/test_allocation_model.py) in its long form, outside CI.

    python -m benchmarks.allocation_model [--steps 100000] [--steps-per-example 50] [--no-shrink] [--without R,..]

Runs the same hypothesis state machine (the real Reconciler and Allocator against a Kubernetes API held in
dicts) batch after batch, until at least --steps rules have run; prints steps, examples, rules per second and
the result. On a failure it prints the falsifying sequence (shrunk unless --no-shrink: then also how many steps
the run had made when it failed, the figure to quote for "found after N steps") and exits 1.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.unit.test_allocation_model import AllocationModel, quiet_logs

BATCH = 100  # examples per hypothesis run; each run draws fresh random sequences


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.allocation_model", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100_000, help="rules to run at least (default 100000)")
    p.add_argument("--steps-per-example", type=int, default=50, help="longest rule sequence (default 50)")
    p.add_argument("--no-shrink", action="store_true", help="stop at the first failure and print it as found")
    p.add_argument("--without", default="", metavar="RULE,...",
                   help="rules that do nothing (edit_status_by_hand, status_writes_fail): time one finding alone")
    args = p.parse_args(argv)
    AllocationModel.without = frozenset(filter(None, args.without.split(",")))
    batch = settings(max_examples=BATCH, stateful_step_count=args.steps_per_example, deadline=None, database=None,
                     phases=[Phase.generate] + ([] if args.no_shrink else [Phase.shrink]),
                     report_multiple_bugs=False, suppress_health_check=list(HealthCheck))
    counts = AllocationModel.counts = collections.Counter()
    started, failed = time.monotonic(), None
    with quiet_logs():
        while counts["steps"] < args.steps:
            try:
                run_state_machine_as_test(AllocationModel, settings=batch)
            except BaseException as exc:  # reported below; the exit status says it
                failed = exc
                break
            print(f"  {counts['steps']:>8} steps, {counts['examples']:>6} examples, "
                  f"{time.monotonic() - started:7.1f} s", flush=True)
    elapsed = time.monotonic() - started
    print(f"allocation model: {counts['steps']} steps in {counts['examples']} examples (up to "
          f"{args.steps_per_example} rules each), {elapsed:.1f} s, {counts['steps'] / elapsed:.0f} steps/s; "
          f"{counts['restarts']} restarts, {counts['leader_changes']} leader changes, {counts['hand_edits']} "
          f"statuses edited by hand, {counts['failed_writes']} failed status writes, {counts['writes']} status writes")
    if failed is not None:
        notes = "\n".join(line for line in getattr(failed, "__notes__", ()) if "state.addresses_move" not in line
                          and "state.every_pending" not in line and "state.no_decision" not in line
                          and "state.the_table" not in line)
        print(f"FAILED at step {counts['steps']} (example {counts['examples']}): {failed}"[:4000])
        print(notes)
        sys.exit(1)
    print("result: every invariant held after every step")


if __name__ == "__main__":
    main()
