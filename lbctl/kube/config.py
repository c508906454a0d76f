"""Where the API server is and how to authenticate: kubeconfig files as kubectl reads them, or the
in-cluster service account. The one loader for controller, speaker, CLI and lab.

Why not the `kubernetes` package's loader: it writes `client-key-data` (and exec plugins' keys) to
temporary files (`_create_temp_file_with_content`), which we must never do; it brings the generated
client (40-70 MiB per process) just to read YAML; and its result configures its own synchronous
client, not our aiohttp one. What kubectl does that we need is small enough to keep here:

- `$KUBECONFIG` lists (os.pathsep-separated): missing files are skipped, the first file that sets
  current-context wins, clusters/users/contexts merge by name with the first definition winning, and
  relative paths resolve against the file that defined the entry. `--kubeconfig` is one file.
- cluster: server, certificate-authority(-data), insecure-skip-tls-verify, tls-server-name.
- user: token, tokenFile (cached; read again when the file changes or after a minute, as client-go), client-certificate(-data)/client-key(-data),
  username/password (basic auth), exec credential plugins (client.authentication.k8s.io/v1 and
  v1beta1; cached until expirationTimestamp). auth-provider is refused with a pointer to exec plugins.

Client keys stay in memory: `ssl` can only load them from a path, so they go through an anonymous
memfd (/proc/self/fd/N) that is closed as soon as the context has them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_APIS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_TIMEOUT = 60.0  # a non-interactive plugin that hangs must not hang a daemon with it
TOKEN_REREAD_S = 60.0  # a token file that looks unchanged is read again this often anyway (client-go: 1 min)
AUTH_PROVIDER_HINT = {
    "oidc": "kubelogin (`kubectl oidc-login`, exec plugin)",
    "gcp": "gke-gcloud-auth-plugin",
    "azure": "kubelogin (github.com/Azure/kubelogin)",
}


class ConfigError(RuntimeError):
    """The kubeconfig (or in-cluster setup) cannot be used; the message names the file, entry and field."""


@dataclass(frozen=True)
class ExecResult:
    token: str | None
    cert: bytes | None
    key: bytes | None
    expires: dt.datetime | None


@dataclass(eq=False)
class ExecPlugin:
    """A `user.exec` entry. `credential()` runs the command when nothing valid is cached."""

    command: str
    args: list[str]
    env: dict[str, str]
    api_version: str
    user: str  # the kubeconfig user entry, for messages
    install_hint: str = ""
    interactive_mode: str = "IfAvailable"
    cluster: dict[str, Any] | None = None  # spec.cluster when provideClusterInfo
    generation: int = 0  # bumped whenever a run returns a new client certificate
    _cached: ExecResult | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stale(self, now: dt.datetime | None = None) -> bool:
        c = self._cached
        if c is None:
            return True
        return c.expires is not None and (now or _utcnow()) >= c.expires

    def invalidate(self) -> None:
        """After a 401: the server no longer accepts what we have."""
        self._cached = None

    def credential(self, refresh: bool = True) -> ExecResult:
        """The cached credential, run again when stale (refresh=False: only when there is none yet)."""
        with self._lock:  # concurrent requests share one run
            if self._cached is None or (refresh and self.stale()):
                fresh = self._run()
                if fresh.cert and (self._cached is None or fresh.cert != self._cached.cert):
                    self.generation += 1
                self._cached = fresh
            assert self._cached is not None
            return self._cached

    def _run(self) -> ExecResult:
        who = f"exec plugin {self.command!r} of user {self.user!r}"
        interactive = self.interactive_mode != "Never" and sys.stdin is not None and sys.stdin.isatty()
        if self.interactive_mode == "Always" and not interactive:
            raise ConfigError(f"{who} has interactiveMode Always, but standard input is not a terminal")
        spec: dict[str, Any] = {"interactive": interactive}
        if self.cluster is not None:
            spec["cluster"] = self.cluster
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(
            {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec})}
        try:
            res = subprocess.run([self.command, *self.args], env=env, stdout=subprocess.PIPE,
                                 stdin=None if interactive else subprocess.DEVNULL,
                                 stderr=None if interactive else subprocess.PIPE,
                                 timeout=None if interactive else EXEC_TIMEOUT, check=False)
        except FileNotFoundError:
            raise ConfigError(f"{who}: command not found" + (f". {self.install_hint.strip()}"
                                                              if self.install_hint else "")) from None
        except PermissionError:
            raise ConfigError(f"{who}: not executable") from None
        except subprocess.TimeoutExpired:
            raise ConfigError(f"{who}: no answer within {EXEC_TIMEOUT:.0f} s") from None
        err = (res.stderr or b"").decode(errors="replace").strip()
        if res.returncode != 0:
            raise ConfigError(f"{who} exited with {res.returncode}" + (f": {err[-500:]}" if err else ""))
        if err:
            print(err, file=sys.stderr)  # plugins warn on stderr; kubectl shows it too
        return self._parse(res.stdout, who)

    def _parse(self, out: bytes, who: str) -> ExecResult:
        try:
            doc = json.loads(out)
        except ValueError:
            raise ConfigError(f"{who} printed no JSON ExecCredential: {out[:200]!r}") from None
        if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
            raise ConfigError(f"{who} printed no ExecCredential (kind {_get(doc, 'kind')!r})")
        if doc.get("apiVersion") != self.api_version:
            raise ConfigError(f"{who} answered apiVersion {doc.get('apiVersion')!r}, configured {self.api_version!r}")
        status = doc.get("status")
        if not isinstance(status, dict):
            raise ConfigError(f"{who}: ExecCredential has no status")
        token = status.get("token") or None
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if bool(cert) != bool(key):
            raise ConfigError(f"{who}: status has only one of clientCertificateData and clientKeyData")
        if not token and not cert:
            raise ConfigError(f"{who}: status has neither token nor clientCertificateData/clientKeyData")
        expires = None
        if status.get("expirationTimestamp"):
            try:
                expires = _parse_time(status["expirationTimestamp"])
            except ValueError:
                raise ConfigError(f"{who}: bad expirationTimestamp {status['expirationTimestamp']!r}") from None
        return ExecResult(token, cert.encode() if cert else None, key.encode() if key else None, expires)


@dataclass
class KubeConfig:
    server: str
    ca_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None  # projected tokens rotate: read again when the file changes (TokenFile)
    cert_file: str | None = None   # the user's own files (already on disk; read when a context is built)
    key_file: str | None = None
    cert_data: bytes | None = None  # PEM, embedded in the kubeconfig: kept in memory only
    key_data: bytes | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    exec: ExecPlugin | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    namespace: str = "default"
    source: str = ""  # "context X in FILES" or "in-cluster service account", for messages
    in_cluster: bool = False  # from the pod's service account (namespace is then the pod's)
    _token_cache: TokenFile | None = field(default=None, repr=False, compare=False)

    def bearer(self, refresh: bool = True) -> str | None:
        """The bearer token to send: exec plugin, then tokenFile, then token.

        refresh=False: use the exec plugin's cached answer even when expired (the async client has
        just refreshed it, off its event loop)."""
        if self.exec:
            tok = self.exec.credential(refresh).token
            if tok:
                return tok
        if self.token_file:
            if self._token_cache is None or self._token_cache.path != self.token_file:
                self._token_cache = TokenFile(self.token_file)
            try:
                return self._token_cache.read()
            except OSError as exc:
                raise ConfigError(f"cannot read tokenFile {self.token_file} ({self.source}): {exc}") from None
        return self.token

    def authorization(self, refresh: bool = True) -> str | None:
        """The Authorization header value, or None (client certificate or anonymous)."""
        tok = self.bearer(refresh)
        if tok:
            return f"Bearer {tok}"
        if self.username is not None and self.password is not None:
            return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return None

    def expires(self) -> dt.datetime | None:
        """When the current credentials stop being valid (exec plugins), else None."""
        return self.exec.credential().expires if self.exec else None

    def client_pair(self, refresh: bool = True) -> tuple[bytes, bytes] | None:
        """(certificate PEM, key PEM) to present, if any; the exec plugin's wins."""
        if self.exec:
            c = self.exec.credential(refresh)
            if c.cert and c.key:
                return c.cert, c.key
        cert = self.cert_data or _read(self.cert_file, "client-certificate", self.source)
        key = self.key_data or _read(self.key_file, "client-key", self.source)
        if cert and key:
            return cert, key
        return None

    def ssl_context(self, refresh: bool = True) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        try:
            ctx = ssl.create_default_context(cadata=self.ca_data.decode() if self.ca_data else None)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"certificate-authority of {self.source} is not a PEM certificate: {exc}") from None
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        pair = self.client_pair(refresh)
        if pair:
            try:
                load_cert_chain_in_memory(ctx, *pair)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"client certificate/key of {self.source} do not load: {exc}") from None
        return ctx


