"""lbctl/core/conflicts: when a foreign claim opens a conflict, when we defend, when it clears."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lbctl.core.conflicts import ConflictTable

IP, ROGUE, OTHER = "198.18.0.100", "02:00:00:00:00:66", "02:00:00:00:00:77"


def test_first_claim_opens_and_defends_then_rate_limits() -> None:
    t = ConflictTable(defend_every=10, quiet_after=5)
    v = t.observe(IP, "eth0", ROGUE, 100.0)
    assert v.new and v.defend
    v = t.observe(IP, "eth0", ROGUE, 100.5)
    assert not v.new and not v.defend
    assert not t.observe(IP, "eth0", ROGUE, 109.9).defend
    assert t.observe(IP, "eth0", ROGUE, 110.0).defend
    assert t.active[IP].count == 4 and t.active[IP].first_seen == 100.0


def test_clears_after_quiet_and_a_second_mac_is_a_new_conflict() -> None:
    t = ConflictTable(defend_every=10, quiet_after=5)
    t.observe(IP, "eth0", ROGUE, 0.0)
    t.observe(IP, "eth0", ROGUE, 3.0)
    assert t.expire(7.9) == [] and t.next_expiry() == 8.0
    gone = t.expire(8.0)
    assert [c.mac for c in gone] == [ROGUE] and not t.active and t.next_expiry() is None
    # Reopened within the defence interval: reported again, but no second GARP yet.
    v = t.observe(IP, "eth0", ROGUE, 9.0)
    assert v.new and not v.defend
    assert t.observe(IP, "eth0", OTHER, 9.5).new


def test_keep_only_forgets_addresses_we_no_longer_announce() -> None:
    t = ConflictTable()
    t.observe(IP, "eth0", ROGUE, 0.0)
    t.observe("198.18.0.101", "eth0", ROGUE, 0.0)
    assert [c.ip for c in t.keep_only({"198.18.0.101"})] == [IP]
    assert set(t.active) == {"198.18.0.101"}


@given(st.lists(st.floats(0, 0.5), min_size=1, max_size=400))
def test_a_flood_is_defended_at_most_once_per_interval(gaps: list[float]) -> None:
    """However fast or long the foreign host claims the address, defences are ≥ defend_every apart."""
    t = ConflictTable(defend_every=10, quiet_after=5)
    now, defended = 0.0, []
    for g in gaps:
        now += g
        if t.observe(IP, "eth0", ROGUE, now).defend:
            defended.append(now)
        t.expire(now)
    assert defended and defended[0] == gaps[0]
    assert all(b - a >= 10 for a, b in zip(defended, defended[1:]))
    assert len(defended) <= 1 + int((now - defended[0]) // 10)


def test_speaker_metrics_register_without_clashes() -> None:
    from lbctl.speaker.metrics import Metrics

    m = Metrics()
    m.conflicts.set(1)
    m.conflicts_detected.labels("eth0").inc()
    names = {s.name for fam in m.registry.collect() for s in fam.samples}
    assert {"lbctl_speaker_ip_conflicts_active", "lbctl_speaker_ip_conflicts_total",
            "lbctl_speaker_conflict_defences_total", "lbctl_speaker_handover_yields_total"} <= names
