"""Heartbeats among hundreds of peers (issue 9): echo rotation, verified-then-refresh liveness, the published
live snapshot (no wedge), batched receiving with kernel timestamps and drops, timing presets."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core.heartbeat import (
    ECHO_ROTATION,
    ECHO_SLOTS,
    ECHO_WINDOW,
    MAX_ECHO,
    TIMING_PRESETS,
    Decoder,
    Heartbeat,
    Keyring,
    PeerTable,
    decode,
    encode,
    incarnation_bytes,
)
from lbctl.speaker.cli import parse_args
from lbctl.speaker.heartbeats import Heartbeats
from lbctl.speaker.metrics import Metrics
from lbctl.speaker.recvmmsg import SLOT, BatchReceiver, enable_rx_metadata

KEY = b"k" * 32
PEERS = 500
INTERVAL = 0.1
DEAD = 0.45


def _segment(table: PeerTable, ticks: int, echoes_of=None) -> list[list[int]]:
    """PEERS peers beacon every INTERVAL at fixed phases (peer i at i/PEERS of it); `table` sends just
    after peer 0, each tick. Returns what each of its beacons echoed."""
    sent = []
    for tick in range(ticks):
        for i in range(PEERS):
            t = tick * INTERVAL + (i + 1) * INTERVAL / PEERS
            table.observe_fields(f"n{i}", 1000 + i, tick + 1, False, True, t)
            if i == 0:
                sent.append(table.heard(t) if echoes_of is None else echoes_of(t))
    return sent


def _every_peer_echoed_every(beacons: list[list[int]], every: int) -> bool:
    """In each run of `every` consecutive beacons, every peer's incarnation is echoed at least once."""
    for start in range(len(beacons) - every + 1):
        seen = set().union(*map(set, beacons[start:start + every]))
        if len(seen & set(range(1000, 1000 + PEERS))) != PEERS:
            return False
    return True


def test_every_one_of_500_peers_is_echoed_within_the_rotation() -> None:
    t = PeerTable("me", DEAD)
    beacons = _segment(t, 40)[10:]  # past the first dead_after: nobody is new any more
    assert _every_peer_echoed_every(beacons, ECHO_ROTATION)
    # Small beacons: about PEERS / ECHO_ROTATION echoes each (at least ECHO_SLOTS), well under MAX_ECHO.
    assert all(len(b) <= max(ECHO_SLOTS, math.ceil(PEERS / ECHO_ROTATION)) for b in beacons)
    assert all(len(b) == len(set(b)) for b in beacons)


def test_echoing_the_most_recently_heard_140_starves_most_peers() -> None:
    """What the table did before: the property above fails for it (most peers never see us echo them)."""
    t = PeerTable("me", DEAD)
    last: dict[int, float] = {}

    def newest_140(now: float) -> list[int]:
        for i in range(PEERS):  # the phases of _segment: peer i heard at (i+1)/PEERS of each tick
            tick = math.floor(now / INTERVAL - (i + 1) / PEERS + 1e-9)
            last[1000 + i] = tick * INTERVAL + (i + 1) * INTERVAL / PEERS
        return sorted(last, key=last.get, reverse=True)[:MAX_ECHO]

    beacons = _segment(t, 60, newest_140)[10:]
    assert not _every_peer_echoed_every(beacons, ECHO_WINDOW)


def test_each_of_500_receivers_keeps_counting_us_live() -> None:
    """Seen from every peer: our beacons (echoing it only now and then) keep us live throughout."""
    t = PeerTable("me", DEAD)
    beacons = _segment(t, 60)
    for i in range(PEERS):
        mine = 1000 + i
        rx = PeerTable(f"n{i}", DEAD)
        for seq, echo in enumerate(beacons, 1):
            now = seq * INTERVAL
            rx.observe_fields("me", 7, seq, False, mine in echo, now)
            if seq > 1 + math.ceil(PEERS / MAX_ECHO):  # all 500 new at once: a few beacons to echo each
                assert "me" in rx.live(now), (i, seq)


