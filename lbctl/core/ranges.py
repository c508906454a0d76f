"""Address ranges: parsing `a-b`, CIDR and single-IP notations into inclusive integer ranges.

Pure: no I/O. Everything is an inclusive [first, last] pair of ints plus a family (4 or 6), so the
allocator can do arithmetic instead of iterating ipaddress objects.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Container, Iterator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RangeError(ValueError):
    """A range string that cannot be used; the message names the offending text."""


@dataclass(frozen=True, order=True)
class AddressRange:
    family: int
    first: int
    last: int
    text: str = ""

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, ip: object) -> bool:
        if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return ip.version == self.family and self.first <= int(ip) <= self.last
        return False

    def overlaps(self, other: AddressRange) -> bool:
        return self.family == other.family and self.first <= other.last and other.first <= self.last

    def address(self, value: int) -> IPAddress:
        return make_ip(self.family, value)

    def __str__(self) -> str:
        return self.text or f"{self.address(self.first)}-{self.address(self.last)}"


def make_ip(family: int, value: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value)


def parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise RangeError(f"{text.strip()!r} is not an IP address") from None


def parse_range(text: str) -> AddressRange:
    """Parse `192.0.2.10-192.0.2.20`, `192.0.2.0/28`, `2001:db8::/120` or a single address."""
    if not isinstance(text, str) or not text.strip():
        raise RangeError(f"{text!r} is not an address range (expected a-b, CIDR or a single IP)")
    raw = text.strip()
    if "/" in raw:
        try:
            net = ipaddress.ip_network(raw, strict=True)
        except ValueError as exc:
            if "host bits set" in str(exc):
                loose = ipaddress.ip_network(raw, strict=False)
                raise RangeError(f"{raw!r} has host bits set; did you mean {loose}?") from None
            raise RangeError(f"{raw!r} is not a valid CIDR") from None
        return AddressRange(net.version, int(net.network_address), int(net.broadcast_address), raw)
    if "-" in raw:
        left, _, right = raw.partition("-")
        a, b = parse_ip(left), parse_ip(right)
        if a.version != b.version:
            raise RangeError(f"{raw!r} mixes IPv{a.version} and IPv{b.version}")
        if int(a) > int(b):
            raise RangeError(f"{raw!r} is reversed: {a} comes after {b}")
        return AddressRange(a.version, int(a), int(b), raw)
    ip = parse_ip(raw)
    return AddressRange(ip.version, int(ip), int(ip), raw)


def is_buggy(family: int, value: int) -> bool:
    """IPv4 addresses ending in .0 or .255, which some old client stacks treat as broadcast."""
    return family == 4 and (value & 0xFF) in (0, 0xFF)


def iter_free(r: AddressRange, start: int, used: Container[int], avoid_buggy: bool) -> Iterator[int]:
    """Yield free addresses of `r` from `start` upwards (lazily: IPv6 ranges can be huge)."""
    value = max(start, r.first)
    while value <= r.last:
        if value not in used and not (avoid_buggy and is_buggy(r.family, value)):
            yield value
        value += 1


def count_buggy(r: AddressRange) -> int:
    """How many .0/.255 addresses an IPv4 range holds, without iterating it."""
    if r.family != 4:
        return 0

    def upto(n: int) -> int:  # buggy addresses in [0, n]
        if n < 0:
            return 0
        blocks, rest = divmod(n, 256)
        return blocks * 2 + 1 + (1 if rest == 255 else 0)

    return upto(r.last) - upto(r.first - 1)
