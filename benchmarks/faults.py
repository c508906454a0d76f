"""Faults between the daemons and the API server: one row per fault (issue 12, acceptance 3; docs/reliability.md).

    python -m benchmarks.faults [-k EXPR]

Runs tests/e2e/test_faults.py (the real cluster, its pods' `kubernetes` Service pointing at the API server
behind an HTTP front and the fault injector, lbctl.lab.realfaults; needs root, about 8 min) and tabulates the `FIGURE fault_<name>_<figure>` lines it prints
against the targets. A resume of 999 s means the new Service was not served within the test's wait (45 s).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

from lbctl.tables import table

SUITE = ["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "tests/e2e/test_faults.py"]
FAULTS = ["reset-response", "reset-watch", "cut-watch-mid-line", "stall", "trickle", "429", "503",
          "apiserver-restart", "tls-handshake", "mixed"]
# figure -> (column, target bound)
METRICS = {"exits": ("daemon exits", "== 0"), "addresses_changed": ("addresses dup/moved/leaked", "== 0"),
           "resume_s": ("fault end to new Service served (s)", "<= 5"),
           "two_writers_s": ("two writers (s)", "== 0"), "arp_lost": ("ARP answers lost", "== 0")}
SUMMARY_LINE = re.compile(r"^[a-z0-9-]+: .*; exits .*$", re.M)  # the test's line per fault: what, and why
FIGURE_LINE = re.compile(r"^FIGURE fault_([a-z0-9_]+?)_(exits|addresses_changed|resume_s|two_writers_s|arp_lost)"
                         r"=(-?[0-9.]+) (\S+)$", re.M)


def met(value: float, bound: str) -> bool:
    op, limit = bound.split()
    return value <= float(limit) if op == "<=" else value == float(limit)


def parse(stdout: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for m in FIGURE_LINE.finditer(stdout):
        out.setdefault(m[1].replace("_", "-"), {})[m[2]] = float(m[3])
    return out


def rows(figures: dict[str, dict[str, float]]) -> list[list[str]]:
    out = []
    for fault in FAULTS:
        got = figures.get(fault)
        if got is None:
            continue
        cells = []
        for key, (_, bound) in METRICS.items():
            v = got.get(key)
            cells.append("missing" if v is None else f"{v:g}{'' if met(v, bound) else ' FAIL'}")
        out.append([fault, *cells])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", help="pytest -k expression: a subset of the faults")
    a = p.parse_args()
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, *SUITE, *(["-k", a.k] if a.k else [])], capture_output=True, text=True)
    if res.returncode:
        print(res.stdout[-6000:], res.stderr[-2000:], sep="\n", file=sys.stderr)
    figures = parse(res.stdout)
    header = ["FAULT"] + [f"{col} [{bound}]" for col, bound in METRICS.values()]
    print(table(header, rows(figures)))
    print("", *SUMMARY_LINE.findall(res.stdout), sep="\n")
    print(f"\n{len(figures)} faults in {time.monotonic() - t0:.0f} s; tests {'passed' if not res.returncode else 'FAILED'}")
    raise SystemExit(1 if res.returncode or not figures else 0)


if __name__ == "__main__":
    main()
