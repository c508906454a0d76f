"""Discrete-event simulation over the real pure core: 1,000 speakers x 10,000 IPs on one segment.

    python -m benchmarks.simulation [--nodes 1000] [--ips 10000] [--observers 8] [--loss 0.01] [--seed 9]

What is real: every observer runs lbctl.core.heartbeat.PeerTable (observe / live / heard, its public API)
on every beacon it receives, and lbctl.core.election_index.ElectionIndex on every change of its live set;
the reference owners come from an ElectionIndex fed the true membership, checked once against
announce.owners() (the full recompute). What is modelled: the wire (each broadcast beacon reaches each
receiver with probability 1 - loss after 0.2 ms + exponential jitter of mean 1 ms; each sender's period
jitters by +-2 %), and the clock of each observer's liveness check (every 10 ms, standing in for the
heartbeat thread's wake-ups).

Sampling, said out loud: simulating 1,000 full views costs ~10 M PeerTable.observe calls per simulated
second, so only `--observers` speakers (picked at random; the joining node is always one) keep a full
view; they hear all 1,000 beacons. The other speakers keep a PeerTable fed by the observers' beacons only,
so what they echo is computed by the real heard() but over that smaller table: echo rotation across
1,000 peers is exercised between observers only.

Scenario per timing preset: all start together (random phases); electing begins after a warm-up; one
node that owns IPs fails (stops beaconing); later a new node joins. Reported per preset: whether every
observer agrees with the reference (and so with each other) after each change, the time from the change
to the last observer agreeing, false expiries in steady state, and heartbeat datagrams per second per
node, sent and received (one broadcast per interval per segment).
"""

from __future__ import annotations

import argparse
import heapq
import pickle
import random
import statistics
import time
from dataclasses import dataclass, field

from benchmarks.election_bench import world
from lbctl.core.announce import owners
from lbctl.core.election_index import ElectionIndex
from lbctl.core.heartbeat import Heartbeat, PeerTable
from tests.figures import figure

PRESETS = {"default": (0.1, 0.45), "relaxed": (0.25, 1.0)}
CHECK_EVERY = 0.01
BEAT, RECV, CHECK = 0, 1, 2


@dataclass
class Speaker:
    name: str
    incarnation: int
    table: PeerTable
    observer: bool
    seq: int = 0
    up: bool = True
    sent: int = 0
    received: int = 0
    index: ElectionIndex | None = None
    live: set[str] = field(default_factory=set)
    agree_at: float | None = None  # last time its owners became equal to the reference
    live_changes: int = 0


