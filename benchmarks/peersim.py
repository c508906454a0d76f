"""Peer simulator: N signed virtual speakers beaconing from one network namespace and one UDP socket.

    LBCTL_HEARTBEAT_KEY=... ip netns exec NS python -m benchmarks.peersim --peers 200 --dest 198.18.0.2

Used by benchmarks/speaker_scale.py to put one real speaker among hundreds of peers on this machine. Each
virtual peer is what a real speaker looks like on the wire (lbctl.core.heartbeat v2, signed with the
same key): its own node name, a random incarnation, a growing sequence, its own phase within the
interval. It echoes the real speaker's incarnations once it has heard them since its own start (so the
speaker counts it live, as it would a real peer) as often as the speaker code in this tree does it
(--echo-rotation: in every beacon, or while new and then once per ECHO_ROTATION beacons), plus a window
of the other virtual peers' incarnations that rotates every beacon, so beacons are as long as on a real
segment (--echoes). The interval follows the one the real speaker advertises in its beacons: a cluster
shares one setting.

Beacons go to the speaker's address (--dest): the speaker's receive path is the same as for broadcast,
and the simulator does not receive (and pay for) its own beacons back.

One thread, sends sorted by due time; between sends it polls the socket (the speaker's beacons) and
stdin (controls). It measures its own send lag (send time minus due time), so a benchmark can tell a
simulator that falls behind from a speaker that does.

stdin, one per line:  stop NAME | start NAME (restart: new incarnation) | bye NAME (goodbye, then silent)
                      | stats (print and reset the window's counters) | quit
stdout, JSON lines:   {"event": "ready" | "stopped" | "started" | "left" | "stats" | "error", ...};
                      times are CLOCK_MONOTONIC seconds (shared by every namespace).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import resource
import select
import socket
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lbctl.core import heartbeat
from lbctl.core.heartbeat import MAX_ECHO, Heartbeat, Keyring, decode, encode

PORT = 7946
LEAVE_REPEAT = 3  # as the real speaker says goodbye
HEAR_FOR = 1.0  # echo a real speaker's incarnation this long after its last beacon
FRESH_FOR = 0.3  # rotating mode: a newly heard incarnation goes in every beacon this long (shortest dead_after)
# Speakers that rotate their echoes (and count a verified peer live between echoes) say how often; older ones
# echo everyone they hear in every beacon and need an echo within dead_after.
ECHO_ROTATION: int = getattr(heartbeat, "ECHO_ROTATION", 1)
LAG_BUCKET = 1e-4  # 0.1 ms histogram resolution
LAG_BUCKETS = 20_000  # up to 2 s; later goes in the last bucket


def peer_names(n: int, prefix: str = "sim-") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(1, n + 1)]


def next_due(due: float, now: float, interval: float) -> tuple[float, bool]:
    """The beacon after one due at `due`, sent at `now`: keep the cadence; more than an interval behind,
    resume from now instead of bursting the backlog (as the real speaker does). Second: skipped."""
    nxt = due + interval
    if nxt < now - interval:
        return now, True
    return nxt, False


class Schedule:
    """Due times of the running peers, earliest first; a stopped peer's entry is dropped lazily."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []  # (due, generation, peer)
        self._gen: dict[int, int] = {}

    def add(self, peer: int, due: float) -> None:
        gen = self._gen.get(peer, 0) + 1
        self._gen[peer] = gen
        heapq.heappush(self._heap, (due, gen, peer))

    def remove(self, peer: int) -> None:
        self._gen[peer] = self._gen.get(peer, 0) + 1  # any queued entry is now stale

    def first(self) -> float | None:
        """When the next live entry is due (drops stale ones on the way)."""
        while self._heap and self._heap[0][1] != self._gen.get(self._heap[0][2]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> tuple[int, float] | None:
        """The earliest peer due at or before now, and its due time; None if none is."""
        due = self.first()
        if due is None or due > now:
            return None
        _, _, peer = heapq.heappop(self._heap)
        return peer, due

    def push(self, peer: int, due: float) -> None:
        """Re-queue a peer just popped (same generation)."""
        heapq.heappush(self._heap, (due, self._gen[peer], peer))


class EchoRing:
    """The virtual peers' current incarnations; each beacon echoes a window that rotates by its own size,
    so over a few beacons every peer's incarnation is echoed, as a real segment's beacons would."""

    def __init__(self, size: int) -> None:
        self._incs: list[int | None] = [None] * size
        self._ring: list[int] = []
        self._dirty = False

    def set(self, peer: int, incarnation: int | None) -> None:
        self._incs[peer] = incarnation
        self._dirty = True

    def window(self, peer: int, beat: int, size: int) -> list[int]:
        """Up to `size` incarnations of other running peers for `peer`'s `beat`-th beacon."""
        if self._dirty:
            self._ring = [i for i in self._incs if i is not None]
            self._dirty = False
        ring, own = self._ring, self._incs[peer]
        if size <= 0 or not ring:
            return []
        n = len(ring)
        start = (peer * 7919 + beat * size) % n  # peers start apart, then step by a whole window
        take = min(size + 1, n)
        out = ring[start:start + take]
        if len(out) < take:
            out += ring[:take - len(out)]
        return [i for i in out if i != own][:size]


class Heard:
    """Incarnations of the real speaker(s): when each was first and last heard."""

    def __init__(self, hear_for: float = HEAR_FOR) -> None:
        self.hear_for = hear_for
        self._last: dict[int, float] = {}
        self._first: dict[int, float] = {}

    def observe(self, incarnation: int, now: float, leaving: bool = False) -> None:
        if leaving:  # said goodbye: echoing it would change nothing, and real peers stop too
            self._last.pop(incarnation, None)
            return
        self._last[incarnation] = now
        self._first.setdefault(incarnation, now)
        if len(self._first) > 64:  # bounded: forget incarnations no longer heard
            for inc in [i for i in self._first if i not in self._last]:
                del self._first[inc]

    def first(self, incarnation: int) -> float:
        return self._first.get(incarnation, float("-inf"))

    def current(self, now: float, since: float = float("-inf")) -> list[int]:
        """Heard within hear_for, and last heard after `since` (the echoing peer's own start: a restarted
        peer echoes only what it has heard itself), newest first."""
        for inc in [i for i, t in self._last.items() if now - t > self.hear_for]:
            del self._last[inc]
        return [i for i, t in sorted(self._last.items(), key=lambda kv: -kv[1]) if t >= since]


def echoes_real(first_heard: float, started: float, now: float, beat: int, rotation: int,
                fresh_for: float) -> bool:
    """Whether a peer's beacon echoes a real speaker's incarnation. rotation 1: every beacon (speakers that
    echo everyone they hear each time). Else as speakers with rotating echoes do: every beacon while the
    incarnation is new to this peer (first heard, since the peer's own start, within fresh_for), then once
    per `rotation` beacons."""
    return rotation <= 1 or now - max(first_heard, started) <= fresh_for or beat % rotation == 0


def choose_echo(real: Sequence[int], virtual: Sequence[int], limit: int) -> list[int]:
    """The real speaker's incarnations first (what makes us live to it), then the others, `limit` at most."""
    limit = min(limit, MAX_ECHO)
    return list(real[:limit]) + list(virtual[:max(0, limit - len(real))])


class LagHistogram:
    """Send lag in 0.1 ms buckets: percentiles over a window without keeping every sample."""

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * LAG_BUCKETS))
        self.n = 0
        self.worst = 0.0

    def add(self, lag: float) -> None:
        self.counts[min(max(int(lag / LAG_BUCKET), 0), LAG_BUCKETS - 1)] += 1
        self.n += 1
        if lag > self.worst:
            self.worst = lag

    def quantile(self, q: float) -> float:
        """Upper edge of the bucket holding the q-quantile (0 with no samples)."""
        if not self.n:
            return 0.0
        rank, seen = q * self.n, 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank and c:
                return (i + 1) * LAG_BUCKET
        return LAG_BUCKETS * LAG_BUCKET


