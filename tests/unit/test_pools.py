import pytest

from lbctl.core.pools import REASON_INVALID, REASON_OVERLAP, judge_pools, parse_pool


def test_valid_pool_with_rules():
    p = parse_pool("a", {"addresses": ["198.18.0.50-198.18.0.99", "2001:db8::/120"], "autoAssign": False,
                         "avoidBuggyIPs": True,
                         "serviceAllocation": {"priority": 5, "namespaces": ["web"],
                                               "serviceSelector": {"matchLabels": {"tier": "front"}}}})
    assert p.error is None and p.families == {4, 6} and not p.auto_assign and p.priority == 5
    assert p.capacity(4) == 50 and p.capacity(6) == 256
    assert p.admits("web", {}, {"tier": "front"})
    assert not p.admits("web", {}, {"tier": "back"})
    assert not p.admits("other", {}, {"tier": "front"})


@pytest.mark.parametrize("spec,message", [
    ({}, "non-empty list"),
    ({"addresses": []}, "non-empty list"),
    ({"addresses": ["198.18.0.9-198.18.0.1"]}, "reversed"),
    ({"addresses": ["198.18.0.0/28", "198.18.0.8/29"]}, "overlaps 198.18.0.8/29 within the same pool"),
    ({"addresses": ["198.18.0.1"], "serviceAllocation": {"priority": "high"}}, "not an integer"),
    ({"addresses": ["198.18.0.1"], "serviceAllocation": {"namespaceSelector": {
        "matchExpressions": [{"key": "a", "operator": "Near"}]}}}, "operator 'Near'"),
])
def test_invalid_specs_are_reported_not_raised(spec, message):
    p = parse_pool("bad", spec)
    assert p.error and message in p.error
    assert judge_pools([p])["bad"].reason == REASON_INVALID


def test_older_pool_wins_overlap_and_message_names_both():
    old = parse_pool("old", {"addresses": ["198.18.0.0/24"]}, created="2026-01-01T00:00:00Z")
    new = parse_pool("new", {"addresses": ["198.18.0.200-198.18.1.10"]}, created="2026-02-01T00:00:00Z")
    v = judge_pools([new, old])
    assert v["old"].ready
    assert not v["new"].ready and v["new"].reason == REASON_OVERLAP
    assert "198.18.0.200-198.18.1.10" in v["new"].message and "old" in v["new"].message


def test_invalid_pool_does_not_block_others():
    bad = parse_pool("bad", {"addresses": ["nonsense"]}, created="2020")
    good = parse_pool("good", {"addresses": ["198.18.0.0/24"]}, created="2021")
    v = judge_pools([bad, good])
    assert v["good"].ready and not v["bad"].ready
