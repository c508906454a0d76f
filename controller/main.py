"""`lbctl-controller` / `python -m lbctl.controller`: allocates LoadBalancer IPs from IPPools."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid

from lbctl import httpserver, log
from lbctl.kube import config
from lbctl.kube.client import Kube
from lbctl.kube.events import EventRecorder

from lbctl.core.leader import Resume, Timing

from .bgp_status import BgpStatusWriter
from .informer import WatchHealth, fresh_services, watch_bgp, watch_namespaces, watch_pools, watch_services
from .leader import FencedKube, LeaderElector, LeadershipLost
from .metrics import Metrics
from .reconciler import Reconciler

logger = log.get("controller")
RESUME_ENV = "LBCTL_LEADER_RESUME"  # from a leader that gave up to the process it re-executes as (same PID)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lbctl-controller", description=__doc__)
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then in-cluster)")
    p.add_argument("--lb-class", default=os.environ.get("LBCTL_LB_CLASS") or None,
                   help="also handle Services with this spec.loadBalancerClass (unset ones are always handled)")
    p.add_argument("--http-host", default="0.0.0.0", help="address for /healthz, /readyz, /metrics")
    p.add_argument("--http-port", type=int, default=7472)
    p.add_argument("--unhealthy-after", type=float, default=120.0, metavar="SECONDS",
                   help="/healthz fails once a watch has been failing this long (default 120)")
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    p.add_argument("--log-level", default="info")
    le = p.add_argument_group("leader election (several replicas; only the leader writes)")
    le.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                    help="hold a coordination.k8s.io/v1 Lease before writing anything (default: on; with one "
                         "replica it is acquired at start)")
    le.add_argument("--leader-election-namespace", default=os.environ.get("POD_NAMESPACE") or None,
                    help="namespace of the Lease (default: $POD_NAMESPACE, else the service account's in a pod, "
                         "else lbctl-system)")
    le.add_argument("--leader-election-name", default="lbctl-controller", help="name of the Lease")
    le.add_argument("--leader-election-id", default=os.environ.get("POD_NAME") or None,
                    help="this replica's identity in the Lease (default: $POD_NAME, else hostname_random); a "
                         "restart with the same identity takes its own lease back at once")
    le.add_argument("--leader-election-lease-duration", type=float, default=Timing.lease_duration, metavar="S",
                    help="how long others wait after the last renewal they saw before taking over")
    le.add_argument("--leader-election-renew-deadline", type=float, default=Timing.renew_deadline, metavar="S",
                    help="a leader that has not renewed within this stops writing and exits (< lease duration)")
    le.add_argument("--leader-election-retry-period", type=float, default=Timing.retry_period, metavar="S",
                    help="renew / look again every this many seconds (< renew deadline)")
    args = p.parse_args(argv)
    args.timing = Timing(args.leader_election_lease_duration, args.leader_election_renew_deadline,
                         args.leader_election_retry_period)
    if problems := args.timing.problems():
        p.error("leader election: " + "; ".join(problems))
    return args


async def run(args: argparse.Namespace) -> None:
    cfg = config.load(args.kubeconfig)
    metrics = Metrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    resume = Resume.decode(os.environ.pop(RESUME_ENV, None))
    async with Kube(cfg, user_agent="lbctl-controller") as kube:
        # A made-up identity is kept across the re-exec, so the Lease we held is still recognised as ours.
        identity = (args.leader_election_id or (resume.identity if resume else None)
                    or f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}")
        elector: LeaderElector | None = None
        writer: Kube = kube
        fenced: FencedKube | None = None
        if args.leader_elect:
            # In a pod the service account's namespace is the release's, where the chart grants the Lease.
            ns = args.leader_election_namespace or (cfg.namespace if cfg.in_cluster else "lbctl-system")
            elector = LeaderElector(kube, ns, args.leader_election_name, identity, args.timing, metrics.registry,
                                    resume)
            # Service/IPPool status and Events: leader only, each write bounded by the fence's time left
            writer = fenced = FencedKube(kube, elector.write_budget, elector.abandoned)
        events = EventRecorder(writer, "lbctl-controller", identity)
        reconciler = Reconciler(writer, events, metrics, args.lb_class)
        bgp_status = BgpStatusWriter(writer, events, metrics)
        health = WatchHealth()

        async def lead() -> None:
            if elector is not None:
                await elector.leading.wait()  # a standby decides and writes nothing (its caches stay warm)
                # ...but they may trail the API server: after an outage its watches may still be reconnecting,
                # without the previous leader's last writes. Decide on a fresh (quorum) listing of Services.
                await fresh_services(kube, reconciler)
            await reconciler.run()

        async def lead_bgp() -> None:  # BGPPeer / BFDProfile conditions: leader only, as every write
            if elector is not None:
                await elector.leading.wait()
            await bgp_status.run()

        tasks = [asyncio.create_task(lead(), name="reconciler"),
                 *([asyncio.create_task(elector.run(), name="leader-election")] if elector else []),
                 asyncio.create_task(watch_services(kube, reconciler, health), name="watch-services"),
                 asyncio.create_task(watch_namespaces(kube, reconciler, health), name="watch-namespaces"),
                 asyncio.create_task(watch_pools(kube, reconciler, health), name="watch-ippools"),
                 asyncio.create_task(lead_bgp(), name="bgp-status"),
                 *(asyncio.create_task(watch_bgp(kube, kind, bgp_status, health), name=f"watch-{kind.lower()}s")
                   for kind in ("BGPPeer", "BFDProfile"))]

        def ready() -> bool:
            # Leader: once the table is rebuilt. Standby: once it knows who leads (it serves metrics and keeps
            # its caches warm; like kube-controller-manager, both replicas are healthy and ready).
            if elector is None or elector.leading.is_set():
                return reconciler.ready.is_set()
            return elector.decided and not elector.fence.lapsed

        def healthy() -> bool:  # every task alive and no watch failing for longer than allowed
            return not any(t.done() for t in tasks) and health.worst() < args.unhealthy_after

        http = await httpserver.serve(args.http_host, args.http_port, metrics.registry, ready=ready,
                                      healthy=healthy)
        logger.info("starting", server=cfg.server, lb_class=args.lb_class, http_port=args.http_port,
                    identity=identity, lease=elector.lease if elector else None)
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopper, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        # Every task runs forever: one that ended is a bug (or lost leadership). Exit non-zero so the Deployment
        # restarts us, rather than stay up, ready and blind.
        failed = [t for t in done if t is not stopper]
        for task in failed:
            error = None if task.cancelled() else task.exception()
            logger.error("task_failed", task=task.get_name(), error=repr(error), exc_info=error)
        for task in (*tasks, stopper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if elector is None or elector.may_write():
            await reconciler.drain()
        await events.close()
        if elector is not None and fenced is not None and elector.may_write() and \
                fenced.quiet_at < time.monotonic() - (args.timing.lease_duration - args.timing.renew_deadline):
            # Writers are stopped and none may still land: hand over now rather than after the lease expires.
            # Otherwise (leadership lost, a write cut mid-way) the Lease expires, or our next incarnation takes
            # it back once quiet.
            await elector.release()
        await http.cleanup()
        if any(not t.cancelled() and isinstance(t.exception(), LeadershipLost) for t in failed):
            assert elector is not None and fenced is not None
            restart_as_candidate(elector.handover(fenced.quiet_at))
        logger.info("stopped")
        if failed:
            raise SystemExit(1)


def restart_as_candidate(resume: Resume | None) -> None:
    """Leadership lost: writes already stopped (fence); start over as a fresh process, as a standby.

    Not an in-process step-down: the allocator table, retries and notices were built as leader and some of
    their writes were refused, so none of it can be trusted; a new process rebuilds from the API in well under
    a second. Not an exit either: the kubelet's CrashLoopBackOff grows to minutes when leadership flaps (say
    during an API server outage), which would leave this replica down when it is needed.
    """
    logger.warning("restarting_as_candidate", resume=resume.encode() if resume else None)
    if resume is not None:
        os.environ[RESUME_ENV] = resume.encode()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, sys.orig_argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log.setup(args.log_format, args.log_level)
    try:
        asyncio.run(run(args))
    except config.ConfigError as exc:
        raise SystemExit(f"lbctl-controller: {exc}") from None
