"""One new Service must cost the router one BGP update, not a resend of every prefix (issue 14: a new
Service's route p99 <= 300 ms at 1,000 Services).

Two real BIRDs in their own network namespaces over a veth: the node's, configured from lbctl's renderer and
reconfigured with `birdc configure` as the speaker does, and one playing the router that imports everything.
The router's "Import updates: received" counter is the judge. benchmarks.bgp_scale found that an export filter
listing every prefix made BIRD re-export the whole table on each change (1,001 updates for a 1,001st prefix).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbctl.core.bgp_render import BgpConfig, Export, Peer, render
from tests.bird import BIRD, BIRDC, NEEDS_BIRD_AND_ROOT, PREFIX
from tests.procs import terminate
from tests.wait import wait_for

pytestmark = NEEDS_BIRD_AND_ROOT
ROUTER_NS, NODE_NS = f"{PREFIX}bir", f"{PREFIX}bin"
COUNT = 300
ROUTER_CONF = """router id 198.18.2.1;
protocol device {}
protocol bgp n1 { local 198.18.2.1 as 64513; neighbor 198.18.2.2 as 64512; hold time 9; connect retry time 1;
  ipv4 { import all; export none; }; }
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def config(count: int, local_pref: int | None = None) -> str:
    exports = tuple(Export(f"198.18.{16 + i // 256}.{i % 256}/32", local_pref if i == 0 else None)
                    for i in range(count))
    return render(BgpConfig("198.18.2.2", 64512, (Peer("tor", "198.18.2.1", 64513, hold_time_s=9,
                                                       exports=exports),), listen_port=1790))


class Pair:
    def __init__(self, wd: Path) -> None:
        self.wd = wd
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for ns in (ROUTER_NS, NODE_NS):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "bi0", "netns", ROUTER_NS, "type", "veth", "peer", "name", "bi1", "netns", NODE_NS)
        for ns, dev, addr in ((ROUTER_NS, "bi0", "198.18.2.1/24"), (NODE_NS, "bi1", "198.18.2.2/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        (self.wd / "router.conf").write_text(ROUTER_CONF)
        self.write(config(COUNT))
        for ns, name in ((ROUTER_NS, "router"), (NODE_NS, "node")):
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, BIRD, "-f", "-c", str(self.wd / f"{name}.conf"),
                 "-s", str(self.wd / f"{name}.ctl")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def write(self, text: str) -> None:
        (self.wd / "node.conf").write_text(text)

    def configure(self, text: str) -> None:
        self.write(text)
        out = sh(BIRDC, "-s", str(self.wd / "node.ctl"), "configure")
        assert "Reconfigured" in out, out

    def stats(self) -> tuple[int, int]:
        """(routes imported, import updates received) of the router's session; (0, 0) while BIRD starts."""
        try:
            out = sh(BIRDC, "-s", str(self.wd / "router.ctl"), "show", "protocols", "all", "n1")
        except subprocess.CalledProcessError:
            return 0, 0
        routes = re.search(r"Routes:\s+(\d+) imported", out)
        updates = re.search(r"Import updates:\s+(\d+)", out)
        return (int(routes[1]) if routes else 0), (int(updates[1]) if updates else 0)

    def settled(self, routes: int) -> int:
        """The updates counter once the router has `routes` and the counter stopped moving (the resend, if any,
        comes with the same configure, so it has had its chance by then)."""
        def still() -> int | None:
            first = self.stats()
            time.sleep(0.5)
            second = self.stats()
            return second[1] if first == second and second[0] == routes else None
        return wait_for(still, 30, what=f"the router to hold {routes} routes and stop counting updates")

    def stop(self) -> None:
        for p in self.procs:
            terminate(p, 5)
        for ns in (ROUTER_NS, NODE_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture()
def pair(tmp_path: Path) -> Iterator[Pair]:
    tmp_path.chmod(0o700)
    p = Pair(tmp_path)
    try:
        p.start()
        yield p
    finally:
        p.stop()


def test_one_new_prefix_costs_one_update_not_a_resend_of_all(pair: Pair) -> None:
    before = pair.settled(COUNT)
    pair.configure(config(COUNT + 1))
    after = pair.settled(COUNT + 1)
    assert after - before == 1, f"{after - before} updates for one new prefix among {COUNT}"


def test_one_changed_attribute_costs_one_update(pair: Pair) -> None:
    before = pair.settled(COUNT)
    pair.configure(config(COUNT, local_pref=300))
    wait_for(lambda: pair.stats()[1] > before, 20, what="the router to get the changed route")
    after = pair.settled(COUNT)
    assert after - before == 1, f"{after - before} updates for one changed route among {COUNT}"