@dataclass
class Peer:
    name: str
    incarnation: int
    sequence: int = 0
    running: bool = True
    started: float = 0.0
    last_sent: float | None = None


@dataclass
class Window:
    """Counters since the last `stats` control."""

    since: float
    lag: LagHistogram = field(default_factory=LagHistogram)
    sent: int = 0
    send_errors: int = 0
    skipped: int = 0
    received: int = 0
    rejected: int = 0


class Simulator:
    def __init__(self, names: Sequence[str], keys: Keyring, dest: str, port: int, interval: float, echoes: int,
                 follow_interval: bool = True, incarnation: Callable[[], int] | None = None,
                 rng: random.Random | None = None, rotation: int = 1, fresh_for: float = FRESH_FOR) -> None:
        self.keys, self.dest, self.port = keys, (dest, port), port
        self.interval, self.follow_interval = interval, follow_interval
        self.rotation, self.fresh_for = rotation, fresh_for
        # Rotating speakers widen the window so everyone is echoed once per rotation (ceil(N / rotation)).
        self.echoes = min(MAX_ECHO, max(echoes, -(-len(names) // rotation) if rotation > 1 else 0))
        self._incarnation = incarnation or (lambda: int.from_bytes(os.urandom(8), "big"))
        self._rng = rng or random.Random()
        self.peers = [Peer(n, self._incarnation()) for n in names]
        self.index = {p.name: i for i, p in enumerate(self.peers)}
        self.ring = EchoRing(len(self.peers))
        for i, p in enumerate(self.peers):
            self.ring.set(i, p.incarnation)
        self.heard = Heard()
        self.schedule = Schedule()
        self.window = Window(time.monotonic())
        self.sock: socket.socket | None = None

    # --- setup ----------------------------------------------------------------------------------
    def open(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("", self.port))
        s.setblocking(False)
        self.sock = s
        now = time.monotonic()
        for i, p in enumerate(self.peers):
            p.started = now
            self.schedule.add(i, now + self._rng.uniform(0, self.interval))  # each its own phase

    # --- beacons --------------------------------------------------------------------------------
    def beacon(self, i: int, now: float, leaving: bool = False) -> bytes:
        p = self.peers[i]
        p.sequence += 1
        real = self.heard.current(now, p.started)
        if self.rotation > 1:  # peers take their turns apart (offset i), as their phases differ
            real = [r for r in real if echoes_real(self.heard.first(r), p.started, now, p.sequence + i,
                                                     self.rotation, self.fresh_for)]
        echo = choose_echo(real, self.ring.window(i, p.sequence, self.echoes), self.echoes)
        hb = Heartbeat(p.name, p.incarnation, p.sequence, int(self.interval * 1000), leaving)
        return encode(hb, self.keys, echo)  # the speaker's own encoder: one HMAC per beacon

    def _send(self, data: bytes) -> None:
        assert self.sock is not None
        try:
            self.sock.sendto(data, self.dest)
            self.window.sent += 1
        except OSError:
            self.window.send_errors += 1

    def send_due(self) -> None:
        mono = time.monotonic
        while True:
            now = mono()
            hit = self.schedule.pop_due(now)
            if hit is None:
                return
            i, due = hit
            self._send(self.beacon(i, now))
            sent = mono()
            self.peers[i].last_sent = sent
            self.window.lag.add(sent - due)
            nxt, skipped = next_due(due, sent, self.interval)
            self.window.skipped += skipped
            self.schedule.push(i, nxt)

    def receive(self) -> None:
        assert self.sock is not None
        for _ in range(256):
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            now = time.monotonic()
            hb = decode(data, self.keys)
            if hb is None:
                self.window.rejected += 1
                continue
            if hb.node in self.index:
                continue  # one of ours (a broadcast looped back)
            self.window.received += 1
            self.heard.observe(hb.incarnation, now, hb.leaving)
            if self.follow_interval and hb.interval_ms > 0:
                self.interval = hb.interval_ms / 1000

    # --- controls -------------------------------------------------------------------------------
    def control(self, line: str) -> dict[str, object] | None:
        """Apply one control line; the event to print (None for quit)."""
        words = line.split()
        if not words:
            return {"event": "error", "error": "empty control line"}
        cmd, args = words[0], words[1:]
        if cmd == "quit":
            return None
        if cmd == "stats":
            return self.stats()
        if cmd not in ("stop", "start", "bye") or len(args) != 1 or args[0] not in self.index:
            return {"event": "error", "error": f"bad control {line.strip()!r}: stop|start|bye NAME, stats, quit"}
        i, now = self.index[args[0]], time.monotonic()
        p = self.peers[i]
        if cmd == "start":
            if p.running:
                return {"event": "error", "error": f"{p.name} is running"}
            p.incarnation, p.sequence, p.running, p.started = self._incarnation(), 0, True, now
            self.ring.set(i, p.incarnation)
            self.schedule.add(i, now)  # a starting speaker beacons at once
            return {"event": "started", "peer": p.name, "t": now, "incarnation": p.incarnation}
        if not p.running:
            return {"event": "error", "error": f"{p.name} is not running"}
        if cmd == "bye":
            for _ in range(LEAVE_REPEAT):
                self._send(self.beacon(i, now, leaving=True))
            p.last_sent = time.monotonic()
        p.running = False
        self.schedule.remove(i)
        self.ring.set(i, None)
        return {"event": "left" if cmd == "bye" else "stopped", "peer": p.name, "t": time.monotonic(),
                "last_sent": p.last_sent}

    def stats(self) -> dict[str, object]:
        w, now = self.window, time.monotonic()
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        out = {"event": "stats", "t": now, "seconds": now - w.since, "sent": w.sent, "send_errors": w.send_errors,
               "skipped": w.skipped, "received": w.received, "rejected": w.rejected,
               "running": sum(p.running for p in self.peers), "interval": self.interval,
               "lag_p50_ms": w.lag.quantile(0.5) * 1000, "lag_p99_ms": w.lag.quantile(0.99) * 1000,
               "lag_max_ms": w.lag.worst * 1000, "cpu_s": cpu.ru_utime + cpu.ru_stime,
               "speaker_incarnations": len(self.heard.current(now))}
        self.window = Window(now)
        return out

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        assert self.sock is not None
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(sys.stdin.fileno(), select.POLLIN)
        pending = b""
        emit({"event": "ready", "t": time.monotonic(), "peers": len(self.peers), "pid": os.getpid(),
              "echoes": self.echoes, "rotation": self.rotation})
        while True:
            self.send_due()
            due = self.schedule.first()
            wait = 1.0 if due is None else max(0.0, due - time.monotonic())
            for fd, _ in poller.poll(wait * 1000):
                if fd == self.sock.fileno():
                    self.receive()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return  # the benchmark went away
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    event = self.control(line.decode(errors="replace"))
                    if event is None:
                        return
                    emit(event)


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peersim", description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", type=int, required=True)
    p.add_argument("--dest", required=True, help="the real speaker's address (beacons are sent there)")
    p.add_argument("--port", type=int, default=PORT)
    p.add_argument("--interval", type=float, default=0.1, help="until the real speaker's beacons say otherwise")
    p.add_argument("--fixed-interval", action="store_true", help="keep --interval, whatever the speaker advertises")
    p.add_argument("--echoes", type=int, default=32, help="incarnations echoed per beacon at least (the real "
                   "speaker's first; with rotation, enough for everyone once per rotation)")
    p.add_argument("--echo-rotation", type=int, default=ECHO_ROTATION,
                   help="echo the real speaker once per this many beacons once it is not new (as speakers with "
                        "rotating echoes do); 1: in every beacon (default: what this tree's speaker does, "
                        f"{ECHO_ROTATION})")
    p.add_argument("--prefix", default="sim-", help="node name prefix of the virtual peers")
    args = p.parse_args(argv)
    key = os.environ.get("LBCTL_HEARTBEAT_KEY", "").strip().encode()
    if len(key) < 16:
        p.error("set $LBCTL_HEARTBEAT_KEY (the speaker's heartbeat key, 16+ bytes)")
    if args.peers < 1 or args.interval <= 0 or not 0 <= args.echoes <= MAX_ECHO or args.echo_rotation < 1:
        p.error(f"need --peers >= 1, --interval > 0, 0 <= --echoes <= {MAX_ECHO}, --echo-rotation >= 1")
    sim = Simulator(peer_names(args.peers, args.prefix), Keyring([key]), args.dest, args.port, args.interval,
                    args.echoes, follow_interval=not args.fixed_interval, rotation=args.echo_rotation)
    sim.open()
    try:
        sim.run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
