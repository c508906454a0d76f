"""The one UTC timestamp formatter (lbctl/core/timestamps.py): what every writer of Time and MicroTime produced."""

from __future__ import annotations

import datetime as dt

from lbctl.core.timestamps import rfc3339

T = dt.datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))


def test_time_and_micro_time_in_utc() -> None:
    assert rfc3339(T) == "2024-05-01T12:00:00Z"
    assert rfc3339(T, micro=True) == "2024-05-01T12:00:00.123456Z"
    assert rfc3339(T.timestamp()) == "2024-05-01T12:00:00Z"
    assert rfc3339(dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc), micro=True) == "2024-05-01T00:00:00.000000Z"