class Sim:
    def __init__(self, args: argparse.Namespace, interval: float, dead_after: float, built: bytes,
                 intents: dict, nodes: dict) -> None:
        self.rnd = random.Random(args.seed)
        self.loss, self.interval, self.dead_after = args.loss, interval, dead_after
        self.intents, self.nodes = intents, nodes
        names = sorted(nodes)
        self.joiner = names[-1]  # in `nodes` (a known Node) but not running until the join
        running = names[:-1]
        watch = set(self.rnd.sample(running, args.observers - 1)) | {self.joiner}
        self.speakers = {n: Speaker(n, self.rnd.getrandbits(63), PeerTable(n, dead_after), n in watch)
                         for n in names}
        self.speakers[self.joiner].up = False
        self.observers = [s for s in self.speakers.values() if s.observer]
        self.built = built
        self.truth: ElectionIndex = pickle.loads(built)
        self.true_live = set(running)
        self.truth.update(intents, self.true_live, nodes)
        self.queue: list[tuple[float, int, int, object]] = []
        self.n = 0
        for n in running:
            self.push(self.rnd.uniform(0, interval), BEAT, n)
        for s in self.observers:
            self.push(self.rnd.uniform(0, CHECK_EVERY), CHECK, s.name)
        self.electing_from: dict[str, float] = {}

    def push(self, t: float, kind: int, what: object) -> None:
        self.n += 1
        heapq.heappush(self.queue, (t, self.n, kind, what))

    def run_until(self, end: float) -> None:
        q = self.queue
        while q and q[0][0] <= end:
            t, _, kind, what = heapq.heappop(q)
            if kind == BEAT:
                self.beat(t, self.speakers[what])  # type: ignore[index]
            elif kind == RECV:
                who, hb = what  # type: ignore[misc]
                who.received += 1
                who.table.observe(hb, t)
            else:
                self.check(t, self.speakers[what])  # type: ignore[index]
        self.now = end

    def beat(self, t: float, s: Speaker) -> None:
        if not s.up:
            return
        s.seq += 1
        s.sent += 1
        echoed = set(s.table.heard(t))
        rnd, loss = self.rnd, self.loss
        for r in self.observers if not s.observer else self.speakers.values():
            if r is s or not r.up or rnd.random() < loss:
                continue
            hb = Heartbeat(s.name, s.incarnation, s.seq, int(self.interval * 1000), False, r.incarnation in echoed)
            if r.observer:
                self.push(t + 0.0002 + rnd.expovariate(1000), RECV, (r, hb))
            else:  # non-observers only need their echo lists: no timing to measure there
                r.received += 1
                r.table.observe(hb, t)
        self.push(t + self.interval * rnd.uniform(0.98, 1.02), BEAT, s.name)

    def check(self, t: float, s: Speaker) -> None:
        self.push(t + CHECK_EVERY, CHECK, s.name)
        if not s.up:
            return
        live = s.table.live(t)
        if live == s.live and s.index is not None:
            return
        if s.index is not None and live != s.live:
            s.live_changes += 1
        s.live = live
        start = self.electing_from.get(s.name)
        if start is None or t < start:
            return
        if s.index is None:  # warm: take the prebuilt full ranking, then this view's difference
            s.index = pickle.loads(self.built)
        s.index.update(self.intents, live, self.nodes)
        self.mark(t, s)

    def mark(self, t: float, s: Speaker) -> None:
        agree = s.index is not None and s.index.owners == self.truth.owners
        if agree and s.agree_at is None:
            s.agree_at = t
        elif not agree:
            s.agree_at = None

    def change_truth(self, t: float) -> None:
        self.truth.update(self.intents, self.true_live, self.nodes)
        for s in self.observers:
            if s.index is not None:
                s.agree_at = None
                self.mark(t, s)


