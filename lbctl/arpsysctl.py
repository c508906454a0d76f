"""The node's ARP sysctls, read from /proc, and the strict-ARP check on them (decided in lbctl.core.strictarp).

Used by the speaker at start-up and by `lbctl preflight`: both report the same finding.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .core import strictarp
from .core.netifs import Interface

CONF = Path("/proc/sys/net/ipv4/conf")


def read(interfaces: Iterable[str] = (), conf: Path = CONF) -> dict[str, dict[str, str | None]]:
    """{"all" or interface: {"arp_ignore": "1", "arp_announce": "2"}}; None where a value cannot be read."""
    out: dict[str, dict[str, str | None]] = {}
    for scope in ("all", *interfaces):
        values: dict[str, str | None] = {}
        for key in strictarp.KEYS:
            try:
                values[key] = (conf / scope / key).read_text().strip()
            except (OSError, ValueError):
                values[key] = None
        out[scope] = values
    return out


def check(links: Iterable[Interface], interfaces: Iterable[str] = ()) -> strictarp.Finding:
    """`links`: every link on the node (from lbctl.netlink.read); `interfaces`: the announcing ones."""
    names = [n for n in dict.fromkeys(interfaces) if n and "/" not in n and n not in (".", "..")]
    ipvs = any(link.name == strictarp.IPVS_DEV for link in links)
    return strictarp.node(read(names), ipvs, names)
