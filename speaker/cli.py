"""Command line of `lbctl-speaker`. Flag names are an interface: launchers and manifests rely on them."""

from __future__ import annotations

import argparse
import os

from lbctl.core.heartbeat import MAX_KEYS, TIMING_PRESETS, Keyring

MIN_KEY = 16


def _interfaces(value: str) -> frozenset[str]:
    return frozenset(p.strip() for p in value.split(",") if p.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lbctl-speaker",
                                description="Announces LoadBalancer IPs on the local L2 segment (ARP/NDP).")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node's name (default: $NODE_NAME)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then in-cluster)")
    p.add_argument("--lb-class", default=os.environ.get("LBCTL_LB_CLASS") or None,
                   help="also handle Services with this spec.loadBalancerClass (unset ones are always handled)")
    p.add_argument("--heartbeat-key-file", metavar="PATH", action="append",
                   help="file with a shared heartbeat HMAC key (default: $LBCTL_HEARTBEAT_KEY); repeat for a "
                        f"keyring of up to {MAX_KEYS}: beacons are signed with the first and accepted under any, "
                        "so keys rotate node by node without failover")
    p.add_argument("--heartbeat-port", type=int, default=7946, help="UDP port for speaker heartbeats")
    presets = ", ".join(f"{k} {i:g} s / {d:g} s" for k, (i, d) in TIMING_PRESETS.items())
    p.add_argument("--timing", choices=list(TIMING_PRESETS), default="default",
                   help=f"heartbeat interval / dead-after preset ({presets}); the two flags below override it")
    p.add_argument("--heartbeat-interval", type=float, default=None,
                   help="seconds between heartbeats (default: from --timing)")
    p.add_argument("--dead-after", type=float, default=None,
                   help="seconds without a heartbeat before a peer is considered dead (default: from --timing)")
    p.add_argument("--restart-hold", type=float, default=30.0,
                   help="seconds peers keep a restarting speaker's addresses (a rolling update: SIGTERM while its "
                        "Node stays schedulable and Ready) until its next instance is live, so they never move and "
                        "no connection in flight is cut; 0: always hand over at once (default 30)")
    p.add_argument("--interfaces", type=_interfaces, default=None,
                   help="comma-separated interfaces that may announce (default: all suitable ones)")
    p.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE") or None,
                   help="namespace of this speaker's liveness Lease (default: $POD_NAMESPACE, else the "
                        "service account's namespace when in a pod, else lbctl-system)")
    p.add_argument("--http-host", default="0.0.0.0", help="address for /healthz, /readyz, /metrics")
    p.add_argument("--http-port", type=int, default=7473)
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    p.add_argument("--log-level", default="info")
    p.add_argument("--garp-count", type=int, default=3, help="gratuitous ARP/NA bursts after taking over an IP")
    p.add_argument("--garp-refresh", type=float, default=0.0,
                   help="re-announce owned IPs every this many seconds (0 = off)")
    p.add_argument("--bgp", action="store_true", default=os.environ.get("LBCTL_BGP", "") in ("1", "true"),
                   help="also advertise pools with BGP advertisements by BGP, through the BIRD sidecar "
                        "(lbctl-bgpd) sharing --bgp-run-dir (default: $LBCTL_BGP)")
    p.add_argument("--bgp-run-dir", default=os.environ.get("LBCTL_BGP_RUN_DIR", "/run/lbctl-bgp"),
                   help="directory shared with the BGP sidecar: its control socket and the rendered configs")
    p.add_argument("--static-config", metavar="FILE",
                   help="TEST/DEBUG ONLY: read IPs and nodes from this JSON file instead of Kubernetes "
                        "(no watches, no status, no events); SIGHUP reloads it")
    args = p.parse_args(argv)
    if not args.node_name:
        p.error("--node-name (or $NODE_NAME) is required")
    interval, dead_after = TIMING_PRESETS[args.timing]
    if args.heartbeat_interval is None:
        args.heartbeat_interval = interval
    if args.dead_after is None:
        args.dead_after = dead_after
    if args.heartbeat_interval <= 0 or args.dead_after <= args.heartbeat_interval:
        p.error(f"need 0 < --heartbeat-interval < --dead-after, got {args.heartbeat_interval:g} and "
                f"{args.dead_after:g} (--timing {args.timing} gives {interval:g} and {dead_after:g})")
    if not 0 <= args.restart_hold <= 600:
        p.error(f"--restart-hold must be between 0 and 600 seconds, got {args.restart_hold:g}")
    if args.garp_count < 0 or args.garp_refresh < 0:
        p.error("--garp-count and --garp-refresh must not be negative")
    return args


def read_keys(args: argparse.Namespace) -> Keyring:
    """The heartbeat keyring, signing key first; ValueError naming the bad file when one is unusable."""
    keys: list[tuple[str, bytes]] = []
    for path in args.heartbeat_key_file or []:
        try:
            with open(path, "rb") as f:
                keys.append((f"--heartbeat-key-file {path}", f.read().strip()))
        except OSError as exc:
            raise ValueError(f"cannot read --heartbeat-key-file: {exc}") from None
    if not keys:
        keys.append(("$LBCTL_HEARTBEAT_KEY", os.environ.get("LBCTL_HEARTBEAT_KEY", "").strip().encode()))
    for source, key in keys:
        if len(key) < MIN_KEY:
            raise ValueError(f"a heartbeat key of at least {MIN_KEY} bytes is required; {source} has {len(key)}")
    return Keyring(key for _, key in keys)
