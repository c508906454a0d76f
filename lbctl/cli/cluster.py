"""--kubeconfig/--context for every command that reads the cluster, and the one place that turns a bad
kubeconfig or a failed connection into exit code 2 with a message naming what failed."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from ..kube import config
from ..kube.client import ApiError, Kube, Unreachable
from .exitcodes import USAGE


class CliError(Exception):
    """Ends the command with `code` after printing the message on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_kube_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="kubeconfig file (default: the $KUBECONFIG list, in-cluster, ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context to use (default: current-context)")


def asked_for_cluster(args: argparse.Namespace) -> bool:
    """Did the user point us at a cluster (rather than us finding one)?"""
    return bool(args.kubeconfig or args.context or os.environ.get("KUBECONFIG"))


def load(args: argparse.Namespace) -> config.KubeConfig:
    try:
        return config.load(args.kubeconfig, args.context)
    except (config.ConfigError, OSError) as exc:
        raise CliError(USAGE, f"kubeconfig: {exc}") from None


def api_failure(exc: ApiError, what: str, cfg: config.KubeConfig) -> CliError:
    if exc.status == 401:
        return CliError(USAGE, f"the API server {cfg.server} rejected the credentials of {cfg.source} "
                               "(401 Unauthorized)")
    if exc.status == 403:
        return CliError(USAGE, f"{what}: forbidden for the user of {cfg.source}: {exc.message}")
    if exc.status == 404 and "lbctl.io" in what:
        return CliError(USAGE, f"{what}: not served by {cfg.server} (404): are the lbctl CRDs installed?")
    return CliError(USAGE, f"{what}: {exc}")


@asynccontextmanager
async def connect(args: argparse.Namespace, timeout: float = 15.0) -> AsyncIterator[Kube]:
    cfg = load(args)
    try:
        async with Kube(cfg, user_agent="lbctl-cli", timeout=timeout) as kube:
            yield kube
    except config.ConfigError as exc:
        raise CliError(USAGE, f"kubeconfig: {exc}") from None
    except ApiError as exc:
        raise api_failure(exc, "request", cfg) from None
    except Unreachable as exc:
        cause = exc.__cause__
        if isinstance(cause, aiohttp.ClientSSLError):
            raise CliError(USAGE, f"TLS with the API server {cfg.server} failed ({cfg.source}): {cause}") from None
        if isinstance(cause, asyncio.TimeoutError):
            raise CliError(USAGE, f"the API server {cfg.server} did not answer within {timeout:.0f} s "
                                  f"({cfg.source})") from None
        raise CliError(USAGE, f"cannot reach the API server {cfg.server} ({cfg.source}): {cause or exc}") from None