class TokenFile:
    """A token file, read once and again only when it changed (inode, size, mtime: kubelet swaps a projected
    token's ..data symlink) or TOKEN_REREAD_S after the last read; a stat per request, not a read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._key: tuple[int, int, int, int] | None = None
        self._token = ""
        self._read_at = float("-inf")

    def read(self) -> str:
        st = os.stat(self.path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        now = _monotonic()
        if key != self._key or now - self._read_at >= TOKEN_REREAD_S:
            self._token = Path(self.path).read_text().strip()
            self._key, self._read_at = key, now
        return self._token


def _monotonic() -> float:
    return time.monotonic()


def load_cert_chain_in_memory(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl wants a path: hand it an anonymous in-memory file, closed right after loading."""
    fd = os.memfd_create("lbctl-client-cert", os.MFD_CLOEXEC)
    try:
        data = memoryview(cert.rstrip(b"\n") + b"\n" + key)
        while data:
            data = data[os.write(fd, data):]
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def load(kubeconfig: str | None = None, context: str | None = None) -> KubeConfig:
    """--kubeconfig (one file), then $KUBECONFIG (a list), then in-cluster, then ~/.kube/config."""
    if kubeconfig:
        return resolve(read_files([Path(kubeconfig)], explicit=True), context)
    env = os.environ.get("KUBECONFIG")
    if env:
        paths = list(dict.fromkeys(Path(p) for p in env.split(os.pathsep) if p))
        if paths:
            return resolve(read_files(paths, explicit=False), context)
    if not context and (SA_DIR / "token").exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster()
    home = Path.home() / ".kube" / "config"
    if home.exists():
        return resolve(read_files([home], explicit=True), context)
    raise ConfigError("no kubeconfig given (--kubeconfig or $KUBECONFIG), none at ~/.kube/config, "
                      "and not running in a cluster")


