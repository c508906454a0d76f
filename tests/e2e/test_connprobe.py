"""The rolling-upgrade instrument (lbctl.lab.connprobe, issue 13 item 4) on the lab: a new TCP connection to each
of 3 VIPs owned by different nodes every 10 ms from the client namespace. On a quiet lab it must see nothing
fail; when one owner's switch port is cut it must see that VIP's outage, and only that VIP's."""

from __future__ import annotations

import subprocess
import time

from lbctl.core.connsummary import Run, TargetSummary, render, summarise
from lbctl.lab import connprobe
from lbctl.lab.topology import BRIDGE_NS, CLIENT_NS

from .conftest import Lab, ipv4_of

INTERVAL = 0.01


def vips_on_distinct_owners(lab: Lab, count: int = 3, tries: int = 12) -> dict[str, str]:
    """owner node -> a VIP it answers ARP for, one per node, creating Services cp0.. until every node has one."""
    owners: dict[str, str] = {}
    for i in range(tries):
        ip = ipv4_of(lab.service(f"cp{i}"))
        owners.setdefault(lab.wait_arp_owner(ip), ip)
        if len(owners) == count:
            for vip in owners.values():
                lab.wait_served(vip)  # kube-proxy has its rules: from here on every connection must succeed
            return owners
    raise AssertionError(f"{tries} Services did not land on {count} distinct owners: {owners}")


def target(ip: str) -> str:
    return f"{ip}:80"


def by_target(run: Run, start: float | None = None, stop: float | None = None) -> dict[str, TargetSummary]:
    return {s.target: s for s in summarise(run.attempts, run.targets, start, stop)}


def test_quiet_lab_every_connection_succeeds(fresh: Lab) -> None:
    owners = vips_on_distinct_owners(fresh)
    seconds = 3.0
    run = connprobe.finish(connprobe.launch(CLIENT_NS, [target(ip) for ip in owners.values()], INTERVAL,
                                            duration=seconds))
    summary = by_target(run, run.started, run.stopped)
    print(render(list(summary.values()), {target(ip): f"{ip} ({n})" for n, ip in owners.items()}))
    assert run.stopped_by == "duration"
    for node, ip in owners.items():
        s = summary[target(ip)]
        # ~300 attempts in 3 s; a starved prober (late ticks, counted) may start fewer, never more.
        assert seconds / INTERVAL * 0.8 <= s.attempts <= seconds / INTERVAL + 1, (s, run.late_ticks)
        assert s.failed == 0, s
        assert s.backends == {node: s.attempts}, s  # the owner's httpd answers every connection


def test_a_cut_owner_shows_as_failures_on_its_vip_only(fresh: Lab) -> None:
    owners = vips_on_distinct_owners(fresh)
    victim = sorted(owners)[0]
    port = fresh.topo.host(victim).port
    probe = connprobe.launch(CLIENT_NS, [target(ip) for ip in owners.values()], INTERVAL)
    try:
        time.sleep(1.0)
        cut = time.monotonic()
        subprocess.run(["ip", "-n", BRIDGE_NS, "link", "set", port, "down"], check=True)
        # Until another node announces the VIP the client's SYNs go to the cut port: every attempt times out.
        moved = fresh.wait_arp_owner(owners[victim], timeout=10, not_=victim)
        time.sleep(1.5)  # let the prober see the new owner answer for a while
    finally:
        run = connprobe.finish(probe)
        subprocess.run(["ip", "-n", BRIDGE_NS, "link", "set", port, "up"], check=True)
    summary = by_target(run, run.started, run.stopped)
    print(render(list(summary.values()), {target(ip): f"{ip} ({n})" for n, ip in owners.items()}))
    hit = summary[target(owners[victim])]
    assert run.stopped_by == "eof"
    assert hit.failed >= 10 and set(hit.failures) <= {"timeout", "reset"}, hit
    assert hit.longest_gap_ms >= 200, hit
    assert set(hit.backends) == {victim, moved}, hit  # served by the owner, then by its successor
    first_fail = min(a.t for a in run.attempts if a.target == target(owners[victim]) and not a.ok)
    assert first_fail >= cut - 1.0, "the VIP failed before its owner was cut"  # 1 s: an attempt's timeout
    for node, ip in owners.items():
        if node != victim:
            s = summary[target(ip)]
            assert s.failed == 0 and s.backends == {node: s.attempts}, s
            assert s.longest_gap_ms < hit.longest_gap_ms / 2, (s, hit)
    print(f"{victim} cut: {hit.failed} of {hit.attempts} connections to {owners[victim]} failed "
          f"({hit.failures}), longest gap {hit.longest_gap_ms:.0f} ms; {moved} took over")
