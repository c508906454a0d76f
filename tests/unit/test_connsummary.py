"""The connection prober's summary (lbctl.core.connsummary) and its pure parts (lbctl.lab.connprobe's answer
and target parsing), on hand-made attempt lists."""

from __future__ import annotations

import json
import random

import pytest

from lbctl.core.connsummary import Attempt, FormatError, Run, decode, encode, overall, render, summarise
from lbctl.lab.connprobe import classify, parse_target

A, B = "198.18.0.50:80", "198.18.0.51:80"


def ok(target: str, t: float, body: str = "node1") -> Attempt:
    return Attempt(target, t, "ok", 1.0, body)


def bad(target: str, t: float, outcome: str = "timeout") -> Attempt:
    return Attempt(target, t, outcome, 1000.0 if outcome == "timeout" else 0.5)


def test_steady_target_counts_attempts_and_backends() -> None:
    attempts = [ok(A, i * 0.01, "node1" if i % 4 else "node2") for i in range(100)]
    [s] = summarise(attempts, [A])
    assert (s.attempts, s.failed, s.failures) == (100, 0, {})
    assert s.longest_gap_ms == pytest.approx(10.0)
    assert s.backends == {"node1": 75, "node2": 25}


def test_an_outage_shows_as_failures_and_a_gap_on_its_target_only() -> None:
    attempts = [ok(A, i * 0.01) for i in range(300)] + [ok(B, i * 0.01, "node2") for i in range(300)]
    # B fails from 1.00 s to 1.49 s: timeouts, then resets as the new owner takes over.
    attempts = [a if not (a.target == B and 1.0 <= a.t < 1.5) else bad(B, a.t, "timeout" if a.t < 1.4 else "reset")
                for a in attempts]
    sa, sb = summarise(attempts, [A, B])
    assert (sa.failed, sa.longest_gap_ms) == (0, pytest.approx(10.0))
    assert sb.failed == 50
    assert sb.failures == {"timeout": 40, "reset": 10}
    assert sb.longest_gap_ms == pytest.approx(510.0)  # last ok at 0.99, next at 1.50


def test_out_of_order_records_are_sorted_first() -> None:
    attempts = [ok(A, i * 0.01) for i in range(50)] + [bad(A, 0.5 + i * 0.01) for i in range(20)]
    attempts += [ok(A, 0.7 + i * 0.01) for i in range(10)]
    shuffled = attempts[:]
    random.Random(7).shuffle(shuffled)
    assert summarise(shuffled, [A]) == summarise(attempts, [A])
    [s] = summarise(shuffled, [A])
    assert s.longest_gap_ms == pytest.approx(210.0)  # 0.49 -> 0.70


def test_no_success_at_all_is_a_gap_over_the_whole_window() -> None:
    attempts = [bad(A, 10 + i * 0.01, "refused") for i in range(300)]
    [s] = summarise(attempts, [A], start=10.0, stop=13.0)
    assert (s.attempts, s.failed, s.failures, s.backends) == (300, 300, {"refused": 300}, {})
    assert s.longest_gap_ms == pytest.approx(3000.0)


def test_outage_at_the_edges_of_the_window_counts() -> None:
    # Fails for the first 0.4 s and the last 0.6 s of a 2 s window: the edges are gaps too.
    attempts = [(ok if 0.4 <= i * 0.01 < 1.4 else bad)(A, i * 0.01) for i in range(200)]
    [s] = summarise(attempts, [A], start=0.0, stop=2.0)
    assert s.longest_gap_ms == pytest.approx(610.0)  # last ok at 1.39 -> stop at 2.0


def test_every_named_target_gets_a_row_even_without_attempts_and_strays_come_last() -> None:
    attempts = [ok(A, 0.0), ok(A, 1.0), ok("[2001:db8::50]:80", 0.5)]
    rows = summarise(attempts, [B, A])
    assert [s.target for s in rows] == [B, A, "[2001:db8::50]:80"]
    assert (rows[0].attempts, rows[0].failed, rows[0].longest_gap_ms) == (0, 0, 1000.0)


def test_no_attempts_at_all() -> None:
    assert summarise([]) == []
    total = overall([])
    assert (total.attempts, total.failed, total.longest_gap_ms) == (0, 0, 0.0)


