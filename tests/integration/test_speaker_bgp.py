"""BGP mode with real parts: the real speaker (as the chart's ServiceAccount, against the real API server) drives
the real sidecar (speaker/bgpd.py running BIRD with no capability at all) in a node namespace, peering over a
veth with a second BIRD playing the router in its own namespace (198.18.1.0/24). The router's table is the
judge: the Service's /32 arrives, follows externalTrafficPolicy Local endpoints, goes with the Service, takes a
pool change without a session reset, leaves before a SIGTERMed speaker exits, and leaves when the speaker is
SIGKILLed (the sidecar withdraws). Namespaces, processes and the extra release are removed in finally.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbctl.core.bird_status import parse_protocols
from lbctl.kube.client import ApiError
from lbctl.lab.controlplane import ControlPlane, free_port
from lbctl.kube.sync import SyncKube
from tests import httpget
from tests.procs import terminate
from tests.wait import wait_for

BIRD, BIRDC = shutil.which("bird") or "/usr/sbin/bird", shutil.which("birdc") or "/usr/sbin/birdc"
pytestmark = [pytest.mark.skipif(not (Path(BIRD).exists() and Path(BIRDC).exists()),
                                 reason="BIRD 2 (Debian bird2) is not installed"),
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

PREFIX = os.environ.get("LBCTL_LAB_PREFIX", "lbctl-")
ROUTER_NS, NODE_NS = f"{PREFIX}bgr", f"{PREFIX}bgn"
RELEASE, NS = "bgpt", "bgpt-system"  # a release of its own with bgp.enabled (the session's has BGP off)
NODE, PEER, POOL, SVC = "bgpt-node1", "bgpt-tor", "bgpt-pool", "bgpt-web"
VIP = "198.18.20.5"
ROUTER_CONF = """router id 198.18.1.1;
log stderr all;
protocol device {}
protocol bgp n1 { local 198.18.1.1 as 64513; neighbor 198.18.1.2 as 64512; hold time 9;
  ipv4 { import all; export none; }; }
