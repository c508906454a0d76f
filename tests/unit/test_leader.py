"""Leader election decisions (lbctl/core/leader.py): acquire/renew/wait, expiry on our own monotonic clock, the fence."""

from __future__ import annotations

import datetime as dt

import pytest

from lbctl.core.leader import (Action, Fence, LeaseRecord, Resume, Timing, decide, lease_spec, micro_time,
                               observe, read_lease, released_spec)

T = Timing(lease_duration=12, renew_deadline=8, retry_period=2)
WALL = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)


def lease(holder: str, rv: str = "1", duration: object = 12, transitions: int = 0,
          renew: str = "2024-05-01T12:00:00.000000Z") -> LeaseRecord:
    return read_lease({"metadata": {"resourceVersion": rv},
                       "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                                "acquireTime": "2024-05-01T11:00:00.000000Z", "renewTime": renew,
                                "leaseTransitions": transitions}})


def at(record: LeaseRecord, seen: float, now: float, me: str = "b", resume: Resume | None = None):
    return decide(record, observe(None, record, seen), now, me, T, resume)


def test_no_lease_is_created_and_ours_is_renewed() -> None:
    assert decide(None, None, 0.0, "a", T).action is Action.CREATE
    # Also a lease left by a previous incarnation with the same identity (container restart): no waiting.
    assert at(lease("a"), seen=100.0, now=100.0, me="a").action is Action.RENEW


def test_released_lease_is_taken_at_once() -> None:
    assert at(lease(""), seen=5.0, now=5.0).action is Action.ACQUIRE


def test_someone_elses_lease_expires_exactly_at_its_duration_after_we_saw_it() -> None:
    rec = lease("a")
    d = at(rec, seen=100.0, now=100.0)
    assert d.action is Action.WAIT and d.wait_s == 2.0
    near = at(rec, seen=100.0, now=111.5)
    assert near.action is Action.WAIT and near.wait_s == pytest.approx(0.5)  # wake exactly at expiry
    assert at(rec, seen=100.0, now=111.999999).action is Action.WAIT
    assert at(rec, seen=100.0, now=112.0).action is Action.ACQUIRE  # boundary: expired
    assert at(rec, seen=100.0, now=500.0).action is Action.ACQUIRE


def test_a_renewal_restarts_the_clock_and_nothing_else_does() -> None:
    first = observe(None, lease("a", rv="1"), 100.0)
    same = observe(first, lease("a", rv="1"), 110.0)
    assert same == first  # the same version seen again: still counted from 100
    renewed = observe(same, lease("a", rv="2"), 110.0)
    assert renewed is not None and renewed.seen_at == 110.0
    assert decide(lease("a", rv="2"), renewed, 113.0, "b", T).action is Action.WAIT
    assert decide(lease("a", rv="1"), same, 113.0, "b", T).action is Action.ACQUIRE
    assert observe(first, None, 120.0) is None


def test_wall_clock_times_in_the_record_are_ignored() -> None:
    # A holder whose clock is an hour behind (or ahead) neither loses nor keeps the lease by it.
    for renew in ("2024-05-01T11:00:00.000000Z", "2099-01-01T00:00:00.000000Z", "garbage"):
        rec = lease("a", renew=renew)
        assert at(rec, seen=0.0, now=1.0).action is Action.WAIT
        assert at(rec, seen=0.0, now=12.0).action is Action.ACQUIRE


def test_monotonic_time_before_the_observation_counts_as_not_expired() -> None:
    d = at(lease("a"), seen=100.0, now=99.0)
    assert d.action is Action.WAIT and 0 < d.wait_s <= 2.0


def test_holders_longer_promise_is_respected_and_a_missing_one_uses_ours() -> None:
    assert at(lease("a", duration=60), seen=0.0, now=30.0).action is Action.WAIT
    assert at(lease("a", duration=60), seen=0.0, now=60.0).action is Action.ACQUIRE
    for bad in (None, 0, -5, "x"):
        rec = lease("a", duration=bad)
        assert at(rec, seen=0.0, now=11.9).action is Action.WAIT
        assert at(rec, seen=0.0, now=12.0).action is Action.ACQUIRE


def test_spec_counts_transitions_and_keeps_the_leaders_acquire_time() -> None:
    created = lease_spec(None, "a", T, WALL)
    assert created == {"holderIdentity": "a", "leaseDurationSeconds": 12, "acquireTime": "2024-05-01T12:00:00.123456Z",
                       "renewTime": "2024-05-01T12:00:00.123456Z", "leaseTransitions": 0}
    renewed = lease_spec(lease("a", transitions=3), "a", T, WALL)
    assert renewed["acquireTime"] == "2024-05-01T11:00:00.000000Z" and renewed["leaseTransitions"] == 3
    taken = lease_spec(lease("a", transitions=3), "b", T, WALL)
    assert taken["holderIdentity"] == "b" and taken["acquireTime"] == micro_time(WALL)
    assert taken["leaseTransitions"] == 4
    released = released_spec(lease("a", transitions=4), WALL)
    assert released["holderIdentity"] == "" and released["leaseDurationSeconds"] == 1
    assert released["leaseTransitions"] == 4