def in_cluster() -> KubeConfig:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    ns_file = SA_DIR / "namespace"
    return KubeConfig(
        server=f"https://{host}:{port}",
        ca_data=(SA_DIR / "ca.crt").read_bytes(),
        token_file=str(SA_DIR / "token"),
        namespace=ns_file.read_text().strip() if ns_file.exists() else "default",
        source="in-cluster service account",
        in_cluster=True,
    )


def from_kubeconfig(path: Path, context: str | None = None) -> KubeConfig:
    return resolve(read_files([path], explicit=True), context)


@dataclass
class Merged:
    """Several kubeconfig files merged as kubectl does. Entries keep the file that defined them."""

    files: list[Path] = field(default_factory=list)
    current: str | None = None
    clusters: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    users: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    contexts: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)

    def where(self) -> str:
        return os.pathsep.join(map(str, self.files)) or "(no file)"


def read_files(paths: list[Path], explicit: bool) -> Merged:
    m = Merged()
    missing: list[Path] = []
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            if explicit:
                raise ConfigError(f"kubeconfig {path} does not exist") from None
            missing.append(path)
            continue
        except OSError as exc:
            raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from None
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"kubeconfig {path} is not a mapping")
        m.files.append(path)
        if not m.current and doc.get("current-context"):
            m.current = str(doc["current-context"])
        for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            items = doc.get(section) or []
            if not isinstance(items, list):
                raise ConfigError(f"kubeconfig {path}: {section} is not a list")
            for item in items:
                if not isinstance(item, dict) or not item.get("name"):
                    raise ConfigError(f"kubeconfig {path}: an entry in {section} has no name")
                body = item.get(key) or {}
                if not isinstance(body, dict):
                    raise ConfigError(f"kubeconfig {path}: {section} entry {item['name']!r} has no {key} mapping")
                getattr(m, section).setdefault(str(item["name"]), (body, path))
    if not m.files:
        raise ConfigError(f"none of the kubeconfig files in $KUBECONFIG exist: {os.pathsep.join(map(str, missing))}")
    return m


def resolve(m: Merged, context: str | None = None) -> KubeConfig:
    name = context or m.current
    if not name:
        raise ConfigError(f"no current-context in {m.where()}; pass --context "
                          f"(contexts: {', '.join(sorted(m.contexts)) or 'none'})")
    if name not in m.contexts:
        raise ConfigError(f"no context named {name!r} in {m.where()} "
                          f"(contexts: {', '.join(sorted(m.contexts)) or 'none'})")
    ctx, ctx_file = m.contexts[name]
    source = f"context {name!r} in {m.where()}"
    cluster_name = ctx.get("cluster")
    if not cluster_name or cluster_name not in m.clusters:
        raise ConfigError(f"{source}: cluster {cluster_name!r} not found")
    cluster, cluster_file = m.clusters[cluster_name]
    if not cluster.get("server"):
        raise ConfigError(f"cluster {cluster_name!r} in {cluster_file} has no server")
    user_name = ctx.get("user")
    user: dict[str, Any] = {}
    user_file = ctx_file
    if user_name:
        if user_name not in m.users:
            raise ConfigError(f"{source}: user {user_name!r} not found")
        user, user_file = m.users[user_name]
    ca = _data_or_file(cluster, "certificate-authority", cluster_file, f"cluster {cluster_name!r}")
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    if insecure and ca:
        raise ConfigError(f"cluster {cluster_name!r} in {cluster_file} sets both insecure-skip-tls-verify and a "
                          "certificate-authority (kubectl refuses this too)")
    cfg = KubeConfig(server=str(cluster["server"]), ca_data=ca, insecure=insecure,
                     tls_server_name=cluster.get("tls-server-name") or None,
                     namespace=ctx.get("namespace") or "default", source=source)
    _user(cfg, user, str(user_name or ""), user_file, cluster, name)
    if cfg.exec is None and cfg.client_pair() is not None:
        cfg.ssl_context()  # a bad certificate or key fails here, naming the user, not at the first request
    return cfg