"""
POOLS = "/apis/lbctl.io/v1alpha1/ippools"
PEERS = "/apis/lbctl.io/v1alpha1/bgppeers"
SERVICES = "/api/v1/namespaces/default/services"
SLICES = "/apis/discovery.k8s.io/v1beta1/namespaces/default/endpointslices"
STATUSES = "/apis/lbctl.io/v1alpha1/speakerstatuses"


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30).stdout


class Rig:
    def __init__(self, cp: ControlPlane, kube: SyncKube, wd: Path) -> None:
        self.cp, self.kube, self.wd = cp, kube, wd
        self.run = wd / "run"
        self.router_sock = str(wd / "router.ctl")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.speaker: subprocess.Popen[bytes] | None = None
        self.sidecar: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.kubeconfig: Path | None = None

    # --- the network and the router ---
    def build(self) -> None:
        for ns in (ROUTER_NS, NODE_NS):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"{PREFIX}bg0", "netns", ROUTER_NS, "type", "veth", "peer", "name", f"{PREFIX}bg1",
           "netns", NODE_NS)
        for ns, dev, addr in ((ROUTER_NS, f"{PREFIX}bg0", "198.18.1.1/24"), (NODE_NS, f"{PREFIX}bg1", "198.18.1.2/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        (self.wd / "router.conf").write_text(ROUTER_CONF)
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ROUTER_NS, BIRD, "-f", "-c", str(self.wd / "router.conf"), "-s",
             self.router_sock], stdout=open(self.wd / "router.log", "wb"), stderr=subprocess.STDOUT,
            env=dict(os.environ, TZ="UTC")))

    def birdc(self, sock: str, *cmd: str) -> str:
        return sh(BIRDC, "-s", sock, *cmd, check=False)

    def route(self, prefix: str = f"{VIP}/32") -> str:
        """The router's route for `prefix` with its attributes ('' when it has none)."""
        out = self.birdc(self.router_sock, "show", "route", "all", prefix)
        return out if prefix in out else ""

    def settled(self) -> tuple[str, dt.datetime | None]:
        """Once the route is on the router: the router's session (state, since), to compare after a change."""
        wait_for(self.route, 30, what=f"{VIP}/32 on the router\n{self.log('speaker')}\n{self.log('sidecar')}")
        return self.router_session()

    def speaker_again(self, session: tuple[str, dt.datetime | None]) -> None:
        """Start the next speaker: it advertises again over the same session (no reset)."""
        self.start_speaker()
        wait_for(self.route, 30, what=f"the route from the restarted speaker\n{self.log('speaker')}")
        assert self.router_session() == session

    def router_session(self) -> tuple[str, dt.datetime | None]:
        text = self.birdc(self.router_sock, "show", "protocols", "all", "n1")
        [s] = parse_protocols(text, dt.datetime.now(dt.timezone.utc)) or [None]
        return (s.state, s.since) if s else ("", None)

    # --- the node: sidecar and speaker ---
    def start_sidecar(self) -> None:
        # An empty bounding set: BIRD (uid 0) ends up with no capability at all, as in the chart without BFD.
        self.sidecar = subprocess.Popen(
            ["ip", "netns", "exec", NODE_NS, "setpriv", "--bounding-set=-all", "--no-new-privs", sys.executable,
             "-m", "lbctl.speaker.bgpd", "--run-dir", str(self.run), "--bird", BIRD, "--log-format", "json"],
            stdout=open(self.wd / "sidecar.log", "ab"), stderr=subprocess.STDOUT)
        self.procs.append(self.sidecar)

    def start_speaker(self) -> None:
        if self.kubeconfig is None:
            self.kubeconfig = self.cp.service_account_kubeconfig(NS, f"{RELEASE}-lbctl-speaker")
        key = self.wd / "key"
        if not key.exists():
            key.write_text(os.urandom(32).hex())
        self.port = free_port()
        self.speaker = subprocess.Popen(
            [sys.executable, "-m", "lbctl.speaker", "--node-name", NODE, "--kubeconfig", str(self.kubeconfig),
             "--heartbeat-key-file", str(key), "--interfaces", "lbctl-none0", "--heartbeat-port", str(free_port()),
             "--http-host", "127.0.0.1", "--http-port", str(self.port), "--log-format", "json",
             "--lease-namespace", NS, "--restart-hold", "0", "--bgp", "--bgp-run-dir", str(self.run)],
            stdout=open(self.wd / "speaker.log", "ab"), stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.procs.append(self.speaker)

    def log(self, name: str) -> str:
        return (self.wd / f"{name}.log").read_text(errors="replace")[-4000:]

    def bgp_status(self) -> dict:
        try:
            return self.kube.get(f"{STATUSES}/{NODE}").get("status", {}).get("bgp") or {}
        except ApiError:
            return {}

    def metrics(self) -> str:
        return httpget.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2)[1]

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            terminate(p, 5)
        for ns in (ROUTER_NS, NODE_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def apply(kube: SyncKube, path: str, obj: dict) -> None:
    try:
        kube.create(path, obj)
    except ApiError as exc:
        if exc.status != 409:
            raise
        kube.patch(f"{path}/{obj['metadata']['name']}", obj)


def service(kube: SyncKube, etp: str = "Cluster") -> None:
    apply(kube, SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SVC},
                           "spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp,
                                    "ports": [{"port": 80, "protocol": "TCP"}]}})
    kube.patch(f"{SERVICES}/{SVC}/status", {"status": {"loadBalancer": {"ingress": [{"ip": VIP}]}}})


@pytest.fixture(scope="module")
def rig(control_plane: ControlPlane, kube: SyncKube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(control_plane, kube, tmp_path_factory.mktemp("bgp"))
    try:
        control_plane.install_chart(RELEASE, NS, {"pools": [], "bgp": {"enabled": True}})
        apply(kube, "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE,
                                                                                     "labels": {"rack": "a"}}})
        apply(kube, PEERS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": PEER},
                            "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.1.1",
                                     "routerID": "198.18.1.2", "holdTime": "9s", "keepaliveTime": "3s"}})
        apply(kube, POOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": POOL},
                            "spec": {"addresses": ["198.18.20.0/24"], "layer2": {"enabled": False},
                                     "bgp": {"advertisements": [{}]}}})
        service(kube)
        r.build()
        r.start_sidecar()
        r.start_speaker()
        yield r
    finally:
        r.cleanup()
        for path in (f"{SERVICES}/{SVC}", f"{POOLS}/{POOL}", f"{PEERS}/{PEER}", f"/api/v1/nodes/{NODE}",
                     f"{STATUSES}/{NODE}", f"{SLICES}/{SVC}-x"):
            try:
                kube.delete(path)
            except ApiError:
                pass
        control_plane.helm("uninstall", RELEASE, "--namespace", NS, check=False)