def test_fence_holds_until_the_renew_deadline_after_the_request_was_sent() -> None:
    f = Fence(T)
    assert not f.valid(0.0)  # never acquired
    f.renewed(sent_at=10.0, now=10.3)
    assert f.valid(10.3) and f.valid(17.999)
    assert f.remaining(15.0) == pytest.approx(3.0)
    f.renewed(sent_at=12.0, now=12.2)
    assert f.valid(19.9) and not f.valid(20.0)  # boundary: at the deadline writes stop


def test_fence_stops_before_anyone_else_may_take_over() -> None:
    # Renewal sent at s reaches the server at >= s; others see it at >= s and wait lease_duration more.
    f = Fence(T)
    s = 50.0
    f.renewed(sent_at=s, now=s + 0.01)
    others_take_over_at = s + T.lease_duration  # earliest possible
    last_write = s + T.renew_deadline
    assert f.valid(last_write - 1e-6) and not f.valid(last_write) and last_write < others_take_over_at
    assert T.lease_duration - T.renew_deadline >= 2  # margin for an in-flight write and clock rate drift


def test_fence_once_lapsed_never_comes_back() -> None:
    f = Fence(T)
    f.renewed(sent_at=0.0, now=0.1)
    assert not f.valid(8.0)
    f.renewed(sent_at=7.5, now=8.5)  # a renewal that succeeded too late does not revive it
    assert not f.valid(9.0) and f.lapsed and f.remaining(9.0) == 0.0
    g = Fence(T)
    g.renewed(sent_at=0.0, now=0.1)
    g.give_up()
    g.renewed(sent_at=1.0, now=1.1)
    assert not g.valid(1.2)


def test_a_slow_renewal_that_returns_after_the_deadline_is_not_counted() -> None:
    f = Fence(T)
    f.renewed(sent_at=0.0, now=0.1)
    f.renewed(sent_at=7.0, now=8.2)  # sent in time, answered after the old deadline: lapsed already
    assert not f.valid(8.3)


@pytest.mark.parametrize("timing,words", [
    (Timing(12, 12, 2), "lease duration"),
    (Timing(12, 8, 8), "renew deadline"),
    (Timing(12, 8, 0), "retry period"),
])
def test_timing_problems_name_the_bad_value(timing: Timing, words: str) -> None:
    assert any(words in p for p in timing.problems())
    assert Timing().problems() == []


def test_own_record_unchanged_since_we_gave_up_is_taken_back_at_once() -> None:
    # Re-executed after losing leadership (API outage): same identity, the Lease exactly as we last wrote it.
    back = Resume("a", "7", quiet_at=float("-inf"))
    assert at(lease("a", rv="7"), seen=100.0, now=100.0, me="a", resume=back).action is Action.RENEW
    # A made-up identity kept across the re-exec works the same; so does one we were handed but do not use.
    assert at(lease("a", rv="7"), seen=100.0, now=100.0, me="z", resume=back).action is Action.ACQUIRE


def test_own_record_is_taken_back_only_after_our_writes_left_on_the_wire_can_no_longer_land() -> None:
    back = Resume("a", "7", quiet_at=100.0)  # a write cut mid-way at 100: the usual margin (4 s) after it
    d = at(lease("a", rv="7"), seen=100.0, now=101.0, me="a", resume=back)
    assert d.action is Action.WAIT and d.wait_s == 2.0
    assert at(lease("a", rv="7"), seen=100.0, now=103.9, me="a", resume=back).action is Action.WAIT
    assert at(lease("a", rv="7"), seen=100.0, now=104.0, me="a", resume=back).action is Action.RENEW


def test_own_record_renewed_by_a_late_write_of_ours_is_taken_back_too() -> None:
    # rv 8: our last renewal reached the server but its answer did not reach us (the attempt timed out while
    # the API server restarted; CI saw the new Service served 10.9 s after such a restart). Only processes
    # with our identity write it as holder, and the old one is gone (same PID, re-executed): it is ours.
    back = Resume("a", "7", quiet_at=float("-inf"))
    assert at(lease("a", rv="8"), seen=100.0, now=100.0, me="a", resume=back).action is Action.RENEW
    # ...still only once no write of the old process can land
    later = Resume("a", "7", quiet_at=100.0)
    assert at(lease("a", rv="8"), seen=100.0, now=101.0, me="a", resume=later).action is Action.WAIT
    assert at(lease("a", rv="8"), seen=100.0, now=104.0, me="a", resume=later).action is Action.RENEW


def test_someone_elses_record_after_we_gave_up_is_waited_for() -> None:
    back = Resume("a", "7", quiet_at=float("-inf"))
    assert at(lease("b", rv="7"), seen=100.0, now=100.0, me="a", resume=back).action is Action.WAIT
    assert at(lease("b", rv="8"), seen=100.0, now=112.0, me="a", resume=back).action is Action.ACQUIRE
    assert at(lease("", rv="9"), seen=100.0, now=100.0, me="a", resume=back).action is Action.ACQUIRE


def test_resume_survives_the_environment_and_garbage_means_none() -> None:
    r = Resume("host_abc", "123", -1.5)
    assert Resume.decode(r.encode()) == r
    assert Resume.decode(Resume("x", "1", float("-inf")).encode()) == Resume("x", "1", float("-inf"))
    for bad in (None, "", "garbage", "[1]", '["", "1", 0]', '["a", "1", "x"]', "{}"):
        assert Resume.decode(bad) is None
