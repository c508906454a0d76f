"""`lbctl import kubespray`: both kubespray styles, merging, refusals and exit codes (CLI run in-process)."""

from __future__ import annotations

import re

import pytest

from lbctl.core.migrate import InputError
from lbctl.core.migrate_kubespray import convert_kubespray
from tests.unit.importing import DATA, lbctl_import

SEED_POOL = {"name": "loadbalanced", "addresses": ["192.168.56.50-192.168.56.99"]}


def test_seed_addons_gives_the_hand_written_pool(capsys):
    r = lbctl_import(capsys, "kubespray", DATA / "seed-addons.yml")
    assert r.code == 0, r.err
    assert r.values == {"pools": [SEED_POOL]}
    assert r.refused == [] and r.starting("warning: ") == []
    assert any(line.startswith("note: metallb_enabled: not needed: set metallb_enabled: false") for line in r.lines)

    r = lbctl_import(capsys, "kubespray", DATA / "seed-addons.yml", "--as", "ippools")
    assert r.code == 0
    assert r.docs == [{"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "loadbalanced"},
                       "spec": {"addresses": ["192.168.56.50-192.168.56.99"]}}]


def test_strict_arp_from_k8s_cluster_yml(capsys):
    ok = lbctl_import(capsys, "kubespray", DATA / "seed-addons.yml", DATA / "seed-k8s-cluster.yml")
    assert ok.code == 0 and ok.starting("warning: ") == []
    bad = lbctl_import(capsys, "kubespray", DATA / "seed-addons.yml", DATA / "k8s-cluster-no-strict-arp.yml")
    assert bad.code == 0 and bad.values == {"pools": [SEED_POOL]}
    assert [w for w in bad.lines if w.startswith("warning: kube_proxy_strict_arp is false with kube_proxy_mode ipvs")]
    # kube_proxy_mode left at kubespray's default (ipvs) still warns; iptables or no kube-proxy does not
    for extra, warns in (({"kube_proxy_strict_arp": False}, True), ({"kube_proxy_mode": "iptables"}, False),
                         ({"kube_proxy_strict_arp": False, "kube_proxy_remove": True}, False)):
        conv = convert_kubespray({"metallb_ip_range": ["192.168.56.50-192.168.56.99"], **extra})
        assert any("kube_proxy_strict_arp is false" in w for w in conv.warnings) == warns, extra


def test_later_file_wins_and_directories_are_group_vars(capsys, tmp_path):
    (tmp_path / "a.yml").write_text("metallb_ip_range: [192.168.56.50-192.168.56.99]\nmetallb_pool_name: one\n")
    (tmp_path / "b.yml").write_text("metallb_ip_range: [192.168.56.60-192.168.56.69]\n")
    r = lbctl_import(capsys, "kubespray", tmp_path / "a.yml", tmp_path / "b.yml")
    assert r.values == {"pools": [{"name": "one", "addresses": ["192.168.56.60-192.168.56.69"]}]}
    group = tmp_path / "k8s_cluster"
    group.mkdir()
    (group / "addons.yml").write_text((DATA / "seed-addons.yml").read_text())
    (group / "k8s-cluster.yml").write_text((DATA / "k8s-cluster-no-strict-arp.yml").read_text())
    (group / "notes.txt").write_text("not yaml: [")
    r = lbctl_import(capsys, "kubespray", group)
    assert r.code == 0 and r.values == {"pools": [SEED_POOL]} and r.starting("warning: kube_proxy_strict_arp")


def test_legacy_style_every_mappable_variable(capsys):
    r = lbctl_import(capsys, "kubespray", DATA / "legacy-full.yml")
    assert r.code == 0, r.err
    assert r.values == {
        "logLevel": "warning",
        "pools": [
            {"name": "primary", "addresses": ["192.168.56.50-192.168.56.99"], "avoidBuggyIPs": True},
            {"name": "kube-service-pool", "addresses": ["192.168.56.100-192.168.56.109"], "autoAssign": False},
        ],
        "controller": {"nodeSelector": {"kubernetes.io/os": "linux"}},
        "speaker": {"nodeSelector": {"kubernetes.io/os": "linux", "lb": "true"},
                    "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Equal",
                                     "value": "", "effect": "NoSchedule"}]},
    }
    for var in ("metallb_namespace", "metallb_version", "metallb_port", "metallb_memberlist_port",
                "metallb_speaker_enabled"):
        assert r.starting(f"note: {var}: not needed: "), var
    assert r.starting("warning: metallb_additional_address_pools.kube_service_pool: pool 'kube_service_pool' is "
                      "imported as IPPool 'kube-service-pool'")


