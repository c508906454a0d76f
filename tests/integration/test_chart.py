"""The Helm chart (deploy/chart) with the pinned helm and kubectl against the real test API server (1.20).

Releases here get their own names and namespaces (the session's `lbctl` release in lbctl-system is
installed by tests/conftest.py and is what every other integration test's controller runs under).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbctl import assets
from lbctl.lab.controlplane import RELEASE, SA_NS, ControlPlane
from lbctl.lab import k8sbin
from lbctl.lab.api import wait_for
from tests.procs import ConfinedSpeaker, ControllerProcess

CHART = str(assets.chart_dir())
ROOT = Path(__file__).resolve().parents[2]

# --- helpers -----------------------------------------------------------------------------------------


def helm(cp: ControlPlane, *args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--values", "-"] if values is not None else []
    return cp.helm(*args, *extra, stdin=json.dumps(values) if values is not None else None, check=False)


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"{res.args}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def kubectl(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(k8sbin.kubectl()), "--kubeconfig", str(cp.kubeconfig()), *args],
                          capture_output=True, text=True)


def kget(cp: ControlPlane, *args: str) -> dict[str, Any] | None:
    """`kubectl get ... -o json`, None when the object does not exist."""
    res = kubectl(cp, "get", *args, "-o", "json")
    if res.returncode and "NotFound" in res.stderr:
        return None
    return json.loads(ok(res))


def render(values: dict[str, Any], release: str = "r", namespace: str = "ns") -> dict[tuple[str, str], dict]:
    res = subprocess.run([str(k8sbin.helm()), "template", release, CHART, "--namespace", namespace,
                          "--values", "-"], input=json.dumps(values), capture_output=True, text=True)
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(ok(res)) if d}


def container(doc: dict) -> dict:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """What the kubelet does to $(VAR) references in args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


# --- binaries and lint ---------------------------------------------------------------------------------


