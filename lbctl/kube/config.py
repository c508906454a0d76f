"""Where the API server is and how to authenticate: kubeconfig files or the in-cluster service account."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(RuntimeError):
    pass


@dataclass
class KubeConfig:
    server: str
    ca_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None  # re-read on each use: projected tokens rotate
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    namespace: str = "default"

    def bearer(self) -> str | None:
        if self.token_file:
            return Path(self.token_file).read_text().strip()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        ctx = ssl.create_default_context(cadata=self.ca_data.decode() if self.ca_data else None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def load(kubeconfig: str | None = None, context: str | None = None) -> KubeConfig:
    """--kubeconfig, then $KUBECONFIG, then in-cluster, then ~/.kube/config."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        return from_kubeconfig(Path(path.split(os.pathsep)[0]), context)
    if (SA_DIR / "token").exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster()
    home = Path.home() / ".kube" / "config"
    if home.exists():
        return from_kubeconfig(home, context)
    raise ConfigError("no kubeconfig given (--kubeconfig or $KUBECONFIG) and not running in a cluster")


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
    )


def from_kubeconfig(path: Path, context: str | None = None) -> KubeConfig:
    try:
        doc: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from None
    ctx_name = context or doc.get("current-context")
    ctx = _named(doc.get("contexts"), ctx_name, "context", path)
    cluster = _named(doc.get("clusters"), ctx.get("cluster"), "cluster", path)
    user = _named(doc.get("users"), ctx.get("user"), "user", path) if ctx.get("user") else {}
    base = path.parent

    def data_or_file(section: dict[str, Any], key: str) -> bytes | None:
        if section.get(f"{key}-data"):
            return base64.b64decode(section[f"{key}-data"])
        if section.get(key):
            return (base / section[key]).read_bytes()
        return None

    cfg = KubeConfig(
        server=cluster["server"],
        ca_data=data_or_file(cluster, "certificate-authority"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=user.get("token"),
        token_file=str(base / user["tokenFile"]) if user.get("tokenFile") else None,
        namespace=ctx.get("namespace", "default"),
    )
    cert, key = data_or_file(user, "client-certificate"), data_or_file(user, "client-key")
    if cert and key:  # ssl wants files; keep them private to this process
        tmp = Path(tempfile.mkdtemp(prefix="lbctl-kube-"))
        for name, blob in (("tls.crt", cert), ("tls.key", key)):
            (tmp / name).write_bytes(blob)
            (tmp / name).chmod(0o600)
        cfg.cert_file, cfg.key_file = str(tmp / "tls.crt"), str(tmp / "tls.key")
    return cfg


def _named(items: Any, name: str | None, what: str, path: Path) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            return item.get(what) or {}
    raise ConfigError(f"kubeconfig {path} has no {what} named {name!r}")
