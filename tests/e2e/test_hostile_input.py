"""Hostile input at real speakers (issue 8, acceptance 2, short form; `python -m benchmarks.fuzz_bench` runs
the long form with a million frames): malformed, truncated, oversized and random ARP, NDP and heartbeat
frames. Afterwards: both speakers alive and ready, no ARP/NDP answer for an address they do not own, the
ghost peer still dead (its VIP still answered by node1), and RSS growth within 5 MiB.

Runs on the two-speaker harness of test_speaker_dataplane (static config, real frames on a real bridge).
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


from lbctl.core.heartbeat import Heartbeat, encode
from tests import hostile

from .test_speaker_dataplane import GHOST, KEY, NODES, PORT, VIP1, VIP2, VIP6, VIP_GHOST, Lab, in_netns, owner_is
from .test_speaker_dataplane import lab  # noqa: F401  (the same two-speaker harness, one per module)

SOL_PACKET, PACKET_IGNORE_OUTGOING = 263, 23  # <linux/if_packet.h>; not in the socket module
OWNED4 = [VIP1, VIP2, VIP_GHOST]
OWNED6 = [VIP6]
UNOWNED4 = [f"198.18.0.{i}" for i in range(200, 216)]
UNOWNED6 = [f"2001:db8::{i:x}" for i in range(0x200, 0x210)]
SHORT_L2, SHORT_HB = 20_000, 5_000


@dataclass
class Outcome:
    frames: int = 0
    datagrams: int = 0
    seconds: float = 0.0
    wrong_answers: list[str] = field(default_factory=list)
    answers: int = 0
    rss_growth_kib: dict[str, int] = field(default_factory=dict)
    alive: bool = True
    ghost_dead: bool = True


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _signed_ghost_beacons(seed: int, count: int) -> list[bytes]:
    """Correctly signed beacons of the ghost with random incarnations and sequence numbers far in the future:
    what a key holder replaying or inventing a stream can send. None echoes a live speaker's incarnation,
    so none may make the ghost live."""
    rnd = random.Random(seed)
    return [encode(Heartbeat(GHOST, rnd.getrandbits(63), rnd.choice((2**63, 2**40, 10**12)) + i), KEY)
            for i in range(count)]


def _answer_of(frame: bytes) -> str | None:
    """The address an ARP reply or a neighbour advertisement answers for (None: neither)."""
    if len(frame) >= 42 and frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02":
        return socket.inet_ntoa(frame[28:32])
    if len(frame) >= 78 and frame[12:14] == b"\x86\xdd" and frame[20] == 58 and frame[54] == 136:
        return socket.inet_ntop(socket.AF_INET6, frame[62:78])
    return None


def attack(lab: Lab, l2_count: int, hb_count: int, seed: int = 1) -> Outcome:
    out = Outcome()
    pids = {n: lab.procs[n].pid for n in NODES}
    before = {n: rss_kib(p) for n, p in pids.items()}
    beacons = lab.beacons(1.0)
    owned = set(OWNED4) | set(OWNED6)
    # The nodes' kernels answer for their own addresses (a mutated frame may ask for them): not the speaker's.
    kernel = {"198.18.0.1", "198.18.0.2", "2001:db8::1", "2001:db8::2"}
    stop = threading.Event()
    with in_netns(lab.client):
        listener = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    listener.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    listener.bind(("eth0", 0))
    listener.settimeout(0.1)

    def listen() -> None:
        while not stop.is_set():
            try:
                frame = listener.recv(2048)
            except TimeoutError:
                continue
            ip = _answer_of(frame)
            if ip is not None and frame[6:12] != bytes.fromhex(lab.macs["client"].replace(":", "")):
                out.answers += 1
                if ip not in owned and ip not in kernel and not ip.startswith("fe80:"):
                    out.wrong_answers.append(ip)

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        with lab.raw() as tx:
            tx.settimeout(None)
            for frame in hostile.l2_frames(seed, l2_count, lab.macs["client"], OWNED4, OWNED6, UNOWNED4, UNOWNED6,
                                           "198.18.0.9", "2001:db8::9"):
                with contextlib.suppress(OSError):  # ENOBUFS under a burst: the frame is simply lost
                    tx.send(frame)
                out.frames += 1
        with in_netns(lab.client):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with udp:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            for payload in _signed_ghost_beacons(seed, max(1, hb_count // 10)):
                with contextlib.suppress(OSError):  # signed, future sequence numbers, but no echo of anyone
                    udp.sendto(payload, ("198.18.0.255", PORT))
                out.datagrams += 1
            for payload in hostile.heartbeat_payloads(seed, hb_count, beacons):
                with contextlib.suppress(OSError):
                    udp.sendto(payload, ("198.18.0.255", PORT))
                out.datagrams += 1
        out.seconds = time.monotonic() - started
        time.sleep(1.0)  # answers in flight, and the ghost given every chance to look alive
    finally:
        stop.set()
        reader.join(5)
        listener.close()
    out.alive = all(lab.ready(n) for n in NODES)
    out.ghost_dead = all(re.search(r"^lbctl_speaker_live_peers 2\.0$", lab.http(n, "/metrics"), re.M) for n in NODES)
    out.ghost_dead = out.ghost_dead and owner_is(lab, VIP_GHOST, "node1")
    out.rss_growth_kib = {n: rss_kib(p) - before[n] for n, p in pids.items()}
    return out


def test_hostile_frames_short_form(lab: Lab) -> None:
    from tests.wait import wait_for
    wait_for(lambda: owner_is(lab, VIP1, "node1") and owner_is(lab, VIP_GHOST, "node1"), 5, what="owners settled")
    out = attack(lab, SHORT_L2, SHORT_HB)
    assert out.alive, "a speaker died or went unready"
    assert not out.wrong_answers, f"answered for addresses nobody owns: {sorted(set(out.wrong_answers))[:10]}"
    assert out.ghost_dead, "the ghost peer looked alive after the heartbeat garbage"
    assert max(out.rss_growth_kib.values()) <= 5 * 1024, out.rss_growth_kib
    # The attack did reach the responders: mutated-but-valid requests for owned addresses were answered.
    assert out.answers > 0
    print(f"hostile input: {out.frames} L2 frames + {out.datagrams} heartbeat datagrams in {out.seconds:.1f} s; "
          f"{out.answers} answers, 0 for unowned; RSS growth {out.rss_growth_kib} KiB")
