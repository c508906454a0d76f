"""Turns "this node owns these IPs" into responder state: ARP/NDP sockets per interface and
gratuitous announcements on takeover.

apply() is synchronous and cheap: it swaps the owned sets on the responders in one go, so an IP we
lose is unanswered from that instant, and an IP we gain is answered before its first GARP leaves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lbctl import log
from lbctl.core.announce import IpIntent
from lbctl.core.arp import mac_to_bytes, mac_to_str
from lbctl.core.netifs import Interface
from lbctl.core.timestamps import rfc3339

from .arp_socket import ArpResponder
from .interfaces import InterfaceTable
from .metrics import Metrics
from .ndp_socket import NdpResponder

logger = log.get(__name__)
GARP_GAP = 0.1


def now_iso() -> str:
    return rfc3339(dt.datetime.now(dt.timezone.utc))


@dataclass
class Announcement:
    ip: str
    interface: str
    mac: str
    since: str
    services: tuple[str, ...] = ()
    last_garp: str | None = None
    _packed: bytes = field(default=b"", repr=False)


Key = tuple[str, str]  # (ip, interface)


class Announcer:
    def __init__(self, interfaces: InterfaceTable, metrics: Metrics, garp_count: int, garp_refresh: float,
                 on_foreign: Callable[[str, str, str], None] | None = None) -> None:
        self.interfaces = interfaces
        self.on_foreign = on_foreign  # (interface, ip, foreign MAC): another MAC claims an IP we announce
        self.metrics = metrics
        self.garp_count, self.garp_refresh = garp_count, garp_refresh
        self.current: dict[Key, Announcement] = {}
        self._arp: dict[str, ArpResponder] = {}
        self._ndp: dict[str, NdpResponder] = {}
        self._bursts: dict[Key, asyncio.Task[None]] = {}
        self._unplaced: set[str] = set()
        # (ip, pool interfaces) -> (where, packed, version): apply() runs on every reconcile, placing every
        # owned IP; parsed again only when the usable interfaces change (candidates is replaced then).
        self._placed: dict[tuple[str, tuple[str, ...]], tuple[list[Interface], bytes, int]] = {}
        self._placed_for: object = None
        self._broken: dict[tuple[str, str], str] = {}  # (kind, interface) -> error, logged once
        self.garps = 0  # announcements sent so far: each moves a lastGARP in the status

    def retrying(self) -> bool:
        """A responder failed to open: each apply() tries it again, so it must not be skipped."""
        return bool(self._broken)

    def owned_ips(self) -> set[str]:
        return {ip for ip, _ in self.current}

    def apply(self, mine: Mapping[str, IpIntent]) -> list[Announcement]:
        """Announce exactly `mine`; returns the announcements that are new."""
        want: dict[Key, tuple[Interface, IpIntent]] = {}
        unplaced = set()
        cache = self._placed if self.interfaces.candidates is self._placed_for else {}
        placed: dict[tuple[str, tuple[str, ...]], tuple[list[Interface], bytes, int]] = {}
        for ip, intent in mine.items():
            k = (ip, intent.interfaces)
            place = placed[k] = cache.get(k) or self._place(ip, intent.interfaces)
            if not place[0]:
                unplaced.add(ip)
            for iface in place[0]:
                want[(ip, iface.name)] = (iface, intent)
        self._placed, self._placed_for = placed, self.interfaces.candidates
        if unplaced - self._unplaced:
            logger.warning("no_interface_for_ip", ips=sorted(unplaced - self._unplaced),
                           hint="no usable interface has a subnet holding it and its pool names no interfaces")
            self.interfaces.request_refresh()
        self._unplaced = unplaced

        v4: dict[str, set[bytes]] = {}
        v6: dict[str, set[bytes]] = {}
        ifs: dict[str, Interface] = {}
        for (ip, name), (iface, intent) in want.items():
            _, packed, version = placed[(ip, intent.interfaces)]
            (v4 if version == 4 else v6).setdefault(name, set()).add(packed)
            ifs[name] = iface
        self._sync(self._arp, v4, ifs, ArpResponder, "arp")
        self._sync(self._ndp, v6, ifs, NdpResponder, "ndp")

        # Drop what we no longer announce (or cannot: the responder failed to open).
        for key in list(self.current):
            ip, name = key
            if key not in want or not self._serving(ip, name):
                self.current.pop(key)
                task = self._bursts.pop(key, None)
                if task:
                    task.cancel()
        new = []
        for key, (iface, intent) in want.items():
            ip, name = key
            services = tuple(s.key for s in intent.services)
            if key in self.current:
                self.current[key].services = services
                continue
            if not self._serving(ip, name):
                continue
            ann = Announcement(ip, name, iface.mac, now_iso(), services, _packed=placed[(ip, intent.interfaces)][1])
            self.current[key] = ann
            new.append(ann)
            if self.garp_count:
                self._bursts[key] = asyncio.create_task(self._burst(key, self.garp_count))
        self.metrics.announced.set(len(self.owned_ips()))
        return new

    def _place(self, ip: str, pool_interfaces: tuple[str, ...]) -> tuple[list[Interface], bytes, int]:
        addr = ipaddress.ip_address(ip)
        return self.interfaces.for_ip(ip, pool_interfaces), addr.packed, addr.version

    def _serving(self, ip: str, name: str) -> bool:
        table = self._arp if ":" not in ip else self._ndp
        return name in table

    def _sync(self, table: dict, owned: dict[str, set[bytes]], ifs: dict[str, Interface], cls: type,
              kind: str) -> None:
        for name in list(table):
            r = table[name]
            iface = ifs.get(name)
            if name not in owned or iface is None or iface.index != r.index or mac_to_bytes(iface.mac) != r.mac:
                table.pop(name).close()  # unused, or the link was recreated / changed MAC
        for name, ips in owned.items():
            r = table.get(name)
            if r is None:
                iface = ifs[name]
                try:
                    r = table[name] = cls(name, iface.index, mac_to_bytes(iface.mac), self.metrics, self._foreign)
                    self._broken.pop((kind, name), None)
                except (OSError, ValueError) as exc:
                    if self._broken.get((kind, name)) != str(exc):
                        logger.error("responder_failed", kind=kind, interface=name, error=str(exc))
                        self._broken[(kind, name)] = str(exc)
                    continue
            r.set_owned(frozenset(ips))

    def _foreign(self, ifname: str, ip: bytes, mac: bytes) -> None:
        if self.on_foreign is not None:
            self.on_foreign(ifname, ipaddress.ip_address(ip).compressed, mac_to_str(mac))

    def our_macs(self) -> set[str]:
        return {i.mac.lower() for i in self.interfaces.links if i.mac}

    def defend(self, ip: str) -> int:
        """One gratuitous announcement of `ip` on every interface announcing it; how many were sent."""
        sent = 0
        for key in [k for k in self.current if k[0] == ip]:
            if self._announce_once(key):
                sent += 1
        return sent

    def start_yielding(self) -> None:
        """Leaving: from now on each responder drops an IP the moment another MAC announces it."""
        for table in (self._arp, self._ndp):
            for r in table.values():
                r.yielding = True

    def serving(self) -> set[str]:
        """IPs some responder still answers for (shrinks while yielding)."""
        out = set()
        for table in (self._arp, self._ndp):
            for r in table.values():
                out |= {ipaddress.ip_address(ip).compressed for ip in r.owned}
        return out

    def _announce_once(self, key: Key) -> bool:
        ann = self.current.get(key)
        if ann is None:
            return False
        ip, name = key
        ok = (self._arp[name].gratuitous(ann._packed) if name in self._arp and ":" not in ip
              else self._ndp[name].unsolicited(ann._packed) if name in self._ndp else False)
        if ok:
            ann.last_garp = now_iso()
            self.garps += 1
        return ok

    async def _burst(self, key: Key, count: int) -> None:
        for i in range(count):
            if key not in self.current:
                return
            self._announce_once(key)
            if i + 1 < count:
                await asyncio.sleep(GARP_GAP)

    async def refresh_loop(self) -> None:
        """Periodic re-announcement (--garp-refresh) for switches/hosts that forget."""
        while True:
            await asyncio.sleep(self.garp_refresh)
            for key in list(self.current):
                self._announce_once(key)

    def close(self) -> None:
        for task in self._bursts.values():
            task.cancel()
        for table in (self._arp, self._ndp):
            for r in table.values():
                r.close()
            table.clear()
        self.current.clear()
        self.metrics.announced.set(0)


def can_open_raw() -> str | None:
    """None if raw sockets work, else why not (missing CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6).close()
    except PermissionError as exc:
        return str(exc)
    except OSError:
        return None  # e.g. IPv6 disabled: not a permission problem; NDP fails per interface later
    return None
