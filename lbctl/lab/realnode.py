"""A real Kubernetes node in a lab network namespace: Debian's containerd (with runc and the CNI plugins) and
a kubelet built from Debian's kubernetes source, several of them on one machine.

What one host shares between nodes had to be split (each measured; see the lab reference notes):
- namespaces are entered with `nsenter --net`, never `ip netns exec`: that remounts /sys, and the kubelet then
  finds no cgroup mounts;
- every node has its own mount namespace (slave: the host's mounts still reach it) in which /var/lib and /run
  are overlays onto the node's directory and /var/log is the node's: the kubelet hard-codes
  /var/lib/kubelet/device-plugins and /var/log/pods, and a second kubelet's garbage collection deleted the first
  node's pod logs; containerd's shims put their sockets in /run/containerd/s; libcni caches in /var/lib/cni.
  Nothing is created on the host's disk;
- containerd: own root, state, socket, runc root, CNI conf_dir, `restrict_oom_score_adj` (this VM's bounding set
  lacks CAP_SYS_RESOURCE, so runc cannot give the pause container its -998), the pause image compiled from the
  kubernetes source as the sandbox image (no registry), imported with ctr;
- the kernel settings the kubelet would write for the whole machine are shadowed in the node's mount namespace;
- kubelet: own root/cert/volume-plugin dirs and `--cgroup-root=/<netns>` made in every cgroup v1 hierarchy first:
  with one shared /kubepods a kubelet's orphan cleanup would kill another node's pods.

stop() leaves nothing: it kills the kubelet, then every process in the node's cgroups (the containers),
containerd, whatever else lives in the node's mount namespace (the shims), removes the cgroup directories, and
the mount namespace goes with its last process. Pidfiles and the namespace's inode are kept in `workdir`, so a
new process can clean up after a crashed one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import kubebins, ociarchive
from .processes import alive, signal_group

PAUSE_IMAGE = "localhost/lbctl-pause:3.4.1"
CTR_NS = "k8s.io"  # containerd's namespace for the CRI plugin's images and containers
CGROUP_MOUNTS = Path("/proc/self/mounts")
# The kernel settings a kubelet writes when they differ (kubelet 1.20 setupKernelTunables). They are the whole
# machine's, not a namespace's (panic_on_oops=1 would turn any oops into a panic), so each node sees files holding
# these values bound over them in its mount namespace, and the host keeps its own.
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000"}


class NodeError(RuntimeError):
    pass


_CONTAINERD = """version = 2
root = "{w}/containerd/root"
state = "{w}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{sock}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{w}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{w}/cni"
"""


@dataclass
class RealNode:
    name: str  # the Node's name (the lab's node name)
    netns: str  # an existing network namespace (/run/netns/<netns>); also names the node's cgroup root
    ip: str  # the node's lab address: --node-ip, where the kubelet listens
    workdir: Path  # everything of this node; on tmpfs (keys, tokens)
    kubeconfig: Path  # the kubelet's credentials (ControlPlane.node_kubeconfig)
    # The node's CNI bridge ranges (host-local), one per family: a second (IPv6) range makes the pods dual-stack.
    pod_cidrs: list[str] = field(default_factory=lambda: ["198.18.128.0/24"])
    kubelet_args: list[str] = field(default_factory=list)  # e.g. --register-with-taints for a control plane
    ip6: str = ""  # the node's IPv6 lab address: with it, --node-ip names both (dual-stack InternalIPs)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def load(cls, workdir: Path) -> RealNode:
        """The node a (possibly crashed) process started in `workdir`: enough to stop() it."""
        doc = json.loads((workdir / "node.json").read_text())
        cidrs = doc.get("pod_cidrs") or [doc["pod_cidr"]]  # a node started before dual-stack wrote one
        return cls(doc["name"], doc["netns"], doc["ip"], workdir, Path(doc["kubeconfig"]), cidrs,
                   doc.get("kubelet_args", []), doc.get("ip6", ""))

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def cgroup(self) -> str:
        return self.netns

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def start(self, timeout: float = 60) -> RealNode:
        """containerd, the pause image, then the kubelet; returns once the kubelet answers /healthz (the Node
        is Ready some seconds later: the caller watches the API). Cleans up everything on failure."""
        bins = kubebins.require("kubelet", "pause", "containerd", "ctr", "runc", "nsenter", "unshare")
        if not Path(f"/run/netns/{self.netns}").exists():
            raise NodeError(f"network namespace {self.netns} does not exist")
        deadline = time.monotonic() + timeout
        try:
            self._prepare()
            self.workdir.joinpath("node.json").write_text(json.dumps({
                "name": self.name, "netns": self.netns, "ip": self.ip, "kubeconfig": str(self.kubeconfig),
                "pod_cidrs": self.pod_cidrs, "kubelet_args": self.kubelet_args, "ip6": self.ip6}))
            self._make_cgroups()
            self._start_mount_namespace(deadline)
            self.workdir.joinpath("containerd.toml").write_text(_CONTAINERD.format(
                w=self.workdir, sock=self.socket, pause=PAUSE_IMAGE, cni_bin=kubebins.CNI_BIN))
            self._spawn("containerd", [str(bins["containerd"]), "--config", str(self.workdir / "containerd.toml")])
            self._wait(lambda: self.ctr("version", check=False).returncode == 0, deadline, "containerd", "containerd")
            pause = self.workdir / "pause.tar"
            ociarchive.write(pause, PAUSE_IMAGE, {"/pause": (bins["pause"].read_bytes(), 0o755)}, ["/pause"])
            self.import_image(pause)
            pause.unlink()
            self._spawn("kubelet", self._kubelet_argv(bins["kubelet"]))
            self._wait(self._kubelet_healthy, deadline, "the kubelet's /healthz", "kubelet")
        except BaseException:
            self.stop()
            raise
        return self

    def run(self, name: str, argv: list[str]) -> int:
        """Another daemon of the node (kube-proxy) in its network and mount namespaces, logged to logs/<name>.log;
        stop() ends it with everything else in the mount namespace. Returns its pid."""
        return self._spawn(name, argv)

    def pid(self, name: str) -> int | None:
        """The pid of a daemon this node started (containerd, kubelet, or one started with run())."""
        return self._pid(name)

    def stop_kubelet(self) -> None:
        """Kill the kubelet alone (a node whose kubelet died or was stopped): its containers keep running."""
        self._kill(self._pid("kubelet"), grace=0)

    def start_kubelet(self) -> None:
        """Start the kubelet again with the same flags (after stop_kubelet)."""
        if alive(self._pid("kubelet")):
            raise NodeError(f"the kubelet of node {self.name} is running")
        self._spawn("kubelet", self._kubelet_argv(kubebins.require("kubelet")["kubelet"]))
        self._wait(self._kubelet_healthy, time.monotonic() + 60, "the kubelet's /healthz", "kubelet")

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """ctr against this node's containerd, in the CRI plugin's namespace."""
        res = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", CTR_NS, *args],
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode:
            raise NodeError(f"ctr {' '.join(args)}: {res.stderr.strip()[-2000:]}")
        return res

    def import_image(self, archive: Path) -> None:
        """A docker-archive or OCI tarball (`podman save`, lbctl.lab.ociarchive) into the node's containerd:
        there is no registry, pods name the image with imagePullPolicy Never or IfNotPresent."""
        self.ctr("images", "import", str(archive), timeout=600)

    def pids_in_cgroup(self) -> set[int]:
        """Every process under the node's cgroup root (its containers), in any hierarchy."""
        pids: set[int] = set()
        for root in _cgroup_dirs(self.cgroup):
            for d in _cgroup_tree(root):
                try:
                    pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
                except OSError:
                    pass  # the cgroup went away while we read it
        return pids

    def stop(self) -> None:
        """Stop everything the node started and remove its cgroups; the workdir stays (logs). Idempotent, and
        works from a process that did not start the node (pidfiles)."""
        steps: list[Callable[[], None]] = [
            lambda: self._kill(self._pid("kubelet"), grace=3),
            lambda: self._kill_all(self.pids_in_cgroup),  # the containers: the kubelet would restart them
            lambda: self._kill(self._pid("containerd"), grace=10),
            lambda: self._kill_all(lambda: self.pids_in_cgroup() | self._pids_in_mount_namespace()),  # shims
            lambda: self._kill(self._pid("holder"), grace=0),
            self._reap_all,
            self._remove_cgroups,
        ]
        errors = []
        for step in steps:  # a failed step must not leave the later ones' processes running
            try:
                step()
            except Exception as e:  # noqa: BLE001 - raised below, after every step had its turn
                errors.append(e)
        if errors:
            raise errors[0]

    def _reap_all(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.wait(timeout=10)
        self._procs.clear()

    def _remove_cgroups(self) -> None:
        left = _remove_cgroups(self.cgroup)
        if left:
            raise NodeError(f"cgroup directories of node {self.name} could not be removed: {left}")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- start-up ---
    def _prepare(self) -> None:
        for d in ("containerd", "runc", "cni", "kubelet", "pids", "logs", "log/pods", "log/containers", "sysctl",
                  "varlib/upper", "varlib/work", "run/upper", "run/work"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o700)
        (self.workdir / "cni" / "10-lbctl.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "lbctl", "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": True, "isDefaultGateway": True, "ipMasq": False, "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": c}] for c in self.pod_cidrs],
                         "dataDir": str(self.workdir / "ipam")}}]}, indent=1))

    def _make_cgroups(self) -> None:
        for mount in _cgroup_mounts(v1_only=True):
            path = mount / self.cgroup
            path.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):  # an empty cpuset admits no process
                if (path / knob).exists() and not (path / knob).read_text().strip():
                    (path / knob).write_text((mount / knob).read_text())

    def _start_mount_namespace(self, deadline: float) -> None:
        own = os.stat("/proc/self/ns/mnt").st_ino
        # A process that only holds the namespace, so containerd and the kubelet can both enter it.
        pid = self._spawn("holder", ["unshare", "--mount", "--propagation", "slave", "--", "sleep", "infinity"],
                          mount_ns=False)
        self._wait(lambda: _mount_ns(pid) not in (None, own), deadline, "the node's mount namespace", "holder")
        (self.workdir / "mntns").write_text(f"{_mount_ns(pid)}\n")
        w = self.workdir
        for target, opts in (("/var/lib", f"lowerdir=/var/lib,upperdir={w}/varlib/upper,workdir={w}/varlib/work"),
                             ("/run", f"lowerdir=/run,upperdir={w}/run/upper,workdir={w}/run/work")):
            self._in_mount_ns(pid, "mount", "-t", "overlay", "overlay", "-o", opts, target)
        self._in_mount_ns(pid, "mount", "--bind", str(w / "log"), "/var/log")
        for name, value in KUBELET_SYSCTLS.items():
            shadow = w / "sysctl" / name.replace("/", ".")
            shadow.write_text(value + "\n")
            self._in_mount_ns(pid, "mount", "--bind", str(shadow), f"/proc/sys/{name}")

    def _in_mount_ns(self, holder: int, *argv: str) -> None:
        res = subprocess.run(["nsenter", f"--mount=/proc/{holder}/ns/mnt", "--", *argv], capture_output=True,
                             text=True, timeout=30)
        if res.returncode:
            raise NodeError(f"{' '.join(argv)} in node {self.name}'s mount namespace: {res.stderr.strip()}")

    def _kubelet_argv(self, kubelet: Path) -> list[str]:
        k = self.workdir / "kubelet"
        return [
            str(kubelet), f"--kubeconfig={self.kubeconfig}", "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.socket}", f"--containerd={self.socket}",
            f"--root-dir={k}", f"--cert-dir={k / 'pki'}", f"--volume-plugin-dir={k / 'volume-plugins'}",
            f"--node-ip={','.join(a for a in (self.ip, self.ip6) if a)}", f"--address={self.ip}",
            f"--hostname-override={self.name}",
            "--cgroup-driver=cgroupfs", f"--cgroup-root=/{self.cgroup}", "--cgroups-per-qos=true",
            "--enforce-node-allocatable=pods", "--fail-swap-on=false", "--read-only-port=0",
            "--healthz-bind-address=127.0.0.1", f"--pod-infra-container-image={PAUSE_IMAGE}",
            # Images are imported, never pulled: garbage collection must not delete them.
            "--image-gc-high-threshold=100", "--image-gc-low-threshold=99", "-v=1",
            # The alpha gate, as kubespray sets it on every component (measured: this kubelet reported both
            # status.podIPs without it, and started with two --node-ip addresses).
            *(["--feature-gates=IPv6DualStack=true"] if self.ip6 else []), *self.kubelet_args,
        ]

    def _kubelet_healthy(self) -> bool:
        res = subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", "--", "curl", "-sf", "-m", "1",
                              "http://127.0.0.1:10248/healthz"], capture_output=True)
        return res.returncode == 0

    def _spawn(self, name: str, argv: list[str], mount_ns: bool = True) -> int:
        enter = ["nsenter", f"--net=/run/netns/{self.netns}"]
        if mount_ns:
            enter.append(f"--mount=/proc/{self._pid('holder')}/ns/mnt")
        with open(self.logs / f"{name}.log", "ab") as log:
            # nsenter execs the command: this pid is the daemon's, and it leads its own process group.
            proc = subprocess.Popen([*enter, "--", *argv], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs[name] = proc
        (self.workdir / "pids" / f"{name}.pid").write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait(self, ok: Callable[[], bool], deadline: float, what: str, daemon: str) -> None:
        while not ok():
            if not alive(self._pid(daemon)):
                raise NodeError(f"{daemon} of node {self.name} exited; last lines of its log:\n{self._tail(daemon)}")
            if time.monotonic() > deadline:
                raise NodeError(f"timed out waiting for {what} on node {self.name}:\n{self._tail(daemon)}")
            time.sleep(0.1)

    def _tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- tear-down ---
    def _pid(self, name: str) -> int | None:
        try:
            return int((self.workdir / "pids" / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None

    def _mount_ns_inode(self) -> int | None:
        try:
            return int((self.workdir / "mntns").read_text())
        except (OSError, ValueError):
            return None

    def _pids_in_mount_namespace(self) -> set[int]:
        ino = self._mount_ns_inode()
        holder = self._pid("holder")
        return {pid for pid in _all_pids() if ino and pid != holder and _mount_ns(pid) == ino}

    def _ours(self, pid: int | None) -> bool:
        """A recorded pid is ours while it lives in the node's mount namespace (or is a child we still hold):
        after a crash and a reboot the number may belong to anybody."""
        if not pid or not alive(pid):
            return False
        if any(p.pid == pid and p.poll() is None for p in self._procs.values()):
            return True
        return _mount_ns(pid) == self._mount_ns_inode()

    def _kill(self, pid: int | None, grace: float) -> None:
        if not self._ours(pid):
            return
        assert pid
        signal_group(pid, signal.SIGTERM if grace else signal.SIGKILL)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        if alive(pid):
            signal_group(pid, signal.SIGKILL)
        _wait_dead({pid}, self._reap)

    def _kill_all(self, find: Callable[[], set[int]]) -> None:
        """SIGKILL what `find` returns until it returns nothing (a dying shim's children appear late)."""
        deadline = time.monotonic() + 20
        while pids := {p for p in find() if alive(p)}:
            if time.monotonic() > deadline:
                raise NodeError(f"processes of node {self.name} survive SIGKILL: {sorted(pids)}")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _wait_dead(pids, self._reap, timeout=2, check=False)

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()


def _wait_dead(pids: set[int], reap: Callable[[], None], timeout: float = 10, check: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            if check:
                raise NodeError(f"processes survive SIGKILL: {sorted(p for p in pids if alive(p))}")
            return
        reap()
        time.sleep(0.02)


def _mount_ns(pid: int | None) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _cgroup_mounts(v1_only: bool = False) -> list[Path]:
    """Mount points of every cgroup hierarchy (cgroup v1 and, unless v1_only, the v2 one of a hybrid host)."""
    kinds = ("cgroup",) if v1_only else ("cgroup", "cgroup2")
    mounts = []
    for line in CGROUP_MOUNTS.read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] in kinds and parts[1] not in mounts:
            mounts.append(parts[1])
    return [Path(m) for m in mounts]


def _cgroup_tree(root: Path) -> list[Path]:
    """The cgroup and its descendants, deepest first. os.walk, not Path.rglob: runc removes a dead container's
    cgroup while we walk, and rglob raises on a directory that vanished (os.walk skips it)."""
    return [Path(d) for d, _, _ in os.walk(root, topdown=False)]


def _cgroup_dirs(name: str) -> list[Path]:
    return [m / name for m in _cgroup_mounts() if (m / name).is_dir()]


def _remove_cgroups(name: str, timeout: float = 10) -> list[str]:
    """rmdir the node's cgroup trees, deepest first; a cgroup whose last process just died can be busy for a
    moment. Returns what is left after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for root in _cgroup_dirs(name):
            for d in _cgroup_tree(root):
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    left.append(f"{d}: {e.strerror}")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
