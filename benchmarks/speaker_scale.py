"""One real speaker among N simulated peers: convergence, idle cost, failover on the wire (issue 9).

    python -m benchmarks.speaker_scale --peers 50,200,500 [--ips 5000] [--timing default|fast|relaxed]
                                       [--duration 60] [--failovers 5]

Needs root. Builds its own namespaces, all named lbctl-sim-* (never the lab's), on one bridge:

    lbctl-sim-br (br0) -- lbctl-sim-spk   198.18.0.2/16  one real `python -m lbctl.speaker --static-config`
                       -- lbctl-sim-peers 198.18.0.3/16  benchmarks.peersim (N virtual speakers, one socket)
                                                         + benchmarks.scale_wire (ARP probes, GARP capture,
                                                           /metrics scrapes over the segment)

The static config holds --ips addresses from 198.18.32.0 up and the nodes: the real one plus the N
virtual names. The heartbeat key is generated per run and handed over in the environment only.

First a baseline in the same run: the same speaker alone (0 peers). Then per peer count:
  converge   time from the speaker's start until it announces exactly its rendezvous share (the
             expected set: lbctl.core.election over all N+1 nodes), read from its `ownership` logs and
             checked against /metrics `lbctl_speaker_announced_ips`; then every address is ARP-probed
             from the simulator's namespace: exactly the expected ones must be answered by its MAC.
  settled    for --duration seconds: ownership changes logged, beacons dropped by the kernel (the drops
             column of the speaker's socket in its namespace's /proc/net/udp, and
             lbctl_speaker_heartbeat_drops_total if the speaker has it), CPU % of one core
             (utime+stime from /proc/PID/stat) and RSS, for the speaker and the simulator, and the
             simulator's own send lag (when it lags, the simulator, not the speaker, is the limit).
  failover   virtual peers that rank first for IPs where the real speaker ranks second are stopped one
             at a time: time from the stop until the speaker's gratuitous ARP for all of those IPs is
             seen on the wire; each is restarted afterwards and the speaker must give the IPs back.

Prints FIGURE lines (tests/figures.py), then a table against the issue's targets. Reports, does not
assert: the exit status is non-zero only when the harness itself fails. Everything it started (processes
by PID, namespaces by name) is removed in `finally`, also on ^C.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbctl.core.election import rank
from lbctl.core.heartbeat import DEFAULT_INTERVAL
from lbctl.lab.topology import in_ns, sh
from lbctl.tables import table
from tests.figures import figure

from .peersim import peer_names

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "lbctl-sim-"
BR_NS, SPK_NS, SIM_NS = f"{PREFIX}br", f"{PREFIX}spk", f"{PREFIX}peers"
NAMESPACES = (BR_NS, SPK_NS, SIM_NS)
SPK_IP, SIM_IP, PREFIXLEN = "198.18.0.2", "198.18.0.3", 16
SPK_MAC, SIM_MAC = "02:18:5e:00:00:02", "02:18:5e:00:00:03"
FIRST_IP = ipaddress.ip_address("198.18.32.0")  # a /19 and more above the hosts, inside the /16 segment
REAL = "spk-real"
HB_PORT, HTTP_PORT = 7946, 7473
CONVERGE_TIMEOUT = 30.0
FAILOVER_TIMEOUT = 10.0
GIVEBACK_TIMEOUT = 10.0
SETTLE_HOLD = 1.0  # "at its share" counts once no ownership change follows for this long
# The presets' values, passed as flags when the speaker under test has no --timing yet
PRESETS = {"fast": ["--heartbeat-interval", "0.1", "--dead-after", "0.3"],
           "relaxed": ["--heartbeat-interval", "0.25", "--dead-after", "1"]}
TICK = os.sysconf("SC_CLK_TCK")


class HarnessError(RuntimeError):
    pass


# --- child processes -----------------------------------------------------------------------------

class Child:
    """A process in one of our namespaces whose JSON lines (stdout, or stderr for the speaker's logs) are
    read on a thread, each stamped with CLOCK_MONOTONIC on arrival."""

    def __init__(self, name: str, netns: str, argv: list[str], env: dict[str, str], logs: bool = False,
                 on_event: Callable[[float, dict[str, Any]], bool] | None = None) -> None:
        self.name = name
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.tail: list[str] = []  # the last non-JSON lines (tracebacks), for error messages
        self.cond = threading.Condition()
        self.on_event = on_event
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv], cwd=ROOT, env=env, start_new_session=True,
            stdin=subprocess.DEVNULL if logs else subprocess.PIPE,
            stdout=subprocess.DEVNULL if logs else subprocess.PIPE, stderr=subprocess.PIPE if logs else None)
        self.pid = self.proc.pid  # `ip netns exec` execs: this is the program itself
        stream = self.proc.stderr if logs else self.proc.stdout
        assert stream is not None
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            now = time.monotonic()
            try:
                event = json.loads(raw)
                if not isinstance(event, dict):
                    raise ValueError
            except ValueError:
                self.tail = (self.tail + [raw.decode(errors="replace").rstrip()])[-30:]
                continue
            with self.cond:
                if self.on_event is None or self.on_event(now, event):  # False: digested, not kept
                    self.events.append((now, event))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: pred() or self.proc.poll() is not None, timeout) and pred()

    def next_event(self, kind: str, after: int, timeout: float) -> dict[str, Any]:
        """The first event of `kind` at index >= after; HarnessError if none comes."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for _, e in self.events[after:] if e.get("event") == kind][:1]
            return bool(found)

        if not self.wait(seen, timeout):
            raise HarnessError(f"{self.name}: no {kind!r} within {timeout} s (exit {self.proc.poll()}): "
                               + " | ".join(self.tail[-8:]))
        return found[0]

    def request(self, line: str, kind: str, timeout: float) -> dict[str, Any]:
        mark = len(self.events)
        self.send(line)
        return self.next_event(kind, mark, timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self._reader.join(5)


class Speaker(Child):
    """The real speaker; its `ownership` log lines give the announced set as it changes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.announced: set[str] = set()
        self.changes: list[tuple[float, frozenset[str], frozenset[str]]] = []  # (t, gained, lost)
        self.started: float | None = None
        super().__init__("speaker", SPK_NS, argv, env, logs=True, on_event=self._observe)

    def _observe(self, now: float, event: dict[str, Any]) -> bool:
        kind = event.get("event")
        if kind == "ownership":
            gained, lost = event.get("gained") or [], event.get("lost") or []
            self.announced = (self.announced | set(gained)) - set(lost)
            self.changes.append((now, frozenset(gained), frozenset(lost)))
            return False
        if kind == "starting":
            self.started = now
        return kind != "announcing"  # one per IP: the ownership lines carry the sets

    def settle(self, expected: set[str], timeout: float, hold: float) -> float | None:
        """When the speaker reached exactly `expected` and then kept it for `hold` seconds (the time of the
        change that reached it), or None if that did not happen within `timeout`."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            if not self.wait(lambda: self.announced == expected, left):
                return None
            with self.cond:
                seen = len(self.changes)
                reached = self.changes[-1][0] if self.changes else time.monotonic()
            if not self.wait(lambda: len(self.changes) > seen, hold):
                return reached
        return None


# --- namespaces ------------------------------------------------------------------------------------

def our_namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in NAMESPACES]


def clean_namespaces() -> None:
    """Remove our namespaces and whatever still runs in them (only ever this benchmark's processes)."""
    for ns in our_namespaces():
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", ns, check=False)


def build_namespaces() -> None:
    """A bridge namespace and two hosts on it; IPv6 off (IPv4 beacons and ARP only)."""
    for ns in NAMESPACES:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        in_ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    sh("ip", "-n", BR_NS, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
    sh("ip", "-n", BR_NS, "link", "set", "br0", "up")
    for ns, port, ip, mac in ((SPK_NS, "v-spk", SPK_IP, SPK_MAC), (SIM_NS, "v-peers", SIM_IP, SIM_MAC)):
        # Created in the bridge namespace, the peer end moved straight into the host's: never the root ns.
        sh("ip", "-n", BR_NS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", BR_NS, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        sh("ip", "-n", ns, "addr", "add", f"{ip}/{PREFIXLEN}", "brd", "+", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")


# --- /proc readings --------------------------------------------------------------------------------

def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15): every thread


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def udp_drops(pid: int, port: int = HB_PORT, proc: str = "/proc") -> int:
    """Drops of the UDP sockets bound to `port` in pid's network namespace (/proc/PID/net is its view)."""
    total = 0
    with open(f"{proc}/{pid}/net/udp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                total += int(cols[-1])
    return total


def metric(text: str, name: str) -> float | None:
    """Sum of a metric's samples in Prometheus text (None when the speaker does not have it)."""
    vals = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{")]
    return sum(vals) if vals else None


# --- the plan ----------------------------------------------------------------------------------------

def addresses(n: int) -> list[str]:
    return [str(FIRST_IP + k) for k in range(n)]


def plan(ips: list[str], nodes: list[str], failovers: int) -> tuple[set[str], list[tuple[str, set[str]]]]:
    """The real speaker's rendezvous share, and up to `failovers` virtual peers with the IPs where that
    peer ranks first and the real speaker second (most such IPs first)."""
    expected: set[str] = set()
    second: dict[str, set[str]] = {}
    for ip in ips:
        order = rank(ip, nodes)
        if order[0] == REAL:
            expected.add(ip)
        elif len(order) > 1 and order[1] == REAL:
            second.setdefault(order[0], set()).add(ip)
    picks = sorted(second.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:failovers]
    return expected, picks


def timing_flags(timing: str) -> tuple[list[str], float]:
    """Speaker flags for the preset and the interval the simulator starts with (it then follows the
    speaker's advertised interval)."""
    if timing == "default":
        return [], DEFAULT_INTERVAL
    helptext = subprocess.run([sys.executable, "-m", "lbctl.speaker", "--help"], cwd=ROOT, capture_output=True,
                              text=True).stdout
    return (["--timing", timing] if "--timing" in helptext else PRESETS[timing]), float(PRESETS[timing][1])


# --- one measurement ------------------------------------------------------------------------------

@dataclass
class Result:
    peers: int
    expected: int = 0
    converge_s: float | None = None
    from_starting_s: float | None = None
    announced_metric: float | None = None
    live_peers: float | None = None
    announced_end: int = 0  # after the settled window (from the logs)
    wrong_end: int = 0  # of those, IPs announced but not its share, plus its share not announced
    wire_mismatches: int | None = None
    ownership_changes_settled: int = 0
    beacons_dropped_settled: int = 0
    drops_metric: float | None = None
    cpu_pct: float = 0.0
    rss_mib: float = 0.0
    sim_cpu_pct: float | None = None
    sim: dict[str, Any] = field(default_factory=dict)
    failovers: list[float] = field(default_factory=list)
    goodbyes: list[float] = field(default_factory=list)  # failover after a graceful goodbye
    failover_misses: int = 0
    givebacks: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ips = addresses(args.ips)
        self.env = {**os.environ, "LBCTL_HEARTBEAT_KEY": os.urandom(24).hex(), "PYTHONUNBUFFERED": "1"}
        self.flags, self.interval = timing_flags(args.timing)
        self.tmp = Path(tempfile.mkdtemp(prefix="lbctl-sim-"))
        self.children: list[Child] = []
        self.wire: Child | None = None

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop(grace=5)
        clean_namespaces()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_wire(self) -> None:
        self.wire = Child("scale_wire", SIM_NS, [sys.executable, "-m", "benchmarks.scale_wire", "--iface", "eth0",
                                                  "--mac", SIM_MAC, "--ip", SIM_IP, "--metrics-url",
                                                  f"http://{SPK_IP}:{HTTP_PORT}/metrics"], self.env)
        self.children.append(self.wire)
        self.wire.next_event("ready", 0, 20)

    def metrics(self) -> str:
        assert self.wire
        text = str(self.wire.request("metrics", "metrics", 30).get("text", ""))
        if text.startswith("# unreachable"):
            print(f"  /metrics scrape failed: {text[2:]}", flush=True)
        return text

    def measure(self, n: int, say: Callable[[str], None]) -> Result:
        a, wire = self.args, self.wire
        assert wire is not None
        res = Result(n)
        names = peer_names(n)
        nodes = [REAL, *names]
        expected, picks = plan(self.ips, nodes, a.failovers + 1 if n else 0)  # the last one says goodbye
        res.expected = len(expected)
        cfg = self.tmp / f"static-{n}.json"
        cfg.write_text(json.dumps({"nodes": nodes, "ips": {ip: {} for ip in self.ips}}))
        sim: Child | None = None
        spk: Speaker | None = None
        try:
            if n:
                sim = Child("peersim", SIM_NS, [sys.executable, "-m", "benchmarks.peersim", "--peers", str(n),
                                                "--dest", SPK_IP, "--interval", str(self.interval),
                                                "--echoes", str(a.echoes)], self.env)
                self.children.append(sim)
                ready = sim.next_event("ready", 0, 20)
                say(f"  simulator: {n} peers, {ready['echoes']} echoes per beacon, the speaker echoed "
                    + ("in every beacon" if ready["rotation"] <= 1 else
                       f"while new, then once per {ready['rotation']} beacons"))
            t0 = time.monotonic()
            spk = Speaker([sys.executable, "-m", "lbctl.speaker", "--node-name", REAL, "--static-config", str(cfg),
                           "--interfaces", "eth0", "--log-format", "json", *self.flags], self.env)
            self.children.append(spk)
            t = spk.settle(expected, a.converge_timeout, SETTLE_HOLD)
            if t is not None:
                res.converge_s = t - t0
                if len(spk.changes) > 1 and spk.changes[0][1] and not spk.changes[0][1] <= expected:
                    res.notes.append(f"first claimed {len(spk.changes[0][1])} IPs, then settled at its share")
                res.from_starting_s = t - spk.started if spk.started else None
                say(f"  converged in {res.converge_s:.2f} s from spawn, {fmt(res.from_starting_s)} s from its "
                    f"`starting` line (share {len(expected)} of {len(self.ips)})")
            elif not spk.alive():
                raise HarnessError(f"speaker exited {spk.proc.returncode}: " + " | ".join(spk.tail[-8:]))
            else:
                res.notes.append(f"never settled at its share for {SETTLE_HOLD} s within {a.converge_timeout:.0f} s "
                                 f"({len(spk.changes)} ownership changes; announces {len(spk.announced)}, share "
                                 f"{len(expected)})")
                say(f"  NOT converged after {a.converge_timeout:.0f} s: announces {len(spk.announced)} IPs, "
                    f"its share is {len(expected)}, {len(spk.changes)} ownership changes")
            text = self.metrics()
            res.announced_metric = metric(text, "lbctl_speaker_announced_ips")
            if res.converge_s is not None and res.announced_metric != len(expected):
                res.notes.append(f"just after converging /metrics says {res.announced_metric} announced (logs: "
                                 f"{len(spk.announced)}, share {len(expected)})")
            if a.probe:
                res.wire_mismatches = self.check_wire(expected, say)
            self.settled(res, spk, sim, expected, say)
            if res.converge_s is not None and sim is not None:
                self.failover(res, spk, sim, expected, picks[:a.failovers], "stop", say)
                self.failover(res, spk, sim, expected, picks[a.failovers:], "bye", say)
            elif n:
                res.notes.append("failover not measured (never converged)")
        finally:
            if spk is not None:
                spk.stop()
            if sim is not None:
                if sim.alive():
                    sim.send("quit")
                sim.stop(grace=5)
        return res

    def check_wire(self, expected: set[str], say: Callable[[str], None]) -> int:
        """ARP-probe every address from the simulator's namespace; IPs whose answer differs from expected."""
        assert self.wire
        timeout = len(self.ips) / 1000 + 30

        def probe(ips: list[str]) -> dict[str, list[str]]:
            assert self.wire
            return dict(self.wire.request("probe " + ",".join(ips), "probe", timeout)["answers"])

        answers = probe(self.ips)
        missing = sorted(ip for ip in expected if SPK_MAC not in answers.get(ip, []))
        if missing:  # a lost request is not a wrong answer: ask those once more
            answers.update(probe(missing))
        wrong = sorted(ip for ip in self.ips if (ip in expected) != (answers.get(ip) == [SPK_MAC]))
        examples = "; ".join(f"{ip} answered by {answers.get(ip) or 'nobody'} "
                             f"({'its share' if ip in expected else 'not its share'})" for ip in wrong[:3])
        say(f"  wire: {len(self.ips)} addresses probed, {len(self.ips) - len(wrong)} as expected, {len(wrong)} not"
            + (f", e.g. {examples}" if wrong else ""))
        return len(wrong)

    def settled(self, res: Result, spk: Speaker, sim: Child | None, expected: set[str],
                say: Callable[[str], None]) -> None:
        """Idle for --duration: ownership changes, drops, CPU, RSS."""
        duration = self.args.duration if res.peers else self.args.baseline_duration
        if sim:
            sim.request("stats", "stats", 10)  # resets the simulator's window
        changes0, drops0 = len(spk.changes), udp_drops(spk.pid)
        m0 = metric(self.metrics(), "lbctl_speaker_heartbeat_drops_total")
        t0, c0 = time.monotonic(), cpu_ticks(spk.pid)
        s0 = cpu_ticks(sim.pid) if sim else 0
        end = t0 + duration
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            if not spk.alive() or (sim and not sim.alive()):
                raise HarnessError("speaker or simulator exited during the settled window: "
                                   + " | ".join((spk.tail + (sim.tail if sim else []))[-8:]))
        c1, elapsed = cpu_ticks(spk.pid), time.monotonic() - t0
        s1 = cpu_ticks(sim.pid) if sim else 0
        res.cpu_pct = (c1 - c0) / TICK / elapsed * 100
        res.rss_mib = rss_mib(spk.pid)
        res.beacons_dropped_settled = udp_drops(spk.pid) - drops0
        text = self.metrics()
        m1 = metric(text, "lbctl_speaker_heartbeat_drops_total")
        res.drops_metric = m1 - m0 if m0 is not None and m1 is not None else None
        res.live_peers = metric(text, "lbctl_speaker_live_peers")
        res.ownership_changes_settled = len(spk.changes) - changes0
        with spk.cond:
            res.announced_end, res.wrong_end = len(spk.announced), len(spk.announced ^ expected)
        if sim:
            res.sim_cpu_pct = (s1 - s0) / TICK / elapsed * 100
            res.sim = sim.request("stats", "stats", 10)
        say(f"  settled {elapsed:.0f} s: CPU {res.cpu_pct:.2f} %, RSS {res.rss_mib:.0f} MiB, "
            f"{res.ownership_changes_settled} ownership changes, {res.beacons_dropped_settled} beacons dropped, "
            f"live peers seen {res.live_peers}; at the end announces {res.announced_end} IPs ({res.wrong_end} "
            "differ from its share)")
        if sim:
            st = res.sim
            expect = st["running"] * st["seconds"] / st["interval"]
            say(f"  simulator: CPU {res.sim_cpu_pct:.1f} %, sent {st['sent']} of ~{expect:.0f} due, lag p50 "
                f"{st['lag_p50_ms']:.1f} / p99 {st['lag_p99_ms']:.1f} / max {st['lag_max_ms']:.1f} ms, "
                f"{st['skipped']} skipped, {st['send_errors']} send errors")
            if st["lag_p99_ms"] > st["interval"] * 1000 / 2 or st["skipped"]:
                res.notes.append("the SIMULATOR lagged (send lag p99 > half an interval): figures are its limit")

    def failover(self, res: Result, spk: Speaker, sim: Child, expected: set[str],
                 picks: list[tuple[str, set[str]]], how: str, say: Callable[[str], None]) -> None:
        """Stop each picked owner (`how`: "stop" goes silent, "bye" says goodbye first); time until the speaker's
        GARP for all its IPs; restart it; wait for the give-back."""
        times = res.failovers if how == "stop" else res.goodbyes
        wire = self.wire
        assert wire
        for peer, ips in picks:
            # Only a speaker sitting at its share can show a takeover: otherwise any GARP may be its own flapping.
            if spk.settle(expected, GIVEBACK_TIMEOUT, SETTLE_HOLD) is None:
                res.notes.append(f"failover not measurable from {peer} on: the speaker did not stay at its share")
                say(f"  failover {peer}: speaker not settled at its share, not measured")
                break
            mark, changes = len(wire.events), len(spk.changes)
            t_stop = float(sim.request(f"{how} {peer}", "stopped" if how == "stop" else "left", 10)["t"])
            first: dict[str, float] = {}
            cursor = [mark]

            def all_seen() -> bool:  # called on every wire event: look at the new ones only
                for _, e in wire.events[cursor[0]:]:
                    if (e.get("event") == "garp" and e.get("mac") == SPK_MAC and e["ip"] in ips
                            and e["t"] >= t_stop):
                        first.setdefault(e["ip"], float(e["t"]))
                cursor[0] = len(wire.events)
                return len(first) == len(ips)

            if wire.wait(all_seen, FAILOVER_TIMEOUT):
                took = max(first.values()) - t_stop
                times.append(took)
                spk.wait(lambda: ips <= spk.announced, 1.0)  # the log line may trail the GARP a little
                with spk.cond:
                    extra = set().union(*(g for _, g, _ in spk.changes[changes:])) - ips
                say(f"  {'failover' if how == 'stop' else 'goodbye'} {peer} ({len(ips)} IPs): GARP after "
                    f"{took * 1000:.0f} ms"
                    + (f"; also claimed {len(extra)} IPs it should not" if extra else ""))
                if extra:
                    res.notes.append(f"stopping {peer}: claimed {len(extra)} IPs besides its {len(ips)}")
            else:
                res.failover_misses += 1
                say(f"  failover {peer}: only {len(first)} of {len(ips)} IPs GARPed in {FAILOVER_TIMEOUT:.0f} s")
            t_start = float(sim.request(f"start {peer}", "started", 10)["t"])
            back = spk.settle(expected, GIVEBACK_TIMEOUT, SETTLE_HOLD)
            if back is not None:
                res.givebacks.append(back - t_start)
            else:
                res.notes.append(f"{peer} restarted: its IPs not given back in {GIVEBACK_TIMEOUT:.0f} s")


# --- report --------------------------------------------------------------------------------------------

def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report(results: list[Result], timing: str) -> None:
    tag = "scale" if timing == "default" else f"scale_{timing}"
    base = next((r for r in results if r.peers == 0), None)
    rows = []
    for r in results:
        p = f"{tag}_{r.peers}p"
        if r.converge_s is not None:
            figure(f"{p}_converge_s", r.converge_s, "s")
            if r.from_starting_s is not None:
                figure(f"{p}_converge_from_starting_line_s", r.from_starting_s, "s")
        figure(f"{p}_converged", int(r.converge_s is not None), "bool")
        if r.wire_mismatches is not None:
            figure(f"{p}_wire_mismatches", r.wire_mismatches, "count")
        figure(f"{p}_ownership_changes_settled", r.ownership_changes_settled, "count")
        figure(f"{p}_beacons_dropped_settled", r.beacons_dropped_settled, "count")
        figure(f"{p}_cpu_pct", r.cpu_pct, "%")
        figure(f"{p}_rss_mib", r.rss_mib, "MiB")
        if base is not None and r is not base and base.cpu_pct > 0 and base.rss_mib > 0:
            figure(f"{p}_cpu_vs_0p", r.cpu_pct / base.cpu_pct, "x")
            figure(f"{p}_rss_vs_0p", r.rss_mib / base.rss_mib, "x")
        if r.live_peers is not None:
            figure(f"{p}_live_peers_seen", r.live_peers, "count")
        figure(f"{p}_wrong_ips_at_end", r.wrong_end, "count")
        if r.failovers:
            figure(f"{p}_failover_p50_s", statistics.median(r.failovers), "s")
            figure(f"{p}_failover_max_s", max(r.failovers), "s")
        if r.goodbyes:
            figure(f"{p}_goodbye_failover_s", max(r.goodbyes), "s")
        if r.givebacks:
            figure(f"{p}_giveback_max_s", max(r.givebacks), "s")
        if r.peers:
            figure(f"{p}_failover_misses", r.failover_misses, "count")
        if r.sim_cpu_pct is not None:
            figure(f"{p}_sim_cpu_pct", r.sim_cpu_pct, "%")
            figure(f"{p}_sim_lag_p99_ms", float(r.sim["lag_p99_ms"]), "ms")
        cpu_target = 2.0 if r.peers <= 200 else 5.0
        rows.append([str(r.peers), fmt(r.converge_s) if r.converge_s is not None else "never", str(r.expected),
                     "-" if r.wire_mismatches is None else str(r.wire_mismatches),
                     str(r.ownership_changes_settled), str(r.beacons_dropped_settled),
                     fmt(r.drops_metric, 0), f"{fmt(r.cpu_pct)}{'' if r.cpu_pct <= cpu_target else ' !'}",
                     fmt(r.rss_mib, 0), fmt(r.live_peers, 0),
                     fmt(statistics.median(r.failovers)) if r.failovers else "-",
                     fmt(max(r.failovers)) if r.failovers else "-",
                     fmt(r.sim_cpu_pct, 1), fmt(r.sim.get("lag_p99_ms"), 1) if r.sim else "-"])
    print(f"\nspeaker at scale, timing {timing} (targets: converge <= 3 s, 0 changes and 0 drops settled, CPU <= 2 % "
          "at 200 peers / 5 % at 500, RSS <= 100 MiB, failover p50 <= 1 s (fast: 0.35 s), max <= 2 s)")
    print(table(["PEERS", "CONVERGE_S", "SHARE", "WIRE_BAD", "CHANGES", "DROPS", "DROPS_METRIC", "CPU_%",
                 "RSS_MIB", "LIVE_SEEN", "FAILOVER_P50", "FAILOVER_MAX", "SIM_CPU_%", "SIM_LAG_P99_MS"], rows))
    for r in results:
        for note in r.notes:
            print(f"  {r.peers} peers: {note}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speaker_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", default="50,200,500", help="comma-separated simulated peer counts")
    p.add_argument("--ips", type=int, default=5000)
    p.add_argument("--timing", choices=["default", *PRESETS], default="default",
                   help="the speaker's --timing preset (or its values as flags, for a speaker without presets)")
    p.add_argument("--duration", type=float, default=60.0, help="settled window per peer count, seconds")
    p.add_argument("--baseline-duration", type=float, default=None, help="settled window at 0 peers "
                   "(default: --duration, at most 30 s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the 0-peer baseline")
    p.add_argument("--failovers", type=int, default=5, help="owners stopped per peer count")
    p.add_argument("--echoes", type=int, default=32, help="incarnations each virtual beacon echoes")
    p.add_argument("--converge-timeout", type=float, default=CONVERGE_TIMEOUT)
    p.add_argument("--no-probe", dest="probe", action="store_false", help="skip the ARP check of every address")
    a = p.parse_args(argv)
    try:
        counts = [int(x) for x in a.peers.split(",") if x.strip()]
    except ValueError:
        p.error(f"--peers must be comma-separated integers, got {a.peers!r}")
    if any(c < 1 for c in counts) or not 1 <= a.ips <= 65536 or a.duration <= 0:
        p.error("need peer counts >= 1, 1 <= --ips <= 65536, --duration > 0")
    if a.baseline_duration is None:
        a.baseline_duration = min(a.duration, 30.0)
    if os.geteuid() != 0:
        p.error("needs root (network namespaces)")

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    results: list[Result] = []
    bench: Bench | None = None
    failed = False
    try:
        clean_namespaces()  # a crashed earlier run's leftovers: only ever our own names
        build_namespaces()
        bench = Bench(a)
        bench.start_wire()
        for n in ([] if a.no_baseline else [0]) + counts:
            print(f"\n== {n} simulated peers, {a.ips} IPs, timing {a.timing} ==", flush=True)
            results.append(bench.measure(n, lambda s: print(s, flush=True)))
    except HarnessError as exc:
        print(f"harness failed: {exc}", file=sys.stderr)
        failed = True
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        failed = True
    finally:
        if bench is not None:
            bench.close()
        else:
            clean_namespaces()
    if results:
        report(results, a.timing)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
