import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbctl.core.ranges import RangeError, count_buggy, is_buggy, iter_free, parse_range


@pytest.mark.parametrize("text,family,first,last", [
    ("198.18.0.50-198.18.0.99", 4, "198.18.0.50", "198.18.0.99"),
    (" 198.18.0.50 - 198.18.0.51 ", 4, "198.18.0.50", "198.18.0.51"),
    ("198.18.0.0/28", 4, "198.18.0.0", "198.18.0.15"),
    ("198.18.0.7", 4, "198.18.0.7", "198.18.0.7"),
    ("198.18.0.7/32", 4, "198.18.0.7", "198.18.0.7"),
    ("2001:db8::/120", 6, "2001:db8::", "2001:db8::ff"),
    ("2001:db8::5-2001:db8::9", 6, "2001:db8::5", "2001:db8::9"),
    ("2001:db8::1", 6, "2001:db8::1", "2001:db8::1"),
])
def test_parses_every_notation(text, family, first, last):
    r = parse_range(text)
    assert (r.family, r.first, r.last) == (family, int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last)))


@pytest.mark.parametrize("text,message", [
    ("198.18.0.99-198.18.0.50", "reversed"),
    ("198.18.0.1-2001:db8::1", "mixes IPv4 and IPv6"),
    ("198.18.0.5/28", "host bits set; did you mean 198.18.0.0/28"),
    ("198.18.0.0/33", "not a valid CIDR"),
    ("198.18.0.300", "not an IP address"),
    ("", "not an address range"),
    ("banana", "not an IP address"),
])
def test_rejects_with_a_message_naming_the_problem(text, message):
    with pytest.raises(RangeError, match=message):
        parse_range(text)


def test_overlap_is_family_aware():
    assert parse_range("198.18.0.0/24").overlaps(parse_range("198.18.0.255-198.18.1.3"))
    assert not parse_range("198.18.0.0/24").overlaps(parse_range("198.18.1.0/24"))
    assert not parse_range("0.0.0.0/0").overlaps(parse_range("::/0"))


def test_iter_free_skips_used_and_buggy():
    r = parse_range("198.18.0.254-198.18.1.2")
    used = {int(ipaddress.ip_address("198.18.1.1"))}
    got = [str(ipaddress.ip_address(v)) for v in iter_free(r, r.first, used, avoid_buggy=True)]
    assert got == ["198.18.0.254", "198.18.1.2"]


@given(st.integers(0, 2**24), st.integers(0, 2000))
def test_count_buggy_matches_enumeration(first, length):
    r = parse_range(f"{ipaddress.IPv4Address(first)}-{ipaddress.IPv4Address(first + length)}")
    assert count_buggy(r) == sum(is_buggy(4, v) for v in range(r.first, r.last + 1))