def test_legacy_bgp_maps_pools_peers_and_a_password_secret(capsys):
    r = lbctl_import(capsys, "kubespray", DATA / "legacy-bgp.yml", "--as", "manifests")
    assert r.code == 0 and r.refused == [], r.err
    by_kind = {}
    for doc in r.docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert by_kind["Secret"] == [{"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
                                  "metadata": {"name": "peer-192-0-2-2-bgp-password", "namespace": "lbctl-system"},
                                  "stringData": {"password": "changeme"}}]
    assert [(d["metadata"]["name"], d["spec"]) for d in by_kind["BGPPeer"]] == [
        ("peer-192-0-2-1", {"myASN": 4200000000, "peerASN": 64512, "peerAddress": "192.0.2.1"}),
        ("peer-192-0-2-2", {"myASN": 4200000000, "peerASN": 64513, "peerAddress": "192.0.2.2",
                            "passwordSecret": {"name": "peer-192-0-2-2-bgp-password", "namespace": "lbctl-system"}})]
    # MetalLB's default for a bgp pool without bgp-advertisements: every address as a /32 to every peer
    bgp_only = {"bgp": {"advertisements": [{}]}, "layer2": {"enabled": False}}
    assert [(d["metadata"]["name"], d["spec"]) for d in by_kind["IPPool"]] == [
        ("loadbalanced", {"addresses": ["10.5.0.0/16"], **bgp_only}),
        ("bgp-pool", {"addresses": ["10.6.0.0/16"], **bgp_only}),
        ("l2-pool", {"addresses": ["192.168.56.200-192.168.56.209"]})]
    assert r.starting("note: metallb_peers[1].password: the plain-text password became Secret "
                      "lbctl-system/peer-192-0-2-2-bgp-password")
    values = lbctl_import(capsys, "kubespray", DATA / "legacy-bgp.yml")
    assert "changeme" not in values.out
    assert values.starting("warning: Secret lbctl-system/peer-192-0-2-2-bgp-password (a BGP password) is not printed")


def test_config_style_layer2_maps_everything(capsys):
    r = lbctl_import(capsys, "kubespray", DATA / "config-layer2.yml")
    assert r.code == 0, r.err
    kubespray_default = {"effect": "NoSchedule", "key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
    assert r.values == {
        "pools": [
            {"name": "primary", "addresses": ["192.168.56.50-192.168.56.99"]},
            {"name": "manual", "addresses": ["192.168.56.120/29", "192.168.56.130"], "autoAssign": False,
             "avoidBuggyIPs": True},
        ],
        "controller": {"nodeSelector": {"kubernetes.io/os": "linux"},
                       "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Equal",
                                        "value": "", "effect": "NoSchedule"}]},
        # kubespray merges its role defaults with metallb_config.speaker: the DaemonSet had both
        "speaker": {"nodeSelector": {"kubernetes.io/os": "linux", "lb": "true"},
                    "tolerations": [kubespray_default, {"key": "dedicated", "operator": "Equal", "value": "lb",
                                                        "effect": "NoSchedule"}]},
    }


def test_config_style_sample_maps_layer3_and_refuses_unannounced_pools(capsys):
    r = lbctl_import(capsys, "kubespray", DATA / "config-sample.yml", "--as", "ippools")
    assert r.code == 3
    assert [(d["kind"], d["metadata"]["name"]) for d in r.docs] == [
        ("BGPPeer", "peer1"), ("IPPool", "primary"), ("IPPool", "pool1")]
    assert r.docs[0]["spec"] == {"myASN": 4200000000, "peerASN": 64512, "peerAddress": "10.6.0.1", "peerPort": 179,
                                 "holdTime": "120s"}
    assert r.docs[2]["spec"] == {"addresses": ["10.6.0.0/16"], "layer2": {"enabled": False},
                                 "bgp": {"advertisements": [{"communities": ["1234:1"]}]}}
    assert r.refused == [
        "refused: metallb_config.address_pools.pool2: not listed in metallb_config.layer2 nor in a layer3 peer's "
        "address_pool: kubespray creates no advertisement for it, so MetalLB hands out its addresses but announces "
        "them nowhere, while lbctl announces every pool it serves; list it in layer2 if it should be announced"]
    # chart values cannot be manifests: say so instead of dropping them
    assert r.starting("warning: speaker.tolerations: a chart value, not printed with --as manifests")


