"""Election after one node leaves or joins, 1,000 nodes x 10,000 IPs: the incremental index against today's
full recompute (`announce.owners()`), measured in the same run on the same input.

    python -m benchmarks.election_bench [--nodes 1000] [--ips 10000] [--trials 300] [--full-runs 2]

Two pools: 8,000 IPs any node may announce, 2,000 behind a node selector half the nodes match, and 500
of them externalTrafficPolicy=Local with 3 ready nodes each. Every trial takes a random live node out (or
puts one back) and times `ElectionIndex.update`; then a rack of 10 % of the nodes fails at once and comes
back. Owners are checked against `owners()` after the build and after the rack failure.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from lbctl.core.announce import IpIntent, owners
from lbctl.core.election import NodeInfo
from lbctl.core.election_index import ElectionIndex
from tests.figures import figure

SELECTOR = ({"matchLabels": {"lb": "true"}},)


def world(n_nodes: int, n_ips: int, rnd: random.Random) -> tuple[dict[str, IpIntent], dict[str, NodeInfo]]:
    names = [f"node-{i:04d}" for i in range(n_nodes)]
    nodes = {n: NodeInfo(n, {"lb": "true"} if i % 2 else {}) for i, n in enumerate(names)}
    intents = {}
    for i in range(n_ips):
        ip = f"198.18.{i // 250}.{i % 250 + 1}"
        if i < n_ips * 4 // 5:
            intents[ip] = IpIntent(ip=ip, pool="open")
        elif i < n_ips * 4 // 5 + n_ips // 20:
            intents[ip] = IpIntent(ip=ip, pool="racks", node_selectors=SELECTOR, etp_local=True,
                                   ready_nodes=frozenset(rnd.sample(names, 3)))
        else:
            intents[ip] = IpIntent(ip=ip, pool="racks", node_selectors=SELECTOR)
    return intents, nodes


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--ips", type=int, default=10_000)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--full-runs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=9)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    intents, nodes = world(args.nodes, args.ips, rnd)
    live = set(nodes)

    index = ElectionIndex()
    t0 = time.perf_counter()
    index.update(intents, live, nodes)
    build = time.perf_counter() - t0

    full = []
    for _ in range(args.full_runs):
        t0 = time.perf_counter()
        want = owners(intents, live, nodes)
        full.append(time.perf_counter() - t0)
    assert index.owners == want, "index disagrees with owners() after the build"

    leaves, joins, moved = [], [], []
    for _ in range(args.trials):
        gone = rnd.choice(sorted(live))
        live.discard(gone)
        t0 = time.perf_counter()
        changed = index.update(intents, live, nodes)
        leaves.append(time.perf_counter() - t0)
        moved.append(len(changed))
        live.add(gone)
        t0 = time.perf_counter()
        index.update(intents, live, nodes)
        joins.append(time.perf_counter() - t0)
    rack = set(rnd.sample(sorted(live), len(live) // 10))  # a rack (10 % of the nodes) fails at once, then returns
    live -= rack
    t0 = time.perf_counter()
    index.update(intents, live, nodes)
    rack_leave = time.perf_counter() - t0
    assert index.owners == owners(intents, live, nodes), "index disagrees with owners() after the rack failure"
    live |= rack
    t0 = time.perf_counter()
    index.update(intents, live, nodes)
    rack_join = time.perf_counter() - t0

    full_s = statistics.median(full)
    print(f"{args.nodes} nodes x {args.ips} IPs, {args.trials} trials each; owners() checked equal before and after")
    print(f"build (first update, full ranking): {build:.2f} s; full recompute owners(): {full_s:.2f} s "
          f"(median of {len(full)})")
    for name, xs in (("leave", leaves), ("join", joins)):
        print(f"one node {name}s: p50 {pct(xs, .5) * 1e3:.2f} ms  p99 {pct(xs, .99) * 1e3:.2f} ms  "
              f"max {max(xs) * 1e3:.2f} ms  ({full_s / pct(xs, .5):.0f}x faster than owners() at p50)")
    print(f"target: leave p99 <= 50 ms: {'met' if pct(leaves, .99) <= 0.05 else 'NOT met'}")
    print(f"a rack of {len(rack)} nodes fails at once: {rack_leave * 1e3:.0f} ms; it returns: {rack_join * 1e3:.0f} ms")
    print(f"IPs moved per leave: mean {statistics.mean(moved):.1f}; refills (top-K emptied): {index.refills}")
    figure("election_build_s", build, "s")
    figure("election_full_recompute_s", full_s, "s")
    for name, xs in (("leave", leaves), ("join", joins)):
        figure(f"election_{name}_p50_ms", pct(xs, .5) * 1e3, "ms")
        figure(f"election_{name}_p99_ms", pct(xs, .99) * 1e3, "ms")
        figure(f"election_{name}_max_ms", max(xs) * 1e3, "ms")
    figure("election_rack_leave_ms", rack_leave * 1e3, "ms")
    figure("election_rack_join_ms", rack_join * 1e3, "ms")
    figure("election_leave_speedup_p50", full_s / pct(leaves, .5), "x")


if __name__ == "__main__":
    main()
