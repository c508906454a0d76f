"""Reliability figures in one table (issue 8, acceptance 4; docs/reliability.md).

    python -m benchmarks.reliability [--only SUITE ...] [--frames 1000000]

Runs the tests that measure each guarantee, one after the other (an e2e lab per module; the machine's cores
are shared), plus the long-form fuzz, and collects the `FIGURE name=value unit` lines they print
(tests/figures.py). A figure is PASS when it meets its target and the suite that printed it passed; a figure
that was not printed (its test failed before measuring) is FAIL. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import operator
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from lbctl.tables import table

from . import faults

# suite -> the command that prints its figures
SUITES: dict[str, list[str]] = {
    "conflicts": ["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "tests/e2e/test_conflicts.py"],
    "partition": ["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "tests/e2e/test_partition.py"],
    "segments": ["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "tests/e2e/test_multinic.py"],
    "heartbeats": ["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "tests/e2e/test_heartbeat_identity.py"],
    "big-objects": ["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "tests/e2e/test_big_objects.py"],
    "crash-safety": ["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "tests/integration/test_crash_safety.py"],
    "leader": ["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "tests/integration/test_leader.py"],
    "fuzz": ["-m", "benchmarks.fuzz_bench"],
    "faults": faults.SUITE,
}

OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, "==": operator.eq}


@dataclass(frozen=True)
class Target:
    suite: str
    what: str
    bound: str = ""  # "<= 1", ">= 20", "== 0"; empty: information only

    def met(self, value: float) -> bool:
        op, limit = self.bound.split()
        return OPS[op](value, float(limit))


FIGURES: dict[str, Target] = {
    "conflict_detection_s": Target("conflicts", "address conflict reported (metric, Event, status)", "<= 1"),
    "ndp_conflict_detection_s": Target("conflicts", "IPv6 conflict (rogue NA) reported", "<= 1"),
    "conflict_defences_in_12s": Target("conflicts", "defences while a rogue announces for 12 s", "<= 2"),
    "conflict_cleared_after_quiet_s": Target("conflicts", "conflict cleared after the rogue stops (QUIET_AFTER 10 s)"),
    "link_flap_wrong_owner_s": Target("conflicts", "link flap: time an address pointed at the wrong node on the wire",
                                      "== 0"),
    "link_flap_wrong_garps": Target("conflicts", "link flap: GARPs for addresses the node does not own", "== 0"),
    "link_flap_client_entries_moved_wrongly": Target("conflicts", "link flap: client entries on the wrong owner",
                                                     "== 0"),
    "handover_late_replies": Target("conflicts", "SIGTERM: replies from the departing MAC after the successor's GARP",
                                    "== 0"),
    "handover_successor_garp_ms": Target("conflicts", "SIGTERM: successor's GARP after SIGTERM"),
    "partition_heal_s": Target("partition", "partition healed to one MAC per address", "<= 1"),
    "multinic_takeover_s": Target("segments", "VIP NIC cut, other NIC beaconing: another node answers",
                                  "<= 2"),
    "clock_step_addresses_with_two_macs": Target("heartbeats", "speaker restarted 1 h behind: addresses with 2 MACs",
                                                 "== 0"),
    "key_rotation_answers_off_a_live_owner": Target("heartbeats", "key rotation: answers off a live owner", "== 0"),
    "big_object_arp_misses": Target("big-objects", "700 KiB Service: ARP checks unanswered", "== 0"),
    "big_object_http_failures": Target("big-objects", "700 KiB Service: HTTP requests failed", "== 0"),
    "crash_sigkills": Target("crash-safety", "controller SIGKILLs under churn", ">= 20"),
    "crash_apiserver_restarts": Target("crash-safety", "API server restarts under churn", ">= 2"),
    "crash_services_seen": Target("crash-safety", "Services over the run"),
    "crash_duplicate_ips": Target("crash-safety", "addresses held twice", "== 0"),
    "crash_moved_ips": Target("crash-safety", "addresses moved", "== 0"),
    "crash_leaked_ips": Target("crash-safety", "addresses leaked", "== 0"),
    "crash_restart_to_ready_median_s": Target("crash-safety", "controller restart to ready (median)"),
    "leader_failover_s": Target("leader", "leader SIGKILLed: next Service allocated", "<= 15"),
    "leader_pause_takeover_s": Target("leader", "leader SIGSTOPped: standby leads"),
    "leader_writes_refused_by_fence": Target("leader", "paused leader's writes refused by the fence"),
    "fuzz_frames": Target("fuzz", "malformed ARP/NDP frames sent", ">= 1000000"),
    "fuzz_heartbeat_datagrams": Target("fuzz", "hostile heartbeat datagrams sent"),
    "fuzz_crashes": Target("fuzz", "speaker crashes", "== 0"),
    "fuzz_answers_for_unowned": Target("fuzz", "answers for unowned addresses", "== 0"),
    "fuzz_dead_peers_kept_alive": Target("fuzz", "dead peers kept alive", "== 0"),
    "fuzz_rss_growth_mib": Target("fuzz", "speaker RSS growth", "<= 5"),
}

# Faults between the daemons and the API server (issue 12): per fault, the five figures of benchmarks.faults.
FIGURES.update({f"fault_{f.replace('-', '_')}_{key}": Target("faults", f"{f}: {what}", bound)
                for f in faults.FAULTS for key, (what, bound) in faults.METRICS.items()})

FIGURE_LINE = re.compile(r"^FIGURE ([a-z0-9_]+)=(-?[0-9.]+) (\S+)$", re.M)


@dataclass
class Outcome:
    ok: bool
    seconds: float
    figures: dict[str, tuple[float, str]]


def run_suite(name: str, extra: list[str]) -> Outcome:
    t0 = time.monotonic()
    print(f"== {name}: {' '.join(SUITES[name] + extra)}", file=sys.stderr, flush=True)
    res = subprocess.run([sys.executable, *SUITES[name], *extra], capture_output=True, text=True)
    took = time.monotonic() - t0
    if res.returncode:
        print(res.stdout[-4000:], res.stderr[-2000:], sep="\n", file=sys.stderr)
    figures = {m[1]: (float(m[2]), m[3]) for m in FIGURE_LINE.finditer(res.stdout)}
    print(f"   {'passed' if not res.returncode else f'FAILED ({res.returncode})'} in {took:.0f} s, "
          f"{len(figures)} figures", file=sys.stderr, flush=True)
    return Outcome(res.returncode == 0, took, figures)


def rows(outcomes: dict[str, Outcome]) -> list[list[str]]:
    out = []
    for name, t in FIGURES.items():
        if t.suite not in outcomes:
            continue
        o = outcomes[t.suite]
        if name not in o.figures:
            out.append([name, "missing", t.bound or "-", "FAIL", t.what])
            continue
        value, unit = o.figures[name]
        shown = f"{value:g} {unit}" if unit != "count" else f"{value:,.0f}"
        result = "info" if not t.bound else ("PASS" if t.met(value) and o.ok else "FAIL")
        out.append([name, shown, t.bound or "-", result, t.what])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=list(SUITES), help="run these suites only")
    p.add_argument("--frames", type=int, default=1_000_000, help="long-form fuzz frames")
    a = p.parse_args()
    start = time.monotonic()
    outcomes = {s: run_suite(s, ["--frames", str(a.frames)] if s == "fuzz" else [])
                for s in (a.only or list(SUITES))}
    table_rows = rows(outcomes)
    print(table(["FIGURE", "VALUE", "TARGET", "RESULT", "WHAT"], table_rows))
    failed = [s for s, o in outcomes.items() if not o.ok]
    print(f"\n{len(outcomes)} suites in {time.monotonic() - start:.0f} s"
          + (f"; suites failed: {', '.join(failed)}" if failed else ""))
    if failed or any(r[3] == "FAIL" for r in table_rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
