"""ARP RTT of the real speaker among simulated peers, against a minimal Python responder on the same bed (issue
12, acceptance 4: the heartbeat thread drains every peer's beacons and shares the GIL with the ARP thread).

    python -m benchmarks.arp_among_peers [--peers 0,200] [--count 2000] [--ips 1000]

Needs root. The namespaces and the speaker of benchmarks/speaker_scale.py: one real speaker
(--static-config) in one namespace, benchmarks.peersim (N virtual speakers beaconing to it) in the other.
Beside the speaker, in its namespace and on its interface, runs the baseline: `lab_arp respond`, one thread
blocked in recv with the speaker's filter and codec and nothing else. From the simulator's namespace
`lab_arp rtt` asks, in turn, for an address the speaker owns, the baseline's address and the speaker
namespace's own address (answered by the kernel), one request outstanding at a time, 1 ms apart: the same
bed, the same moments, three responders. Prints p50/p99 per responder and the speaker/baseline ratios
(target p99 <= 1.2x) per peer count, as FIGURE lines and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

from lbctl.tables import table
from tests.figures import figure

from .peersim import peer_names
from .speaker_scale import (REAL, SETTLE_HOLD, SIM_IP, SIM_MAC, SIM_NS, SPK_IP, SPK_MAC, SPK_NS, Child,
                            HarnessError, Speaker, addresses, build_namespaces, clean_namespaces, plan)

BASE_IP = "198.18.0.4"  # the baseline responder's address: on no interface, so only it answers
TARGET = 1.2


def pct(samples: list[int], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000 if s else float("nan")


def measure(n: int, a: argparse.Namespace, env: dict[str, str], tmp: str) -> dict[str, object]:
    ips = addresses(a.ips)
    names = peer_names(n)
    expected, _ = plan(ips, [REAL, *names], 0)
    if not expected:
        raise HarnessError(f"the speaker owns none of {a.ips} addresses among {n} peers: raise --ips")
    vip = sorted(expected)[0]
    cfg = os.path.join(tmp, f"static-{n}.json")
    with open(cfg, "w") as f:
        json.dump({"nodes": [REAL, *names], "ips": {ip: {} for ip in ips}}, f)
    children: list[Child] = []
    try:
        if n:
            sim = Child("peersim", SIM_NS, [sys.executable, "-m", "benchmarks.peersim", "--peers", str(n),
                                            "--dest", SPK_IP], env)
            children.append(sim)
            sim.next_event("ready", 0, 20)
        spk = Speaker([sys.executable, "-m", "lbctl.speaker", "--node-name", REAL, "--static-config", cfg,
                       "--interfaces", "eth0", "--log-format", "json"], env)
        children.append(spk)
        if spk.settle(expected, a.converge_timeout, SETTLE_HOLD) is None:
            raise HarnessError(f"the speaker did not settle at its share among {n} peers: "
                               + " | ".join(spk.tail[-8:]))
        out = subprocess.run(["ip", "netns", "exec", SIM_NS, sys.executable, "-m", "benchmarks.lab_arp", "rtt",
                              "--iface", "eth0", "--mac", SIM_MAC, "--ip", SIM_IP, "--targets",
                              f"{vip},{BASE_IP},{SPK_IP}", "--count", str(a.count), "--gap-ms", str(a.gap_ms)],
                             capture_output=True, text=True, env=env, timeout=a.count * 0.1 + 60)
        if out.returncode:
            raise HarnessError(f"lab_arp rtt failed: {out.stderr[-2000:]}")
        got = json.loads(out.stdout)
        if not spk.alive():
            raise HarnessError("the speaker exited during the measurement")
    finally:
        for child in reversed(children):
            child.stop(grace=5)
    rtts = dict(zip(("speaker", "baseline", "kernel"), got["rtt_ns"]))
    lost = dict(zip(("speaker", "baseline", "kernel"), got["lost"]))
    return {"peers": n, "vip": vip, "lost": lost,
            **{f"{who}_p{q}": pct(s, q / 100) for who, s in rtts.items() for q in (50, 99)},
            **{f"{who}_mean": statistics.fmean(s) / 1000 if s else float("nan") for who, s in rtts.items()}}


def run(a: argparse.Namespace, counts: list[int], env: dict[str, str], tmp: str,
        results: list[dict[str, object]]) -> None:
    clean_namespaces()  # a crashed earlier run's leftovers: only ever our own names
    build_namespaces()
    base = Child("baseline", SPK_NS, [sys.executable, "-m", "benchmarks.lab_arp", "respond", "--iface", "eth0",
                                      "--mac", SPK_MAC, "--ip", BASE_IP], env)
    try:
        base.next_event("ready", 0, 20)
        for n in counts:
            print(f"== {n} simulated peers ==", flush=True)
            r = measure(n, a, env, tmp)
            print("  " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()),
                  flush=True)
            results.append(r)
    finally:
        base.stop(grace=5)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.arp_among_peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", default="0,200", help="comma-separated simulated peer counts")
    p.add_argument("--ips", type=int, default=1000, help="addresses in the static config (the speaker owns its share)")
    p.add_argument("--count", type=int, default=2000, help="probes per responder per peer count")
    p.add_argument("--gap-ms", type=float, default=1.0)
    p.add_argument("--converge-timeout", type=float, default=30.0)
    a = p.parse_args(argv)
    counts = [int(x) for x in a.peers.split(",") if x.strip()]
    if os.geteuid() != 0:
        p.error("needs root (network namespaces)")

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    env = {**os.environ, "LBCTL_HEARTBEAT_KEY": os.urandom(24).hex(), "PYTHONUNBUFFERED": "1"}
    tmp = tempfile.mkdtemp(prefix="lbctl-arp-peers-")
    results: list[dict[str, object]] = []
    failed = False
    try:
        run(a, counts, env, tmp, results)
    except (HarnessError, KeyboardInterrupt) as exc:
        print(f"stopped early ({exc!r}): cleaning up", file=sys.stderr)
        failed = True
    finally:
        clean_namespaces()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for r in results:
        r50, r99 = r["speaker_p50"] / r["baseline_p50"], r["speaker_p99"] / r["baseline_p99"]
        n = r["peers"]
        figure(f"arp_among_peers.{n}.speaker_p50", r["speaker_p50"], "us")
        figure(f"arp_among_peers.{n}.speaker_p99", r["speaker_p99"], "us")
        figure(f"arp_among_peers.{n}.baseline_p99", r["baseline_p99"], "us")
        figure(f"arp_among_peers.{n}.ratio_p99", round(r99, 3), "x")
        rows.append([str(n), f"{r['speaker_p50']:.1f} / {r['speaker_p99']:.1f}",
                     f"{r['baseline_p50']:.1f} / {r['baseline_p99']:.1f}",
                     f"{r['kernel_p50']:.1f} / {r['kernel_p99']:.1f}", f"{r50:.2f}x / {r99:.2f}x",
                     "yes" if r99 <= TARGET else "NO",
                     f"{r['lost']['speaker']}/{r['lost']['baseline']}/{r['lost']['kernel']}"])
    if rows:
        print()
        print(table(["PEERS", "SPEAKER p50/p99 us", "BASELINE p50/p99 us", "KERNEL p50/p99 us",
                     "RATIO p50/p99", f"<= {TARGET}x", "LOST s/b/k"], rows))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
