"""Parse an ARP request and build the reply: lbctl's struct codec vs scapy, measured in one run.

    python benchmarks/codec_bench.py [--seconds 1.0]

Also asserts both paths produce the same reply bytes, so the comparison is like for like.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scapy.layers.l2 import ARP, Ether  # noqa: E402

from lbctl.core.arp import answer_arp, build_arp_reply, mac_to_bytes, parse_arp_request  # noqa: E402

OUR_MAC = "02:00:00:00:00:aa"
VIP = "192.0.2.100"
REQUEST = bytes(
    Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01")
    / ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="192.0.2.10", pdst=VIP)
)


MAC = mac_to_bytes(OUR_MAC)
OWNED = frozenset({bytes([192, 0, 2, 100])})


def hot(frame: bytes) -> bytes | None:
    """What the speaker's responder thread runs per request."""
    return answer_arp(frame, OWNED, MAC)


def ours(frame: bytes) -> bytes:
    """The decoded API: parse to an ArpRequest, then build."""
    req = parse_arp_request(frame)
    assert req is not None and req.target_ip in OWNED
    return build_arp_reply(MAC, req.target_ip, req)


def scapy(frame: bytes) -> bytes:
    a = Ether(frame)[ARP]
    assert a.op == 1 and a.pdst == VIP
    reply = Ether(dst=a.hwsrc, src=OUR_MAC) / ARP(op=2, hwsrc=OUR_MAC, psrc=VIP, hwdst=a.hwsrc, pdst=a.psrc)
    return bytes(reply).ljust(60, b"\x00")


def rate(fn, seconds: float) -> float:
    n, batch, start = 0, 1, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(batch):
            fn(REQUEST)
        n += batch
        batch = min(batch * 2, 10_000)
    return n / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="time budget per codec")
    args = p.parse_args()
    assert hot(REQUEST) == ours(REQUEST) == scapy(REQUEST), "codecs disagree"
    r_hot, r_ours, r_scapy = rate(hot, args.seconds), rate(ours, args.seconds), rate(scapy, args.seconds)
    print(f"hot path (answer_arp):  {r_hot:>12,.0f} replies/s ({1e6 / r_hot:.2f} us each)")
    print(f"parse + build:          {r_ours:>12,.0f} replies/s ({1e6 / r_ours:.2f} us each)")
    print(f"scapy (baseline):       {r_scapy:>12,.0f} replies/s ({1e6 / r_scapy:.2f} us each)")
    print(f"ratio hot path / scapy: {r_hot / r_scapy:>12,.0f}x")


if __name__ == "__main__":
    main()
