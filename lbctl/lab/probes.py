"""What a client on the lab LAN sees: HTTP, ARP replies and its neighbour table, all from lbctl-client."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass

from .prober import who
from .topology import CLIENT_NS

_ARP_REPLY = re.compile(r"reply from \S+ \[([0-9A-Fa-f:]{17})\]")


def client(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", CLIENT_NS, *argv], capture_output=True, text=True,
                          timeout=timeout)


def url_for(ip: str, port: int = 80) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}/" if port == 80 else f"http://{host}:{port}/"


def curl(ip: str, timeout: float = 1.0) -> str | None:
    """The body or None when nothing answered in time."""
    res = client("curl", "-sf", "-m", str(timeout), url_for(ip), timeout=timeout + 5)
    return res.stdout.strip() if res.returncode == 0 else None


def node_answering(ip: str, timeout: float = 1.0) -> str | None:
    """The node whose backend answered HTTP on `ip` (see prober.who), or None."""
    body = curl(ip, timeout)
    return who(body) if body is not None else None


def arping(ip: str, count: int = 3, timeout: float = 3.0) -> list[str]:
    """MACs of every ARP reply to `count` broadcast requests (-b: never switch to unicast, so every
    node that would answer gets the chance to)."""
    res = client("arping", "-b", "-c", str(count), "-w", str(max(1, int(timeout))), "-I", "eth0", ip,
                 timeout=timeout + 5)
    return [m.lower() for m in _ARP_REPLY.findall(res.stdout)]


@dataclass(frozen=True)
class Neighbour:
    ip: str
    mac: str | None
    state: list[str]


def neigh(ip: str) -> Neighbour | None:
    res = client("ip", "-j", "neigh", "show", "to", ip, "dev", "eth0")
    for entry in json.loads(res.stdout or "[]"):
        if entry.get("dst") == ip:
            return Neighbour(ip, entry.get("lladdr"), list(entry.get("state") or []))
    return None


def flush_neigh(ip: str) -> None:
    client("ip", "neigh", "flush", "to", ip, "dev", "eth0")


def prober(ip: str, interval: float, duration: float, timeout: float = 0.25) -> subprocess.Popen[str]:
    """Start lbctl.lab.prober in the client namespace; read its JSON lines with `read_probes`."""
    return subprocess.Popen(["ip", "netns", "exec", CLIENT_NS, sys.executable, "-m", "lbctl.lab.prober", ip,
                             "--interval", str(interval), "--duration", str(duration), "--timeout", str(timeout)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
