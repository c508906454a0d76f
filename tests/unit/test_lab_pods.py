"""The lab kubelet's pure helpers: $(VAR) expansion, scheduling, probes, and the setpriv command line."""

from __future__ import annotations

from lbctl.lab.podexec import setpriv_argv
from lbctl.lab.pods import _matches, _probe_url, _tolerated, expand


def test_expand_follows_kubernetes_rules() -> None:
    env = {"NODE_NAME": "node1", "PORT": "7473"}
    assert expand("--node-name=$(NODE_NAME)", env) == "--node-name=node1"
    assert expand("$(PORT)$(PORT)", env) == "74737473"
    assert expand("$(MISSING)", env) == "$(MISSING)"  # unknown references stay as written
    assert expand("$$(NODE_NAME)", env) == "$(NODE_NAME)"  # $$ escapes


def test_control_plane_taint_needs_a_toleration() -> None:
    taint = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    assert not _tolerated(taint, [])
    assert _tolerated(taint, [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                               "effect": "NoSchedule"}])
    assert _tolerated(taint, [{"operator": "Exists"}])
    assert not _tolerated(taint, [{"key": "other", "operator": "Exists"}])
    assert _tolerated([{"key": "x", "effect": "PreferNoSchedule"}], [])


def test_node_selector() -> None:
    assert _matches({}, {"a": "b"})
    assert _matches({"lb": "true"}, {"lb": "true", "x": "y"})
    assert not _matches({"lb": "true"}, {"lb": "false"})


def test_probe_url_resolves_named_ports() -> None:
    probe = {"httpGet": {"path": "/readyz", "port": "monitoring"}}
    assert _probe_url(probe, {"monitoring": 7473}, "198.18.0.21") == "http://198.18.0.21:7473/readyz"
    assert _probe_url({"httpGet": {"port": 80}}, {}, "198.18.0.11") == "http://198.18.0.11:80/"
    assert _probe_url({"exec": {"command": ["true"]}}, {}, "198.18.0.11") is None


def test_setpriv_keeps_only_the_added_capabilities() -> None:
    speaker = setpriv_argv({"caps": ["NET_RAW"], "uid": 0, "gid": 0, "no_new_privs": True,
                            "argv": ["lbctl-speaker", "--x"]})
    assert speaker[:7] == ["setpriv", "--bounding-set", "-all,+net_raw", "--inh-caps", "-all",
                           "--ambient-caps", "-all"]
    assert "--no-new-privs" in speaker and "--reuid" not in speaker
    assert speaker[-3:] == ["--", "lbctl-speaker", "--x"]
    controller = setpriv_argv({"caps": [], "uid": 65532, "gid": 65532, "no_new_privs": False, "argv": ["c"]})
    assert controller[2] == "-all" and controller[controller.index("--reuid") + 1] == "65532"
    assert "--no-new-privs" not in controller


def test_a_lab_claims_only_its_own_namespaces() -> None:
    from lbctl.lab.topology import _OURS
    assert _OURS.pattern.startswith("lbctl")
    assert _OURS.fullmatch("lbctl-node12") and _OURS.fullmatch("lbctl-br")
    assert not _OURS.fullmatch("lbctl-h1-node1")  # another lab, started with LBCTL_LAB_PREFIX=lbctl-h1-
    assert not _OURS.fullmatch("lbctl-e2e-speaker")
