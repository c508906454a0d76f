"""The lab's kubelet: runs the pods of the installed chart's DaemonSets and Deployments as processes.

What the API server holds after `helm install` is the only input: for each container it resolves what a
kubelet would — env (value, fieldRef, secretKeyRef, configMapKeyRef, $(VAR) expansion), volumes (secret,
configMap, emptyDir, projected, hostPath) written as files on tmpfs, a ServiceAccount token from the
TokenRequest API with ca.crt and namespace at the in-cluster path, KUBERNETES_SERVICE_HOST/PORT — and the
container's securityContext, which lbctl.lab.podexec applies. A chart change that breaks a daemon breaks the lab.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import processes
from .api import LabApi
from .processes import STATE
from .topology import CP_IP4, CP_NS, Host, Topology

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # holds lbctl/, speaker/, controller/

PODS = STATE / "pods"
SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
API_PORT = 6443
TOKEN_SECONDS = 12 * 3600  # outlives any lab session; a kubelet would rotate it
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PodError(RuntimeError):
    pass


@dataclass
class Mount:
    source: str
    target: str
    read_only: bool


@dataclass
class PodRun:
    """One container reduced to a process; saved as JSON so it can be restarted exactly (tests, demo)."""

    name: str  # process name in the lab: controller, speaker-node1
    pod: str
    netns: str
    host_ip: str
    argv: list[str]
    env: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    uid: int = 0
    gid: int = 0
    caps: list[str] = field(default_factory=list)
    no_new_privs: bool = False
    read_only_root: bool = False
    ready_url: str | None = None
    live_url: str | None = None

    @property
    def spec_file(self) -> Path:
        return PODS / self.pod / "run.json"

    def save(self) -> None:
        self.spec_file.write_text(json.dumps(asdict(self), indent=1))
        self.spec_file.chmod(0o600)

    @classmethod
    def load(cls, pod: str) -> PodRun:
        doc = json.loads((PODS / pod / "run.json").read_text())
        doc["mounts"] = [Mount(**m) for m in doc["mounts"]]
        return cls(**doc)


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, $$ escapes, unknown references stay."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


class Kubelet:
    def __init__(self, api: LabApi, namespace: str, ca_file: Path,
                 service: tuple[str, int] = (CP_IP4, API_PORT)) -> None:
        self.api, self.namespace, self.ca = api, namespace, ca_file.read_bytes()
        self.service = service  # KUBERNETES_SERVICE_HOST/PORT: the API server, or the localhost proxy before it
        self._objects: dict[str, dict[str, Any]] = {}

    def _object(self, kind: str, name: str, optional: bool = False) -> dict[str, Any] | None:
        key = f"{kind}/{name}"
        if key not in self._objects:
            [r] = self.api.batch([{"method": "GET", "path": f"/api/v1/namespaces/{self.namespace}/{kind}/{name}"}])
            if r["status"] == 404 and optional:
                return None
            if r["status"] != 200:
                raise PodError(f"{kind} {self.namespace}/{name}: HTTP {r['status']}: {r['body'].get('message')}")
            self._objects[key] = r["body"]
        return self._objects[key]

    def _data(self, kind: str, name: str, optional: bool) -> dict[str, bytes]:
        obj = self._object(kind, name, optional)
        if obj is None:
            return {}
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        return {k: v.encode() for k, v in (obj.get("data") or {}).items()}

    def token(self, sa: str, seconds: int = TOKEN_SECONDS, audience: str | None = None) -> str:
        body: dict[str, Any] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": {"expirationSeconds": seconds}}
        if audience:
            body["spec"]["audiences"] = [audience]
        [r] = self.api.batch([{"method": "POST", "body": body,
                               "path": f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token"}])
        if r["status"] != 201:
            raise PodError(f"TokenRequest for ServiceAccount {self.namespace}/{sa}: HTTP {r['status']}: "
                           f"{r['body'].get('message')}")
        return str(r["body"]["status"]["token"])

    # --- one pod ---
    def run(self, pod: str, name: str, pod_spec: dict[str, Any], node: str, netns: str, host_ip: str,
            labels: dict[str, str]) -> list[PodRun]:
        root = PODS / pod
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fields = {"metadata.name": pod, "metadata.namespace": self.namespace, "spec.nodeName": node,
                  "spec.serviceAccountName": pod_spec.get("serviceAccountName", "default"),
                  "status.hostIP": host_ip, "status.podIP": host_ip, "status.podIPs": host_ip,
                  **{f"metadata.labels['{k}']": v for k, v in labels.items()}}
        pod_ctx = pod_spec.get("securityContext") or {}
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        containers = pod_spec.get("containers") or []
        runs = []
        for c in containers:
            cname = name if len(containers) == 1 else f"{name}-{c['name']}"
            runs.append(self._container(pod, cname, c, pod_spec, pod_ctx, volumes, fields, root, netns, host_ip))
        return runs

    def _container(self, pod: str, name: str, c: dict[str, Any], pod_spec: dict[str, Any],
                   pod_ctx: dict[str, Any], volumes: dict[str, Any], fields: dict[str, str], root: Path,
                   netns: str, host_ip: str) -> PodRun:
        ctx = {**pod_ctx, **(c.get("securityContext") or {})}
        uid, gid = int(ctx.get("runAsUser", 0)), int(ctx.get("runAsGroup", ctx.get("runAsUser", 0)))
        # PATH finds the chart's command in this Python's environment; the rest is what the image sets.
        env = {"PATH": f"{Path(sys.executable).parent}:{DEFAULT_PATH}", "HOME": "/",
               "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "KUBERNETES_SERVICE_HOST": self.service[0], "KUBERNETES_SERVICE_PORT": str(self.service[1]),
               # The daemons run the code the lab was launched with (a git worktree, not whatever tree the
               # environment's editable install points at).
               "PYTHONPATH": str(SOURCE_ROOT)}
        for e in c.get("env") or []:
            env[e["name"]] = self._env_value(e, fields, env, name)
        argv = [expand(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
        if not argv:
            raise PodError(f"{name}: the container has no command: the lab runs the chart's command, not an image's")
        mounts = []
        for vm in c.get("volumeMounts") or []:
            vol = volumes.get(vm["name"])
            if vol is None:
                raise PodError(f"{name}: volumeMount {vm['name']!r} names no volume of the pod")
            src = self._volume(vol, root / "volumes" / vm["name"], uid, gid, pod_spec)
            if vm.get("subPath"):
                src = src / vm["subPath"]
            mounts.append(Mount(str(src), vm["mountPath"], bool(vm.get("readOnly"))))
        sa = pod_spec.get("serviceAccountName", "default")
        if pod_spec.get("automountServiceAccountToken", True) and not any(m.target == SA_PATH for m in mounts):
            sa_dir = root / "serviceaccount"
            self._write(sa_dir, {"token": self.token(sa).encode(), "ca.crt": self.ca,
                                 "namespace": self.namespace.encode()}, 0o644, uid, gid)
            mounts.append(Mount(str(sa_dir), SA_PATH, True))
        caps = (ctx.get("capabilities") or {})
        if "ALL" not in (caps.get("drop") or []):
            raise PodError(f"{name}: the lab runs only containers that drop ALL capabilities (least privilege)")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        return PodRun(name=name, pod=pod, netns=netns, host_ip=host_ip, argv=argv, env=env, mounts=mounts,
                      uid=uid, gid=gid, caps=[x.upper() for x in caps.get("add") or []],
                      no_new_privs=ctx.get("allowPrivilegeEscalation") is False,
                      read_only_root=bool(ctx.get("readOnlyRootFilesystem")),
                      ready_url=_probe_url(c.get("readinessProbe"), ports, host_ip),
                      live_url=_probe_url(c.get("livenessProbe"), ports, host_ip))

    def _env_value(self, e: dict[str, Any], fields: dict[str, str], env: dict[str, str], name: str) -> str:
        if "value" in e:
            return expand(str(e["value"]), env)
        src = e.get("valueFrom") or {}
        if "fieldRef" in src:
            path = src["fieldRef"]["fieldPath"]
            if path not in fields:
                raise PodError(f"{name}: env {e['name']}: fieldRef {path} is not supported by the lab")
            return fields[path]
        for key, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if key in src:
                ref = src[key]
                data = self._data(kind, ref["name"], bool(ref.get("optional")))
                if ref["key"] not in data:
                    if ref.get("optional"):
                        return ""
                    raise PodError(f"{name}: env {e['name']}: {kind} {ref['name']} has no key {ref['key']!r}")
                return data[ref["key"]].decode()
        raise PodError(f"{name}: env {e['name']}: unsupported valueFrom {sorted(src)}")

    def _volume(self, vol: dict[str, Any], path: Path, uid: int, gid: int, pod_spec: dict[str, Any]) -> Path:
        if "emptyDir" in vol:
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, uid, gid)
            return path
        if "hostPath" in vol:
            return Path(vol["hostPath"]["path"])
        files: dict[str, bytes] = {}
        mode = 0o644
        if "secret" in vol or "configMap" in vol:
            kind, src = ("secrets", vol["secret"]) if "secret" in vol else ("configmaps", vol["configMap"])
            files = _select(self._data(kind, src.get("secretName") or src.get("name"), bool(src.get("optional"))),
                            src.get("items"))
            mode = int(src.get("defaultMode", 0o644))
        elif "projected" in vol:
            mode = int(vol["projected"].get("defaultMode", 0o644))
            for s in vol["projected"].get("sources") or []:
                if "serviceAccountToken" in s:
                    t = s["serviceAccountToken"]
                    files[t["path"]] = self.token(pod_spec.get("serviceAccountName", "default"),
                                                  int(t.get("expirationSeconds", TOKEN_SECONDS)),
                                                  t.get("audience")).encode()
                elif "secret" in s or "configMap" in s:
                    kind, src = ("secrets", s["secret"]) if "secret" in s else ("configmaps", s["configMap"])
                    files.update(_select(self._data(kind, src["name"], bool(src.get("optional"))), src.get("items")))
                else:
                    raise PodError(f"volume {vol['name']}: projected source {sorted(s)} is not supported by the lab")
        else:
            raise PodError(f"volume {vol['name']}: type {sorted(set(vol) - {'name'})} is not supported by the lab")
        self._write(path, files, mode, uid, gid)
        return path

    @staticmethod
    def _write(path: Path, files: dict[str, bytes], mode: int, uid: int, gid: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, gid)
        for rel, blob in files.items():
            f = path / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(blob)
            os.chown(f, uid, gid)
            f.chmod(mode)


def _select(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return data
    return {i.get("path", i["key"]): data[i["key"]] for i in items if i["key"] in data}


def _probe_url(probe: dict[str, Any] | None, ports: dict[str | None, int], host_ip: str) -> str | None:
    get = (probe or {}).get("httpGet")
    if not get:
        return None
    port = get["port"]
    port = ports.get(port, port) if isinstance(port, str) else port
    return f"http://{get.get('host') or host_ip}:{port}{get.get('path', '/')}"


# --- scheduling: which pods the workloads ask for on this lab ---
def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _tolerated(taints: list[dict[str, Any]], tolerations: list[dict[str, Any]]) -> bool:
    def ok(t: dict[str, Any]) -> bool:
        return any((tol.get("operator") == "Exists" and (not tol.get("key") or tol.get("key") == t["key"]))
                   or (tol.get("key") == t["key"] and tol.get("value", "") == t.get("value", ""))
                   for tol in tolerations if not tol.get("effect") or tol.get("effect") == t.get("effect"))
    return all(ok(t) for t in taints if t.get("effect") in ("NoSchedule", "NoExecute"))


# What the DaemonSet controller adds to every daemon pod, so daemons run on nodes that are not (yet) Ready.
DAEMONSET_TOLERATIONS = [{"key": f"node.kubernetes.io/{k}", "operator": "Exists"} for k in (
    "not-ready", "unreachable", "disk-pressure", "memory-pressure", "pid-pressure", "unschedulable",
    "network-unavailable")]


def plan(api: LabApi, namespace: str, topo: Topology) -> list[tuple[str, str, dict[str, Any], Host | None]]:
    """(pod name, process name, pod template, node host or None for the control plane) for every pod the
    release's DaemonSets (one per matching Node) and Deployments (the first replica in the control-plane
    namespace, the others on the nodes) ask for."""
    ds, deploy, nodes = (r["body"] for r in api.batch([
        {"method": "GET", "path": f"/apis/apps/v1/namespaces/{namespace}/daemonsets"},
        {"method": "GET", "path": f"/apis/apps/v1/namespaces/{namespace}/deployments"},
        {"method": "GET", "path": "/api/v1/nodes"}]))
    by_name = {n["metadata"]["name"]: n for n in nodes.get("items") or []}
    out: list[tuple[str, str, dict[str, Any], Host | None]] = []
    for d in ds.get("items") or []:
        tmpl = d["spec"]["template"]
        comp = (tmpl["metadata"].get("labels") or {}).get("app.kubernetes.io/component") or d["metadata"]["name"]
        for h in topo.node_hosts:
            node = by_name.get(h.name) or {}
            labels = (node.get("metadata") or {}).get("labels") or {}
            if _matches(tmpl["spec"].get("nodeSelector") or {}, labels) and _tolerated(
                    (node.get("spec") or {}).get("taints") or [],
                    (tmpl["spec"].get("tolerations") or []) + DAEMONSET_TOLERATIONS):
                out.append((f"{d['metadata']['name']}-{h.name}", f"{comp}-{h.name}", tmpl, h))
    for d in deploy.get("items") or []:
        tmpl = d["spec"]["template"]
        comp = (tmpl["metadata"].get("labels") or {}).get("app.kubernetes.io/component") or d["metadata"]["name"]
        for i in range(int(d["spec"].get("replicas", 1))):
            # More replicas go to the nodes, as a scheduler would spread them (and their ports never clash).
            host = None if i == 0 else topo.node_hosts[(i - 1) % len(topo.node_hosts)]
            out.append((f"{d['metadata']['name']}-{i}", comp if i == 0 else f"{comp}-{i}", tmpl, host))
    return out


def launch(api: LabApi, namespace: str, topo: Topology, ca_file: Path,
           want: Callable[[str], bool] = lambda _: True,
           service: tuple[str, int] = (CP_IP4, API_PORT)) -> list[PodRun]:
    """Resolve and start every pod of the release whose process name is wanted."""
    kubelet = Kubelet(api, namespace, ca_file, service)
    runs = []
    for pod, name, tmpl, host in plan(api, namespace, topo):
        if not want(name):
            continue
        netns, ip, node = (host.netns, host.ip4, host.name) if host else (CP_NS, CP_IP4, "cp")
        for run in kubelet.run(pod, name, tmpl["spec"], node, netns, ip, tmpl["metadata"].get("labels") or {}):
            run.save()
            start(run)
            runs.append(run)
    return runs


def podexec_argv(run: PodRun, spec_file: Path | None = None) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", sys.executable, "-m", "lbctl.lab.podexec",
            str(spec_file or run.spec_file)]


def start(run: PodRun, extra_env: dict[str, str] | None = None) -> int:
    """Start `run`; with extra_env, or a run that differs from the saved one (tests: a faked clock, another
    keyring), from a one-off spec file, so the saved spec stays what the chart asked for."""
    if extra_env:
        run = replace(run, env={**run.env, **extra_env})
    spec = run.spec_file
    if not spec.is_file() or PodRun.load(run.pod) != run:
        spec = spec.with_name("run-variant.json")
        fd = os.open(spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(run), out, indent=1)
    return processes.spawn(run.name, run.netns, podexec_argv(run, spec))


def saved() -> dict[str, PodRun]:
    """Process name -> its saved PodRun, for restarts."""
    out = {}
    for f in sorted(PODS.glob("*/run.json")) if PODS.is_dir() else []:
        run = PodRun.load(f.parent.name)
        out[run.name] = run
    return out


def restart(name: str, extra_env: dict[str, str] | None = None) -> int:
    """Start a stopped lab daemon again from its saved pod spec (same token, same mounts)."""
    run = saved().get(name)
    if run is None:
        raise PodError(f"no saved pod for {name!r}")
    return start(run, extra_env)
