"""Controller high availability: two real controllers on the chart's ServiceAccount, one Lease, one writer.

Who wrote what is proven three ways: the Lease's holder, each process's own log (`status_written`, written
only after the API accepted a Service status patch) and the Events, whose reportingInstance is the writer's
leader-election identity. Timings are the chart's defaults (lease 12 s, renew deadline 8 s, retry 2 s).
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbctl.lab.controlplane import SA_NS, ControlPlane
from lbctl.kube.sync import SyncKube
from tests.integration.conftest import Lab
from tests.figures import figure
from tests.procs import ControllerProcess, is_leader
from tests.wait import wait_for

LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{SA_NS}/leases/lbctl-controller"
TAKEOVER_TARGET_S = 15.0


@pytest.fixture(scope="module")
def pair(control_plane: ControlPlane) -> Iterator[list[ControllerProcess]]:
    with tempfile.TemporaryDirectory(prefix="lbctl-ha-") as d:
        ctls = [ControllerProcess(control_plane, Path(d) / n, identity=f"ha-{n}") for n in ("a", "b")]
        try:
            for c in ctls:
                c.logdir.mkdir()
                c.start()
            yield ctls
        finally:
            for c in ctls:
                if c.proc and c.proc.poll() is None:
                    c.signal(signal.SIGCONT)
                c.stop()


def the_leader(ctls: list[ControllerProcess]) -> tuple[ControllerProcess, ControllerProcess]:
    def one() -> tuple[ControllerProcess, ControllerProcess] | None:
        flags = [is_leader(c) for c in ctls]
        if flags.count(True) == 1 and flags.count(False) == 1:
            return ctls[flags.index(True)], ctls[flags.index(False)]
        return None
    return wait_for(one, 30, 0.1, "exactly one leader and one standby")


def written(c: ControllerProcess) -> list[str]:
    """Services whose status this process wrote (its own log)."""
    out = []
    for line in c.log().splitlines():
        if '"status_written"' in line:
            out.append(json.loads(line)["service"])
    return out


def instances(lab: Lab, name: str, reason: str = "IPAllocated") -> set[str]:
    return {e.get("reportingInstance") or "" for e in lab.events(name, reason=reason)}


def all_ips(lab: Lab) -> dict[str, list[str]]:
    items = lab.kube.get(f"/api/v1/namespaces/{lab.ns}/services")["items"]
    return {s["metadata"]["name"]: [i["ip"] for i in ((s.get("status") or {}).get("loadBalancer") or {})
                                     .get("ingress") or []] for s in items}


@pytest.fixture
def ha_lab(kube: SyncKube, pair: list[ControllerProcess]) -> Iterator[Lab]:
    lab = Lab(kube, None)  # no pool-drop wait: the leader changes during these tests
    try:
        yield lab
    finally:
        lab.cleanup()


def test_two_controllers_one_leader_only_it_writes(ha_lab: Lab, pair: list[ControllerProcess],
                                                    kube: SyncKube) -> None:
    leader, standby = the_leader(pair)
    assert kube.get(LEASE)["spec"]["holderIdentity"] == leader.identity
    ha_lab.pool("ha", ["198.18.40.0/26"])
    names = [f"s{i}" for i in range(20)]
    for n in names:
        ha_lab.service(n)
    for n in names:
        ha_lab.wait_ips(n)
    ips = all_ips(ha_lab)
    assert all(len(v) == 1 for v in ips.values()), ips  # exactly one address each
    assert len({v[0] for v in ips.values()}) == len(names)  # and no address twice
    for n in names:
        assert wait_for(lambda: instances(ha_lab, n), what=f"IPAllocated on {n}") == {leader.identity}
    mine = {f"{ha_lab.ns}/{n}" for n in names}
    assert mine <= set(written(leader))
    assert not mine & set(written(standby)) and "write_fenced" not in standby.log()
    assert "leader_elected" not in standby.log()
    assert is_leader(standby) is False  # and the standby stayed a standby throughout


def test_leader_sigkill_standby_takes_over_within_the_lease(ha_lab: Lab, pair: list[ControllerProcess],
                                                            kube: SyncKube, record_property) -> None:
    leader, standby = the_leader(pair)
    ha_lab.pool("kill", ["198.18.41.0/26"])
    ha_lab.service("before")
    ha_lab.wait_ips("before")
    transitions = kube.get(LEASE)["spec"].get("leaseTransitions") or 0
    leader.signal(signal.SIGKILL)
    killed = time.monotonic()
    leader.proc.wait()
    ha_lab.service("after")
    ip = wait_for(lambda: ha_lab.ips("after"), 25, 0.05, "an address after the leader was killed")
    took = time.monotonic() - killed
    record_property("takeover_seconds", round(took, 2))
    print(f"\nleader SIGKILL -> new Service has an IP: {took:.2f} s (target <= {TAKEOVER_TARGET_S} s)")
    figure("leader_failover_s", took, "s")
    assert took <= TAKEOVER_TARGET_S, took
    assert len(ip) == 1 and ip != ha_lab.ips("before")
    assert is_leader(standby) is True
    spec = kube.get(LEASE)["spec"]
    assert spec["holderIdentity"] == standby.identity and spec["leaseTransitions"] == transitions + 1
    assert instances(ha_lab, "after") == {standby.identity}
    assert ha_lab.ips("before") == all_ips(ha_lab)["before"]  # nothing moved
    # Back to two: the restarted one (same identity, like a restarted container) finds the Lease taken.
    leader.start()
    assert the_leader(pair) == (standby, leader)


def test_paused_leader_stops_writing_before_the_lease_expires_and_exits(
        ha_lab: Lab, pair: list[ControllerProcess], kube: SyncKube, record_property) -> None:
    leader, standby = the_leader(pair)
    ha_lab.pool("pause", ["198.18.42.0/26"])
    ha_lab.service("p0")
    ha_lab.wait_ips("p0")
    # The API holds p0's address before the leader logs `status_written`: wait for the log line, or a
    # SIGSTOP between the two would count a write made before the pause as one made after it.
    wait_for(lambda: f"{ha_lab.ns}/p0" in written(leader), 10, 0.05, "the leader to log p0's write")
    wrote_before = written(leader)
    leader.signal(signal.SIGSTOP)
    paused = time.monotonic()
    try:
        # Created while the leader is frozen: on SIGCONT it will read these as pending work.
        for i in range(1, 6):
            ha_lab.service(f"p{i}")
        wait_for(lambda: is_leader(standby), 25, 0.1, "the standby to take over")
        took = time.monotonic() - paused
        for i in range(1, 6):
            ha_lab.wait_ips(f"p{i}")
        record_property("pause_takeover_seconds", round(took, 2))
        print(f"\nleader SIGSTOP -> standby leads after {took:.2f} s")
        figure("leader_pause_takeover_s", took, "s")
        assert took >= 8.0  # not before the paused leader's fence lapsed (renew deadline)
        assigned = all_ips(ha_lab)
    finally:
        leader.signal(signal.SIGCONT)
    # The old leader wakes up with a lapsed fence: it writes nothing and starts over as a standby (re-exec).
    wait_for(lambda: leader.log().count('"starting"') == 2, 20, 0.1, "the old leader to start over")
    log = leader.log()
    assert "leadership_lost" in log and "restarting_as_candidate" in log, log[-3000:]
    assert wait_for(lambda: is_leader(leader) is False, 20, 0.1, "the old leader back as a standby")
    assert written(leader) == wrote_before, "the old leader wrote after losing its lease"
    time.sleep(1)
    assert all_ips(ha_lab) == assigned  # nothing rewritten or moved
    for i in range(1, 6):
        assert instances(ha_lab, f"p{i}") == {standby.identity}
    fenced = log.count('"write_fenced"')
    record_property("fenced_writes", fenced)
    print(f"writes refused by the fence after SIGCONT: {fenced}")
    figure("leader_writes_refused_by_fence", fenced, "count")
    assert kube.get(LEASE)["spec"]["holderIdentity"] == standby.identity
    assert the_leader(pair) == (standby, leader)
    assert written(leader) == wrote_before
