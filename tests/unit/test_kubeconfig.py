"""kubeconfig loading as kubectl does it: real files, real openssl certificates, a real exec plugin process,
and a real TLS server on loopback that reports which credentials arrived."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from lbctl.kube import config
from lbctl.kube.client import Kube
from lbctl.kube.config import ConfigError


# --- fixtures -------------------------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(d: Path, name: str, cn: str, san: str | None = None) -> None:
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name, cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test-ca", "-days", "2", cwd=d)
    _issue(d, "server", "kube.test", "DNS:kube.test")
    _issue(d, "alice", "alice")
    _issue(d, "bob", "bob")
    return d


class Whoami:
    """An HTTPS server on loopback that answers with the Authorization header and the client cert's CN."""

    def __init__(self, pki: Path) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
        self.ctx.verify_mode = ssl.CERT_OPTIONAL
        self.ctx.load_cert_chain(str(pki / "server.crt"), str(pki / "server.key"))
        self.reject: set[str] = set()  # Authorization values to answer 401

    def app(self) -> web.Application:
        async def whoami(request: web.Request) -> web.Response:
            auth = request.headers.get("Authorization")
            if auth in self.reject:
                return web.json_response({"kind": "Status", "reason": "Unauthorized", "message": "no"}, status=401)
            cert = request.transport.get_extra_info("peercert") if request.transport else None
            cn = next((v for rdn in (cert or {}).get("subject", ()) for k, v in rdn if k == "commonName"), None)
            return web.json_response({"auth": auth, "cn": cn})
        app = web.Application()
        app.router.add_get("/whoami", whoami)
        return app


def ask(pki: Path, cfg: config.KubeConfig, times: int = 1, server: Whoami | None = None) -> list[dict[str, Any]]:
    """Run the server and `times` requests through lbctl's client; the kubeconfig's server is rewritten to it."""
    server = server or Whoami(pki)

    async def main() -> list[dict[str, Any]]:
        runner = web.AppRunner(server.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server.ctx)
        await site.start()
        port = runner.addresses[0][1]
        cfg.server = f"https://127.0.0.1:{port}"
        try:
            async with Kube(cfg, timeout=10) as kube:
                return [await kube.get("/whoami") for _ in range(times)]
        finally:
            await runner.cleanup()
    return asyncio.run(main())


def kubeconfig(path: Path, *, clusters: dict[str, dict] | None = None, users: dict[str, dict] | None = None,
               contexts: dict[str, dict] | None = None, current: str | None = None) -> Path:
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Config",
                           "clusters": [{"name": n, "cluster": c} for n, c in (clusters or {}).items()],
                           "users": [{"name": n, "user": u} for n, u in (users or {}).items()],
                           "contexts": [{"name": n, "context": c} for n, c in (contexts or {}).items()]}
    if current:
        doc["current-context"] = current
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def b64(p: Path) -> str:
    return base64.b64encode(p.read_bytes()).decode()


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


PLUGIN = r'''#!{python}
"""A real exec credential plugin: answers from its environment and logs each run."""
import json, os, sys, datetime as dt
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
log = os.environ["PLUGIN_LOG"]
runs = sum(1 for _ in open(log)) if os.path.exists(log) else 0
with open(log, "a") as f:
    f.write(json.dumps({{"info": info, "args": sys.argv[1:], "greeting": os.environ.get("GREETING")}}) + "\n")
status = {{}}
if os.environ.get("CERT"):
    status["clientCertificateData"] = open(os.environ["CERT"]).read()
    status["clientKeyData"] = open(os.environ["KEY"]).read()
else:
    status["token"] = "tok-%d" % (runs + 1)
ttl = os.environ.get("TTL")
if ttl:
    status["expirationTimestamp"] = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=float(ttl))
                                     ).strftime("%Y-%m-%dT%H:%M:%SZ")
print("plugin says hi", file=sys.stderr)
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}}))
'''


