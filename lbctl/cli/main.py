"""`lbctl` (and `kubectl lbctl`): the command-line entry point. Each subcommand registers itself in SUBCOMMANDS.

A subcommand is a function that adds its arguments to a sub-parser and sets `func` (args -> exit code),
so new commands (status, explain, preflight, probe) plug in without touching the dispatcher. Exit codes
are in exitcodes.py; a CliError raised anywhere ends the command with its code and message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from . import explain, importer, lab, preflight, probe, status
from .cluster import CliError

Register = Callable[[argparse.ArgumentParser], None]


# name -> (one-line help, register)
SUBCOMMANDS: dict[str, tuple[str, Register]] = {
    "lab": ("run the whole system on this machine in network namespaces", lab.register),
    "status": ("show pools, Services and their announcing nodes", status.register),
    "explain": ("explain why a Service has (or lacks) an IP and who announces it", explain.register),
    "preflight": ("check a node's and the cluster's prerequisites (strict ARP, raw sockets, CRDs, kube-proxy)",
                  preflight.register),
    "probe": ("ARP/NDP-probe an address and report which MACs answer", probe.register),
    "import": ("import kubespray or MetalLB pools", importer.register),
}


def parser(prog: str = "lbctl") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Bare-metal LoadBalancer provider for Kubernetes.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_, register) in SUBCOMMANDS.items():
        register(sub.add_parser(name, help=help_, description=help_))
    return p


def main(argv: list[str] | None = None, prog: str = "lbctl") -> int:
    args = parser(prog).parse_args(argv)  # usage errors exit 2 here
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"{prog} {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def kubectl_main() -> int:
    """`kubectl lbctl ...`: kubectl runs the `kubectl-lbctl` executable on PATH with the remaining arguments."""
    return main(sys.argv[1:], prog="kubectl lbctl")


if __name__ == "__main__":
    sys.exit(main())
