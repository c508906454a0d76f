"""The API server as the pods meet it with faults on: an HTTP load balancer in front of it.

On the lab's real cluster the pods reach the API server through the `kubernetes` Service. With faults on
(lbctl.lab.realfaults) that Service's endpoint is one nginx in the control-plane namespace (`start_front`: an
API server behind an HTTP load balancer, which kubespray supports), presenting the API server's own
certificate (its names cover the Service), with the fault injector (lbctl.lab.faultproxy) behind it.

Why HTTP and not a TCP proxy: the faults the lab must show include answers only an HTTP proxy gives (502 while
the API server restarts, 429 with Retry-After and 5xx from the proxy) and a watch stream cut in the middle of
a line, which needs a hop that sees plaintext. So nginx terminates TLS, proxies over HTTP/1.1 with buffering
off and hour-long read timeouts (watches stream through it, bearer tokens pass as headers) to the injector,
which dials the API server with TLS.

Modes a test can switch nginx to (`reload`): `ok`; `untrusted` (a serving certificate from another CA:
every new handshake fails verification); `plaintext` (the listener speaks HTTP: a TLS client hello gets an
HTTP 400 back, garbage to the client). A reload closes the old workers' connections after 1 s
(worker_shutdown_timeout), so every daemon reconnects and meets the new mode.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

from . import nodeproxy, processes
from .faultproxy import PORT as FAULT_PORT
from .processes import STATE
from .topology import CP_IP4, CP_NS

PORT = 6443  # kubespray's loadbalancer_apiserver_port: localhost:6443
HOST = "127.0.0.1"
DIR = STATE / "apiproxy"
CA = DIR / "ca.crt"  # what the pods trust (their ServiceAccount ca.crt)
MODES = ("ok", "untrusted", "plaintext")
# The API server's self-signed certificate names these (never the localhost name the pods dial).
UPSTREAM_NAME = "kubernetes.default.svc"
FRONT, FRONT_PORT = "front", 6444  # the real cluster's API server front (start_front)


def name(host: str) -> str:
    return f"nginx-{host}"


def make_certs() -> None:
    """The lab's proxy CA and a serving cert for 127.0.0.1/localhost; plus an untrusted one for TLS faults.

    Valid from a day ago, as a cluster's long-lived certificates are (and as the API server's own self-signed
    one is, an hour back): a node whose clock is behind must still trust its local proxy."""
    DIR.mkdir(parents=True, exist_ok=True, mode=0o700)

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    now = dt.datetime.now(dt.timezone.utc)
    dates = ["-startdate", (now - dt.timedelta(days=1)).strftime("%Y%m%d%H%M%SZ"),
             "-enddate", (now + dt.timedelta(days=2)).strftime("%Y%m%d%H%M%SZ")]
    for cert, ca in (("ca", "ca"), ("rogue-ca", "rogue-ca"), ("serving", "ca"), ("untrusted", "rogue-ca")):
        db = DIR / f"{ca}.db"
        db.mkdir(exist_ok=True)
        (db / "index.txt").touch()
        if not (db / "serial").exists():
            (db / "serial").write_text(secrets.token_hex(8) + "\n")
        cfg = DIR / f"{ca}.cnf"
        cfg.write_text(_CA_CONFIG.format(db=db))
        self_signed = cert == ca
        ossl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj",
             f"/CN=lbctl-lab-{ca}" if self_signed else "/CN=localhost",
             "-keyout", str(DIR / f"{cert}.key"), "-out", str(DIR / f"{cert}.csr"))
        signer = ["-selfsign"] if self_signed else ["-cert", str(DIR / f"{ca}.crt")]
        ossl("ca", "-batch", "-notext", "-config", str(cfg), *signer, "-keyfile", str(DIR / f"{ca}.key"),
             "-in", str(DIR / f"{cert}.csr"), "-out", str(DIR / f"{cert}.crt"), *dates,
             "-extensions", "v3_ca" if self_signed else "v3_server")


_CA_CONFIG = """[ ca ]
default_ca = lab
[ lab ]
database = {db}/index.txt
new_certs_dir = {db}
serial = {db}/serial
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
[ v3_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[ v3_server ]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
"""


def config(host: str, upstream: str, mode: str = "ok", listen: str = f"{HOST}:{PORT}",
           serving: Path = DIR / "serving") -> str:
    """nginx.conf for one proxy. upstream: "https://IP:PORT" (the API server) or "http://IP:PORT"; serving: the
    certificate and key (`serving`.crt/.key) it presents in mode ok."""
    if mode not in MODES:
        raise ValueError(f"nginx mode must be one of {', '.join(MODES)}")
    d = DIR / host
    cert = DIR / "untrusted" if mode == "untrusted" else serving
    ssl = "" if mode == "plaintext" else " ssl"
    tls = "" if mode == "plaintext" else (f"    ssl_certificate {cert}.crt;\n"
                                          f"    ssl_certificate_key {cert}.key;\n")
    verify = (f"      proxy_ssl_trusted_certificate {STATE / 'cp' / 'apiserver.crt'};\n"
              "      proxy_ssl_verify on;\n"
              f"      proxy_ssl_name {UPSTREAM_NAME};\n") if upstream.startswith("https") else ""
    return f"""# lbctl lab: proxy to the API server ({mode})
worker_processes 1;
worker_shutdown_timeout 1s;
pid {d / 'nginx.pid'};
error_log {processes.LOGS / (name(host) + '.log')} warn;
events {{ worker_connections 1024; }}
http {{
  log_format lab '$msec $status $request_method "$request_uri" upstream=$upstream_status $request_time';
  access_log {processes.LOGS / (name(host) + '.access.log')} lab;
  client_max_body_size 16m;
  server {{
    listen {listen}{ssl};
{tls}    location / {{
      proxy_pass {upstream};
      proxy_http_version 1.1;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_connect_timeout 2s;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
{verify}    }}
  }}
}}
"""


def start_front(serving: Path) -> None:
    """The real cluster's API server front (lbctl.lab.realfaults): nginx in the control-plane namespace on
    CP_IP4:FRONT_PORT with the API server's own certificate and key (`serving`.crt/.key), the fault injector
    behind it. The `kubernetes` Service's endpoint is this listener."""
    make_certs()  # the untrusted certificate for TLS faults
    launch(FRONT, CP_NS, f"http://{CP_IP4}:{FAULT_PORT}", f"{CP_IP4}:{FRONT_PORT}", serving)


def launch(host: str, netns: str, upstream: str, listen: str = f"{HOST}:{PORT}",
           serving: Path = DIR / "serving") -> None:
    """One nginx (a lab daemon: pidfile, killed by `lab down`); what it was started with is kept beside its
    config so `reload` rewrites the same proxy in another mode."""
    if not shutil.which("nginx"):
        raise RuntimeError("nginx not found: the lab runs it as the pods' API proxy (Debian: apt-get install "
                           "nginx-light; tools/dev setup installs it)")
    processes.LOGS.mkdir(parents=True, exist_ok=True)  # nginx opens its logs before anything else runs
    (DIR / host).mkdir(parents=True, exist_ok=True)
    spec = {"upstream": upstream, "listen": listen, "serving": str(serving)}
    (DIR / host / "spec.json").write_text(json.dumps(spec))
    conf = DIR / host / "nginx.conf"
    conf.write_text(_config(host))
    nodeproxy.spawn_nginx(name(host), netns, conf)


def _config(host: str, mode: str = "ok") -> str:
    spec = json.loads((DIR / host / "spec.json").read_text())
    return config(host, spec["upstream"], mode, spec["listen"], Path(spec["serving"]))


def hosts() -> list[str]:
    return sorted(p.name for p in DIR.iterdir() if (p / "nginx.conf").exists()) if DIR.is_dir() else []


def reload(mode: str, only: list[str] | None = None) -> None:
    """Rewrite every nginx's config for `mode` and SIGHUP it (a graceful reload, as an operator would)."""
    for host in only or hosts():
        (DIR / host / "nginx.conf").write_text(_config(host, mode))
        pid = processes.pid_of(name(host))
        if not (pid and processes.alive(pid)):
            raise RuntimeError(f"{name(host)} is not running")
        os.kill(pid, signal.SIGHUP)  # the master only: it starts new workers, the old ones finish
