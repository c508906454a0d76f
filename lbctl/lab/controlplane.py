"""A real, throwaway Kubernetes control plane: etcd + kube-apiserver with RBAC and token auth.

Used by the integration tests (on loopback) and by `lbctl lab` (inside the control-plane namespace).
The kube-apiserver binary is built once by lbctl/lab/build-apiserver.sh and cached. Only the admin has a
static token; the daemons authenticate as their ServiceAccounts (TokenRequest API), so they run under
exactly the RBAC the Helm chart installs.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lbctl import assets
from . import k8sbin, kubebins

CACHE = Path(os.environ.get("LBCTL_CACHE", Path.home() / ".cache" / "lbctl"))
APISERVER = Path(os.environ.get("LBCTL_APISERVER", CACHE / "bin" / "kube-apiserver"))
SA_NS = "lbctl-system"
RELEASE = "lbctl"  # the chart's release in SA_NS: ServiceAccounts lbctl-controller and lbctl-speaker
# Static-token identities: only the admin (tests, lab, helm). Daemons get ServiceAccount tokens.
USERS = {
    "admin": ("lbctl-admin", "system:masters"),
}
# With `controllers`: the identities RBAC's bootstrap policy binds kube-controller-manager and kube-scheduler to.
COMPONENT_USERS = {
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "kube-proxy": ("system:kube-proxy", ""),  # bound to system:node-proxier
}
TOKEN_SECONDS = 24 * 3600  # outlives any test session or lab run; the server's CA and key die with the workdir


class ControlPlaneError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_apiserver() -> Path:
    if not (APISERVER.exists() and os.access(APISERVER, os.X_OK)):
        subprocess.run(["bash", str(assets.apiserver_build_script()), "kube-apiserver"], check=True)
    return APISERVER


@dataclass
class ControlPlane:
    host: str = "127.0.0.1"
    port: int = 0
    workdir: Path | None = None
    netns: str | None = None  # run inside this network namespace (lab)
    dual_stack: bool = True
    # kube-controller-manager and kube-scheduler too, and what real kubelets need from the API server: a client
    # CA for their certificates (node_kubeconfig), the Node authorizer, InternalIP to reach them.
    controllers: bool = False
    apiserver_args: list[str] = field(default_factory=list)  # appended to kube-apiserver's flags (lab.realfaults)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    _argv: dict[str, list[str]] = field(default_factory=dict)
    _named: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def kubeconfig(self, user: str = "admin") -> Path:
        assert self.workdir
        return self.workdir / f"kubeconfig-{user}"

    def service_account_kubeconfig(self, namespace: str, service_account: str) -> Path:
        """A kubeconfig (mode 0600, in the tmpfs workdir) with a fresh TokenRequest token for the ServiceAccount."""
        assert self.workdir
        resp = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
                            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                             "spec": {"expirationSeconds": TOKEN_SECONDS}})
        token = resp["status"]["token"]
        path = self.workdir / f"kubeconfig-sa-{namespace}-{service_account}"
        _write_private(path, yaml.safe_dump(self._kubeconfig_doc(f"{namespace}-{service_account}", token)))
        return path

    def node_kubeconfig(self, node: str) -> Path:
        """A kubeconfig (mode 0600) with a client certificate for system:node:<node> in system:nodes, as a
        kubelet has after TLS bootstrap; everything embedded so it works from any directory."""
        assert self.workdir and self.controllers, "node credentials need ControlPlane(controllers=True)"
        wd = self.workdir
        key, crt = wd / f"node-{node}.key", wd / f"node-{node}.crt"
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-subj", f"/O=system:nodes/CN=system:node:{node}", "-keyout", str(key), "-out", str(crt) + ".csr")
        _openssl("x509", "-req", "-in", str(crt) + ".csr", "-CA", str(wd / "client-ca.crt"), "-CAkey",
                 str(wd / "client-ca.key"), "-set_serial", str(secrets.randbits(63)), "-days", "2", "-out", str(crt))
        doc = self._kubeconfig_doc(f"system:node:{node}", "")
        b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
        doc["clusters"][0]["cluster"] = {"server": self.url, "certificate-authority-data": b64(wd / "apiserver.crt")}
        doc["users"][0]["user"] = {"client-certificate-data": b64(crt), "client-key-data": b64(key)}
        path = wd / f"kubeconfig-node-{node}"
        _write_private(path, yaml.safe_dump(doc))
        for f in (key, crt, Path(str(crt) + ".csr")):
            f.unlink()
        return path

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One API call as the admin (inside the namespace when there is one), through lbctl.lab.apicall,
        which runs the one Kubernetes client; raises ControlPlaneError."""
        call = [{"method": method, "path": path, "body": body}]
        res = subprocess.run(self._cmd([sys.executable, "-m", "lbctl.lab.apicall", str(self.kubeconfig())]),
                             input=json.dumps(call), capture_output=True, text=True)
        if res.returncode:
            raise ControlPlaneError(f"{method} {path}: {res.stderr.strip()[-1000:]}")
        [out] = json.loads(res.stdout)
        if not 200 <= out["status"] < 300:
            raise ControlPlaneError(f"{method} {path}: HTTP {out['status']}: {out['body']}")
        return out["body"]

    def helm(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The pinned helm binary against this server, as the admin."""
        res = subprocess.run(self._cmd([str(k8sbin.helm()), *args, "--kubeconfig", str(self.kubeconfig())]),
                             input=stdin, capture_output=True, text=True)
        if check and res.returncode:
            raise ControlPlaneError(f"helm {' '.join(args)}: {res.stderr.strip()[-2000:]}")
        return res

    def install_chart(self, release: str = RELEASE, namespace: str = SA_NS, values: dict | None = None,
                      *extra: str) -> subprocess.CompletedProcess[str]:
        """`helm upgrade --install` of lbctl's chart (CRDs included), `values` on stdin."""
        return self.helm("upgrade", "--install", release, str(assets.chart_dir()), "--namespace", namespace,
                         "--create-namespace", "--values", "-", *extra, stdin=json.dumps(values or {}))

    def _cmd(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def start(self, timeout: float = 90.0) -> ControlPlane:
        ensure_apiserver()
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        self.workdir = self.workdir or Path(tempfile.mkdtemp(prefix="lbctl-cp-", dir=base))
        wd = self.workdir
        wd.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host) if not self.netns else 6443
        etcd_port, peer_port = (free_port(), free_port()) if not self.netns else (2379, 2380)
        try:
            self._write_credentials(wd)
            self._spawn("etcd", [
                "etcd", "--data-dir", str(wd / "etcd"), "--name", "lbctl",
                "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-cluster", f"lbctl=http://127.0.0.1:{peer_port}",
                "--log-level", "error",
            ])
            svc_range = "198.19.0.0/16" + (",2001:db8:ffff::/112" if self.dual_stack else "")
            args = [
                str(APISERVER), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={self.host}", f"--advertise-address={self.host}",
                f"--secure-port={self.port}", "--insecure-port=0", f"--cert-dir={wd / 'certs'}",
                f"--token-auth-file={wd / 'tokens.csv'}", "--authorization-mode=RBAC",
                "--service-account-issuer=https://lbctl.invalid", f"--service-account-key-file={wd / 'sa.key'}",
                f"--service-account-signing-key-file={wd / 'sa.key'}", f"--service-cluster-ip-range={svc_range}",
                "--service-node-port-range=20000-32767",  # room for the 5000-Service benchmark
                "--enable-priority-and-fairness=false", "--max-requests-inflight=2000",
                "--max-mutating-requests-inflight=1000", "--event-ttl=10m", "-v=0",
            ]
            if self.controllers:
                args = [a for a in args if not a.startswith("--authorization-mode=")] + [
                    "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                    f"--client-ca-file={wd / 'client-ca.crt'}",
                    # kubectl logs/exec: the node's hostname would be resolved off the machine.
                    "--kubelet-preferred-address-types=InternalIP"]
            if self.dual_stack:
                args.append("--feature-gates=IPv6DualStack=true")
            args += self.apiserver_args
            self._spawn("kube-apiserver", args)
            self._wait_ready(timeout)
            self._write_kubeconfigs(wd)
            if self.controllers:
                self._start_controllers(wd)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_controllers(self, wd: Path) -> None:
        """kube-controller-manager signs ServiceAccount token Secrets with the API server's key (so `default`
        ServiceAccounts and their tokens appear) and runs the DaemonSet/Deployment/EndpointSlice/node lifecycle
        controllers; kube-scheduler binds pods. No leader election: one of each."""
        bins = kubebins.require("kube-controller-manager", "kube-scheduler")
        on_loopback = not self.netns
        cm_kc, sched_kc = self.kubeconfig("controller-manager"), self.kubeconfig("scheduler")
        self._spawn("kube-controller-manager", [
            str(bins["kube-controller-manager"]), f"--kubeconfig={cm_kc}", f"--authentication-kubeconfig={cm_kc}",
            f"--authorization-kubeconfig={cm_kc}", f"--service-account-private-key-file={wd / 'sa.key'}",
            f"--root-ca-file={wd / 'apiserver.crt'}", "--use-service-account-credentials=true",
            "--leader-elect=false", "--port=0", "--bind-address=127.0.0.1",
            f"--secure-port={free_port() if on_loopback else 10257}", "-v=1",
            # As kubespray sets the alpha gate (its EndpointSlice controller wrote IPv6 slices without it too).
            *(["--feature-gates=IPv6DualStack=true"] if self.dual_stack else [])])
        self._spawn("kube-scheduler", [
            str(bins["kube-scheduler"]), f"--kubeconfig={sched_kc}", f"--authentication-kubeconfig={sched_kc}",
            f"--authorization-kubeconfig={sched_kc}", "--leader-elect=false", "--port=0",
            "--bind-address=127.0.0.1", f"--secure-port={free_port() if on_loopback else 10259}", "-v=1"])

    def pids(self) -> dict[str, int]:
        """Each daemon's pid by name (etcd, kube-apiserver, and with `controllers` the two controllers)."""
        return {name: p.pid for name, p in self._named.items() if p in self.procs}

    def _users(self) -> dict[str, tuple[str, str]]:
        return {**USERS, **(COMPONENT_USERS if self.controllers else {})}

    def _spawn(self, name: str, argv: list[str]) -> None:
        assert self.workdir
        log = open(self.workdir / f"{name}.log", "ab")
        # Own process group so stop() can kill children and nothing outlives a failed test run.
        self.procs.append(subprocess.Popen(self._cmd(argv), stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))
        self._argv[name], self._named[name] = argv, self.procs[-1]

    def outage(self, seconds: float) -> None:
        """Stop kube-apiserver (etcd keeps the data) for `seconds`, then start it again and wait until ready."""
        proc = next(p for p in self.procs if str(APISERVER) in p.args or str(APISERVER) in " ".join(map(str, p.args)))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.procs.remove(proc)
        time.sleep(seconds)
        self._spawn("kube-apiserver", self._argv["kube-apiserver"])
        self._wait_ready(90)

    def _write_credentials(self, wd: Path) -> None:
        subprocess.run(["openssl", "genrsa", "-out", str(wd / "sa.key"), "2048"], check=True,
                       capture_output=True)
        lines = []
        for i, (role, (user, groups)) in enumerate(self._users().items()):
            self.tokens[role] = secrets.token_hex(24)
            lines.append(f'{self.tokens[role]},{user},uid-{i}' + (f',"{groups}"' if groups else ""))
        if self.controllers:
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-subj", "/CN=lbctl-lab-client-ca", "-days", "2", "-keyout", str(wd / "client-ca.key"),
                     "-out", str(wd / "client-ca.crt"))
        (wd / "tokens.csv").write_text("\n".join(lines) + "\n")
        (wd / "tokens.csv").chmod(0o600)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ctx = ssl._create_unverified_context()  # noqa: S323 - probing our own freshly made server
        pending = ["/readyz", "/openapi/v2"]
        while pending:
            for p in self.procs:
                if p.poll() is not None:
                    raise ControlPlaneError(f"{p.args[0]} exited with {p.returncode}; logs in {self.workdir}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"API server not ready after {timeout}s; logs in {self.workdir}")
            if self.netns:
                ok = subprocess.run(self._cmd(["python3", "-c", _PROBE, self.url + pending[0],
                                               self.tokens["admin"]]), capture_output=True).returncode == 0
            else:
                ok = _probe(self.url + pending[0], self.tokens["admin"], ctx)
            if ok:
                pending.pop(0)
            else:
                time.sleep(0.25)

    def _write_kubeconfigs(self, wd: Path) -> None:
        ca = (wd / "certs" / "apiserver.crt").read_text()
        for role in self._users():
            _write_private(self.kubeconfig(role), yaml.safe_dump(self._kubeconfig_doc(role, self.tokens[role])))
        (wd / "apiserver.crt").write_text(ca)

    def _kubeconfig_doc(self, user: str, token: str) -> dict:
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "lbctl",
            "clusters": [{"name": "lbctl", "cluster": {"server": self.url, "certificate-authority": "apiserver.crt"}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "lbctl", "context": {"cluster": "lbctl", "user": user}}],
        }

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop()
        if self.workdir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)


_PROBE = """
import ssl, sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
try:
    sys.exit(0 if urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
"""


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _write_private(path: Path, text: str) -> None:
    """Create with mode 0600 from the start: the file holds a bearer token."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)  # an existing file keeps its old mode through O_CREAT


def _probe(url: str, token: str, ctx: ssl.SSLContext) -> bool:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False
