"""Restart lab speakers as a rollout would, with another keyring or a faked clock, and watch ARP owners meanwhile.

A restart is SIGTERM, then the saved PodRun started again (pods.start with a variant: the saved spec is kept as
the chart made it). OwnerWatch asks the client's namespace for every address every 50 ms, streaming each round.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from lbctl.lab import cluster, pods, processes
from lbctl.lab.api import wait_for
from lbctl.lab.topology import CLIENT_NS

from .conftest import Lab

KEY_DIR = "/etc/lbctl/heartbeat"
KEY_FLAG = "--heartbeat-key-file="


def faked_clock_env(offset: str) -> dict[str, str]:
    """libfaketime (Debian's) moving the wall clock only: CLOCK_MONOTONIC stays real, as after an NTP step."""
    lib = next((p for p in subprocess.run(["dpkg", "-L", "libfaketime"], capture_output=True, text=True).stdout.split()
                if p.endswith("/libfaketime.so.1")), None)
    assert lib, "libfaketime is not installed (apt-get install faketime; tools/dev setup does it)"
    env = {"LD_PRELOAD": lib, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1"}
    probe = subprocess.run([sys.executable, "-c", "import time; print(time.time(), time.monotonic())"],
                           env={**os.environ, **env}, capture_output=True, text=True, check=True)
    wall, mono = map(float, probe.stdout.split())
    assert abs(wall - time.time()) > 60 and abs(mono - time.monotonic()) < 60, "libfaketime did not take effect"
    return env


def stop_speaker(lab: Lab, node: str) -> None:
    pid = lab.speaker_pid(node)
    lab.kill_speaker(node, signal.SIGTERM)
    wait_for(lambda: not processes.alive(pid), 10, f"speaker-{node} to exit")


def start_speaker(node: str, keys: list[str] | None = None, extra_env: dict[str, str] | None = None) -> None:
    """Start the node's saved speaker, with `keys` (Secret data keys, the first signing) instead of the chart's."""
    run = pods.saved()[f"speaker-{node}"]
    if keys is not None:
        at = next(i for i, a in enumerate(run.argv) if a.startswith(KEY_FLAG))
        rest = [a for a in run.argv if not a.startswith(KEY_FLAG)]
        run = replace(run, argv=rest[:at] + [f"{KEY_FLAG}{KEY_DIR}/{k}" for k in keys] + rest[at:])
    pods.start(run, extra_env)
    url = cluster.speaker_ready_url(node)
    wait_for(lambda: cluster.http_ok(run.netns, url), 30, f"speaker-{node} ready")


def add_heartbeat_key(lab: Lab, name: str) -> None:
    """Add a data key to the chart's heartbeat Secret, and to every speaker's copy of it (what a kubelet
    does for a Secret volume, minus its delay)."""
    key = os.urandom(32)
    for ds in lab.api.get("/apis/apps/v1/daemonsets")["items"]:
        for vol in ds["spec"]["template"]["spec"].get("volumes") or []:
            if vol["name"] == "heartbeat-key":
                secret = (vol.get("secret") or {}).get("secretName")
                lab.api.patch(f"/api/v1/namespaces/{ds['metadata']['namespace']}/secrets/{secret}",
                              {"data": {name: base64.b64encode(key).decode()}})
    for run in pods.saved().values():
        for m in run.mounts:
            if m.target == KEY_DIR:
                old = next(p for p in Path(m.source).iterdir() if p.is_file())
                st = old.stat()
                new = Path(m.source) / name
                new.write_bytes(key)
                os.chown(new, st.st_uid, st.st_gid)
                new.chmod(st.st_mode & 0o777)


# Runs in the client's namespace: one broadcast ARP request per address every 50 ms; one JSON line per round,
# [CLOCK_MONOTONIC time, {ip: [MACs that answered]}], until stdin closes.
_STREAM = r"""
import json, select, socket, struct, sys, time
ips, mac, src = json.loads(sys.argv[1]), bytes.fromhex(sys.argv[2].replace(":", "")), sys.argv[3]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0))
reqs = {ip: b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac
        + socket.inet_aton(src) + b"\x00" * 6 + socket.inet_aton(ip) for ip in ips}
while not select.select([sys.stdin], [], [], 0)[0]:
    start, seen = time.monotonic(), {ip: set() for ip in ips}
    for r in reqs.values():
        s.send(r)
    end = start + 0.05
    while (left := end - time.monotonic()) > 0:
        if select.select([s], [], [], left)[0]:
            f = s.recv(64)
            if f[20:22] == b"\x00\x02" and (ip := socket.inet_ntoa(f[28:32])) in seen:
                seen[ip].add(f[22:28].hex(":"))
    print(json.dumps([start, {ip: sorted(m) for ip, m in seen.items()}]), flush=True)
"""


class OwnerWatch:
    """Every 50 ms, which MACs answer each address (from the client), as [(time, {ip: [mac]})]."""

    def __init__(self, lab: Lab, ips: list[str]) -> None:
        client = lab.topo.host("client")
        self.rounds: list[tuple[float, dict[str, list[str]]]] = []
        self._proc = subprocess.Popen(["ip", "netns", "exec", CLIENT_NS, sys.executable, "-c", _STREAM,
                                       json.dumps(ips), client.mac, client.ip4],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: len(self.rounds) > 2, 10, "the ARP watch to start")

    def _read(self) -> None:
        assert self._proc.stdout
        for line in self._proc.stdout:
            t, seen = json.loads(line)
            self.rounds.append((t, seen))

    def stop(self) -> list[tuple[float, dict[str, list[str]]]]:
        assert self._proc.stdin
        self._proc.stdin.close()
        self._proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return self.rounds
