"""The node-local API server proxy kubespray runs on every node: nginx's stream module on 127.0.0.1:6443,
passing TCP through to the API servers, so kubelets and kube-proxies keep one address whichever control-plane
node serves them. The TLS session is end to end (client certificates reach the API server), unlike the HTTP
proxy the small-kubelet lab puts in front of its pods (lbctl.lab.apiproxy says why that one is HTTP).

Debian packages the stream module separately (libnginx-mod-stream); nginx-light alone cannot load it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import processes
from .processes import STATE

HOST, PORT = "127.0.0.1", 6443  # kubespray's loadbalancer_apiserver_localhost, loadbalancer_apiserver_port
MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
DIR = STATE / "nodeproxy"


def name(host: str) -> str:
    return f"nginx-proxy-{host}"


def config(host: str, upstreams: list[str]) -> str:
    servers = "".join(f"    server {u};\n" for u in upstreams)
    d = DIR / host
    # kubespray's nginx-proxy: least_conn over the API servers, a 1 s connect timeout (a dead API server is
    # skipped quickly), idle streams kept 10 min (watches).
    return f"""# lbctl lab: the node's localhost proxy to the API server, as kubespray's nginx-proxy
load_module {MODULE};
worker_processes 1;
pid {d / 'nginx.pid'};
error_log {processes.LOGS / (name(host) + '.log')} warn;
events {{ worker_connections 1024; }}
stream {{
  upstream kube_apiserver {{
    least_conn;
{servers}  }}
  server {{
    listen {HOST}:{PORT};
    proxy_pass kube_apiserver;
    proxy_timeout 10m;
    proxy_connect_timeout 1s;
  }}
}}
"""


def start(host: str, netns: str, upstreams: list[str]) -> None:
    """One nginx in `netns` (a lab daemon: pidfile, killed by `lab down`); raises with nginx's own complaint."""
    if not shutil.which("nginx") or not MODULE.exists():
        raise RuntimeError("nginx with its stream module is needed for the nodes' API proxy (Debian: apt-get "
                           "install nginx-light libnginx-mod-stream; tools/dev setup installs them)")
    d = DIR / host
    d.mkdir(parents=True, exist_ok=True)
    processes.LOGS.mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(config(host, upstreams))
    spawn_nginx(name(host), netns, conf)


def spawn_nginx(daemon: str, netns: str, conf: Path) -> None:
    """nginx -t, then nginx as the lab daemon `daemon` (also lbctl.lab.apiproxy's)."""
    log = str(processes.LOGS / f"{daemon}.log")
    res = subprocess.run(["ip", "netns", "exec", netns, "nginx", "-t", "-q", "-c", str(conf), "-e", log],
                         capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"nginx rejects {conf}: {res.stderr.strip()}")
    processes.spawn(daemon, netns, ["nginx", "-c", str(conf), "-e", log, "-g", "daemon off;"])
