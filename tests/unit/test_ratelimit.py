"""The responders' flood limiter (lbctl/core/ratelimit.py): a token bucket per key, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbctl.core.ratelimit import KeyedLimiter


def test_burst_then_rate_per_key() -> None:
    lim = KeyedLimiter(rate=10, burst=3)
    assert [lim.allow("a", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert lim.allow("b", 0.0)  # another key has its own bucket
    assert not lim.allow("a", 0.05) and lim.allow("a", 0.16)  # one token per 0.1 s


@given(st.lists(st.floats(0, 0.01), max_size=300))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps: list[float]) -> None:
    lim, now, allowed = KeyedLimiter(rate=100, burst=5), 0.0, 0
    for gap in gaps:
        now += gap
        allowed += lim.allow("k", now)
    assert allowed <= 5 + 100 * now + 1e-9


def test_table_is_bounded_and_bad_settings_refused() -> None:
    lim = KeyedLimiter(1, 1, max_keys=100)
    for i in range(1000):
        lim.allow(i, 0.0)
    assert len(lim) <= 100
    with pytest.raises(ValueError):
        KeyedLimiter(0)
