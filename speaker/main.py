"""`lbctl-speaker` / `python -m speaker`: announces LoadBalancer IPs on the node's L2 segment.

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

from lbctl import arpsysctl, httpserver, log
from lbctl.core.announce import IpIntent, owners
from lbctl.core.heartbeat import Keyring
from lbctl.kube import config
from lbctl.kube.client import Kube
from lbctl.kube.events import EventRecorder

from .announcer import Announcer, can_open_raw
from .cli import parse_args, read_keys
from .heartbeats import Heartbeats
from .interfaces import InterfaceTable
from .lease import LeaseRenewer
from .metrics import Metrics
from .state import KubeState, StaticState
from .status import StatusWriter, TakeoverEvents, status_body
from .withheld import WithheldReporter

logger = log.get("speaker")
HANDOVER_GRACE = 1.0  # keep answering after LEAVING: the new owner has announced by then


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
                                     args.dead_after, self.dirty.set, metrics)
        self.announcer = Announcer(self.interfaces, metrics, args.garp_count, args.garp_refresh)
        self.source: KubeState | StaticState | None = None
        self.withheld = WithheldReporter(None, self.node)
        self.status: StatusWriter | None = None
        self.events: TakeoverEvents | None = None
        self.warm = False
        self._mine: set[str] = set()

    def ready(self) -> bool:
        return self.warm and self.source is not None and self.source.synced

    async def elect_forever(self) -> None:
        # Listen for a full dead_after first: electing before hearing the peers would make a restarted
        # speaker grab (and GARP) every IP for a moment.
        await asyncio.sleep(self.args.dead_after)
        self.warm = True
        while True:
            # The heartbeat thread wakes us only when the live set changes; so do the informers and
            # the interface table. An idle speaker does no work here at all.
            self.dirty.clear()
            self.heartbeats.set_targets(self.interfaces.heartbeat_targets())
            try:
                self.reconcile(time.monotonic())
            except Exception:  # a bug on one input must not stop announcing for the rest
                logger.exception("reconcile_failed")
            await self.dirty.wait()

    def reconcile(self, now: float) -> None:
        assert self.source is not None
        live = self.heartbeats.live(now)
        intents = self.source.intents()
        won = owners(intents, live, self.source.nodes())
        mine: dict[str, IpIntent] = {ip: intents[ip] for ip, who in won.items() if who == self.node}
        new = self.announcer.apply(mine)
        gained, lost = set(mine) - self._mine, self._mine - set(mine)
        if gained or lost:
            self.metrics.ownership_changes.labels("gained").inc(len(gained))
            self.metrics.ownership_changes.labels("lost").inc(len(lost))
            logger.info("ownership", gained=sorted(gained), lost=sorted(lost), live=sorted(live))
        self._mine = set(mine)
        for ann in new:
            logger.info("announcing", ip=ann.ip, interface=ann.interface, mac=ann.mac)
        announced = list(self.announcer.current.values())
        if self.events:
            self.events.update(mine, announced)
        self.withheld.update(self.source.withheld(), live)
        if self.status:
            self.status.update(status_body(self.node, announced, live))

    def reload_static(self) -> None:
        if isinstance(self.source, StaticState):
            try:
                self.source.load()
                logger.info("static_config_reloaded", ips=len(self.source.intents()))
            except (OSError, ValueError) as exc:
                logger.error("static_config_invalid", error=str(exc), keeping="previous config")
            self.dirty.set()


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
        sp.events = TakeoverEvents(recorder, args.node_name)
        sp.withheld = WithheldReporter(recorder, args.node_name)
        sp.status = StatusWriter(kube, args.node_name)
        tasks += state.tasks()
        tasks.append(asyncio.create_task(sp.status.run(), name="status"))
        # In a pod the service account's namespace is the release's, where the chart grants the Lease.
        lease_ns = args.lease_namespace or (cfg.namespace if cfg.in_cluster else "lbctl-system")
        lease = LeaseRenewer(kube, args.node_name, lease_ns)
        tasks.append(asyncio.create_task(lease.run(), name="lease"))
    http = await httpserver.serve(args.http_host, args.http_port, metrics.registry, ready=sp.ready)
    logger.info("starting", node=args.node_name, interfaces=[i.name for i in sp.interfaces.candidates],
                heartbeat_port=args.heartbeat_port, http_port=args.http_port)
    sp.heartbeats.start()
    beat = sp.heartbeats.ended
    tasks += [asyncio.create_task(sp.elect_forever(), name="election"),
              asyncio.create_task(sp.interfaces.run(), name="interfaces")]
    if args.garp_refresh > 0:
        tasks.append(asyncio.create_task(sp.announcer.refresh_loop(), name="garp-refresh"))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stopper, beat, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    for task in done:  # every task runs forever; one ending early is a bug worth a loud log
        if task is not stopper:
            exc = None if task.cancelled() else task.exception()
            name = task.get_name() if isinstance(task, asyncio.Task) else "heartbeats"
            logger.error("task_ended", task=name, error=repr(exc))
    try:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Graceful handover: peers drop us at once, while we keep answering until they have announced.
        await sp.heartbeats.leave()
        logger.info("leaving", grace_s=HANDOVER_GRACE, announced=sorted(sp.announcer.owned_ips()))
        await asyncio.sleep(HANDOVER_GRACE)
    finally:
        sp.announcer.close()
        sp.heartbeats.close()
        if sp.status:
            sp.status.update(status_body(args.node_name, [], []))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sp.status.flush(), 2)
        if lease:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lease.release(), 2)
        if recorder:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(recorder.drain(), 2)
        await http.cleanup()
        if kube:
            await kube.close()
        logger.info("stopped")


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