def test_session_established_and_the_service_on_the_router(rig: Rig) -> None:
    assert rig.settled()[0] == "Established"
    st = wait_for(lambda: (s := rig.bgp_status()).get("sessions") and s["sessions"][0]["state"] == "Established"
                  and s, 15, what="the SpeakerStatus bgp block")
    [session] = st["sessions"]
    assert session["peer"] == PEER and session["address"] == "198.18.1.1" and session["prefixesSent"] == 1
    assert session["since"].endswith("Z") and session["lastError"] == ""
    assert st["advertised"] == [{"ip": VIP, "peers": [PEER]}] and st["skipped"] == {}
    m = rig.metrics()
    assert f'lbctl_bgp_session_up{{peer="{PEER}"}} 1.0' in m
    assert f'lbctl_bgp_prefixes_advertised{{peer="{PEER}"}} 1.0' in m
    # The BGP-only pool is announced by BGP: no NotAnnounced Event, and no layer 2 owner.
    events = rig.kube.get("/api/v1/namespaces/default/events")["items"]
    assert not [e for e in events if e["involvedObject"].get("name") == SVC and e["reason"] == "NotAnnounced"]
    # BIRD runs with no capability at all (the sidecar's uid 0 holds none).
    [pid] = [p for p in sh("ip", "netns", "pids", NODE_NS).split() if Path(f"/proc/{p}/comm").read_text() == "bird\n"]
    caps = {line.split(":")[0]: line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Cap")}
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000000000", caps
    assert f'lbctl_bgp_session_flaps_total{{peer="{PEER}"}} 0.0' in m
    assert rig.sidecar
    rss = {p: int(next(line.split()[1] for line in Path(f"/proc/{p}/status").read_text().splitlines()
                       if line.startswith("VmRSS"))) / 1024 for p in (pid, str(rig.sidecar.pid))}
    print(f"sidecar RSS: bird {rss[pid]:.1f} MiB, wrapper {rss[str(rig.sidecar.pid)]:.1f} MiB")


def test_a_pool_change_readvertises_without_a_session_reset(rig: Rig) -> None:
    state, since = rig.settled()
    rig.kube.patch(f"{POOLS}/{POOL}", {"spec": {"bgp": {"advertisements": [{"communities": ["65000:7"]}]}}})
    wait_for(lambda: "(65000,7)" in rig.route(), 10, what="the community on the router's route")
    rig.kube.patch(f"{POOLS}/{POOL}", {"spec": {"bgp": {"advertisements": [{"aggregationLength": 24}]}}})
    wait_for(lambda: rig.route("198.18.20.0/24") and not rig.route(), 10, what="the /24 in place of the /32")
    rig.kube.patch(f"{POOLS}/{POOL}", {"spec": {"bgp": {"advertisements": [{}]}}})
    wait_for(rig.route, 10, what="the /32 back")
    assert rig.router_session() == (state, since) == ("Established", since)  # never reset


def test_a_peer_that_cannot_be_rendered_is_left_out_and_the_rest_goes_on(rig: Rig) -> None:
    state, since = rig.settled()
    secrets = f"/api/v1/namespaces/{NS}/secrets"
    apply(rig.kube, secrets, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bgpt-pw"},
                              "type": "kubernetes.io/basic-auth", "stringData": {"password": 'has"quote'}})
    apply(rig.kube, PEERS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "bgpt-bad"},
                            "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.1.9",
                                     "routerID": "198.18.1.2", "passwordSecret": {"name": "bgpt-pw"}}})
    try:
        skipped = wait_for(lambda: rig.bgp_status().get("skipped", {}).get("bgpt-bad"), 10, what="the reason")
        assert skipped.startswith("cannot be rendered: peer 'bgpt-bad': password") and "quote" not in skipped
        service(rig.kube, "Local")  # changes still reach the router meanwhile
        wait_for(lambda: not rig.route(), 10, what="withdrawal (Local, no endpoint) beside the bad peer")
        service(rig.kube, "Cluster")
        wait_for(rig.route, 10, what="the route back")
        assert rig.router_session() == (state, since)
    finally:
        rig.kube.delete(f"{PEERS}/bgpt-bad")
        rig.kube.delete(f"{secrets}/bgpt-pw")
    wait_for(lambda: rig.bgp_status().get("skipped") == {}, 10, what="the bad peer gone from the status")