def test_unknown_metallb_variable_is_refused(capsys):
    r = lbctl_import(capsys, "kubespray", DATA / "unknown-var.yml")
    assert r.code == 3 and r.values["pools"][0]["name"] == "loadbalanced"
    assert r.refused == ["refused: metallb_pool_size: unknown variable: kubespray's metallb role does not read it, "
                         "so there is nothing it could be mapped to"]


def test_malformed_range_names_file_and_variable(capsys):
    r = lbctl_import(capsys, "kubespray", DATA / "bad-range.yml")
    assert r.code == 2 and r.out == ""
    assert r.lines == [f"error: {DATA / 'bad-range.yml'}: metallb_additional_address_pools.extra.ip_range[0]: "
                       "'192.168.56.199-192.168.56.150' is reversed: 192.168.56.199 comes after 192.168.56.150"]


@pytest.mark.parametrize("text,where", [
    ("metallb_ip_range: 192.168.56.50-192.168.56.99\n", "metallb_ip_range: must be a non-empty list"),
    ("metallb_ip_range: [192.168.56.0/23]\nmetallb_protocol: layer3\n", "metallb_protocol: 'layer3' is not"),
    ("metallb_ip_range: [192.168.56.1/24]\n", "metallb_ip_range[0]: '192.168.56.1/24' has host bits set"),
    ("metallb_ip_range: [10.0.0.1]\nmetallb_auto_assign: maybe\n", "metallb_auto_assign: must be true or false"),
    ("metallb_config:\n  address_pools:\n    p: {ip_range: [nonsense]}\n  layer2: [p]\n",
     "metallb_config.address_pools.p.ip_range[0]: 'nonsense' is not an IP address"),
    ("metallb_log_level: loud\n", "metallb_log_level: 'loud' is not a MetalLB log level"),
    ("- metallb_enabled\n", "top level is list, not a map of variables"),
    ("ingress_nginx_enabled: true\n", "no metallb_* or kube_proxy_* variables found"),
    ("metallb_enabled: true\n---\nmetallb_ip_range: []\n", "holds 2 YAML documents"),
    ("metallb_enabled: true\nmetallb_ip_range:\n\t- 10.0.0.1\n", ":3:1: not valid YAML"),
    ("$ANSIBLE_VAULT;1.1;AES256\n6162\n", "is Ansible Vault encrypted"),
])
def test_malformed_input_exits_2_naming_file_and_key(capsys, tmp_path, text, where):
    f = tmp_path / "addons.yml"
    f.write_text(text)
    r = lbctl_import(capsys, "kubespray", f)
    assert r.code == 2 and r.out == ""
    assert r.lines[0].startswith(f"error: {f}") and where in r.lines[0], r.lines


@pytest.mark.parametrize("variables,expected", [
    ({"metallb_speaker_enabled": False}, "metallb_speaker_enabled: MetalLB ran without speakers"),
    ({"metallb_loadbalancer_class": "metallb"}, "metallb_loadbalancer_class: MetalLB with --lb-class=metallb"),
    ({"metallb_log_level": "none"}, "metallb_log_level: lbctl always logs errors"),
    ({"matallb_auto_assign": False}, "matallb_auto_assign: misspelled"),
    ({"metallb_limits_cpu": "100m"}, "metallb_limits_cpu: sized for MetalLB's Go binaries"),
    ({"metallb_ip_range": "{{ lb_ranges | default([]) }}"}, "metallb_ip_range: '{{ lb_ranges | default([]) }}' is "
                                                             "a Jinja expression"),
    ({"metallb_config": {"layer2": ["ghost"]}}, "metallb_config.layer2: names 'ghost'"),
    ({"metallb_config": {"address_pools": {"p": {"ip_range": ["10.0.0.1"], "protocol": "layer2"}},
                         "layer2": ["p"]}}, "metallb_config.address_pools.p.protocol: unknown key"),
    ({"metallb_config": {"speaker": {"affinity": {}}}}, "metallb_config.speaker.affinity: unknown key"),
    ({"metallb_config": {"layer4": {}}}, "metallb_config.layer4: unknown key"),
    ({"metallb_ip_range": ["10.0.0.0/24"], "metallb_additional_address_pools": {
        "x": {"ip_range": ["10.0.1.0/24"], "protocol": "layer2", "node_selector": {}}}},
     "metallb_additional_address_pools.x.node_selector: unknown key"),
])
def test_refusals_name_the_variable_and_say_why(variables, expected):
    refusals = [str(r) for r in convert_kubespray(variables).refusals]
    assert [r for r in refusals if r.startswith(f"refused: {expected}")], refusals


