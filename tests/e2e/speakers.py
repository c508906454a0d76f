"""Change the chart's speaker DaemonSet the way an operator does, one node at a time, and watch ARP owners.

SpeakerDaemonSet edits the DaemonSet's pod template with updateStrategy OnDelete (no pod restarts), then
replace() deletes one node's speaker pod: the DaemonSet controller makes its successor from the new template,
and replace() returns once that pod is Ready. restore() puts the chart's spec (RollingUpdate) back and waits
for the roll. OwnerWatch asks the client's namespace for every address every 50 ms, streaming each round.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from lbctl.lab import rollout
from lbctl.lab.api import wait_for
from lbctl.lab.cluster import NAMESPACE
from lbctl.lab.topology import CLIENT_NS

from .conftest import Lab

PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
COMPONENT = "app.kubernetes.io/component=speaker"
KEY_DIR = "/etc/lbctl/heartbeat"
KEY_FLAG = "--heartbeat-key-file="

PodSpecChange = Callable[[dict[str, Any]], None]


class SpeakerDaemonSet:
    def __init__(self, lab: Lab) -> None:
        self.lab, self.api = lab, lab.api
        [ds] = self.api.get(f"{rollout.APPS}/daemonsets", labelSelector=COMPONENT)["items"]
        self.name = ds["metadata"]["name"]
        self.path = f"{rollout.APPS}/daemonsets/{self.name}"
        self.chart_spec = ds["spec"]

    def edit(self, change: PodSpecChange) -> None:
        """Apply `change` to the pod template with updateStrategy OnDelete; return once the DaemonSet controller
        has seen it (a pod deleted before would be replaced from the old template)."""
        ds = self.api.get(self.path)
        spec = copy.deepcopy(ds["spec"])
        change(spec["template"]["spec"])
        spec["updateStrategy"] = {"type": "OnDelete"}
        gen = self.api.call("PUT", self.path, {**ds, "spec": spec})["metadata"]["generation"]
        wait_for(lambda: self.api.get(self.path)["status"].get("observedGeneration", 0) >= gen, 30,
                 f"the DaemonSet controller to observe generation {gen} of {self.name}", interval=0.2)

    def pod(self, node: str, not_uid: str | None = None) -> dict[str, Any] | None:
        """The speaker pod on `node` (other than `not_uid`), not being deleted."""
        return next((p for p in self.api.get(PODS, labelSelector=COMPONENT)["items"]
                     if p["spec"].get("nodeName") == node and p["metadata"]["uid"] != not_uid
                     and not p["metadata"].get("deletionTimestamp")), None)

    def replace(self, node: str, timeout: float = 60) -> tuple[dict[str, Any], float]:
        """Delete `node`'s speaker pod; return its successor (made by the DaemonSet controller from the current
        template) once Ready, and the seconds from the delete to Ready."""
        old = self.pod(node)
        assert old, f"no speaker pod on {node}"
        start = time.monotonic()
        self.api.delete(f"{PODS}/{old['metadata']['name']}")
        new = wait_for(lambda: (p := self.pod(node, not_uid=old["metadata"]["uid"])) and _ready(p) and p, timeout,
                       f"a new speaker pod Ready on {node}", interval=0.2)
        took = time.monotonic() - start
        [owner] = new["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"]) == ("DaemonSet", self.name), owner
        return new, took

    def secret(self) -> str:
        """The heartbeat Secret the template mounts."""
        return _key_volume(self.api.get(self.path)["spec"]["template"]["spec"])["secret"]["secretName"]

    def restore(self) -> float:
        """The chart's spec back (template and RollingUpdate); seconds until the controller rolled every pod to
        it (0 when nothing was changed)."""
        ds = self.api.get(self.path)
        if ds["spec"] == self.chart_spec:
            return 0.0
        self.api.call("PUT", self.path, {**ds, "spec": self.chart_spec})
        return rollout.wait(self.api, "DaemonSet", self.name, timeout=300)


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == "speaker")


def _key_volume(pod_spec: dict[str, Any]) -> dict[str, Any]:
    mount = next(m for m in _container(pod_spec)["volumeMounts"] if m["mountPath"] == KEY_DIR)
    return next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])


def with_keys(keys: list[str]) -> PodSpecChange:
    """What `--set speaker.heartbeat.keys={...}` renders: a --heartbeat-key-file per Secret data key (the first
    signs), in place of the chart's, and those keys projected into the Secret volume."""
    def change(pod_spec: dict[str, Any]) -> None:
        c = _container(pod_spec)
        at = next(i for i, a in enumerate(c["args"]) if a.startswith(KEY_FLAG))
        rest = [a for a in c["args"] if not a.startswith(KEY_FLAG)]
        c["args"] = rest[:at] + [f"{KEY_FLAG}{KEY_DIR}/{k}" for k in keys] + rest[at:]
        _key_volume(pod_spec)["secret"]["items"] = [{"key": k, "path": k} for k in keys]
    return change