def test_up_to_140_heard_every_beacon_echoes_all_as_before() -> None:
    """Speakers of the previous version count a peer live only on beacons that echo them: while everyone fits
    in a beacon, everyone is echoed in each (a rolling upgrade of a segment of up to 140 speakers is safe)."""
    t = PeerTable("me", DEAD)
    for tick in range(10):
        for i in range(MAX_ECHO):
            t.observe_fields(f"n{i}", 1000 + i, tick + 1, False, True, tick * INTERVAL + i / 10_000)
        assert sorted(t.heard(tick * INTERVAL + 0.05)) == list(range(1000, 1000 + MAX_ECHO))
    t.observe_fields("one-more", 1, 1, False, True, 1.0)
    assert len(t.heard(1.0)) < MAX_ECHO + 1  # rotation from here on
    for tick in range(11, 20):  # one-more gone quiet: everyone fits again
        for i in range(MAX_ECHO):
            t.observe_fields(f"n{i}", 1000 + i, tick + 1, False, True, tick * INTERVAL + i / 10_000)
        got = t.heard(tick * INTERVAL + 0.05)
    assert sorted(got) == list(range(1000, 1000 + MAX_ECHO))


def test_new_incarnations_are_echoed_in_every_beacon_until_dead_after() -> None:
    t = PeerTable("me", DEAD)
    _segment(t, 20)
    t.observe_fields("n-new", 5, 1, False, False, 2.0)
    for k in range(4):
        t.observe_fields("n-new", 5, 2 + k, False, False, 2.0 + 0.1 * k)
        assert 5 in t.heard(2.0 + 0.1 * k + 0.01)


def test_verified_once_then_refreshed_by_every_newer_beacon_until_the_echo_window() -> None:
    t = PeerTable("me", DEAD)
    assert t.observe_fields("b", 9, 1, False, False, 0.0)
    assert t.live(0.0) == {"me"}  # heard, never echoed us: not live
    assert t.observe_fields("b", 9, 2, False, True, 0.1)  # verified
    window = DEAD + ECHO_WINDOW * INTERVAL
    seq = 3
    now = 0.2
    while now < 0.1 + window:  # beacons that do not echo us keep it live within the window
        assert t.observe_fields("b", 9, seq, False, False, now)
        assert "b" in t.live(now), now
        seq, now = seq + 1, now + 0.1
    assert t.observe_fields("b", 9, seq, False, False, now)
    assert "b" not in t.live(now)  # no echo for longer than the window: the two-way check failed
    assert t.deaf(now) == ["b"]
    assert t.observe_fields("b", 9, seq + 1, False, True, now + 0.1)  # echoes us again
    assert "b" in t.live(now + 0.1)


def test_a_stream_captured_before_we_existed_never_makes_a_peer_live() -> None:
    # node-b's beacons echoed our previous incarnation (A_OLD); we restarted as A_NEW: a fresh table.
    a_old, a_new = 0x1111, 0x2222
    stream = [encode(Heartbeat("b", 77, s, 100), KEY, [a_old] if s % 10 == 1 else []) for s in range(1, 80)]
    t = PeerTable("a", DEAD)
    for s, wire in enumerate(stream):
        got = Decoder(KEY, [incarnation_bytes(a_new)]).fields(wire)
        assert got is not None and not got[5]
        t.observe_fields(got[0], got[1], got[2], got[4], got[5], 0.1 * s, got[3])
        assert "b" not in t.live(0.1 * s)
    # The very same stream, received by the incarnation it echoed, makes b live: the echo is the check.
    t_old = PeerTable("a", DEAD)
    for s, wire in enumerate(stream):
        got = Decoder(KEY, [incarnation_bytes(a_old)]).fields(wire)
        t_old.observe_fields(got[0], got[1], got[2], got[4], got[5], 0.1 * s, got[3])
    assert "b" in t_old.live(0.1 * 78)


def test_retired_and_left_incarnations_stay_refused() -> None:
    t = PeerTable("a", DEAD)
    t.observe_fields("b", 1, 1, False, True, 0.0)
    for inc in range(2, 7):  # pushes incarnation 1 out
        t.observe_fields("b", inc, 1, False, True, 0.01 * inc)
    assert not t.observe_fields("b", 1, 99, False, True, 1.0)
    t.observe_fields("c", 5, 1, False, True, 0.0)
    assert t.observe_fields("c", 5, 2, True, True, 0.1)  # goodbye
    assert not t.observe_fields("c", 5, 3, False, True, 0.2)
    assert "c" not in t.live(0.2)


def test_refresh_publishes_an_expiry_and_a_reheard_peer_at_once() -> None:
    t = PeerTable("a", DEAD)
    t.observe_fields("b", 1, 1, False, True, 0.0)
    assert t.refresh(0.0) and t.live_set == {"a", "b"} and t.due == pytest.approx(DEAD)
    assert not t.refresh(0.2)  # nothing new, before the deadline: no work
    assert t.refresh(1.0) and t.live_set == {"a"}  # a stall: b expired
    # b heard again (a beacon that does not echo us, as most do): live again at once.
    t.observe_fields("b", 1, 2, False, False, 1.05)
    assert t.refresh(1.05) and t.live_set == {"a", "b"}
    assert t.live(1.05) == t.live_set