def test_pinned_binaries() -> None:
    out = subprocess.run([sys.executable, "-m", "lbctl.lab.k8sbin"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "helm: v4.1.4" in out.stdout and "Client Version: v1.35.2" in out.stdout, out.stdout


def test_lint() -> None:
    for values in ({}, {"pools": [{"name": "default", "addresses": ["192.168.56.50-192.168.56.99"]}],
                        "lbClass": "example.com/lb", "speaker": {"interfaces": ["eth1"]},
                        "metrics": {"serviceMonitor": {"enabled": True}}}):
        res = subprocess.run([str(k8sbin.helm()), "lint", "--strict", CHART, "--values", "-"],
                             input=json.dumps(values), capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "0 chart(s) failed" in res.stdout


# --- what the templates render -------------------------------------------------------------------------


def test_speaker_daemonset_is_least_privilege_host_network() -> None:
    docs = render({"speaker": {"interfaces": ["eth1", "bond0"], "priorityClassName": "system-node-critical",
                               "heartbeat": {"interval": 0.2, "deadAfter": 0.9, "port": 17946},
                               "tolerations": [{"key": "dedicated", "operator": "Exists"}]},
                   "lbClass": "example.com/lb"})
    ds = docs[("DaemonSet", "r-lbctl-speaker")]
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["serviceAccountName"] == "r-lbctl-speaker"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {
        "runAsUser": 0, "runAsGroup": 0, "privileged": False, "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}}
    assert {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"} \
        in pod["tolerations"]
    assert {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "dedicated", "operator": "Exists"} in pod["tolerations"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP"}
    # The key arrives as a root-only file from the generated Secret, never through the API.
    (vol,) = pod["volumes"]
    assert vol["secret"] == {"secretName": "r-lbctl-heartbeat", "defaultMode": 0o400,
                             "items": [{"key": "key", "path": "key"}]}
    (mount,) = c["volumeMounts"]
    assert mount["mountPath"] == "/etc/lbctl/heartbeat" and mount["readOnly"] is True
    assert c["command"] == ["lbctl-speaker"]
    assert c["args"] == [
        "--lb-class=example.com/lb", "--log-format=json", "--log-level=info",
        "--heartbeat-key-file=/etc/lbctl/heartbeat/key", "--heartbeat-port=17946", "--heartbeat-interval=0.2",
        "--dead-after=0.9", "--garp-count=3", "--restart-hold=30", "--interfaces=eth1,bond0",
        "--http-host=$(HOST_IP)", "--http-port=7473"]
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in c["ports"]}
    assert ports == {"metrics": (7473, "TCP"), "heartbeat": (17946, "UDP")}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}

    # The speaker's own parser accepts exactly these flags, with the kubelet's $(VAR) expansion.
    from lbctl.speaker.cli import parse_args
    args = parse_args(expand(c["args"], {"HOST_IP": "198.18.0.21"}) + ["--node-name", "n1"])
    assert (args.lb_class, args.heartbeat_port, args.heartbeat_interval, args.dead_after, args.restart_hold) == \
        ("example.com/lb", 17946, 0.2, 0.9, 30.0)
    assert args.interfaces == {"eth1", "bond0"} and args.http_host == "198.18.0.21"
    assert args.heartbeat_key_file == ["/etc/lbctl/heartbeat/key"]


def test_controller_deployment_is_non_root_without_capabilities() -> None:
    docs = render({"controller": {"httpPort": 9472, "priorityClassName": "high",
                                  "resources": {"limits": {"memory": "256Mi"}}},
                   "logFormat": "console", "logLevel": "debug"})
    dep = docs[("Deployment", "r-lbctl-controller")]
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["serviceAccountName"] == "r-lbctl-controller" and pod["priorityClassName"] == "high"
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "privileged": False, "capabilities": {"drop": ["ALL"]}}
    assert "hostNetwork" not in pod
    assert c["ports"] == [{"name": "metrics", "containerPort": 9472, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["resources"] == {"limits": {"memory": "256Mi"}}
    assert c["command"] == ["lbctl-controller"]
    assert c["args"] == ["--log-format=console", "--log-level=debug", "--http-port=9472",
                         "--leader-election-name=r-lbctl-controller", "--leader-election-lease-duration=12",
                         "--leader-election-renew-deadline=8", "--leader-election-retry-period=2"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}

    from lbctl.controller.main import parse_args
    args = parse_args(c["args"])
    assert (args.lb_class, args.log_format, args.log_level, args.http_port) == (None, "console", "debug", 9472)
    assert args.leader_elect and args.leader_election_name == "r-lbctl-controller"
    assert (args.timing.lease_duration, args.timing.renew_deadline, args.timing.retry_period) == (12, 8, 2)
    assert parse_args(container(render({"lbClass": "x.io/y"})[("Deployment", "r-lbctl-controller")])["args"]) \
        .lb_class == "x.io/y"


@pytest.mark.parametrize("timing", ["default", "fast", "relaxed"])
def test_heartbeat_timing_preset_reaches_the_speaker(timing: str) -> None:
    """speaker.heartbeat.timing becomes --timing, and the speaker runs with that preset's values."""
    from lbctl.core.heartbeat import TIMING_PRESETS
    from lbctl.speaker.cli import parse_args
    assert set(TIMING_PRESETS) == {"default", "fast", "relaxed"}  # the schema's enum and _helpers.tpl list these
    c = container(render({"speaker": {"heartbeat": {"timing": timing}}})[("DaemonSet", "r-lbctl-speaker")])
    assert (f"--timing={timing}" in c["args"]) is (timing != "default")
    args = parse_args(expand(c["args"], {"HOST_IP": "198.18.0.21"}) + ["--node-name", "n1"])
    assert (args.heartbeat_interval, args.dead_after) == TIMING_PRESETS[timing]


def render_with(values: dict[str, Any], *api_versions: str) -> dict[tuple[str, str], dict]:
    args = [a for v in api_versions for a in ("--api-versions", v)]
    res = subprocess.run([str(k8sbin.helm()), "template", "r", CHART, "--namespace", "ns", *args, "--values", "-"],
                         input=json.dumps(values), capture_output=True, text=True)
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(ok(res)) if d}


def test_controller_replicas_elect_a_leader_roll_and_keep_one_up() -> None:
    one = render_with({}, "policy/v1")
    assert one[("Deployment", "r-lbctl-controller")]["spec"]["strategy"] == {"type": "Recreate"}
    assert one[("PodDisruptionBudget", "r-lbctl-controller")]["spec"]["maxUnavailable"] == 1
    two = render_with({"controller": {"replicas": 2}}, "policy/v1")
    dep = two[("Deployment", "r-lbctl-controller")]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pdb = two[("PodDisruptionBudget", "r-lbctl-controller")]["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb
    role = two[("Role", "r-lbctl-controller")]
    assert role["metadata"]["namespace"] == "ns"
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update"]}]
    binding = two[("RoleBinding", "r-lbctl-controller")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "r-lbctl-controller", "namespace": "ns"}]


def test_pools_render_as_ippools_and_names_follow_the_release() -> None:
    docs = render({"pools": [{"name": "default", "addresses": ["192.168.56.50-192.168.56.99"]},
                             {"name": "v6", "addresses": ["fd00:56::/120"], "autoAssign": False,
                              "layer2": {"interfaces": ["eth1"]}}]}, release="lbctl", namespace="lbctl-system")
    assert docs[("IPPool", "default")]["spec"] == {"addresses": ["192.168.56.50-192.168.56.99"]}
    assert docs[("IPPool", "v6")]["spec"] == {"addresses": ["fd00:56::/120"], "autoAssign": False,
                                              "layer2": {"interfaces": ["eth1"]}}
    names = {k for k in docs}
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
        assert {(kind, "lbctl-controller"), (kind, "lbctl-speaker")} <= names
    assert ("Secret", "lbctl-heartbeat") in names and ("Role", "lbctl-speaker") in names
    assert not [k for k in names if k[0] == "ServiceMonitor"]
    key = base64.b64decode(docs[("Secret", "lbctl-heartbeat")]["data"]["key"])
    assert len(key) >= 16


def test_service_monitor_only_when_enabled() -> None:
    docs = render({"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "p"}}}})
    sm = docs[("ServiceMonitor", "r-lbctl")]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["metadata"]["labels"]["release"] == "p"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s", "relabelings": [
        {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]}]
    for component, port in (("controller", 7472), ("speaker", 7473)):
        svc = docs[("Service", f"r-lbctl-{component}-metrics")]
        assert svc["spec"]["ports"][0]["port"] == port
        assert svc["spec"]["selector"]["app.kubernetes.io/component"] == component


def test_heartbeat_keyring_from_listed_secret_keys() -> None:
    """Key rotation: each listed data key is mounted and passed in order; the first signs."""
    pod = render({"speaker": {"heartbeat": {"keys": ["next", "key"]}}})[("DaemonSet", "r-lbctl-speaker")][
        "spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["items"] == [{"key": "next", "path": "next"}, {"key": "key", "path": "key"}]
    args = pod["containers"][0]["args"]
    assert [a for a in args if a.startswith("--heartbeat-key-file")] == [
        "--heartbeat-key-file=/etc/lbctl/heartbeat/next", "--heartbeat-key-file=/etc/lbctl/heartbeat/key"]


def test_existing_heartbeat_secret_replaces_the_generated_one() -> None:
    docs = render({"speaker": {"heartbeat": {"existingSecret": "my-key"}}})
    assert not [k for k in docs if k[0] == "Secret"]
    pod = docs[("DaemonSet", "r-lbctl-speaker")]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "my-key"


def test_values_schema_reuses_the_crd_address_pattern() -> None:
    crd = yaml.safe_load((assets.crd_dir() / "ippools.lbctl.io.yaml").read_text())
    want = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "addresses"]["items"]["pattern"]
    schema = json.loads((assets.chart_dir() / "values.schema.json").read_text())
    assert schema["$defs"]["pool"]["properties"]["addresses"]["items"]["pattern"] == want


# --- against the API server ----------------------------------------------------------------------------

BAD_VALUES = [
    ({"pools": [{"name": "default", "addresses": ["192.168.56.50-192.168.56"]}]},
     ["/pools/0/addresses/0", "192.168.56.50-192.168.56"]),
    ({"speaker": {"heartbeat": {"interval": -0.1}}}, ["/speaker/heartbeat/interval"]),
    ({"logFormat": "text"}, ["/logFormat", "auto", "json", "console"]),
    ({"speaker": {"heartbeat": {"keys": ["../etc"]}}}, ["/speaker/heartbeat/keys/0"]),
    ({"speaker": {"heartbeat": {"keys": []}}}, ["/speaker/heartbeat/keys"]),
    ({"speaker": {"heartbeat": {"interval": 0.5, "deadAfter": 0.5}}},
     ["speaker.heartbeat.deadAfter (0.5) must be greater than speaker.heartbeat.interval (0.5)"]),
    ({"pools": [{"name": "Default_Pool", "addresses": ["198.18.0.1"]}]}, ["/pools/0/name", "Default_Pool"]),
    ({"pools": [{"name": "a", "addresses": ["198.18.0.1"], "auto_assign": True}]}, ["/pools/0", "auto_assign"]),
    ({"pools": [{"name": "a", "addresses": ["198.18.0.1"]}, {"name": "a", "addresses": ["198.18.0.2"]}]},
     ['pools: the name "a" is used twice']),
    ({"controller": {"httpPort": 70000}}, ["/controller/httpPort"]),
    ({"controller": {"replicas": -1}}, ["/controller/replicas"]),
    ({"controller": {"leaderElection": {"leaseDuration": 8, "renewDeadline": 8, "retryPeriod": 2}}},
     ["controller.leaderElection: leaseDuration (8) > renewDeadline (8)"]),
    ({"controller": {"leaderElection": {"leaseDuration": 12, "renewDeadline": 8, "retryPeriod": 0}}},
     ["/controller/leaderElection/retryPeriod"]),
    ({"image": {"repository": ""}}, ["/image/repository"]),
    ({"speaker": {"heartbeat": {"timing": "turbo"}}}, ["/speaker/heartbeat/timing"]),
    # The chart checks the values the speaker will run with: the fast preset's dead-after is 0.3 s.
    ({"speaker": {"heartbeat": {"timing": "fast", "interval": 0.3}}},
     ["speaker.heartbeat.deadAfter (0.3) must be greater than speaker.heartbeat.interval (0.3)"]),
]


@pytest.mark.parametrize("values,named", BAD_VALUES, ids=[n[0] for _, n in BAD_VALUES])
def test_bad_values_fail_at_install_naming_the_value(control_plane: ControlPlane, values: dict[str, Any],
                                                      named: list[str]) -> None:
    res = helm(control_plane, "install", "chart-bad", CHART, "--namespace", "chart-bad", values=values)
    try:
        assert res.returncode != 0, res.stdout
        for text in named:
            assert text in res.stderr, res.stderr
        status = helm(control_plane, "status", "chart-bad", "--namespace", "chart-bad")
        assert status.returncode != 0 and "not found" in status.stderr, status.stdout  # nothing was installed
    finally:
        helm(control_plane, "uninstall", "chart-bad", "--namespace", "chart-bad")


def test_install_upgrade_uninstall(control_plane: ControlPlane) -> None:
    cp, release, ns = control_plane, "chart-test", "chart-test"
    pools = [{"name": "chart-test-a", "addresses": ["198.18.251.0/28"], "autoAssign": False}]
    try:
        out = ok(helm(cp, "install", release, CHART, "--namespace", ns, "--create-namespace",
                      values={"pools": pools}))
        assert "lbctl status" in out and "lbctl preflight" in out and "kubectl get ipp" in out  # NOTES.txt

        name = f"{release}-lbctl"
        for kind, obj in (("deployment", f"{name}-controller"), ("daemonset", f"{name}-speaker"),
                          ("serviceaccount", f"{name}-controller"), ("serviceaccount", f"{name}-speaker"),
                          ("role", f"{name}-speaker"), ("rolebinding", f"{name}-speaker")):
            assert kget(cp, kind, obj, "-n", ns), (kind, obj)
        for kind in ("clusterrole", "clusterrolebinding"):
            for component in ("controller", "speaker"):
                assert kget(cp, kind, f"{name}-{component}"), (kind, component)
        # policy/v1 is not served by 1.20: the chart installs without the PDB instead of failing.
        assert kget(cp, "poddisruptionbudgets.v1beta1.policy", "-n", ns)["items"] == []
        pool = kget(cp, "ippools", "chart-test-a")
        assert pool["spec"] == {"addresses": ["198.18.251.0/28"], "autoAssign": False, "avoidBuggyIPs": False}
        secret = kget(cp, "secret", f"{name}-heartbeat", "-n", ns)
        assert len(base64.b64decode(secret["data"]["key"])) >= 16

        # Upgrade with changed values: applied, and the heartbeat key is the one speakers already share.
        pools.append({"name": "chart-test-b", "addresses": ["198.18.251.16/28"], "autoAssign": False})
        ok(helm(cp, "upgrade", release, CHART, "--namespace", ns,
                values={"pools": pools, "logLevel": "debug", "speaker": {"garpCount": 5}}))
        args = container(kget(cp, "daemonset", f"{name}-speaker", "-n", ns))["args"]
        assert "--garp-count=5" in args and "--log-level=debug" in args
        assert "--log-level=debug" in container(kget(cp, "deployment", f"{name}-controller", "-n", ns))["args"]
        assert kget(cp, "ippools", "chart-test-b")
        again = kget(cp, "secret", f"{name}-heartbeat", "-n", ns)
        assert again["data"] == secret["data"]
        assert ok(helm(cp, "history", release, "--namespace", ns, "-o", "json")).count('"revision"') == 2

        # Key rotation, step 1 (docs/values.md): a `next` key added to the generated Secret survives upgrades.
        nxt = base64.b64encode(b"n" * 32).decode()
        ok(kubectl(cp, "-n", ns, "patch", "secret", f"{name}-heartbeat", "-p", f'{{"data":{{"next":"{nxt}"}}}}'))
        ok(helm(cp, "upgrade", release, CHART, "--namespace", ns,
                values={"pools": pools, "speaker": {"heartbeat": {"keys": ["key", "next"]}}}))
        assert kget(cp, "secret", f"{name}-heartbeat", "-n", ns)["data"] == {**secret["data"], "next": nxt}
        args = container(kget(cp, "daemonset", f"{name}-speaker", "-n", ns))["args"]
        assert "--heartbeat-key-file=/etc/lbctl/heartbeat/next" in args

        ok(helm(cp, "uninstall", release, "--namespace", ns, "--wait"))
        for kind, obj in (("deployment", f"{name}-controller"), ("daemonset", f"{name}-speaker"),
                          ("secret", f"{name}-heartbeat")):
            assert kget(cp, kind, obj, "-n", ns) is None, (kind, obj)
        assert kget(cp, "clusterrole", f"{name}-controller") is None
        assert kget(cp, "ippools", "chart-test-a") is None
        # CRDs stay, as Helm leaves everything from crds/ alone on uninstall.
        for crd in ("ippools.lbctl.io", "speakerstatuses.lbctl.io"):
            assert kget(cp, "crd", crd)
    finally:
        helm(cp, "uninstall", release, "--namespace", ns)
        kubectl(cp, "delete", "namespace", ns, "--wait=false")


# --- seed: a kubespray cluster's metallb_ip_range -----------------------------------------------------

SEED_ADDONS = Path(__file__).resolve().parents[1] / "data" / "import" / "seed-addons.yml"


def seed_values() -> dict[str, Any]:
    """What `lbctl import kubespray` makes of the seed's addons.yml (metallb_ip_range, layer2)."""
    res = subprocess.run([sys.executable, "-m", "lbctl.cli", "import", "kubespray", str(SEED_ADDONS)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def test_seed_values_install_the_same_ippool_as_written_by_hand(control_plane: ControlPlane) -> None:
    """No controller runs here and the pool exists only in this API server: nothing uses the seed's range."""
    cp, release, ns = control_plane, "chart-seed", "chart-seed"
    try:
        ok(helm(cp, "install", release, CHART, "--namespace", ns, "--create-namespace", values=seed_values()))
        installed = kget(cp, "ippools", "loadbalanced")["spec"]  # kubespray's default metallb_pool_name
        ok(helm(cp, "uninstall", release, "--namespace", ns, "--wait"))
        wait_for(lambda: kget(cp, "ippools", "loadbalanced") is None, 20, "the chart's pool to go")
        by_hand = {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "loadbalanced"},
                   "spec": {"addresses": ["192.168.56.50-192.168.56.99"]}}
        ok(subprocess.run([str(k8sbin.kubectl()), "--kubeconfig", str(cp.kubeconfig()), "apply", "-f", "-"],
                          input=json.dumps(by_hand), capture_output=True, text=True))
        assert installed == kget(cp, "ippools", "loadbalanced")["spec"]
        assert installed == {"addresses": ["192.168.56.50-192.168.56.99"], "autoAssign": True,
                             "avoidBuggyIPs": False}
    finally:
        kubectl(cp, "delete", "ippools", "loadbalanced", "--ignore-not-found")
        helm(cp, "uninstall", release, "--namespace", ns)
        kubectl(cp, "delete", "namespace", ns, "--wait=false")


# --- RBAC: exactly what each component needs -----------------------------------------------------------

CONTROLLER_RULES = {
    ("services", "", "", frozenset({"list", "watch"})),
    ("services/status", "", "", frozenset({"patch"})),
    ("namespaces", "", "", frozenset({"list", "watch"})),
    ("events", "", "", frozenset({"create"})),
    ("ippools.lbctl.io", "", "", frozenset({"list", "watch"})),
    ("ippools.lbctl.io/status", "", "", frozenset({"patch"})),
    ("bgppeers.lbctl.io", "", "", frozenset({"list", "watch"})),
    ("bgppeers.lbctl.io/status", "", "", frozenset({"patch"})),
    ("bfdprofiles.lbctl.io", "", "", frozenset({"list", "watch"})),
    ("bfdprofiles.lbctl.io/status", "", "", frozenset({"patch"})),
}
SPEAKER_RULES = {
    ("services", "", "", frozenset({"list", "watch"})),
    ("nodes", "", "", frozenset({"list", "watch"})),
    ("endpointslices.discovery.k8s.io", "", "", frozenset({"list", "watch"})),
    ("ippools.lbctl.io", "", "", frozenset({"list", "watch"})),
    ("speakerstatuses.lbctl.io", "", "", frozenset({"create"})),
    ("speakerstatuses.lbctl.io/status", "", "", frozenset({"patch"})),
    ("events", "", "", frozenset({"create"})),
}
CONTROLLER_NAMESPACE_RULES = {
    ("leases.coordination.k8s.io", "", "", frozenset({"get", "create", "update"})),  # controller/leader.py
}
SPEAKER_NAMESPACE_RULES = {
    ("leases.coordination.k8s.io", "", "", frozenset({"create", "patch", "list"})),  # list: speaker/registered.py
}


def can_i_list(cp: ControlPlane, sa: str, namespace: str) -> set[tuple[str, str, str, frozenset[str]]]:
    """`kubectl auth can-i --list` as the ServiceAccount, parsed by the header's column positions."""
    out = ok(kubectl(cp, "auth", "can-i", "--list", f"--as=system:serviceaccount:{SA_NS}:{sa}",
                     "--namespace", namespace))
    header, *lines = out.splitlines()
    starts = [header.index(h) for h in ("Resources", "Non-Resource URLs", "Resource Names", "Verbs")]
    rules = set()
    for line in lines:
        cols = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [len(line)])]
        res, urls, names, verbs = cols
        rules.add((res, urls.strip("[]"), names.strip("[]"), frozenset(verbs.strip("[]").split())))
    return rules


@pytest.mark.parametrize("sa,cluster_rules,ns_rules", [
    (f"{RELEASE}-controller", CONTROLLER_RULES, CONTROLLER_NAMESPACE_RULES),
    (f"{RELEASE}-speaker", SPEAKER_RULES, SPEAKER_NAMESPACE_RULES),
])
def test_rbac_is_exactly_what_each_component_calls(control_plane: ControlPlane, sa: str,
                                                   cluster_rules: set, ns_rules: set) -> None:
    # What every authenticated ServiceAccount may do anyway (discovery, self reviews) is not the chart's.
    baseline = can_i_list(control_plane, "nobody", SA_NS)
    assert ("secrets", "", "", frozenset({"get"})) not in baseline
    assert can_i_list(control_plane, sa, SA_NS) - baseline == cluster_rules | ns_rules
    assert can_i_list(control_plane, sa, "default") - baseline == cluster_rules


@pytest.mark.parametrize("sa,verb,resource,namespace,allowed", [
    ("speaker", "patch", "services/status", "default", False),
    ("speaker", "update", "services/status", "default", False),
    ("speaker", "get", "secrets", SA_NS, False),
    ("speaker", "list", "secrets", "default", False),
    ("speaker", "list", "endpoints", "default", False),
    ("speaker", "list", "namespaces", "", False),
    ("speaker", "create", "leases.coordination.k8s.io", SA_NS, True),
    ("speaker", "create", "leases.coordination.k8s.io", "default", False),
    ("speaker", "list", "leases.coordination.k8s.io", SA_NS, True),
    ("speaker", "list", "leases.coordination.k8s.io", "default", False),
    ("speaker", "delete", "leases.coordination.k8s.io", SA_NS, False),
    ("speaker", "patch", "speakerstatuses.lbctl.io/status", "", True),
    ("speaker", "update", "speakerstatuses.lbctl.io", "", False),
    ("controller", "patch", "nodes", "", False),
    ("controller", "update", "services/status", "default", False),
    ("controller", "update", "services", "default", False),
    ("controller", "get", "secrets", SA_NS, False),
    ("controller", "list", "secrets", "default", False),
    ("controller", "patch", "services/status", "default", True),
    ("controller", "update", "ippools.lbctl.io/status", "", False),
    ("controller", "patch", "ippools.lbctl.io", "", False),
    ("controller", "patch", "bgppeers.lbctl.io", "", False),
    ("controller", "patch", "bgppeers.lbctl.io/status", "", True),
    ("controller", "update", "leases.coordination.k8s.io", SA_NS, True),
    ("controller", "update", "leases.coordination.k8s.io", "default", False),
    ("controller", "delete", "leases.coordination.k8s.io", SA_NS, False),
])
def test_rbac_spot_checks(control_plane: ControlPlane, sa: str, verb: str, resource: str, namespace: str,
                          allowed: bool) -> None:
    res, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, res, f"--as=system:serviceaccount:{SA_NS}:{RELEASE}-{sa}"]
    args += [f"--subresource={sub}"] if sub else []
    args += ["--namespace", namespace] if namespace else ["--all-namespaces"]
    out = kubectl(control_plane, *args)
    assert out.stdout.strip() == ("yes" if allowed else "no"), (args, out.stdout, out.stderr)


# --- the daemons run under that RBAC ------------------------------------------------------------------

DENIED = re.compile(r'is forbidden: User|Not enough permissions')  # RBAC denials, not e.g. a terminating namespace


def test_controller_works_under_the_charts_rbac(control_plane: ControlPlane) -> None:
    """Every rule in use: the list-watches of Services, Namespaces and IPPools, a
    status patch, a pool status patch and an Event; and no permission error anywhere in the log."""
    cp, ns, pool = control_plane, "chart-rbac", "chart-rbac-pool"
    with tempfile.TemporaryDirectory(prefix="lbctl-ctl-") as d:
        ctl = ControllerProcess(cp, Path(d))
        try:
            ctl.start()
            ok(kubectl(cp, "create", "namespace", ns))
            ok(subprocess.run([str(k8sbin.kubectl()), "--kubeconfig", str(cp.kubeconfig()), "apply", "-f", "-"],
                              input=json.dumps({"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool",
                                                "metadata": {"name": pool},
                                                "spec": {"addresses": ["198.18.252.0/30"], "autoAssign": False}}),
                              capture_output=True, text=True))
            ok(subprocess.run([str(k8sbin.kubectl()), "--kubeconfig", str(cp.kubeconfig()), "apply", "-f", "-"],
                              input=json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {
                                  "name": "web", "namespace": ns, "annotations": {"lbctl.io/address-pool": pool}},
                                  "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                                           "ports": [{"port": 80}]}}),
                              capture_output=True, text=True))

            def ingress() -> list:
                return ((kget(cp, "service", "web", "-n", ns) or {}).get("status", {}).get("loadBalancer")
                        or {}).get("ingress") or []
            (ip,) = wait_for(ingress, 20, "an address from the pool")
            assert ip["ip"].startswith("198.18.252."), ip
            wait_for(lambda: (kget(cp, "ippools", pool).get("status") or {}).get("assigned") == 1, 20,
                     "the pool's status patch")
            wait_for(lambda: [e for e in kget(cp, "events", "-n", ns)["items"] if e["reason"] == "IPAllocated"], 20,
                     "an IPAllocated Event")
            assert "ready" in urllib.request.urlopen(f"http://127.0.0.1:{ctl.port}/readyz", timeout=5).read().decode()
            assert not DENIED.search(ctl.log()), ctl.log()[-3000:]
        finally:
            ctl.stop()
            kubectl(cp, "delete", "namespace", ns, "--wait=false")
            kubectl(cp, "delete", "ippools", pool, "--ignore-not-found")


def test_speaker_works_under_the_charts_rbac(control_plane: ControlPlane, tmp_path: Path) -> None:
    """The real speaker in Kubernetes mode as the chart's ServiceAccount: its informers sync (ready; on 1.20
    through the EndpointSlice v1beta1 fallback), it creates its SpeakerStatus and patches the status.
    Confined to an interface that does not exist: no socket is opened on any network, no heartbeat leaves.
    (Moved here from tests/e2e: it needs neither root nor network namespaces.)"""
    cp = control_plane
    sp = ConfinedSpeaker(cp, f"chart-rbac-node-{os.getpid()}", tmp_path)
    node, proc = sp.node, sp.proc
    assert sp.kubeconfig.parent == cp.workdir and sp.kubeconfig.stat().st_mode & 0o777 == 0o600
    try:
        wait_for(sp.ready, 30, "the speaker's informers to sync")
        status = wait_for(lambda: (kget(cp, "speakerstatuses", node) or {}).get("status"), 20,
                          "the speaker's SpeakerStatus")
        assert status["node"] == node and status["livePeers"] == [node] and status["announced"] == []
        text = sp.log()
        assert "watch_failed" not in text and not DENIED.search(text), text[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, sp.log()[-3000:]
    finally:
        sp.stop()
        kubectl(cp, "delete", "speakerstatuses", node, "--ignore-not-found")


# --- BGP: values -> BGPPeer/BFDProfile/IPPool spec.bgp, the schema and the CRDs refusing bad input -----------

BGP_VALUES = {
    "pools": [{"name": "web", "addresses": ["198.18.20.0/24"], "layer2": {"enabled": False}, "bgp": {
        "advertisements": [{"peers": ["tor1"], "aggregationLength": 24, "localPref": 100,
                            "communities": ["65000:100", "no-export", "large:1:2:3"],
                            "nodeSelectors": [{"matchLabels": {"rack": "a"}}]}, {}]}}],
    "bgp": {
        "peers": [{"name": "tor1", "myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.0.1", "peerPort": 1179,
                   "sourceAddress": "198.18.0.2", "holdTime": "9s", "keepaliveTime": "3s", "routerID": "198.18.0.10",
                   "ebgpMultiHop": True, "passwordSecret": {"name": "tor1-password"}, "bfdProfile": "fast",
                   "nodeSelectors": [{"matchExpressions": [{"key": "rack", "operator": "In", "values": ["a"]}]}],
                   "enableGracefulRestart": True},
                  {"name": "tor6", "myASN": 4200000000, "peerASN": 64513, "peerAddress": "2001:db8::1",
                   "passwordSecret": {"name": "pw", "namespace": "other"}}],
        "bfdProfiles": [{"name": "fast", "receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3,
                         "echoInterval": 50, "echoMode": False, "passiveMode": False, "minimumTtl": 254}]},
}


def test_bgp_values_render_as_bgppeers_bfdprofiles_and_pool_advertisements() -> None:
    from lbctl.core.bfdprofiles import parse_bfd_profile
    from lbctl.core.bgppeers import judge_peers
    from lbctl.core.pools import parse_pool

    docs = render(BGP_VALUES, namespace="lbctl-system")
    tor1 = dict(BGP_VALUES["bgp"]["peers"][0], passwordSecret={"name": "tor1-password", "namespace": "lbctl-system"})
    assert docs[("BGPPeer", "tor1")]["spec"] == {k: v for k, v in tor1.items() if k != "name"}
    assert docs[("BGPPeer", "tor6")]["spec"]["passwordSecret"] == {"name": "pw", "namespace": "other"}
    assert docs[("BFDProfile", "fast")]["spec"]["receiveInterval"] == 100
    assert docs[("IPPool", "web")]["spec"] == {k: v for k, v in BGP_VALUES["pools"][0].items() if k != "name"}
    # what the chart renders, the core accepts
    verdicts = judge_peers([(n, d["spec"]) for (k, n), d in docs.items() if k == "BGPPeer"], ["fast"])
    assert all(v.ready for v in verdicts.values()), verdicts
    parse_bfd_profile("fast", docs[("BFDProfile", "fast")]["spec"])
    assert parse_pool("web", docs[("IPPool", "web")]["spec"]).error is None
    assert not [k for k in render({}) if k[0] in ("BGPPeer", "BFDProfile")]  # nothing by default


def test_values_schema_bgp_checks_are_the_crds() -> None:
    """values.schema.json's BGP definitions were derived from the CRDs: they must not drift apart."""
    def spec(crd: str) -> dict[str, Any]:
        doc = yaml.safe_load((assets.crd_dir() / crd).read_text())
        return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def checks(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: checks(v) for k, v in node.items() if k in ("type", "pattern", "minimum", "maximum", "enum",
                                                                  "required", "items")}
            if "properties" in node:
                out["properties"] = {k: checks(v) for k, v in node["properties"].items()}
            return out
        return node

    defs = json.loads((assets.chart_dir() / "values.schema.json").read_text())["$defs"]
    for crd, name in (("bgppeers.lbctl.io.yaml", "bgpPeer"), ("bfdprofiles.lbctl.io.yaml", "bfdProfile")):
        want = checks(spec(crd))["properties"]
        want.pop("nodeSelectors", None)
        got = checks(defs[name])["properties"]
        assert {k: got[k] for k in want} == want, name
    adv = checks(spec("ippools.lbctl.io.yaml"))["properties"]["bgp"]["properties"]["advertisements"]["items"]
    adv["properties"].pop("nodeSelectors")
    got = checks(defs["bgpAdvertisement"])["properties"]
    assert {k: got[k] for k in adv["properties"]} == adv["properties"]


BGP_BAD_VALUES = [
    ({"bgp": {"peers": [{"name": "t", "myASN": 0, "peerASN": 1, "peerAddress": "198.18.0.1"}]}},
     ["/bgp/peers/0/myASN"]),
    ({"bgp": {"peers": [{"name": "t", "myASN": 1, "peerASN": 4294967296, "peerAddress": "198.18.0.1"}]}},
     ["/bgp/peers/0/peerASN"]),
    ({"bgp": {"peers": [{"name": "t", "myASN": 1, "peerASN": 2, "peerAddress": "198.18.0.300"}]}},
     ["/bgp/peers/0/peerAddress", "198.18.0.300"]),
    ({"bgp": {"peers": [{"name": "t", "myASN": 1, "peerASN": 2}]}}, ["/bgp/peers/0", "peerAddress"]),
    ({"bgp": {"peers": [{"name": "t", "myASN": 1, "peerASN": 2, "peerAddress": "198.18.0.1", "holdTime": 90}]}},
     ["/bgp/peers/0/holdTime"]),
    ({"bgp": {"peers": [{"name": "t", "myASN": 1, "peerASN": 2, "peerAddress": "198.18.0.1", "password": "x"}]}},
     ["/bgp/peers/0", "password"]),
    ({"bgp": {"peers": [{"name": "t", "myASN": 1, "peerASN": 2, "peerAddress": "198.18.0.1",
                         "routerID": "2001:db8::1"}]}}, ["/bgp/peers/0/routerID"]),
    ({"bgp": {"peers": [{"name": "t", "myASN": 1, "peerASN": 2, "peerAddress": "198.18.0.1"}] * 2}},
     ['bgp.peers: the name "t" is used twice']),
    ({"bgp": {"bfdProfiles": [{"name": "f", "detectMultiplier": 1}]}}, ["/bgp/bfdProfiles/0/detectMultiplier"]),
    ({"bgp": {"bfdProfiles": [{"name": "f", "receiveInterval": 5}]}}, ["/bgp/bfdProfiles/0/receiveInterval"]),
    ({"pools": [{"name": "a", "addresses": ["198.18.0.0/28"], "bgp": {"advertisements": [
        {"aggregationLength": 33}]}}]}, ["/pools/0/bgp/advertisements/0/aggregationLength"]),
    ({"pools": [{"name": "a", "addresses": ["198.18.0.0/28"], "bgp": {"advertisements": [
        {"communities": ["65000"]}]}}]}, ["/pools/0/bgp/advertisements/0/communities/0", "65000"]),
    ({"pools": [{"name": "a", "addresses": ["198.18.0.0/28"], "layer2": {"enabled": "no"}}]},
     ["/pools/0/layer2/enabled"]),
]


@pytest.mark.parametrize("values,named", BGP_BAD_VALUES, ids=[n[0] for _, n in BGP_BAD_VALUES])
def test_bad_bgp_values_fail_at_install_naming_the_value(control_plane: ControlPlane, values: dict[str, Any],
                                                         named: list[str]) -> None:
    test_bad_values_fail_at_install_naming_the_value(control_plane, values, named)


BAD_BGPPEERS = [
    ({"myASN": 0}, "spec.myASN"),
    ({"peerASN": 4294967296}, "spec.peerASN"),
    ({"peerAddress": "198.18.0.256"}, "spec.peerAddress"),
    ({"peerPort": 70000}, "spec.peerPort"),
    ({"holdTime": "ninety"}, "spec.holdTime"),
    ({"keepaliveTime": 30}, "spec.keepaliveTime"),
    ({"routerID": "2001:db8::1"}, "spec.routerID"),
    ({"passwordSecret": {"name": "Bad_Name"}}, "spec.passwordSecret.name"),
    ({"nodeSelectors": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]},  # 1.20 names no list index
     "spec.nodeSelectors.matchExpressions.operator: Unsupported value: \"Near\""),
]


@pytest.mark.parametrize("bad,field", BAD_BGPPEERS, ids=[f.split(":")[0] for _, f in BAD_BGPPEERS])
def test_api_server_refuses_a_malformed_bgppeer_at_apply_naming_the_field(control_plane: ControlPlane,
                                                                          bad: dict[str, Any], field: str) -> None:
    cp = control_plane
    wait_for(lambda: kubectl(cp, "get", "bgppeers").returncode == 0, 30, "the BGPPeer CRD to be served")
    good = {"apiVersion": "lbctl.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "chart-bgp-probe"},
            "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.0.1"}}
    try:
        bad_doc = dict(good, spec={**good["spec"], **bad})
        res = subprocess.run([str(k8sbin.kubectl()), "--kubeconfig", str(cp.kubeconfig()), "apply", "-f", "-"],
                             input=json.dumps(bad_doc), capture_output=True, text=True)
        assert res.returncode != 0, res.stdout
        assert field in res.stderr, res.stderr
        assert kget(cp, "bgppeers", "chart-bgp-probe") is None
        # the same object without the bad field is accepted, with the CRD's defaults
        res = subprocess.run([str(k8sbin.kubectl()), "--kubeconfig", str(cp.kubeconfig()), "apply", "-f", "-"],
                             input=json.dumps(good), capture_output=True, text=True)
        assert ok(res)
        spec = kget(cp, "bgppeers", "chart-bgp-probe")["spec"]
        assert spec["peerPort"] == 179 and spec["ebgpMultiHop"] is False and spec["enableGracefulRestart"] is False
    finally:
        kubectl(cp, "delete", "bgppeers", "chart-bgp-probe", "--ignore-not-found")


def test_bgp_values_install_and_the_api_server_accepts_them(control_plane: ControlPlane) -> None:
    cp, release, ns = control_plane, "chart-bgp", "chart-bgp"
    try:
        ok(helm(cp, "install", release, CHART, "--namespace", ns, "--create-namespace", values=BGP_VALUES))
        assert kget(cp, "bgppeers", "tor1")["spec"]["passwordSecret"] == {"name": "tor1-password", "namespace": ns}
        assert kget(cp, "bfdprofiles", "fast")["spec"]["minimumTtl"] == 254
        web = kget(cp, "ippools", "web")["spec"]
        # the CRD's defaults fill what the values left out
        assert web["bgp"]["advertisements"][1] == {"aggregationLength": 32, "aggregationLengthV6": 128}
        assert web["layer2"] == {"enabled": False}
    finally:
        helm(cp, "uninstall", release, "--namespace", ns, "--wait")
        kubectl(cp, "delete", "namespace", ns, "--wait=false")