def faked_clock(offset: str) -> PodSpecChange:
    """The speaker under libfaketime moving the wall clock only (CLOCK_MONOTONIC real, as after an NTP step):
    the host's (Debian's) library, mounted read-only from a hostPath into the bookworm image, in LD_PRELOAD."""
    lib = next((p for p in subprocess.run(["dpkg", "-L", "libfaketime"], capture_output=True, text=True).stdout.split()
                if p.endswith("/libfaketime.so.1")), None)
    assert lib, "libfaketime is not installed (apt-get install faketime; tools/dev setup does it)"
    env = {"LD_PRELOAD": lib, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1"}
    where = str(Path(lib).parent)

    def change(pod_spec: dict[str, Any]) -> None:
        pod_spec["volumes"].append({"name": "faketime", "hostPath": {"path": where, "type": "Directory"}})
        c = _container(pod_spec)
        c["volumeMounts"].append({"name": "faketime", "mountPath": where, "readOnly": True})
        c["env"] = [*c.get("env", []), *({"name": k, "value": v} for k, v in env.items())]
    return change


def log_clock_offsets(cri_log: str) -> list[float]:
    """Seconds by which each JSON line's own timestamp (the process's wall clock) trails the CRI log's (the
    container runtime's clock), to 1 s."""
    out = []
    for line in cri_log.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4 or not parts[3].startswith("{"):
            continue
        try:
            own = json.loads(parts[3])["timestamp"]
        except (ValueError, KeyError):
            continue
        fmt = "%Y-%m-%dT%H:%M:%S"
        out.append((datetime.strptime(parts[0][:19], fmt) - datetime.strptime(own[:19], fmt)).total_seconds())
    return out


def add_heartbeat_key(lab: Lab, secret: str, name: str, value: bytes | None = None) -> bytes:
    """Set data key `name` of the heartbeat Secret through the API (random 32 bytes unless `value`). A running
    speaker never sees it: its volume projects only the keys its pod named, and it reads keys once at start."""
    key = value or os.urandom(32)
    lab.api.patch(f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret}", {"data": {name: base64.b64encode(key).decode()}})
    return key


def secret_value(lab: Lab, secret: str, name: str) -> bytes:
    return base64.b64decode(lab.api.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret}")["data"][name])


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

    def settled(self, expect: dict[str, str], rounds: int = 20, timeout: float = 15) -> float:
        """Wait until `rounds` consecutive rounds, all begun from now on, saw each address answered by the MAC
        `expect` gives and no other; returns the seconds waited (TimeoutError with the last round's answers)."""
        start = time.monotonic()
        want = {ip: [mac] for ip, mac in expect.items()}

        def done() -> bool:
            recent = [seen for t, seen in self.rounds[-rounds:] if t >= start]
            return len(recent) == rounds and all(seen == want for seen in recent)
        try:
            wait_for(done, timeout, "every address answered by its owner alone", interval=0.05)
        except TimeoutError:
            raise TimeoutError(f"not every address answered by its owner alone for {rounds} rounds within "
                               f"{timeout:.0f} s; last round {self.rounds[-1][1]}, want {want}") from None
        return time.monotonic() - start

    def stop(self) -> list[tuple[float, dict[str, list[str]]]]:
        assert self._proc.stdin
        self._proc.stdin.close()
        self._proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return self.rounds