def test_overall_adds_up_and_takes_the_longest_gap() -> None:
    attempts = [ok(A, i * 0.01) for i in range(100)] + [ok(B, i * 0.01, "node2") for i in range(100)]
    attempts[150] = bad(B, attempts[150].t, "reset")
    total = overall(summarise(attempts, [A, B]))
    assert (total.target, total.attempts, total.failed, total.failures) == ("ALL", 200, 1, {"reset": 1})
    assert total.longest_gap_ms == pytest.approx(20.0)
    assert total.backends == {"node1": 100, "node2": 99}


def test_render_is_one_table_with_an_overall_line() -> None:
    attempts = [ok(A, 0.0), bad(A, 0.01, "reset"), ok(A, 0.02, "node3"), ok(B, 0.0, "node2")]
    text = render(summarise(attempts, [A, B]), labels={A: "vip1"})
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["TARGET", "ATTEMPTS", "FAILED"]
    assert lines[1].split()[:4] == ["vip1", "3", "1", "reset=1"]
    assert "node1=1,node3=1" in lines[1]
    assert lines[2].split()[:4] == [B, "1", "0", "-"]
    assert lines[3].split()[:3] == ["ALL", "4", "1"]


def test_document_round_trips_through_json() -> None:
    run = Run([A, B], 0.01, 1.0, 100.0, 103.0, "signal", 2,
              [ok(A, 100.0), bad(B, 100.0, "EHOSTUNREACH"), Attempt(B, 100.01, "bad_answer", 3.0, "HTTP 503")])
    doc = json.loads(json.dumps(encode(run)))
    assert doc["attempts"][1] == [1, 100.0, "EHOSTUNREACH", 0.5, None]
    assert decode(doc) == run


@pytest.mark.parametrize("doc", [None, [], {"format": 2}, {"format": 1}, {"format": 1, "targets": [A], "attempts": [[3, 0, "ok", 1, None]]},
                                 {"format": 1, "targets": [A], "attempts": [["x"]], "interval_s": 0.01}])
def test_bad_documents_are_a_clear_error(doc: object) -> None:
    with pytest.raises(FormatError):
        decode(doc)


# --- the prober's pure parts ---

@pytest.mark.parametrize("answer, want", [
    (b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nnode2\n", ("ok", "node2")),
    (b"HTTP/1.1 200 OK\r\n\r\nnode1\nmore\n", ("ok", "node1")),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\nnode", ("bad_answer", "truncated: 4 of 20 bytes")),
    (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", ("bad_answer", "HTTP 503")),
    (b"", ("bad_answer", "no end of headers in 0 bytes: b''")),
    (b"\x00\xff garbage\r\n\r\n", ("bad_answer", "status line b'\\x00\\xff'")),
    (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", ("bad_answer", "Content-Length b'x'")),
])
def test_classify_answers(answer: bytes, want: tuple[str, str]) -> None:
    outcome, body = classify(answer)
    assert outcome == want[0]
    assert body is not None and body.startswith(want[1][:14]), body


def test_classify_never_raises_on_garbage() -> None:
    rnd = random.Random(1)
    for n in range(500):
        data = bytes(rnd.randrange(256) for _ in range(n % 64))
        if n % 3 == 0:
            data = b"HTTP/1.1 200 OK\r\n" + data + b"\r\n\r\n" + data
        outcome, _ = classify(data)
        assert outcome in ("ok", "bad_answer")


@pytest.mark.parametrize("text, label, addr", [
    ("198.18.0.50", "198.18.0.50:80", ("198.18.0.50", 80)),
    ("198.18.0.50:8080", "198.18.0.50:8080", ("198.18.0.50", 8080)),
    ("2001:db8::50", "[2001:db8::50]:80", ("2001:db8::50", 80)),
    ("[2001:db8::50]", "[2001:db8::50]:80", ("2001:db8::50", 80)),
    ("[2001:DB8::50]:81", "[2001:db8::50]:81", ("2001:db8::50", 81)),
])
def test_parse_target(text: str, label: str, addr: tuple[str, int]) -> None:
    t = parse_target(text)
    assert (t.label, t.addr) == (label, addr)
    assert t.request.startswith(b"GET / HTTP/1.1\r\n") and b"Connection: close\r\n" in t.request


@pytest.mark.parametrize("text", ["node1", "198.18.0.50:0", "198.18.0.50:x", "[2001:db8::50", "[::1]x", "1.2.3"])
def test_parse_target_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)