def test_simple_jinja_references_are_followed():
    conv = convert_kubespray({"lb_ranges": ["192.168.56.50-192.168.56.99"], "metallb_ip_range": "{{ lb_ranges }}",
                              "metallb_enabled": True, "metallb_speaker_enabled": "{{ metallb_enabled }}"})
    assert conv.refusals == [] and conv.pools == {"loadbalanced": {"addresses": ["192.168.56.50-192.168.56.99"]}}


def test_pool_variables_without_metallb_ip_range_are_reported():
    conv = convert_kubespray({"metallb_pool_name": "main", "metallb_protocol": "layer2",
                              "metallb_additional_address_pools": {"x": {"ip_range": ["10.0.0.0/30"],
                                                                         "protocol": "layer2"}}})
    assert list(conv.pools) == ["x"] and conv.refusals == []
    for var in ("metallb_pool_name", "metallb_protocol"):
        assert f"{var}: not needed: only read together with metallb_ip_range, which is not set" in conv.notes


def test_other_values_map():
    conv = convert_kubespray({"metallb_log_level": "all", "metallb_loadbalancer_class": "",
                              "metallb_controller_tolerations": [{"operator": "Exists"}], "metallb_peers": []})
    assert conv.refusals == []
    assert conv.values == {"logLevel": "debug", "controller": {"tolerations": [{"operator": "Exists"}]}}
    assert [w for w in conv.warnings if w.startswith("metallb_controller_tolerations: current kubespray ignores it")]


def test_overlapping_pools_warn_and_duplicate_names_refuse():
    conv = convert_kubespray({"metallb_ip_range": ["10.0.0.0/24"], "metallb_additional_address_pools": {
        "loadbalanced": {"ip_range": ["10.0.1.0/24"], "protocol": "layer2"},
        "other": {"ip_range": ["10.0.0.128/25"], "protocol": "layer2"}}})
    assert [str(r) for r in conv.refusals] == [
        "refused: metallb_additional_address_pools.loadbalanced: an IPPool named 'loadbalanced' already comes from "
        "metallb_ip_range; IPPool names are cluster-wide"]
    assert [w for w in conv.warnings if "10.0.0.128/25 overlaps 10.0.0.0/24 of IPPool loadbalanced" in w]


# Every metallb_* variable kubespray has ever read (roles/kubernetes-apps/metallb and kubespray_defaults, 2020-2026),
# with a value a user might set: each must come out as a pool, a chart value, a note, or a refusal.
EVERY_VARIABLE = {
    "metallb_enabled": True, "metallb_speaker_enabled": True, "metallb_namespace": "lb",
    "metallb_log_level": "debug", "metallb_port": "7480", "metallb_memberlist_port": "7950",
    "metallb_version": "v0.13.9", "metallb_image_tag": "v0.13.9", "metallb_speaker_image_repo": "r/s",
    "metallb_controller_image_repo": "r/c", "metallb_speaker_digest_checksum": "abc",
    "metallb_controller_digest_checksum": "abc", "metallb_loadbalancer_class": "x",
    "metallb_speaker_nodeselector": {"a": "1"}, "metallb_controller_nodeselector": {"b": "2"},
    "metallb_speaker_tolerations": [{"key": "s", "operator": "Exists"}],
    "metallb_controller_tolerations": [{"key": "c", "operator": "Exists"}],
    "metallb_limits_cpu": "100m", "metallb_limits_mem": "100Mi",
    "metallb_ip_range": ["192.168.56.50-192.168.56.99"], "metallb_pool_name": "main", "metallb_auto_assign": False,
    "metallb_avoid_buggy_ips": True, "metallb_protocol": "layer2", "metallb_peers": [{"peer_address": "192.0.2.1", "peer_asn": 64512, "my_asn": 64513}],
    "metallb_additional_address_pools": {"extra": {"ip_range": ["192.168.56.100/30"], "protocol": "layer2"}},
    "metallb_config": {"address_pools": {"cfg": {"ip_range": ["192.168.56.110/31"]}}, "layer2": ["cfg"]},
    "matallb_auto_assign": True,
}