def run_preset(name: str, interval: float, dead_after: float, args: argparse.Namespace, built: bytes,
               intents: dict, nodes: dict) -> dict[str, float]:
    t0 = time.perf_counter()
    sim = Sim(args, interval, dead_after, built, intents, nodes)
    warm = max(2.0, 3 * dead_after)
    for s in sim.observers:
        sim.electing_from[s.name] = warm
    sim.run_until(warm + 1.0)
    steady_start = warm + 1.0
    before = sum(s.live_changes for s in sim.observers)
    sent0 = {s.name: s.sent for s in sim.observers}
    recv0 = {s.name: s.received for s in sim.observers}
    steady = 2.0
    sim.run_until(steady_start + steady)
    false_expiries = sum(s.live_changes for s in sim.observers) - before
    sent_rate = statistics.mean((s.sent - sent0[s.name]) / steady for s in sim.observers if s.up)
    recv_rate = statistics.mean((s.received - recv0[s.name]) / steady for s in sim.observers if s.up)
    settled = all(s.agree_at is not None for s in sim.observers if s.up)
    sizes = sorted(len(s.live) for s in sim.observers if s.up)

    # A node that owns IPs fails: it stops beaconing.
    t_fail = sim.now
    victim = next(n for n in sorted(sim.true_live) if not sim.speakers[n].observer
                  and n in set(sim.truth.owners.values()))
    sim.speakers[victim].up = False
    sim.true_live.discard(victim)
    moved = sum(1 for v in sim.truth.owners.values() if v == victim)
    sim.change_truth(t_fail)
    sim.run_until(t_fail + dead_after + 2.0)
    fail_ok = all(s.agree_at is not None for s in sim.observers if s.up)
    fail_conv = max((s.agree_at or float("inf")) for s in sim.observers if s.up) - t_fail

    # A new node joins: it starts beaconing, listens for dead_after, then elects.
    t_join = sim.now
    joiner = sim.speakers[sim.joiner]
    joiner.up = True
    sim.electing_from[joiner.name] = t_join + dead_after
    sim.push(t_join, BEAT, joiner.name)
    sim.true_live.add(joiner.name)
    sim.change_truth(t_join)
    sim.run_until(t_join + dead_after + 2.0)
    join_ok = all(s.agree_at is not None for s in sim.observers if s.up)
    join_conv = max((s.agree_at or float("inf")) for s in sim.observers if s.up) - t_join
    gained = sum(1 for v in sim.truth.owners.values() if v == joiner.name)

    wall = time.perf_counter() - t0
    print(f"\n--- preset {name}: interval {interval} s, dead_after {dead_after} s, loss {args.loss:.1%} "
          f"({wall:.1f} s wall)")
    print(f"steady state: {len(sim.observers)} sampled observers agree with the reference: {settled}; "
          f"false expiries in {steady:.0f} s: {false_expiries}; live set sizes seen: {sizes[0]}..{sizes[-1]} "
          f"of {len(sim.true_live)}")
    if not settled:
        lacking = sorted({n for s in sim.observers if s.up for n in sim.true_live - s.live})
        watched = sum(sim.speakers[n].observer for n in lacking)
        print(f"  disagreement: observers do not count {len(lacking)} live peers as live ({watched} of them "
              f"observers, whose echoes come from the real heard() over {len(sim.speakers)} peers), e.g. {lacking[:5]}")
    print(f"heartbeats per node: {sent_rate:.1f} datagrams/s sent, {recv_rate:.0f} datagrams/s received")
    print(f"node {victim} fails ({moved} IPs move): all observers agree: {fail_ok}, last one after "
          f"{fail_conv:.3f} s")
    print(f"node {joiner.name} joins ({gained} IPs move to it): all observers, the joiner included, agree: "
          f"{join_ok}, last one after {join_conv:.3f} s (the joiner listens {dead_after} s before electing)")
    return {"agree": float(settled and fail_ok and join_ok), "fail": fail_conv, "join": join_conv,
            "sent": sent_rate, "recv": recv_rate, "false": false_expiries}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--ips", type=int, default=10_000)
    ap.add_argument("--observers", type=int, default=8)
    ap.add_argument("--loss", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--no-check", action="store_true", help="skip the one full owners() cross-check")
    args = ap.parse_args()
    intents, nodes = world(args.nodes, args.ips, random.Random(args.seed))
    t0 = time.perf_counter()
    full = ElectionIndex()
    full.update(intents, set(nodes) - {sorted(nodes)[-1]}, nodes)
    print(f"{args.nodes} nodes x {args.ips} IPs, one segment; reference ranking built in "
          f"{time.perf_counter() - t0:.1f} s; {args.observers} of {args.nodes} speakers simulated with a "
          f"full view (sampled, see the module docstring)")
    if not args.no_check:
        assert full.owners == owners(intents, set(nodes) - {sorted(nodes)[-1]}, nodes), "index != owners()"
        print("reference checked equal to announce.owners() (full recompute)")
    built = pickle.dumps(full)
    results = {name: run_preset(name, *timing, args, built, intents, nodes) for name, timing in PRESETS.items()}
    print()
    for name, r in results.items():
        figure(f"sim_{name}_observers_agree", int(r["agree"]), "bool")
        figure(f"sim_{name}_failover_converge_s", r["fail"], "s")
        figure(f"sim_{name}_join_converge_s", r["join"], "s")
        figure(f"sim_{name}_heartbeats_sent_per_node", r["sent"], "datagrams/s")
        figure(f"sim_{name}_heartbeats_received_per_node", r["recv"], "datagrams/s")
        figure(f"sim_{name}_false_expiries", int(r["false"]), "count")


if __name__ == "__main__":
    main()