def test_burst_after_reincarnation_echoes_everyone_within_a_few_beacons() -> None:
    t = PeerTable("me", DEAD)
    _segment(t, 20)
    t.echo_everyone_soon()
    seen: set[int] = set()
    for k in range(math.ceil(PEERS / MAX_ECHO)):
        seen |= set(t.heard(2.0 + 0.001 * k))
    assert seen == set(range(1000, 1000 + PEERS))


# --- decode fast path ------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=60).filter(lambda n: 0 < len(n.encode()) <= 253),
       st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.booleans(),
       st.lists(st.integers(0, 2**64 - 1), max_size=MAX_ECHO), st.integers(0, 3), st.binary(min_size=1, max_size=100))
def test_in_place_fields_equal_decode(name, inc, seq, leaving, echo, pad, key):
    hb = Heartbeat(name, inc, seq, 100, leaving)
    wire = encode(hb, key, echo)
    buf = bytearray(b"\xaa" * pad + wire + b"\xbb" * 5)
    mine = [incarnation_bytes(echo[0] if echo else 3)]
    got = Decoder(key, mine).fields(buf, pad, len(wire), memoryview(buf))
    assert got is not None and Heartbeat(*got) == decode(wire, key, mine)
    assert wire[-32:] == hmac.new(key, wire[:-32], hashlib.sha256).digest()  # precomputed pads: same HMAC
    assert Decoder(key).fields(buf, pad, len(wire) + 1) is None


# --- the shell: published snapshot, batched receive, drops ----------------------------------------------


def _beacon(node: str, inc: int, seq: int, echo: list[int]) -> bytes:
    return encode(Heartbeat(node, inc, seq), Keyring([KEY]), echo)


def test_live_is_the_published_snapshot_and_a_reheard_peer_wakes_the_loop() -> None:
    """The wedge: live() must return what the thread published (what woke the loop), never a set recomputed
    at call time; a peer expired by a stall and heard again is published, and the loop woken, at once."""
    async def scenario() -> None:
        woken = asyncio.Event()
        hb = Heartbeats("b", Keyring([KEY]), 0, 0.05, 0.2, woken.set, Metrics())
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        hb._socks["eth0"] = (ours, ())
        hb._socks_version += 1
        hb.segments["eth0"] = PeerTable("b", 0.2, require_echo=False)
        me = int.from_bytes(incarnation_bytes(hb.incarnation), "big")

        async def woken_with(want: set[str]) -> float:
            """Wait for the loop to be woken with `want` published; when it was."""
            while True:
                await asyncio.wait_for(woken.wait(), 2)
                woken.clear()
                if hb.live(0.0) == want:
                    return time.monotonic()

        hb.start()
        try:
            theirs.send(_beacon("a", 7, 1, [me]))
            await woken_with({"a", "b"})
            assert set(hb._published[0]) == {"a", "b"}
            # Whatever `now` the loop passes, it gets the published set: no second opinion.
            assert hb.live(time.monotonic() + 100) == {"a", "b"}
            assert hb.live_on(time.monotonic() + 100) == {"eth0": {"a", "b"}}
            await woken_with({"b"})  # a goes quiet: its expiry is published and wakes the loop
            sent = time.monotonic()
            theirs.send(_beacon("a", 7, 2, []))  # heard again; this beacon does not echo us
            assert await woken_with({"a", "b"}) - sent < 0.15  # at once: the batching gap, not a rotation
            assert hb.live_on(0.0) == {"eth0": {"a", "b"}}
        finally:
            hb.close()
            theirs.close()
    asyncio.run(scenario())


def _udp_pair(rcvbuf: int | None = None) -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    rx.bind(("127.0.0.1", 0))
    enable_rx_metadata(rx)
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    return rx, tx


@pytest.mark.parametrize("vectorised", [True, False])
def test_batch_receive_drains_many_datagrams_in_one_call_with_timestamps(vectorised: bool) -> None:
    rx, tx = _udp_pair()
    try:
        r = BatchReceiver(64, use_recvmmsg=vectorised)
        assert r.vectorised == vectorised  # recvmmsg is there on Linux: the fast path is the one tested
        before = time.time()
        for i in range(50):
            tx.send(bytes([i]) * (100 + i))
        n = r.recv(rx)
        assert n == 50
        for i in range(n):
            assert r.sizes[i] == 100 + i
            assert r.buf[i * SLOT:i * SLOT + r.sizes[i]] == bytes([i]) * (100 + i)
            assert before - 0.01 <= r.stamps[i] <= time.time() + 0.01
        assert r.dropped is None  # nothing dropped yet
        assert r.recv(rx) == 0  # empty: returns at once
    finally:
        rx.close()
        tx.close()


