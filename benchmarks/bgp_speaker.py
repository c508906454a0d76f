"""`python -m benchmarks bgp_speaker`: what one change costs the speaker's BGP loop at scale.

Per change the speaker recomputes this node's addresses, plans, renders bird.conf and the status block
(speaker/bgp.py desired() and lbctl.core.bgp_announce.advertised), on the event loop. Figures for 1,000 and
5,000 Services x 2 peers: the shipped path (address and prefix parsing cached across changes) against the
baseline of the same run with those caches emptied before every change (every address parsed again).
"""

from __future__ import annotations

import statistics
import time

from lbctl.core import bgp_announce, bgp_plan, bgp_render
from lbctl.core.announce import IpIntent
from lbctl.core.election import NodeInfo
from lbctl.core.pools import parse_pool
from speaker.bgp import BgpSpeaker
from speaker.metrics import Metrics

CACHES = (bgp_plan._version, bgp_plan._prefix, bgp_plan._network, bgp_render._ip_network, bgp_announce._prefix)


def rig(n: int) -> BgpSpeaker:
    pool = parse_pool("p", {"addresses": ["198.18.0.0/16"], "bgp": {"advertisements": [{}]}}, "")
    ips = [f"198.18.{16 + i // 256}.{i % 256}" for i in range(n)]
    intents = {ip: IpIntent(ip, pool="p") for ip in ips}
    node = {"n1": NodeInfo("n1", addresses=("198.18.1.2",))}
    sp = BgpSpeaker("n1", "/nonexistent", lambda: (intents, {"p": pool}, node), Metrics(), lambda: None)
    sp.take("BGPPeer", "SYNC", [{"metadata": {"name": f"tor{i}"},
                                 "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": f"198.18.1.{i}"}}
                                for i in (1, 9)])
    return sp


def change(sp: BgpSpeaker) -> float:
    t0 = time.perf_counter()
    got, anns, _, _ = sp.desired()
    bgp_announce.advertised(got.config, anns)
    return time.perf_counter() - t0


def main() -> None:
    for n in (1000, 5000):
        sp = rig(n)
        change(sp)  # warm
        cached = [change(sp) for _ in range(20)]
        cold = []
        for _ in range(5):
            for cache in CACHES:
                cache.cache_clear()
            cold.append(change(sp))
        a, b = statistics.median(cached), statistics.median(cold)
        print(f"{n} Services x 2 peers, one change: {a * 1000:.1f} ms (median of 20); baseline without the "
              f"caches {b * 1000:.1f} ms (median of 5); ratio {b / a:.1f}x")


if __name__ == "__main__":
    main()
