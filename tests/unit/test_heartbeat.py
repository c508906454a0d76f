"""Heartbeat wire format (authenticated) and the peer liveness table."""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbctl.core.heartbeat import (
    DEFAULT_DEAD_AFTER,
    DEFAULT_INTERVAL,
    MAGIC,
    MAX_ECHO,
    Heartbeat,
    PeerTable,
    decode,
    encode,
    incarnation_bytes,
)

KEY = b"k" * 32
HB = Heartbeat("node-a", incarnation=1_700_000_000_000_000_000, sequence=7, interval_ms=100)


def test_defaults_give_subsecond_failover():
    assert DEFAULT_INTERVAL == 0.1 and DEFAULT_DEAD_AFTER == 0.45
    assert DEFAULT_DEAD_AFTER + DEFAULT_INTERVAL < 1.0


@pytest.mark.parametrize(
    "hb", [HB, Heartbeat("n" * 253, 2**64 - 1, 2**64 - 1, 2**32 - 1, leaving=True), Heartbeat("nœud-é", 0, 0, 0)]
)
def test_round_trip(hb):
    me = incarnation_bytes(42)
    assert decode(encode(hb, KEY, [7, 42]), KEY, [me]) == hb
    assert decode(bytearray(encode(hb, KEY, [42])), KEY, [me]) == hb
    assert decode(encode(hb, KEY), KEY, [me]) == replace(hb, echoes_us=False)


def test_layout_is_as_documented():
    data = encode(HB, KEY, [5, 2**64 - 1])
    assert data.startswith(MAGIC + b"\x02\x00")
    inc, seq, interval, nlen, ecount = struct.unpack_from("!QQIBB", data, 6)
    assert (inc, seq, interval, nlen, ecount) == (HB.incarnation, 7, 100, 6, 2)
    assert data[28:34] == b"node-a"
    assert struct.unpack_from("!QQ", data, 34) == (5, 2**64 - 1)
    assert data[50:] == hmac.new(KEY, data[:50], hashlib.sha256).digest()
    assert len(data) == 28 + 6 + 16 + 32


def test_echo_matches_only_whole_aligned_entries():
    me = incarnation_bytes(0x0102030405060708)
    # The bytes of `me` straddle two echo entries: not an echo.
    straddle = [0x0000000001020304, 0x0506070800000000]
    assert not decode(encode(HB, KEY, straddle), KEY, [me]).echoes_us
    assert decode(encode(HB, KEY, [*straddle, 0x0102030405060708]), KEY, [me]).echoes_us
    assert decode(encode(HB, KEY, [9]), KEY, [incarnation_bytes(3), incarnation_bytes(9)]).echoes_us


def test_echo_count_bounded():
    with pytest.raises(ValueError):
        encode(HB, KEY, list(range(MAX_ECHO + 1)))
    assert len(encode(Heartbeat("n" * 253, 1, 1), KEY, list(range(MAX_ECHO)))) + 28 <= 1500


def test_forged_with_wrong_key_rejected():
    assert decode(encode(HB, b"attacker"), KEY) is None


def test_every_single_byte_tamper_rejected():
    data = encode(HB, KEY)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        assert decode(bytes(bad), KEY) is None, i


def test_truncation_and_extension_rejected():
    data = encode(HB, KEY)
    for n in range(len(data)):
        assert decode(data[:n], KEY) is None
    assert decode(data + b"\x00", KEY) is None


def test_bad_magic_or_version_rejected_even_with_valid_mac():
    data = encode(HB, KEY)
    for body in (b"XXXX" + data[4:34], data[:4] + b"\x01" + data[5:34]):
        assert decode(body + hmac.new(KEY, body, hashlib.sha256).digest(), KEY) is None


def test_unknown_flags_ignored():
    body = bytearray(encode(HB, KEY)[:34])
    body[5] = 0x80 | 0x01
    hb = decode(bytes(body) + hmac.new(KEY, bytes(body), hashlib.sha256).digest(), KEY)
    assert hb is not None and hb.leaving