def _pool(name):
    return lambda values: next(p for p in values["pools"] if p["name"] == name)


MAPPED = {  # where each mapped variable must land in the chart values
    "metallb_log_level": lambda v: v["logLevel"] == "debug",
    "metallb_speaker_nodeselector": lambda v: v["speaker"]["nodeSelector"] == {"a": "1"},
    "metallb_controller_nodeselector": lambda v: v["controller"]["nodeSelector"] == {"b": "2"},
    "metallb_speaker_tolerations": lambda v: v["speaker"]["tolerations"] == [{"key": "s", "operator": "Exists"}],
    "metallb_controller_tolerations": lambda v: v["controller"]["tolerations"] == [{"key": "c", "operator": "Exists"}],
    "metallb_ip_range": lambda v: _pool("main")(v)["addresses"] == ["192.168.56.50-192.168.56.99"],
    "metallb_pool_name": lambda v: _pool("main")(v),
    "metallb_auto_assign": lambda v: _pool("main")(v)["autoAssign"] is False,
    "metallb_avoid_buggy_ips": lambda v: _pool("main")(v)["avoidBuggyIPs"] is True,
    "metallb_protocol": lambda v: _pool("main")(v),
    "metallb_additional_address_pools": lambda v: _pool("extra")(v)["addresses"] == ["192.168.56.100/30"],
    "metallb_config": lambda v: _pool("cfg")(v)["addresses"] == ["192.168.56.110/31"],
    "metallb_peers": lambda v: v["bgp"]["peers"] == [{"name": "peer-192-0-2-1", "myASN": 64513, "peerASN": 64512,
                                                      "peerAddress": "192.0.2.1"}],
}


def test_no_variable_is_silently_dropped():
    conv = convert_kubespray(EVERY_VARIABLE)
    values = conv.chart_values()
    whats = [r.what for r in conv.refusals] + [line.split(": ")[0] for line in conv.notes + conv.warnings]
    reported = {re.match(r"[a-z_]*", what)[0] for what in whats}  # the variable each line is about
    for var in EVERY_VARIABLE:
        assert var in reported or MAPPED[var](values), var
    assert [p["name"] for p in values["pools"]] == ["main", "extra", "cfg"]
    assert any("both metallb_ip_range" in w for w in conv.warnings)


def test_input_error_carries_the_variable():
    with pytest.raises(InputError) as exc:
        convert_kubespray({"metallb_additional_address_pools": {"x": {"ip_range": ["10.0.0.9-10.0.0.1"]}}})
    assert exc.value.where == "metallb_additional_address_pools.x.ip_range[0]"


def test_layer3_maps_peers_with_kubesprays_quirks(capsys):
    r = lbctl_import(capsys, "kubespray", DATA / "config-layer3.yml", "--as", "manifests")
    assert r.code == 0 and r.refused == [], r.err
    docs = {(d["kind"], d["metadata"]["name"]): d for d in r.docs}
    assert docs[("BGPPeer", "tor1")]["spec"] == {
        "myASN": 64513, "peerASN": 64512, "peerAddress": "198.18.0.1", "peerPort": 179, "routerID": "198.18.0.10",
        "holdTime": "30s", "ebgpMultiHop": True,
        "passwordSecret": {"name": "tor1-bgp-password", "namespace": "lbctl-system"}}  # no sourceAddress: never rendered
    assert docs[("BGPPeer", "tor2")]["spec"] == {"myASN": 64513, "peerASN": 64512, "peerAddress": "2001:db8::1",
                                                 "peerPort": 1179, "holdTime": "90s"}  # defaults.hold_time: 90
    assert docs[("Secret", "tor1-bgp-password")]["stringData"] == {"password": "s3cret"}
    assert docs[("IPPool", "primary")]["spec"] == {"addresses": ["198.18.10.0/24"]}
    # aggregation_length <= 30: the <peer>-local advertisement (/32, no-advertise) beside the aggregate; only the
    # last of several communities survived kubespray's duplicate keys; no peers: every peer gets every pool
    assert docs[("IPPool", "both")]["spec"] == {"addresses": ["198.18.11.0/28"], "bgp": {"advertisements": [
        {"communities": ["no-advertise"]}, {"aggregationLength": 28, "communities": ["65000:7"]}]}}
    assert docs[("IPPool", "v6")]["spec"] == {"addresses": ["2001:db8:1::/120"], "bgp": {"advertisements": [{}]},
                                              "layer2": {"enabled": False}}
    for line in ("warning: metallb_config.layer3.metallb_peers.tor1.localpref: not imported: kubespray renders it as "
                 "lower-case `localpref`, which MetalLB ignores",
                 "warning: metallb_config.layer3.metallb_peers.tor1.communities: 3 communities render as duplicate "
                 "`communities:` keys",
                 "note: metallb_config.layer3.metallb_peers.tor1.source_address: not imported: kubespray's layer3 "
                 "template never renders it",
                 "warning: metallb_config.layer3.defaults.hold_time: 90 has no unit",
                 "warning: metallb_config.layer3.metallb_peers: kubespray's advertisements name no peers",
                 "note: metallb_config.layer3 (the `well-known` Community kubespray adds): not needed"):
        assert r.starting(line), line