def _user(cfg: KubeConfig, user: dict[str, Any], name: str, path: Path, cluster: dict[str, Any], ctx: str) -> None:
    where = f"user {name!r} in {path}"
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name") or "?"
        instead = AUTH_PROVIDER_HINT.get(provider, "the provider's exec credential plugin")
        raise ConfigError(f"{where} uses auth-provider {provider!r}, which lbctl does not support (kubectl "
                          f"dropped it in 1.26); use an exec credential plugin instead: {instead}")
    cfg.token = user.get("token") or None
    if user.get("tokenFile"):
        cfg.token_file = str(path.parent / user["tokenFile"])
    has_basic = user.get("username") is not None or user.get("password") is not None
    if has_basic and (cfg.token or cfg.token_file):
        raise ConfigError(f"{where} sets both username/password and a token; choose one")
    if has_basic:
        cfg.username, cfg.password = str(user.get("username") or ""), str(user.get("password") or "")
    for kind in ("client-certificate", "client-key"):
        if user.get(f"{kind}-data"):
            blob = _b64(user[f"{kind}-data"], f"{where}: {kind}-data")
            if kind == "client-certificate":
                cfg.cert_data = blob
            else:
                cfg.key_data = blob
        elif user.get(kind):
            file = str(path.parent / user[kind])
            if kind == "client-certificate":
                cfg.cert_file = file
            else:
                cfg.key_file = file
    if bool(cfg.cert_data or cfg.cert_file) != bool(cfg.key_data or cfg.key_file):
        raise ConfigError(f"{where} has a client certificate without a key, or a key without a certificate")
    if user.get("exec"):
        cfg.exec = _exec(user["exec"], name, path, cluster, cfg)


def _exec(spec: Any, name: str, path: Path, cluster: dict[str, Any], cfg: KubeConfig) -> ExecPlugin:
    where = f"user {name!r} in {path}: exec"
    if not isinstance(spec, dict) or not spec.get("command"):
        raise ConfigError(f"{where} has no command")
    api = spec.get("apiVersion")
    if api not in EXEC_APIS:
        raise ConfigError(f"{where}: apiVersion {api!r} is not supported (use one of {', '.join(EXEC_APIS)})")
    mode = spec.get("interactiveMode") or ("" if api.endswith("/v1") else "IfAvailable")
    if mode not in ("Never", "IfAvailable", "Always"):
        raise ConfigError(f"{where}: interactiveMode must be Never, IfAvailable or Always (got {mode!r})")
    command = str(spec["command"])
    if os.sep in command and not os.path.isabs(command):  # kubectl: paths, not PATH names, are file-relative
        command = str(path.parent / command)
    env: dict[str, str] = {}
    for item in spec.get("env") or []:
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{where}: env entries need name and value")
        env[str(item["name"])] = str(item.get("value", ""))
    info = None
    if spec.get("provideClusterInfo"):
        info = {"server": cluster["server"], "insecure-skip-tls-verify": cfg.insecure}
        if cfg.ca_data:
            info["certificate-authority-data"] = base64.b64encode(cfg.ca_data).decode()
        if cfg.tls_server_name:
            info["tls-server-name"] = cfg.tls_server_name
        for ext in cluster.get("extensions") or []:
            if isinstance(ext, dict) and ext.get("name") == "client.authentication.k8s.io/exec":
                info["config"] = ext.get("extension")
    return ExecPlugin(command=command, args=[str(a) for a in spec.get("args") or []], env=env, api_version=api,
                      user=name, install_hint=str(spec.get("installHint") or ""), interactive_mode=mode,
                      cluster=info)


def _data_or_file(section: dict[str, Any], key: str, path: Path, what: str) -> bytes | None:
    if section.get(f"{key}-data"):
        return _b64(section[f"{key}-data"], f"{what} in {path}: {key}-data")
    if section.get(key):
        file = path.parent / section[key]
        try:
            return file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{what} in {path}: cannot read {key} {file}: {exc}") from None
    return None


def _read(file: str | None, what: str, source: str) -> bytes | None:
    if not file:
        return None
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {file} ({source}): {exc}") from None


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode("".join(str(value).split()), validate=True)
    except ValueError:
        raise ConfigError(f"{what} is not base64") from None


def _parse_time(value: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _get(doc: Any, key: str) -> Any:
    return doc.get(key) if isinstance(doc, dict) else None