def test_encode_rejects_unrepresentable():
    for hb in (Heartbeat("", 0, 0), Heartbeat("n" * 254, 0, 0), Heartbeat("a", -1, 0), Heartbeat("a", 0, 2**64)):
        with pytest.raises(ValueError):
            encode(hb, KEY)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_fuzz_never_raises(data):
    assert decode(data, KEY) is None


@given(st.binary(min_size=1, max_size=300), st.binary(max_size=64))
def test_fuzz_with_valid_prefix_never_raises(tail, key):
    decode(MAGIC + b"\x01" + tail, key)
    decode(MAGIC + b"\x01" + tail, "not-bytes")  # type: ignore[arg-type]


# --- PeerTable -------------------------------------------------------------------------------


def hb(seq: int, inc: int = 1, node: str = "node-b", leaving: bool = False) -> Heartbeat:
    return Heartbeat(node, inc, seq, 100, leaving)


def test_self_always_live_and_own_echo_ignored():
    t = PeerTable("node-a", 0.45)
    assert t.live(0.0) == {"node-a"}
    assert not t.observe(hb(1, node="node-a"), 0.0)
    assert t.live(100.0) == {"node-a"}


def test_replay_rejected_and_fresh_accepted():
    t = PeerTable("node-a", 0.45)
    assert t.observe(hb(5), 0.0)
    assert not t.observe(hb(5), 0.1)  # exact replay
    assert not t.observe(hb(3), 0.1)  # older or reordered
    assert t.observe(hb(6), 0.1)


def test_restart_with_another_incarnation_accepted_either_way():
    t = PeerTable("node-a", 0.45)
    assert t.observe(hb(1000, inc=10), 0.0)
    assert t.observe(hb(0, inc=3), 0.1)  # restarted: incarnations carry no order, sequence starts over
    assert not t.observe(hb(0, inc=3), 0.2)
    assert t.observe(hb(1, inc=3), 0.2)
    assert t.live(0.6) == {"node-a", "node-b"}  # the old incarnation expired, the new one is live


def test_dead_after_expiry():
    t = PeerTable("node-a", 0.45)
    t.observe(hb(1), 10.0)
    assert t.live(10.45) == {"node-a", "node-b"}
    assert t.next_expiry(10.2) == pytest.approx(10.45)
    assert t.live(10.46) == {"node-a"}
    assert t.next_expiry(10.46) is None
    assert t.observe(hb(2), 11.0)  # comes back
    assert "node-b" in t.live(11.0)


def test_replay_cannot_revive_a_dead_peer():
    t = PeerTable("node-a", 0.45)
    t.observe(hb(1), 0.0)
    assert not t.observe(hb(1), 5.0)
    assert t.live(5.0) == {"node-a"}


def test_leaving_removes_at_once_and_stays_gone():
    t = PeerTable("node-a", 0.45)
    t.observe(hb(1), 0.0)
    t.observe(hb(2, node="node-c"), 0.0)
    assert t.observe(hb(2, leaving=True), 0.05)
    assert t.live(0.05) == {"node-a", "node-c"}
    assert not t.observe(hb(1), 0.06)  # a late or replayed beacon does not resurrect it
    assert t.live(0.06) == {"node-a", "node-c"}
    assert t.observe(hb(0, inc=2), 1.0)  # but the restarted process is welcome
    assert "node-b" in t.live(1.0)


def test_forget():
    t = PeerTable("node-a", 0.45)
    t.observe(hb(1), 0.0)
    t.forget("node-b")
    t.forget("never-seen")
    assert t.live(0.0) == {"node-a"}


def test_end_to_end_decode_into_table():
    t = PeerTable("node-a")
    wire = [encode(hb(s), KEY) for s in (1, 2, 2, 3)]
    accepted = [t.observe(h, 0.1 * i) for i, h in enumerate(map(lambda w: decode(w, KEY), wire)) if h]
    assert accepted == [True, True, False, True]
