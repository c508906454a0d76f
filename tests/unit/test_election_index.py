"""ElectionIndex gives exactly `owners()`'s answers after every kind of change (seeded random property test).

Each case builds a random world (Nodes with labels, exclusions and unusable networks; pools with node
selectors; ETP Local ready sets; per-segment live sets) and then walks a random sequence of joins, leaves,
mass failures, Node edits and intent edits, comparing the index with the reference full recompute after
every step, and its reported changes with the reference's differences. Small K values make refills (a
top K emptied by leaves) frequent.
"""

from __future__ import annotations

import random

import pytest

from lbctl.core.announce import IpIntent, owners, segment_live
from lbctl.core.election import EXCLUDE_LB_LABEL, NodeInfo, rank
from lbctl.core.election_index import ElectionIndex

SELECTORS = [
    (),
    ({"matchLabels": {"lb": "true"}},),
    ({"matchLabels": {"zone": "a"}}, {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}),
    ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["c"]}]},),
]
IFACES = ["eth0", "eth1", "eth2"]
# Non-canonical spellings on purpose: the index must hash the canonical form, as election.owner does.
IPS = [f"198.18.0.{i}" for i in range(1, 30)] + [f"2001:DB8:0::{i:x}" for i in range(1, 12)]


class World:
    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.universe = [f"node-{i}" for i in range(rnd.randint(1, 24))]
        self.nodes: dict[str, NodeInfo] = {}
        for n in self.universe:
            if rnd.random() < 0.85:
                self.nodes[n] = self.node_info(n)
        self.live: set[str] = {n for n in self.universe if rnd.random() < 0.7} | {"stranger"}
        self.intents: dict[str, IpIntent] = {}
        for ip in rnd.sample(IPS, rnd.randint(0, len(IPS))):
            self.intents[ip] = self.intent(ip)
        self.segments_of: dict[str, list[str]] = {}
        self.live_on: dict[str, set[str]] = {}
        if rnd.random() < 0.6:
            self.reshape_segments()

    def node_info(self, n: str) -> NodeInfo:
        r = self.rnd
        labels = {"zone": r.choice("abc")}
        if r.random() < 0.5:
            labels["lb"] = "true"
        if r.random() < 0.1:
            labels[EXCLUDE_LB_LABEL] = ""
        return NodeInfo(n, labels, r.random() < 0.1)

    def intent(self, ip: str) -> IpIntent:
        r = self.rnd
        etp = r.random() < 0.3
        ready = frozenset(r.sample(self.universe, r.randint(0, min(5, len(self.universe))))) if etp or r.random() < 0.3 \
            else frozenset()
        return IpIntent(ip=ip, pool="p", node_selectors=r.choice(SELECTORS), etp_local=etp, ready_nodes=ready)

    def reshape_segments(self) -> None:
        r = self.rnd
        self.segments_of = {ip: r.sample(IFACES, r.randint(0, 2)) for ip in self.intents if r.random() < 0.8}
        self.live_on = {i: {n for n in self.live if r.random() < 0.8} for i in IFACES if r.random() < 0.7}

    def step(self) -> str:
        r = self.rnd
        what = r.choice(["join", "leave", "leave", "mass_leave", "node_edit", "node_delete", "node_add",
                         "intent_add", "intent_remove", "intent_edit", "ready_edit", "segment_leave",
                         "segment_join", "segments", "iface_down", "nothing", "many"])
        if what == "many":
            for _ in range(r.randint(2, 5)):
                self.step()
            return what
        off = [n for n in self.universe + ["stranger"] if n not in self.live]
        if what == "join" and off:
            n = r.choice(off)
            self.live.add(n)  # in place on purpose: the index must not keep a reference
            for s in self.live_on.values():
                if r.random() < 0.8:
                    s.add(n)
        elif what == "leave" and self.live:
            n = r.choice(sorted(self.live))
            self.live = self.live - {n}
            for s in self.live_on.values():
                s.discard(n)
        elif what == "mass_leave":
            gone = {n for n in self.live if r.random() < 0.6}
            self.live -= gone
            self.live_on = {i: s - gone for i, s in self.live_on.items()}
        elif what == "node_edit" and self.nodes:
            n = r.choice(sorted(self.nodes))
            self.nodes[n] = self.node_info(n)
        elif what == "node_delete" and self.nodes:
            del self.nodes[r.choice(sorted(self.nodes))]
        elif what == "node_add":
            n = r.choice(self.universe)
            self.nodes[n] = self.node_info(n)
        elif what == "intent_add":
            ip = r.choice(IPS)
            self.intents = dict(self.intents, **{ip: self.intent(ip)})
        elif what == "intent_remove" and self.intents:
            self.intents.pop(r.choice(sorted(self.intents)))
        elif what == "intent_edit" and self.intents:
            ip = r.choice(sorted(self.intents))
            self.intents[ip] = self.intent(ip)
        elif what == "ready_edit" and self.intents:
            ip = r.choice(sorted(self.intents))
            old = self.intents[ip]
            ready = set(old.ready_nodes) ^ {r.choice(self.universe)}
            self.intents[ip] = IpIntent(ip=ip, pool=old.pool, node_selectors=old.node_selectors,
                                        etp_local=old.etp_local, ready_nodes=frozenset(ready))
        elif what == "segment_leave" and self.live_on:
            s = self.live_on[r.choice(sorted(self.live_on))]
            if s:
                s.discard(r.choice(sorted(s)))
        elif what == "segment_join" and self.live_on:
            self.live_on[r.choice(sorted(self.live_on))].add(r.choice(self.universe))
        elif what == "segments":
            self.reshape_segments()
        elif what == "iface_down" and self.live_on:
            del self.live_on[r.choice(sorted(self.live_on))]
        return what

    def expected(self) -> dict[str, str | None]:
        return owners(self.intents, self.live, self.nodes, segment_live(self.segments_of, self.live_on))

    def update(self, index: ElectionIndex, only: set[str] | None = None) -> set[str]:
        return index.update(self.intents, self.live, self.nodes, self.segments_of, self.live_on, only)

    def inputs(self) -> tuple[dict[str, IpIntent], dict[str, tuple[str, ...]]]:
        return dict(self.intents), {ip: tuple(s) for ip, s in self.segments_of.items()}