def plugin(tmp_path: Path) -> Path:
    p = tmp_path / "bin" / "kube-login"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(PLUGIN.format(python=sys.executable))
    p.chmod(0o755)
    return p


def runs(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "plugin.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def exec_user(tmp_path: Path, api: str = "client.authentication.k8s.io/v1", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"apiVersion": api, "command": str(plugin(tmp_path)), "args": ["--cluster", "one"],
                            "env": [{"name": "PLUGIN_LOG", "value": str(tmp_path / "plugin.log")},
                                    {"name": "GREETING", "value": "hello"}],
                            "interactiveMode": "Never"}
    spec.update(extra)
    env_extra = spec.pop("more_env", {})
    spec["env"] += [{"name": k, "value": v} for k, v in env_extra.items()]
    return {"exec": spec}


# --- merging and selection ------------------------------------------------------------------------------

def test_kubeconfig_list_merges_like_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None,
                                              pki: Path) -> None:
    a = kubeconfig(tmp_path / "a" / "config", clusters={"c": {"server": "https://a.example:6443",
                                                              "certificate-authority": "ca.crt"}},
                   users={"u": {"token": "from-a"}})
    (tmp_path / "a" / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    b = kubeconfig(tmp_path / "b" / "config",
                   clusters={"c": {"server": "https://b.example:6443"}, "other": {"server": "https://o.example"}},
                   users={"u": {"token": "from-b"}, "v": {"token": "only-b"}},
                   contexts={"main": {"cluster": "c", "user": "u", "namespace": "shop"},
                             "alt": {"cluster": "other", "user": "v"}}, current="main")
    c = kubeconfig(tmp_path / "c" / "config", contexts={"main": {"cluster": "other", "user": "v"}}, current="alt")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(a), str(tmp_path / "missing"), "", str(b), str(c)]))

    cfg = config.load()
    # a sets no current-context, b's wins over c's; cluster and user "c"/"u" come from a, the first to define them.
    assert cfg.server == "https://a.example:6443" and cfg.bearer() == "from-a" and cfg.namespace == "shop"
    assert cfg.ca_data == (pki / "ca.crt").read_bytes()  # relative to a/, the file that defined the cluster
    assert f"context 'main'" in cfg.source and str(b) in cfg.source

    alt = config.load(context="alt")
    assert (alt.server, alt.bearer(), alt.namespace) == ("https://o.example", "only-b", "default")