def _layer3(**peer):
    return {"metallb_config": {"address_pools": {"p": {"ip_range": ["198.18.0.0/28"]}}, "layer3": {
        "metallb_peers": {"tor": {"peer_address": "198.18.0.1", "peer_asn": 1, "my_asn": 2, "address_pool": ["p"],
                                  **peer}}}}}


def test_layer3_peer_without_peer_port_is_refused_as_kubespray_fails_to_render():
    conv = convert_kubespray(_layer3())
    assert [str(r) for r in conv.refusals] == [
        "refused: metallb_config.layer3.metallb_peers.tor: no peer_port here nor in metallb_config.layer3.defaults: "
        "kubespray's template fails to render, so MetalLB never had this peer; set peer_port",
        "refused: metallb_config.address_pools.p: not listed in metallb_config.layer2 nor in a layer3 peer's "
        "address_pool: kubespray creates no advertisement for it, so MetalLB hands out its addresses but announces "
        "them nowhere, while lbctl announces every pool it serves; list it in layer2 if it should be announced"]
    assert conv.peers == {}


def test_layer3_aggregation_above_30_is_not_rendered_and_bad_values_name_the_variable():
    conv = convert_kubespray(_layer3(peer_port=179, aggregation_length=31, communities=["65000:1"]))
    assert conv.pools["p"]["bgp"] == {"advertisements": [{"communities": ["65000:1"]}]}
    with pytest.raises(InputError) as exc:
        convert_kubespray(_layer3(peer_port=179, communities=[3900007]))  # YAML's reading of unquoted 65000:7
    assert exc.value.where == "metallb_config.layer3.metallb_peers.tor.communities[0]"
    assert "quote the community" in exc.value.message
    with pytest.raises(InputError) as exc:
        convert_kubespray(_layer3(peer_port=179, peer_asn=0))
    assert exc.value.where == "metallb_config.layer3.metallb_peers.tor" and "spec.peerASN" in exc.value.message
    with pytest.raises(InputError) as exc:
        convert_kubespray(_layer3(peer_port=179, communities=["nope"]))
    assert "'nope' is neither a Community name defined here nor a community value" in str(exc.value)


def test_bgp_import_says_how_to_switch_bgp_on(capsys):
    """Manifests alone do not start the speakers' BGP sidecar: an imported BGP-only pool would silently go
    unannounced without bgp.enabled, so say so; values switch it on themselves."""
    r = lbctl_import(capsys, "kubespray", DATA / "config-layer3.yml", "--as", "manifests")
    [line] = [ln for ln in r.starting("warning: ") if "bgp.enabled=true" in ln]
    bgp_only = sorted(d["metadata"]["name"] for d in r.docs
                      if d["kind"] == "IPPool" and d["spec"].get("layer2", {}).get("enabled") is False)
    assert bgp_only and f"IPPools {', '.join(bgp_only)} (layer2.enabled: false) stay unannounced" in line
    values = lbctl_import(capsys, "kubespray", DATA / "config-layer3.yml", "--as", "values")
    assert values.docs[0]["bgp"]["enabled"] is True and values.docs[0]["bgp"]["peers"]
    assert not [ln for ln in values.starting("warning: ") if "bgp.enabled" in ln]
    plain = lbctl_import(capsys, "kubespray", DATA / "seed-addons.yml")
    assert not [ln for ln in plain.starting("warning: ") if "BGP" in ln]
