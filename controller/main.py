"""`lbctl-controller` / `python -m controller`: allocates LoadBalancer IPs from IPPools."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket

import kopf

from lbctl import httpserver, log
from lbctl.kube import config
from lbctl.kube.client import Kube
from lbctl.kube.events import EventRecorder

from .informer import watch_services
from .metrics import Metrics
from .operator import build_registry
from .reconciler import Reconciler

logger = log.get("controller")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lbctl-controller", description=__doc__)
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then in-cluster)")
    p.add_argument("--lb-class", default=os.environ.get("LBCTL_LB_CLASS") or None,
                   help="also handle Services with this spec.loadBalancerClass (unset ones are always handled)")
    p.add_argument("--http-host", default="0.0.0.0", help="address for /healthz, /readyz, /metrics")
    p.add_argument("--http-port", type=int, default=7472)
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    cfg = config.load(args.kubeconfig)
    metrics = Metrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Kube(cfg, user_agent="lbctl-controller") as kube:
        events = EventRecorder(kube, "lbctl-controller", socket.gethostname())
        reconciler = Reconciler(kube, events, metrics, args.lb_class)
        registry = build_registry(reconciler, cfg)
        http = await httpserver.serve(args.http_host, args.http_port, metrics.registry,
                                      ready=reconciler.ready.is_set)
        logger.info("starting", server=cfg.server, lb_class=args.lb_class, http_port=args.http_port)
        worker = asyncio.create_task(reconciler.run(), name="reconciler")
        informer = asyncio.create_task(watch_services(kube, reconciler), name="services")
        # kopf would name itself after the login user; an arbitrary non-root UID has none (KeyError).
        identity = os.environ.get("POD_NAME") or socket.gethostname()
        operator = asyncio.create_task(kopf.operator(registry=registry, standalone=True, clusterwide=True,
                                                     stop_flag=stop, identity=identity),  # type: ignore[arg-type]
                                       name="kopf")
        done, _ = await asyncio.wait({worker, operator, asyncio.create_task(stop.wait())},
                                     return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        failed = [t for t in done if t is not None and t.done() and not t.cancelled() and t.exception()]
        for task in failed:  # a daemon task that ends on its own is a failure: say which and why
            logger.error("task_failed", task=task.get_name(), error=repr(task.exception()))
        for task in (worker, informer, operator):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await events.drain()
        await http.cleanup()
        logger.info("stopped")
        if failed:
            raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log.setup(args.log_format, args.log_level)
    try:
        asyncio.run(run(args))
    except config.ConfigError as exc:
        raise SystemExit(f"lbctl-controller: {exc}") from None