def test_local_follows_ready_endpoints_and_a_deleted_service_is_withdrawn(rig: Rig) -> None:
    state, since = rig.settled()
    service(rig.kube, "Local")  # no endpoint anywhere: not advertised
    wait_for(lambda: not rig.route(), 10, what="withdrawal: Local without a ready endpoint here")
    rig.kube.create(SLICES, {"apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
                             "metadata": {"name": f"{SVC}-x", "labels": {"kubernetes.io/service-name": SVC}},
                             "addressType": "IPv4", "ports": [{"port": 80}],
                             "endpoints": [{"addresses": ["198.18.128.5"], "conditions": {"ready": True},
                                            "topology": {"kubernetes.io/hostname": NODE}}]})
    wait_for(rig.route, 10, what="the route once a ready endpoint is on the node")
    rig.kube.patch(f"{SLICES}/{SVC}-x", {"endpoints": [{"addresses": ["198.18.128.5"], "conditions": {"ready": False},
                                                        "topology": {"kubernetes.io/hostname": NODE}}]})
    wait_for(lambda: not rig.route(), 10, what="withdrawal when the last endpoint is not ready")
    rig.kube.delete(f"{SLICES}/{SVC}-x")
    service(rig.kube, "Cluster")
    wait_for(rig.route, 10, what="the route back under Cluster")
    rig.kube.delete(f"{SERVICES}/{SVC}")
    wait_for(lambda: not rig.route(), 10, what="withdrawal of a deleted Service")
    wait_for(lambda: rig.bgp_status().get("advertised") == [], 10, what="nothing advertised in the status")
    service(rig.kube)
    wait_for(rig.route, 10, what="the route of the Service created again")
    assert rig.router_session() == (state, since)


def test_sigterm_withdraws_before_the_speaker_exits(rig: Rig) -> None:
    state, since = rig.settled()
    assert rig.speaker
    t0 = time.monotonic()
    rig.speaker.send_signal(signal.SIGTERM)
    gone = exited = gone_at = None
    while time.monotonic() - t0 < 20 and (gone is None or exited is None):
        if gone is None and not rig.route():
            gone, gone_at = time.monotonic() - t0, dt.datetime.now(dt.timezone.utc)
        if exited is None and rig.speaker.poll() is not None:
            exited = time.monotonic() - t0
        time.sleep(0.005)
    print(f"SIGTERM: route gone from the router after {gone:.3f} s, speaker exited after {exited:.3f} s")
    assert gone is not None and exited is not None, rig.log("speaker")
    assert gone < exited, "the route outlived the speaker"
    # The speaker's own withdrawal, waited for: the router had it before the speaker let go of the sidecar
    # (whose withdrawal on that disconnect is the fallback for a speaker that dies without a word).
    [left] = [json.loads(line)["timestamp"] for line in rig.log("sidecar").splitlines()
              if '"speaker_disconnected"' in line][-1:]
    left_at = dt.datetime.fromisoformat(left.replace("Z", "+00:00"))
    assert gone_at < left_at, f"route gone at {gone_at}, after the speaker disconnected at {left_at}"
    assert rig.speaker.returncode == 0, rig.log("speaker")
    assert rig.router_session() == (state, since)  # withdrawn, not torn down
    rig.speaker_again((state, since))


def test_a_killed_speaker_makes_the_daemon_withdraw(rig: Rig) -> None:
    state, since = rig.settled()
    assert rig.speaker
    t0 = time.monotonic()
    rig.speaker.kill()
    wait_for(lambda: not rig.route(), 5, interval=0.005, what=f"withdrawal by the sidecar\n{rig.log('sidecar')}")
    print(f"SIGKILL: route gone from the router after {time.monotonic() - t0:.3f} s")
    assert rig.router_session() == (state, since)
    rig.speaker_again((state, since))


def established(rig: Rig) -> bool:
    return [s["state"] for s in rig.bgp_status().get("sessions", [])] == ["Established"]


def test_a_restarted_sidecar_gets_the_config_again(rig: Rig) -> None:
    rig.settled()
    wait_for(lambda: established(rig), 10, what="the (restarted) speaker has seen the session up")
    assert rig.sidecar
    rig.sidecar.kill()  # BIRD dies with it (PR_SET_PDEATHSIG): the router drops the session
    rig.sidecar.wait()
    wait_for(lambda: not rig.route(), 30, what="the route gone with the daemon")
    rig.start_sidecar()
    wait_for(rig.route, 30, what=f"the route from the new daemon\n{rig.log('speaker')}")
    # The daemon's death reset the session: counted, and told on the BGPPeer, once the speaker has polled it.
    wait_for(lambda: f'lbctl_bgp_session_flaps_total{{peer="{PEER}"}} 1.0' in rig.metrics(), 10, what="one flap")

    def reasons() -> set[str]:
        events = rig.kube.get("/api/v1/namespaces/default/events")["items"]
        return {e["reason"] for e in events if e["involvedObject"].get("name") == PEER}
    wait_for(lambda: {"SessionEstablished", "SessionReset"} <= reasons(), 10, what="session Events on the BGPPeer")
