"""`lbctl lab up|down|demo|status`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from lbctl.core.heartbeat import TIMING_PRESETS
from lbctl.lab import lifecycle

Handler = Callable[[argparse.Namespace], int]


def _up(args: argparse.Namespace) -> int:
    lifecycle.up(args.nodes, args.ipv6, timing=args.timing, restart_hold=args.restart_hold, bgp=args.bgp)
    return 0


def _down(_: argparse.Namespace) -> int:
    lifecycle.down()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from lbctl.lab import demo
    return demo.run(nodes=args.nodes, ipv6=args.ipv6, keep=args.keep, mode=args.failure, timing=args.timing,
                    bgp=args.bgp)


def _status(_: argparse.Namespace) -> int:
    from lbctl.lab import status
    return status.run()


def _kubectl(args: argparse.Namespace) -> int:
    from lbctl.lab import access
    return access.kubectl(args.args)


def _shell(args: argparse.Namespace) -> int:
    from lbctl.lab import access
    return access.shell(args.host, args.command)


def _topology_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=3, help="number of worker nodes (default 3)")
    p.add_argument("--ipv6", action=argparse.BooleanOptionalAction, default=True, help="dual-stack (default on)")
    p.add_argument("--timing", choices=sorted(TIMING_PRESETS),
                   help="speakers' heartbeat timing preset (chart value speaker.heartbeat.timing; default: the chart's)")
    p.add_argument("--bgp", action="store_true",
                   help="BGP mode: an FRR router (the top-of-rack) on the bridge peering with every node, the client "
                        "behind it on its own subnet, the pool announced by BGP only (docs/bgp.md)")


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="build the lab: namespaces, control plane, controller, speakers")
    _topology_args(up)
    up.add_argument("--restart-hold", type=int, metavar="SECONDS",
                    help="chart value speaker.restartHold (default: the chart's; 0: a stopped speaker always hands "
                         "over at once)")
    sub.add_parser("down", help="stop every lab process and delete its namespaces (safe to repeat)")
    demo = sub.add_parser("demo", help="allocate an IP, serve traffic, break the owner node, watch failover")
    _topology_args(demo)
    demo.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    demo.add_argument("--failure", choices=["link", "kill"], default="link",
                      help="how to break the owner: cut its link (default) or SIGKILL its speaker")
    sub.add_parser("status", help="namespaces, processes and Services of the running lab")
    kc = sub.add_parser("kubectl", help="kubectl against the lab's API server (as admin, from inside the lab)",
                        prefix_chars="\0")  # every argument belongs to kubectl, -n and --help included
    kc.add_argument("args", nargs=argparse.REMAINDER)
    sh = sub.add_parser("shell", help="a shell (or COMMAND) in a lab host's namespace with KUBECONFIG, kubectl, "
                                      "helm and lbctl set up")
    sh.add_argument("host", nargs="?", default="cp", help="cp (default), client, node1, ...")
    sh.add_argument("command", nargs=argparse.REMAINDER, help="run this instead of an interactive shell")
    handlers: dict[str, Handler] = {"up": _up, "down": _down, "demo": _demo, "status": _status,
                                    "kubectl": _kubectl, "shell": _shell}
    p.set_defaults(func=lambda args: _guarded(handlers[args.lab_command], args))


def _guarded(handler: Handler, args: argparse.Namespace) -> int:
    try:
        return handler(args)
    except (lifecycle.LabError, RuntimeError, TimeoutError, ValueError) as exc:
        print(f"lbctl lab {args.lab_command}: {exc}", file=sys.stderr)
        return 1