def test_first_current_context_wins_even_if_a_later_file_defines_the_context(tmp_path: Path, no_env: None,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    first = kubeconfig(tmp_path / "1", current="later")
    second = kubeconfig(tmp_path / "2", clusters={"k": {"server": "https://k.example"}}, users={"x": {"token": "t"}},
                        contexts={"later": {"cluster": "k", "user": "x"}, "mine": {"cluster": "k"}}, current="mine")
    monkeypatch.setenv("KUBECONFIG", f"{first}{os.pathsep}{second}")
    assert config.load().bearer() == "t"


def test_explicit_kubeconfig_is_one_file(tmp_path: Path, no_env: None) -> None:
    a = kubeconfig(tmp_path / "a", clusters={"k": {"server": "https://k.example"}},
                   contexts={"x": {"cluster": "k"}}, current="x")
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(f"{a}{os.pathsep}{a}")
    assert config.load(str(a)).server == "https://k.example"


def test_selection_errors_name_what_is_missing(tmp_path: Path, no_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    k = kubeconfig(tmp_path / "k", clusters={"k": {"server": "https://k.example"}},
                   contexts={"one": {"cluster": "k", "user": "ghost"}, "two": {"cluster": "nope"}})
    with pytest.raises(ConfigError, match=r"no current-context in .*pass --context \(contexts: one, two\)"):
        config.load(str(k))
    with pytest.raises(ConfigError, match=r"no context named 'three' in .*\(contexts: one, two\)"):
        config.load(str(k), "three")
    with pytest.raises(ConfigError, match="user 'ghost' not found"):
        config.load(str(k), "one")
    with pytest.raises(ConfigError, match="cluster 'nope' not found"):
        config.load(str(k), "two")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match="none of the kubeconfig files in \\$KUBECONFIG exist"):
        config.load()
    (tmp_path / "bad").write_text("clusters: [oops")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        config.load(str(tmp_path / "bad"))


# --- users ----------------------------------------------------------------------------------------------

def test_token_file_is_relative_to_its_file_and_reread(tmp_path: Path, no_env: None) -> None:
    k = kubeconfig(tmp_path / "dir" / "config", clusters={"k": {"server": "https://k.example"}},
                   users={"u": {"tokenFile": "token"}}, contexts={"x": {"cluster": "k", "user": "u"}}, current="x")
    (tmp_path / "dir" / "token").write_text("first\n")
    cfg = config.load(str(k))
    assert cfg.authorization() == "Bearer first"
    (tmp_path / "dir" / "token").write_text("rotated\n")
    assert cfg.authorization() == "Bearer rotated"


def test_basic_auth(tmp_path: Path, no_env: None) -> None:
    k = kubeconfig(tmp_path / "k", clusters={"k": {"server": "https://k.example"}},
                   users={"u": {"username": "admin", "password": "s3cret:x"}},
                   contexts={"x": {"cluster": "k", "user": "u"}}, current="x")
    assert config.load(str(k)).authorization() == "Basic " + base64.b64encode(b"admin:s3cret:x").decode()


def test_auth_provider_is_refused_with_what_to_use(tmp_path: Path, no_env: None) -> None:
    k = kubeconfig(tmp_path / "k", clusters={"k": {"server": "https://k.example"}},
                   users={"u": {"auth-provider": {"name": "oidc", "config": {}}}},
                   contexts={"x": {"cluster": "k", "user": "u"}}, current="x")
    with pytest.raises(ConfigError, match=r"auth-provider 'oidc'.*not support.*exec credential plugin.*kubelogin"):
        config.load(str(k))


def test_client_cert_files_relative_to_the_defining_file(tmp_path: Path, no_env: None, pki: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    users = tmp_path / "users"
    users.mkdir()
    for f in ("alice.crt", "alice.key"):
        (users / f).write_bytes((pki / f).read_bytes())
    u = kubeconfig(users / "config", users={"alice": {"client-certificate": "alice.crt", "client-key": "alice.key"}})
    c = kubeconfig(tmp_path / "clusters" / "config", current="x",
                   clusters={"k": {"server": "https://unused", "certificate-authority-data": b64(pki / "ca.crt"),
                                   "tls-server-name": "kube.test"}},
                   contexts={"x": {"cluster": "k", "user": "alice"}})
    monkeypatch.setenv("KUBECONFIG", f"{c}{os.pathsep}{u}")
    [got] = ask(pki, config.load())
    assert got == {"auth": None, "cn": "alice"}


def test_embedded_client_key_never_touches_disk(tmp_path: Path, no_env: None, pki: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)
    k = kubeconfig(tmp_path / "k" / "config", current="x",
                   clusters={"k": {"server": "https://unused", "certificate-authority-data": b64(pki / "ca.crt"),
                                   "tls-server-name": "kube.test"}},
                   users={"bob": {"client-certificate-data": b64(pki / "bob.crt"),
                                  "client-key-data": b64(pki / "bob.key")}},
                   contexts={"x": {"cluster": "k", "user": "bob"}})
    before = {p for p in Path("/dev/shm").iterdir()} if Path("/dev/shm").is_dir() else set()
    cfg = config.load(str(k))
    [got] = ask(pki, cfg)
    assert got["cn"] == "bob"
    assert list(scratch.iterdir()) == [] and sorted(p.name for p in (tmp_path / "k").iterdir()) == ["config"]
    after = {p for p in Path("/dev/shm").iterdir()} if Path("/dev/shm").is_dir() else set()
    key = (pki / "bob.key").read_bytes()
    assert not any(p.is_file() and key in p.read_bytes() for p in after - before)


def test_bad_client_key_is_named(tmp_path: Path, no_env: None, pki: Path) -> None:
    k = kubeconfig(tmp_path / "k", current="x", clusters={"k": {"server": "https://k.example"}},
                   users={"bob": {"client-certificate-data": b64(pki / "bob.crt"),
                                  "client-key-data": b64(pki / "alice.key")}},
                   contexts={"x": {"cluster": "k", "user": "bob"}})
    with pytest.raises(ConfigError, match="client certificate/key of context 'x'.*do not load"):
        config.load(str(k))


def test_tls_server_name_is_what_the_certificate_is_checked_against(tmp_path: Path, no_env: None, pki: Path) -> None:
    cluster = {"server": "https://unused", "certificate-authority": str(pki / "ca.crt")}
    k = kubeconfig(tmp_path / "k", current="x", clusters={"k": cluster}, users={"u": {"token": "t"}},
                   contexts={"x": {"cluster": "k", "user": "u"}})
    with pytest.raises(Exception, match="(?i)certificate"):  # 127.0.0.1 is not in the server's certificate
        ask(pki, config.load(str(k)))
    cluster["tls-server-name"] = "kube.test"
    kubeconfig(tmp_path / "k", current="x", clusters={"k": cluster}, users={"u": {"token": "t"}},
               contexts={"x": {"cluster": "k", "user": "u"}})
    assert ask(pki, config.load(str(k)))[0]["auth"] == "Bearer t"


# --- exec plugins ---------------------------------------------------------------------------------------

def exec_kubeconfig(tmp_path: Path, pki: Path, user: dict[str, Any], **cluster: Any) -> Path:
    c = {"server": "https://unused", "certificate-authority-data": b64(pki / "ca.crt"), "tls-server-name": "kube.test",
         **cluster}
    return kubeconfig(tmp_path / "kc" / "config", current="x", clusters={"k": c}, users={"sso": user},
                      contexts={"x": {"cluster": "k", "user": "sso"}})


def test_exec_plugin_token_is_cached_until_it_expires(tmp_path: Path, no_env: None, pki: Path) -> None:
    k = exec_kubeconfig(tmp_path, pki, exec_user(tmp_path, more_env={"TTL": "3600"}, provideClusterInfo=True),
                        extensions=[{"name": "client.authentication.k8s.io/exec", "extension": {"audience": "lb"}}])
    cfg = config.load(str(k))
    assert runs(tmp_path) == []  # nothing runs until a credential is needed
    got = ask(pki, cfg, times=3)
    assert [g["auth"] for g in got] == ["Bearer tok-1"] * 3
    [run] = runs(tmp_path)
    assert run["args"] == ["--cluster", "one"] and run["greeting"] == "hello"
    spec = run["info"]["spec"]
    assert run["info"]["apiVersion"] == "client.authentication.k8s.io/v1" and spec["interactive"] is False
    assert spec["cluster"]["server"] == "https://unused"  # as the kubeconfig says
    assert spec["cluster"]["certificate-authority-data"] == b64(pki / "ca.crt")
    assert spec["cluster"]["tls-server-name"] == "kube.test" and spec["cluster"]["config"] == {"audience": "lb"}
    assert cfg.exec is not None and cfg.exec.stale(dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2))


def test_expired_exec_token_is_fetched_again_per_request(tmp_path: Path, no_env: None, pki: Path) -> None:
    # v1beta1, no cluster info, an expiry already in the past: every request must run the plugin again.
    k = exec_kubeconfig(tmp_path, pki, exec_user(tmp_path, api="client.authentication.k8s.io/v1beta1",
                                                 interactiveMode=None, more_env={"TTL": "-1"}))
    got = ask(pki, config.load(str(k)), times=3)
    assert [g["auth"] for g in got] == ["Bearer tok-1", "Bearer tok-2", "Bearer tok-3"]
    assert all("cluster" not in r["info"]["spec"] for r in runs(tmp_path))
    assert runs(tmp_path)[0]["info"]["apiVersion"] == "client.authentication.k8s.io/v1beta1"


def test_a_rejected_exec_token_is_replaced_once(tmp_path: Path, no_env: None, pki: Path) -> None:
    k = exec_kubeconfig(tmp_path, pki, exec_user(tmp_path))  # no expiry: cached until the server says 401
    server = Whoami(pki)
    server.reject.add("Bearer tok-1")
    assert [g["auth"] for g in ask(pki, config.load(str(k)), times=2, server=server)] == ["Bearer tok-2"] * 2


def test_exec_plugin_client_certificate(tmp_path: Path, no_env: None, pki: Path) -> None:
    k = exec_kubeconfig(tmp_path, pki, exec_user(tmp_path, more_env={"CERT": str(pki / "alice.crt"),
                                                                    "KEY": str(pki / "alice.key")}))
    assert ask(pki, config.load(str(k)))[0] == {"auth": None, "cn": "alice"}


def test_exec_plugin_relative_command_and_errors(tmp_path: Path, no_env: None, pki: Path) -> None:
    plugin(tmp_path / "kc")  # kc/bin/kube-login, next to the kubeconfig
    user = exec_user(tmp_path)
    user["exec"]["command"] = "./bin/kube-login"
    k = exec_kubeconfig(tmp_path, pki, user)
    assert config.load(str(k)).bearer() == "tok-1"

    user["exec"].update(command="kube-login-not-installed", installHint="Install it with: apt install kube-login")
    k = exec_kubeconfig(tmp_path, pki, user)
    with pytest.raises(ConfigError, match=r"'kube-login-not-installed' of user 'sso': command not found\. "
                                          r"Install it with: apt install kube-login"):
        config.load(str(k)).bearer()

    user["exec"].update(command=sys.executable, args=["-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])
    with pytest.raises(ConfigError, match="exited with 3: boom"):
        config.load(str(exec_kubeconfig(tmp_path, pki, user))).bearer()

    user["exec"].update(args=["-c", "print('{\"kind\": \"ExecCredential\", \"apiVersion\": "
                                    "\"client.authentication.k8s.io/v1beta1\", \"status\": {\"token\": \"x\"}}')"])
    with pytest.raises(ConfigError, match="answered apiVersion 'client.authentication.k8s.io/v1beta1', configured"):
        config.load(str(exec_kubeconfig(tmp_path, pki, user))).bearer()

    del user["exec"]["interactiveMode"]
    with pytest.raises(ConfigError, match="interactiveMode must be"):
        config.load(str(exec_kubeconfig(tmp_path, pki, user)))
    user["exec"].update(interactiveMode="Never", apiVersion="client.authentication.k8s.io/v1alpha1")
    with pytest.raises(ConfigError, match="v1alpha1' is not supported"):
        config.load(str(exec_kubeconfig(tmp_path, pki, user)))


# --- in-cluster -----------------------------------------------------------------------------------------

@pytest.fixture
def sa_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki: Path) -> Iterator[Path]:
    d = tmp_path / "sa"
    d.mkdir()
    (d / "token").write_text("sa-token\n")
    (d / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    (d / "namespace").write_text("lbctl-system")
    monkeypatch.setattr(config, "SA_DIR", d)
    yield d


def test_in_cluster_when_nothing_else_is_given(no_env: None, sa_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    cfg = config.load()
    assert (cfg.server, cfg.namespace, cfg.authorization(), cfg.in_cluster) == (
        "https://[fd00::1]:6443", "lbctl-system", "Bearer sa-token", True)
    (sa_dir / "token").write_text("rotated")
    assert cfg.authorization() == "Bearer rotated"
