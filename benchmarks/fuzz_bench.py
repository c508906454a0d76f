"""Hostile input, long form: a million malformed ARP/NDP frames and 100,000 heartbeat datagrams at two
real speakers (the harness of tests/e2e/test_speaker_dataplane: static config, real bridge).

    python -m benchmarks.fuzz_bench [--frames 1000000] [--datagrams 100000] [--seed 1]

Prints what the speakers did with it: crashes, answers for addresses they do not own, whether the ghost
peer stayed dead, and RSS growth against the speakers' own RSS just before the attack, in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from tests.e2e.test_hostile_input import attack
from tests.e2e.test_speaker_dataplane import CONFIG, NODES, VIP1, VIP_GHOST, Lab, owner_is
from tests.figures import figure
from tests.wait import wait_for


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--datagrams", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="lbctl-fuzz-") as d:
        lab = Lab(Path(d))
        try:
            lab.setup()
            for node in NODES:
                lab.start(node, CONFIG)
            wait_for(lambda: owner_is(lab, VIP1, "node1") and owner_is(lab, VIP_GHOST, "node1"), 10, what="owners")
            out = attack(lab, a.frames, a.datagrams, a.seed)
            rows = [
                ("L2 frames sent (ARP/NDP, seed %d)" % a.seed, f"{out.frames:,}", "", ""),
                ("heartbeat datagrams sent", f"{out.datagrams:,}", "", ""),
                ("send rate", f"{(out.frames + out.datagrams) / out.seconds:,.0f}/s", "", "info"),
                ("speakers alive and ready", "yes" if out.alive else "NO", "yes", "PASS" if out.alive else "FAIL"),
                ("answers for unowned addresses", str(len(out.wrong_answers)), "0",
                 "PASS" if not out.wrong_answers else "FAIL"),
                ("answers for owned addresses", f"{out.answers - len(out.wrong_answers):,}", "", "info"),
                ("dead peer kept alive", "no" if out.ghost_dead else "YES", "no", "PASS" if out.ghost_dead else "FAIL"),
                ("RSS growth (max of speakers)", f"{max(out.rss_growth_kib.values()) / 1024:.1f} MiB", "<= 5 MiB",
                 "PASS" if max(out.rss_growth_kib.values()) <= 5 * 1024 else "FAIL"),
            ]
            figure("fuzz_frames", out.frames, "count")
            figure("fuzz_heartbeat_datagrams", out.datagrams, "count")
            figure("fuzz_crashes", sum(lab.procs[n].poll() is not None for n in NODES), "count")
            figure("fuzz_answers_for_unowned", len(out.wrong_answers), "count")
            figure("fuzz_dead_peers_kept_alive", 0 if out.ghost_dead else 1, "count")
            figure("fuzz_rss_growth_mib", max(out.rss_growth_kib.values()) / 1024, "MiB")
            w = max(len(r[0]) for r in rows)
            print(f"{'METRIC'.ljust(w)}  {'VALUE':>14}  {'TARGET':>9}  RESULT")
            for r in rows:
                print(f"{r[0].ljust(w)}  {r[1]:>14}  {r[2]:>9}  {r[3]}")
        finally:
            lab.cleanup()


if __name__ == "__main__":
    main()