@pytest.mark.parametrize("hinted", [False, True], ids=["scan", "only-changed"])
@pytest.mark.parametrize("seed", range(300))
def test_index_equals_full_recompute_after_every_step(seed: int, hinted: bool) -> None:
    """hinted: told which IPs' intents or segments changed (as the speaker does), it looks at no other."""
    rnd = random.Random(seed)
    world = World(rnd)
    index = ElectionIndex(k=rnd.choice([1, 2, 3, 8]))
    want = world.expected()
    assert world.update(index) == set(want)  # the first update reports every IP
    assert index.owners == want
    for i in range(40):
        seen = world.inputs()
        what = world.step()
        prev, want = want, world.expected()
        now = world.inputs()
        only = None
        if hinted:
            only = {ip for k in (0, 1) for ip in seen[k].keys() | now[k].keys() if seen[k].get(ip) != now[k].get(ip)}
            only |= set(rnd.sample(IPS, 2))  # a hint may hold more than what changed
        changed = world.update(index, only)
        assert index.owners == want, f"step {i} ({what})"
        assert changed == {ip for ip in prev.keys() | want.keys() if prev.get(ip, "-") != want.get(ip, "-")}, \
            f"step {i} ({what})"


def test_without_segments_every_ip_uses_the_global_live_set() -> None:
    rnd = random.Random(7)
    nodes = {f"n{i}": NodeInfo(f"n{i}") for i in range(50)}
    intents = {f"198.18.1.{i}": IpIntent(ip=f"198.18.1.{i}") for i in range(200)}
    live = set(nodes)
    index = ElectionIndex(k=2)
    index.update(intents, live, nodes)
    for _ in range(45):  # down to 5 live nodes: many top-2 lists run empty and are refilled
        live.discard(rnd.choice(sorted(live)))
        index.update(intents, live, nodes)
        assert index.owners == owners(intents, live, nodes)
    assert index.refills > 0


def test_a_leave_touches_only_the_ips_that_node_held() -> None:
    nodes = {f"n{i}": NodeInfo(f"n{i}") for i in range(100)}
    intents = {f"198.18.2.{i}": IpIntent(ip=f"198.18.2.{i}") for i in range(250)}
    index = ElectionIndex()
    index.update(intents, set(nodes), nodes)
    owned = {ip for ip, who in index.owners.items() if who == "n7"}
    changed = index.update(intents, set(nodes) - {"n7"}, nodes)
    assert changed == owned and owned
    assert index.refills == 0


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        ElectionIndex(k=0)


def test_a_joiner_ranking_below_a_shrunk_top_k_stays_out_of_it() -> None:
    # Top 2 of ten; the best leaves (top holds one, others wait outside); a joiner ranking 6th must not
    # slip into the top, or it would win once the 2nd leaves too, over the 3rd.
    ip = "198.18.3.1"
    names = [f"n{i}" for i in range(11)]
    order = rank(ip, names)
    joiner = order[5]
    nodes = {n: NodeInfo(n) for n in names}
    intents = {ip: IpIntent(ip=ip)}
    live = set(names) - {joiner}
    index = ElectionIndex(k=2)
    index.update(intents, live, nodes)
    for change in (lambda: live.discard(order[0]), lambda: live.add(joiner), lambda: live.discard(order[1])):
        change()
        index.update(intents, live, nodes)
        assert index.owners == owners(intents, live, nodes)
    assert index.owners[ip] == order[2]