@pytest.mark.parametrize("vectorised", [True, False])
def test_kernel_drops_are_read_from_the_socket(vectorised: bool) -> None:
    rx, tx = _udp_pair(rcvbuf=4096)  # tiny queue: most of a burst is dropped by the kernel
    try:
        for i in range(300):
            tx.send(bytes(300))
        r = BatchReceiver(64, use_recvmmsg=vectorised)
        got, dropped = 0, None
        while n := r.recv(rx):
            got += n
            dropped = r.dropped if r.dropped is not None else dropped
        for i in range(3):  # a datagram queued after the drops carries the counter
            tx.send(bytes(10))
        while n := r.recv(rx):
            got += n
            dropped = r.dropped if r.dropped is not None else dropped
        assert dropped and got + dropped == 303
    finally:
        rx.close()
        tx.close()


def test_drained_beacons_and_drops_reach_the_table_and_metrics() -> None:
    async def scenario() -> None:
        metrics = Metrics()
        hb = Heartbeats("b", Keyring([KEY]), 0, 0.1, 0.45, lambda: None, metrics)
        rx, tx = _udp_pair(rcvbuf=4096)
        try:
            hb._socks["eth0"] = (rx, ())
            me = int.from_bytes(incarnation_bytes(hb.incarnation), "big")
            for i in range(200):
                tx.send(_beacon(f"p{i}", i + 1, 1, [me]))
            hb._drain(time.monotonic(), time.monotonic() - 0.1)
            heard = hb.peers.peer_count()
            tx.send(_beacon("late", 1, 1, [me]))
            hb._drain(time.monotonic(), time.monotonic() - 0.1)
            assert 0 < heard < 200
            drops = metrics.registry.get_sample_value("lbctl_speaker_heartbeat_drops_total")
            assert drops == 200 - heard
            assert hb._publish(time.monotonic()) and len(hb.live(0)) == heard + 2
        finally:
            hb.close()
            tx.close()
    asyncio.run(scenario())


def test_receive_buffer_is_sized_for_the_peers_and_reported() -> None:
    async def scenario() -> None:
        metrics = Metrics()
        hb = Heartbeats("b", Keyring([KEY]), 0, 0.1, 0.45, lambda: None, metrics)
        rx, tx = _udp_pair()
        try:
            hb._socks["eth0"] = (rx, ())
            for i in range(300):
                hb.peers.observe_fields(f"p{i}", i + 1, 1, False, True, 0.0)
            hb._check_heard(0.0)
            got = rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            assert metrics.registry.get_sample_value("lbctl_speaker_heartbeat_receive_buffer_bytes") == got
            rmem_max = int(open("/proc/sys/net/core/rmem_max").read())
            # 300 peers * 5 beacons (0.5 s) * 2 KiB = 3 MB wanted, or all that rmem_max allows.
            assert got >= min(3_000_000, 2 * rmem_max) or hb._warned_rcvbuf
        finally:
            hb.close()
            tx.close()
    asyncio.run(scenario())


# --- presets ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,want", [
    ([], (0.1, 0.45)),
    (["--timing", "fast"], TIMING_PRESETS["fast"]),
    (["--timing", "relaxed"], TIMING_PRESETS["relaxed"]),
    (["--timing", "relaxed", "--dead-after", "2"], (0.25, 2.0)),  # an explicit flag wins
    (["--timing", "fast", "--heartbeat-interval", "0.05"], (0.05, 0.3)),
])
def test_timing_presets(argv, want) -> None:
    args = parse_args(["--node-name", "n1", *argv])
    assert (args.heartbeat_interval, args.dead_after) == want


def test_fast_preset_fails_over_faster_and_relaxed_beacons_less() -> None:
    assert TIMING_PRESETS["fast"][1] < TIMING_PRESETS["default"][1] and TIMING_PRESETS["fast"][1] + 0.05 <= 0.35
    assert TIMING_PRESETS["relaxed"][0] > TIMING_PRESETS["default"][0]


def test_a_preset_overridden_into_nonsense_is_named(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--node-name", "n1", "--timing", "fast", "--heartbeat-interval", "0.5"])
    assert "--timing fast gives 0.1 and 0.3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--node-name", "n1", "--timing", "nope"])
