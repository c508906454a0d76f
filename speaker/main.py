"""`lbctl-speaker` / `python -m lbctl.speaker`: announces LoadBalancer IPs on the node's L2 segment.

One process per node (hostNetwork). Each speaker heartbeats its peers, elects an owner per IP with
the same pure function as every other speaker, and answers ARP/NDP only for the IPs it owns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable

from lbctl import arpsysctl, httpserver, log
from lbctl.core.announce import IpIntent
from lbctl.core.conflicts import Conflict, ConflictTable
from lbctl.core.election_index import ElectionIndex
from lbctl.core.heartbeat import Keyring, warm_up_done
from lbctl.core.isolation import SUSPECT_INTERVALS, IsolationGuard, Verdict, hold_for
from lbctl.kube import config
from lbctl.kube.client import Kube
from lbctl.kube.events import EventRecorder

from .announcer import Announcer, can_open_raw
from .bgp import BgpSpeaker
from .cli import parse_args, read_keys
from .heartbeats import Heartbeats
from .interfaces import InterfaceTable
from .lease import LeaseRenewer
from .metrics import Metrics
from .registered import PeerCensus
from .state import KubeState, StaticState
from .status import ConflictEvents, StatusWriter, TakeoverEvents, status_body
from .withheld import WithheldReporter

logger = log.get("speaker")
HANDOVER_GRACE = 1.0  # at most this long answering after LEAVING; each IP stops once its successor announces it
CONFIRM_S = 0.25  # a foreign claim counts only if we still own the IP this much later (not a move in flight)


def check_strict_arp(interfaces: InterfaceTable) -> None:
    """Warn (once, at start) when kube-proxy's IPVS dummy is here but ARP is not strict: every node would
    answer for every LoadBalancer IP. The speaker never writes sysctls itself."""
    finding = arpsysctl.check(interfaces.links, [i.name for i in interfaces.candidates])
    if not finding.ok:
        logger.warning("strict_arp", level=finding.level, message=finding.message)


class Speaker:
    def __init__(self, args: argparse.Namespace, keys: Keyring, metrics: Metrics) -> None:
        self.args, self.node, self.metrics = args, args.node_name, metrics
        self.dirty = asyncio.Event()
        self.interfaces = InterfaceTable(args.interfaces, self.dirty.set)
        self.heartbeats = Heartbeats(self.node, keys, args.heartbeat_port, args.heartbeat_interval,
                                     args.dead_after, self.dirty.set, metrics, args.restart_hold)
        self.announcer = Announcer(self.interfaces, metrics, args.garp_count, args.garp_refresh, self.on_foreign)
        self.source: KubeState | StaticState | None = None
        self.withheld = WithheldReporter(None, self.node)
        self.status: StatusWriter | None = None
        self.events: TakeoverEvents | None = None
        self.conflict_events: ConflictEvents | None = None
        self.conflicts = ConflictTable()
        self.warm = False
        self.leaving = False
        self._mine: set[str] = set()
        self._intents: dict[str, IpIntent] = {}
        self._live: set[str] = set()
        self._links: set[str] = set()
        self._conflict_wake = asyncio.Event()
        self.unicast_peers: set[str] = set()  # registered peers once not heard: beaconed to directly too
        # Election in time proportional to what changed (lbctl/core/election_index.py): same owners as owners().
        self.election = ElectionIndex()
        self._won: set[str] = set()  # IPs the election gives this node (before any isolation hold)
        self.isolation = IsolationGuard(self.node, hold_for(args.dead_after),
                                        suspect_s=SUSPECT_INTERVALS * args.heartbeat_interval)
        self.registered: Callable[[], frozenset[str] | None] = lambda: None  # the peer census, with Kubernetes
        self._isolation_wake: asyncio.TimerHandle | None = None
        # Per-IP interfaces, recomputed only for the IPs whose intent changed, or all when the interfaces do.
        self._where: dict[str, tuple[str, ...]] = {}
        self._where_ifaces: object = None
        self._resync = True  # the election has not taken in the source's changes: give it every IP next time
        self._holding = False  # the isolation guard held our claims at the last reconcile
        self._garps_published = -1  # announcer.garps when the status was last built
        self.bgp: BgpSpeaker | None = None  # --bgp: drives the BIRD sidecar

    def ready(self) -> bool:
        return self.warm and self.source is not None and self.source.synced

    def _up_links(self) -> set[str]:
        return {i.name for i in self.interfaces.candidates}

    async def elect_forever(self) -> None:
        # Listen for a full dead_after first, then until every peer heard has verified us: electing before
        # would make a restarted speaker grab (and GARP) the addresses of peers it takes for dead.
        await self._warm_up()
        self.warm = True
        self._links = self._up_links()
        while True:
            # The heartbeat thread wakes us only when the live set changes; so do the informers and
            # the interface table. An idle speaker does no work here at all.
            self.dirty.clear()
            self.heartbeats.set_targets(self.interfaces.heartbeat_targets(self._unicast_addresses()))
            links = self._up_links()
            back, self._links = links - self._links, links
            if back:
                # A link that was down has expired every peer heard on it: warm up again, as at start,
                # before claiming (and GARPing) anything on it. Nothing is announced there meanwhile.
                logger.info("link_back", interfaces=sorted(back), hold_s=self.args.dead_after)
                await asyncio.sleep(self.args.dead_after)
                continue
            try:
                self.reconcile(time.monotonic())
            except Exception:  # a bug on one input must not stop announcing for the rest
                logger.exception("reconcile_failed")
            await self.dirty.wait()

    async def _warm_up(self) -> None:
        started = time.monotonic()
        step = min(self.args.dead_after, 0.05)
        while not warm_up_done(time.monotonic() - started, self.args.dead_after,
                               pending := self.heartbeats.unverified(time.monotonic())):
            await asyncio.sleep(step)
        if pending:
            logger.warning("warm_up_unverified_peers", peers=sorted(pending),
                           waited_s=round(time.monotonic() - started, 2),
                           hint="these peers do not echo our beacons; they count as dead until they do")
        else:
            logger.info("warm_up_done", waited_s=round(time.monotonic() - started, 2))

    def restarting(self) -> bool:
        """Whether this stop is a restart to hold addresses for (--restart-hold): our Node, as last listed,
        is schedulable, Ready and not being deleted. A cordoned, draining, failing or unknown node hands
        over at once."""
        # Only the API server's view says whether the node stays; --static-config has none: hand over.
        if self.args.restart_hold <= 0 or not isinstance(self.source, KubeState) or not self.source.synced:
            return False
        me = self.source.nodes().get(self.node)
        return me is not None and not me.going

    def unicast_to(self, missing: tuple[str, ...]) -> None:
        """Registered peers we do not hear: broadcast/multicast may be filtered between us, so beacon to
        their InternalIPs as well. Sticky: once heard that way they would go quiet again if we stopped."""
        new = set(missing) - self.unicast_peers - {self.node}
        if new:
            self.unicast_peers |= new
            logger.warning("heartbeat_unicast_fallback", peers=sorted(new),
                           addresses=sorted(self._unicast_addresses()))
            self.dirty.set()

    def _unicast_addresses(self) -> list[str]:
        if not self.unicast_peers or self.source is None:
            return []
        nodes = self.source.nodes()
        self.unicast_peers &= set(nodes)  # deleted Nodes: forget them
        return [a for n in sorted(self.unicast_peers) for a in nodes[n].addresses]

    def reconcile(self, now: float) -> None:
        assert self.source is not None
        self.heartbeats.nodes_known(self.source.nodes())  # peers of deleted Nodes are forgotten
        live = self.heartbeats.live(now)
        intents = self.source.intents()
        # Only the IPs whose intent changed are looked at (an event for one Service costs its own IPs).
        changes = self.source.take_changes()
        if self._resync:
            changes = None
        self._resync = True  # until the election has taken these changes in
        segments, changes = self._segments(intents, changes)
        # Each IP among the speakers heard on the segment it is announced on (docs/reliability.md).
        try:
            changed = self.election.update(intents, live, self.source.nodes(), segments,
                                           self.heartbeats.live_on(now), only=changes)
        except Exception:
            self.election, self._won = ElectionIndex(), set()  # maybe half applied: rank afresh next time
            raise
        self._resync = False
        for ip in changed:
            if self.election.owners.get(ip) == self.node:
                self._won.add(ip)
            else:
                self._won.discard(ip)
        won = self._won
        verdict = self.isolation.check(live, self.registered(), now)
        self._isolation(verdict, live, now)
        held, self._holding = self._holding, verdict.holding
        if not self._tail_needed(changes, changed, live, held or verdict.holding):
            if self.announcer.garps != self._garps_published:
                self._publish()  # only lastGARP can have moved: as fresh as a full pass would leave it
            return
        if verdict.holding:  # keep what we announce, claim nothing new: the silence is more likely ours
            won = won & self._mine
            self.metrics.isolation_held.set(len(self._won - won))
        mine: dict[str, IpIntent] = {ip: intents[ip] for ip in won}
        new = self.announcer.apply(mine)
        gained, lost = set(mine) - self._mine, self._mine - set(mine)
        if gained or lost:
            self.metrics.ownership_changes.labels("gained").inc(len(gained))
            self.metrics.ownership_changes.labels("lost").inc(len(lost))
            logger.info("ownership", gained=sorted(gained), lost=sorted(lost), live=sorted(live))
        self._mine = set(mine)
        self._intents, self._live = mine, live
        self.conflicts.keep_only(self.announcer.owned_ips())
        self.metrics.conflicts.set(len(self.conflicts.active))
        for ann in new:
            logger.info("announcing", ip=ann.ip, interface=ann.interface, mac=ann.mac)
        announced = list(self.announcer.current.values())
        if self.events:
            self.events.update(mine, announced)
        self.withheld.update(self.source.withheld(), live)
        self._publish()

    def _tail_needed(self, changes: set[str] | None, changed: set[str], live: set[str], holding: bool) -> bool:
        """False when the rest of reconcile() would leave everything as it is: no IP that changed (intent or
        owner) is, or becomes, ours or withheld, and neither the live peers, the interfaces (changes is None
        then) nor an isolation hold changed what we may claim. Then churn on Services of other nodes costs
        what changed, not a pass over every IP we announce (announcer, status body, takeover Events)."""
        if changes is None or holding or live != self._live or self.announcer.retrying():
            return True
        assert self.source is not None
        withheld = self.source.withheld()
        return any(ip in self._mine or ip in self._won or ip in withheld or self.withheld.reported(ip)
                   for ip in (*changes, *changed))

    def _segments(self, intents: dict[str, IpIntent],
                  changes: set[str] | None) -> tuple[dict[str, tuple[str, ...]], set[str] | None]:
        """IP -> names of the interfaces it would be announced on, redone for the IPs in `changes` (None: all);
        returned with the IPs whose entry may have changed (None: any, as when the usable interfaces did)."""
        candidates = self.interfaces.candidates  # replaced, never mutated, when they change
        if candidates is not self._where_ifaces:
            self._where_ifaces, changes = candidates, None
        if changes is None:
            self._where = {}
        for ip in intents if changes is None else changes:
            intent = intents.get(ip)
            if intent is None:
                self._where.pop(ip, None)
            else:
                self._where[ip] = tuple(i.name for i in self.interfaces.for_ip(ip, intent.interfaces))
        return self._where, changes

    def _isolation(self, v: Verdict, live: set[str], now: float) -> None:
        if v.started:
            logger.warning("isolated", heard=len(live) - 1, missing=len(v.missing), sample=sorted(v.missing)[:20],
                           hold_s=round((v.until or now) - now, 1),
                           note="hearing far fewer peers than a moment ago: likely our own problem; "
                                "keeping our IPs, claiming no new one until peers are heard or confirmed gone")
        if v.ended:
            logger.info("isolation_ended", reason=v.ended, heard=len(live) - 1)
        self.metrics.isolated.set(1 if v.holding and not v.suspect else 0)
        if not v.holding:
            self.metrics.isolation_held.set(0)
        if self._isolation_wake:
            self._isolation_wake.cancel()
            self._isolation_wake = None
        if v.holding and v.until is not None:  # nothing else may change: wake ourselves when the hold runs out
            self._isolation_wake = asyncio.get_running_loop().call_later(max(0.0, v.until - now), self.dirty.set)

    def _publish(self) -> None:
        self._garps_published = self.announcer.garps
        if self.status:
            self.status.update(status_body(self.node, list(self.announcer.current.values()), self._live,
                                           list(self.conflicts.active.values()),
                                           self.bgp.status if self.bgp else None))

    # --- another MAC claims an address we announce -----------------------------------------------

    def on_foreign(self, interface: str, ip: str, mac: str) -> None:
        """From a responder (on the loop): `mac` announced or answered for `ip`, which we announce."""
        if mac in self.announcer.our_macs():
            return  # our own other NIC on the same segment
        if self.leaving:
            logger.info("handover_seen", ip=ip, successor_mac=mac)  # the responder already let go of it
            return
        asyncio.get_running_loop().call_later(CONFIRM_S, self._confirm, interface, ip, mac)

    def _confirm(self, interface: str, ip: str, mac: str) -> None:
        if self.leaving or ip not in self.announcer.owned_ips():
            return  # the address moved away from us meanwhile: that was a handover, not a conflict
        v = self.conflicts.observe(ip, interface, mac, time.monotonic())
        defended = False
        if v.defend:
            defended = self.announcer.defend(ip) > 0
            if defended:
                self.metrics.conflict_defences.inc()
        self.metrics.conflicts.set(len(self.conflicts.active))
        if v.new:
            self.metrics.conflicts_detected.labels(interface).inc()
            logger.warning("ip_conflict", ip=ip, foreign_mac=mac, interface=interface, defended=defended)
            if self.conflict_events:
                self.conflict_events.opened(self.conflicts.active[ip], self._services(ip), defended)
            self._publish()
            self._conflict_wake.set()

    def _services(self, ip: str) -> tuple:
        intent = self._intents.get(ip)
        return intent.services if intent else ()

    def _cleared(self, gone: list[Conflict]) -> None:
        for c in gone:
            logger.info("ip_conflict_cleared", ip=c.ip, foreign_mac=c.mac, frames=c.count)
            if self.conflict_events:
                self.conflict_events.cleared(c, self._services(c.ip))
        if gone:
            self.metrics.conflicts.set(len(self.conflicts.active))
            self._publish()

    async def sweep_conflicts(self) -> None:
        """Clear conflicts whose foreign host has gone quiet; sleeps on an event while there are none."""
        while True:
            nxt = self.conflicts.next_expiry()
            if nxt is None:
                self._conflict_wake.clear()
                await self._conflict_wake.wait()
                continue
            await asyncio.sleep(max(0.05, nxt - time.monotonic()))
            self._cleared(self.conflicts.expire(time.monotonic()))

    def reload_static(self) -> None:
        if isinstance(self.source, StaticState):
            try:
                self.source.load()
                logger.info("static_config_reloaded", ips=len(self.source.intents()))
            except (OSError, ValueError) as exc:
                logger.error("static_config_invalid", error=str(exc), keeping="previous config")
            self.dirty.set()


LAG_SAMPLE_S = 0.1


async def watch_loop_lag(metrics: Metrics) -> None:
    """Sample how late the loop wakes a timer: a long callback (a big recompute) shows here as lag."""
    while True:
        t0 = time.monotonic()
        await asyncio.sleep(LAG_SAMPLE_S)
        metrics.loop_lag.observe(max(0.0, time.monotonic() - t0 - LAG_SAMPLE_S))


async def run(args: argparse.Namespace, keys: Keyring) -> None:
    metrics = Metrics()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sp = Speaker(args, keys, metrics)
    loop.add_signal_handler(signal.SIGHUP, sp.reload_static)
    await sp.interfaces.refresh()
    check_strict_arp(sp.interfaces)
    sp.heartbeats.set_targets(sp.interfaces.heartbeat_targets())

    kube: Kube | None = None
    recorder: EventRecorder | None = None
    lease: LeaseRenewer | None = None
    tasks: list[asyncio.Task[None]] = []
    if args.static_config:
        sp.source = StaticState(args.static_config)
        logger.warning("static_config_mode", file=args.static_config, note="test/debug mode: Kubernetes is not used")
    else:
        cfg = config.load(args.kubeconfig)
        kube = Kube(cfg, user_agent=f"lbctl-speaker/{args.node_name}")
        state = KubeState(kube, args.lb_class, sp.dirty.set)
        sp.source = state
        recorder = EventRecorder(kube, "lbctl-speaker", args.node_name)
        # In a pod the service account's namespace is the release's, where the chart grants the Lease.
        own_ns = args.lease_namespace or (cfg.namespace if cfg.in_cluster else "lbctl-system")
        if args.bgp:
            state.index.model.bgp = True  # before any event: BGP-only pools are not withheld, and get BGP intents
            sp.bgp = BgpSpeaker(args.node_name, args.bgp_run_dir,
                                lambda: (state.index.bgp, state.model.pools, state.model.nodes), metrics,
                                sp._publish, kube, own_ns, recorder, lambda: state.synced)
            bgp = sp.bgp
            state.on_change = lambda: (sp.dirty.set(), bgp.wake())
            tasks += bgp.tasks()
            logger.info("bgp_mode", run_dir=args.bgp_run_dir)
        sp.events = TakeoverEvents(recorder, args.node_name)
        sp.withheld = WithheldReporter(recorder, args.node_name)
        sp.conflict_events = ConflictEvents(recorder, args.node_name)
        sp.status = StatusWriter(kube, args.node_name)
        tasks += state.tasks()
        tasks.append(asyncio.create_task(sp.status.run(), name="status"))
        lease_ns = own_ns
        lease = LeaseRenewer(kube, args.node_name, lease_ns)
        tasks.append(asyncio.create_task(lease.run(), name="lease"))
        census = PeerCensus(kube, args.node_name, lease_ns, lambda: sp.heartbeats.live(time.monotonic()),
                            lambda: sp.warm, metrics, sp.unicast_to)
        tasks.append(asyncio.create_task(census.run(), name="peer-census"))
        sp.registered = lambda: census.registered
    http = await httpserver.serve(args.http_host, args.http_port, metrics.registry, ready=sp.ready)
    logger.info("starting", node=args.node_name, interfaces=[i.name for i in sp.interfaces.candidates],
                heartbeat_port=args.heartbeat_port, http_port=args.http_port)
    sp.heartbeats.start()
    beat = sp.heartbeats.ended
    tasks += [asyncio.create_task(sp.elect_forever(), name="election"),
              asyncio.create_task(sp.sweep_conflicts(), name="conflicts"),
              asyncio.create_task(sp.interfaces.run(), name="interfaces"),
              asyncio.create_task(watch_loop_lag(metrics), name="loop-lag")]
    if args.garp_refresh > 0:
        tasks.append(asyncio.create_task(sp.announcer.refresh_loop(), name="garp-refresh"))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stopper, beat, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    failed = [task for task in done if task is not stopper]
    for task in failed:  # every task runs forever; one ending early is a bug worth a loud log
        exc = None if task.cancelled() else task.exception()
        name = task.get_name() if isinstance(task, asyncio.Task) else "heartbeats"
        logger.error("task_ended", task=name, error=repr(exc), exc_info=exc)
    stopper.cancel()
    try:
        if sp.bgp:  # first: the routers move traffic to the other nodes while we still serve it
            await sp.bgp.leave()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if sp.restarting():
            # A rolling update: peers hold our addresses until our next instance is live, so none moves
            # (each move would cut the connections in flight). Clients keep their ARP entries meanwhile.
            sp.leaving = True
            await sp.heartbeats.leave(restarting=True)
            logger.info("leaving_to_restart", hold_s=args.restart_hold, announced=sorted(sp.announcer.serving()))
        else:
            await _hand_over(sp, metrics)
    finally:
        sp.announcer.close()
        sp.heartbeats.close()
        if sp.status:
            sp.status.update(status_body(args.node_name, [], [], (),
                                         {"sessions": [], "advertised": [], "skipped": {}} if sp.bgp else None))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sp.status.flush(), 2)
        if lease:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lease.release(), 2)
        if recorder:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(recorder.close(), 2)
        await http.cleanup()
        if kube:
            await kube.close()
        logger.info("stopped")
    if failed:  # after the handover and cleanup above: exit non-zero so the kubelet restarts us and says so
        raise SystemExit(1)


async def _hand_over(sp: Speaker, metrics: Metrics) -> None:
    """Graceful handover: peers drop us at once; we keep answering each IP until its successor's
    announcement is seen (the responder drops it on that very frame), HANDOVER_GRACE at most."""
    sp.leaving = True
    sp.announcer.start_yielding()
    await sp.heartbeats.leave()
    held = sp.announcer.serving()
    logger.info("leaving", grace_s=HANDOVER_GRACE, announced=sorted(held))
    t0 = time.monotonic()
    while sp.announcer.serving() and time.monotonic() - t0 < HANDOVER_GRACE:
        await asyncio.sleep(0.02)
    left = sp.announcer.serving()
    metrics.handover_yields.inc(len(held - left))
    logger.info("handover", yielded=sorted(held - left), no_successor_heard=sorted(left),
                took_ms=round((time.monotonic() - t0) * 1000))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log.setup(args.log_format, args.log_level)
    try:
        keys = read_keys(args)
    except ValueError as exc:
        print(f"lbctl-speaker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    denied = can_open_raw()
    if denied:
        print(f"lbctl-speaker: cannot open raw sockets ({denied}); the speaker needs CAP_NET_RAW "
              "(securityContext.capabilities.add: [NET_RAW]) and hostNetwork", file=sys.stderr)
        raise SystemExit(2)
    try:
        asyncio.run(run(args, keys))
    except config.ConfigError as exc:
        raise SystemExit(f"lbctl-speaker: {exc}") from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, PermissionError):
            print(f"lbctl-speaker: {exc}; the speaker needs CAP_NET_RAW", file=sys.stderr)
            raise SystemExit(2) from None
        raise SystemExit(f"lbctl-speaker: {exc}") from None
