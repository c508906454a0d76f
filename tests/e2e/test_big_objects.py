"""One large object must not take the data plane down (issue 8, weak point 6), on the real lab.

A ~700 KiB Service (the API server accepts it: labels have no total cap) used to end every watch that
saw it with LineTooLong: every speaker exited and the controller's informer died silently. Here a VIP keeps
answering ARP and HTTP while the big Service is created and changed, no speaker restarts, and the big
Service itself gets an address that a node announces.
"""

from __future__ import annotations

import time

from lbctl.lab import probes, prober
from tests.big_objects import big_metadata
from tests.figures import figure

from .conftest import SERVICES, Lab, ipv4_of


def test_big_service_keeps_the_data_plane_up(fresh: Lab) -> None:
    ip = ipv4_of(fresh.service("steady"))
    owner = fresh.wait_arp_owner(ip)
    # CI once counted 3 failed probes, all before the first answer: kube-proxy had not yet synced the new VIP.
    assert fresh.wait_served(ip) == owner
    pids = {h.name: fresh.speaker_pid(h.name) for h in fresh.topo.node_hosts}
    run = probes.prober(ip, interval=0.05, duration=8)
    time.sleep(1.0)
    t_big = time.monotonic()
    meta = big_metadata()
    fresh.api.create(SERVICES, {"apiVersion": "v1", "kind": "Service",
                                "metadata": {"name": "big", "namespace": "default", **meta},
                                "spec": {"type": "LoadBalancer",
                                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    arp_misses, arp_checks = 0, 0
    for i in range(12):  # ARP for the steady VIP while the big object's events go through every watch
        arp_checks += 1
        arp_misses += fresh.arp_owners(ip, count=1) != {owner}
        if i == 3:
            fresh.api.patch(f"{SERVICES}/big", {"metadata": {"labels": {"touched": "yes"}}})
        time.sleep(0.3)
    out, err = run.communicate(timeout=30)
    result = prober.analyse(prober.read_probes(out), t_big)
    still = {h.name: fresh.speaker_pid(h.name) for h in fresh.topo.node_hosts}
    print(f"big Service: {arp_checks - arp_misses}/{arp_checks} ARP checks answered by {owner}, "
          f"HTTP {result.total - result.failures}/{result.total} ok, longest gap {result.gap_s * 1000:.0f} ms")
    figure("big_object_arp_misses", arp_misses, "count")
    figure("big_object_http_failures", result.failures, "count")
    assert still == pids, f"speakers restarted: {pids} -> {still}"
    assert arp_misses == 0, f"{arp_misses} of {arp_checks} ARP checks unanswered"
    assert result.failures == 0 and result.after is None, (result, err)
    big_ip = ipv4_of(fresh.wait_ips("big"))
    big_owner = fresh.wait_arp_owner(big_ip)
    after = ipv4_of(fresh.service("after-big"))
    fresh.wait_arp_owner(after)
    print(f"big Service got {big_ip}, announced by {big_owner}; the next Service got {after}")
