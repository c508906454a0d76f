"""A real, throwaway Kubernetes control plane: etcd + kube-apiserver with RBAC and token auth.

Used by the integration tests (on loopback) and by `lbctl lab` (inside the control-plane namespace).
The kube-apiserver binary is built once by lbctl/lab/build-apiserver.sh and cached. Only the admin has a
static token; the daemons authenticate as their ServiceAccounts (TokenRequest API), so they run under
exactly the RBAC the Helm chart installs.
"""

from __future__ import annotations

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
from . import k8sbin

CACHE = Path(os.environ.get("LBCTL_CACHE", Path.home() / ".cache" / "lbctl"))
APISERVER = Path(os.environ.get("LBCTL_APISERVER", CACHE / "bin" / "kube-apiserver"))
SA_NS = "lbctl-system"
RELEASE = "lbctl"  # the chart's release in SA_NS: ServiceAccounts lbctl-controller and lbctl-speaker
# Static-token identities: only the admin (tests, lab, helm). Daemons get ServiceAccount tokens.
USERS = {
    "admin": ("lbctl-admin", "system:masters"),
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
        subprocess.run(["bash", str(assets.apiserver_build_script())], check=True)
    return APISERVER


@dataclass
class ControlPlane:
    host: str = "127.0.0.1"
    port: int = 0
    workdir: Path | None = None
    netns: str | None = None  # run inside this network namespace (lab)
    dual_stack: bool = True
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    _argv: dict[str, list[str]] = field(default_factory=dict)

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
            if self.dual_stack:
                args.append("--feature-gates=IPv6DualStack=true")
            self._spawn("kube-apiserver", args)
            self._wait_ready(timeout)
            self._write_kubeconfigs(wd)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        assert self.workdir
        log = open(self.workdir / f"{name}.log", "ab")
        # Own process group so stop() can kill children and nothing outlives a failed test run.
        self.procs.append(subprocess.Popen(self._cmd(argv), stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))
        self._argv[name] = argv

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
        for i, (role, (user, groups)) in enumerate(USERS.items()):
            self.tokens[role] = secrets.token_hex(24)
            lines.append(f'{self.tokens[role]},{user},uid-{i},"{groups}"')
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
        for role in USERS:
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
