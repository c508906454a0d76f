"""`lbctl import metallb` from files: CRs, the legacy ConfigMap, refusals and exit codes."""

from __future__ import annotations

import re

import pytest
import yaml

from lbctl import assets

from lbctl.core.migrate import InputError
from lbctl.core.migrate_metallb import convert_metallb
from lbctl.core.bfdprofiles import parse_bfd_profile
from lbctl.core.bgppeers import parse_peer
from lbctl.core.pools import parse_pool
from tests.unit.importing import DATA, lbctl_import



def pool(name, addresses, labels=None, ns="metallb-system", **spec):
    meta = {"name": name, "namespace": ns, **({"labels": labels} if labels else {})}
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": meta,
            "spec": {"addresses": addresses, **spec}}


def l2(name, ns="metallb-system", **spec):
    return {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def refusals(conv):
    return [str(r) for r in conv.refusals]


def test_crs_map_to_ippools(capsys):
    r = lbctl_import(capsys, "metallb", DATA / "metallb-crs.yaml")
    assert r.code == 0, r.err
    assert r.docs == [
        {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "default"},
         "spec": {"addresses": ["192.168.56.50-192.168.56.99"],
                  "layer2": {"nodeSelector": {"matchLabels": {"topology.kubernetes.io/zone": "a"}},
                             "interfaces": ["eth1"]}}},
        {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "team-a"},
         "spec": {"addresses": ["192.168.56.100/30", "fd00:56::/120"], "autoAssign": False, "avoidBuggyIPs": True,
                  "serviceAllocation": {"priority": 10, "namespaces": ["team-a"], "serviceSelector": {
                      "matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}}}},
        # priority 0 is MetalLB's "unset"
        {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "by-label"},
         "spec": {"addresses": ["192.168.56.110-192.168.56.119"],
                  "serviceAllocation": {"namespaceSelector": {"matchLabels": {"tier": "gold"}}}}},
    ]
    assert r.lines == ["note: ServiceL2Status metallb-system/l2-abc12: not needed: MetalLB status, not configuration"]

    values = lbctl_import(capsys, "metallb", DATA / "metallb-crs.yaml", "--as", "values")
    assert values.code == 0
    assert values.values == {"pools": [{"name": d["metadata"]["name"], **d["spec"]} for d in r.docs]}


def test_imported_pools_pass_the_crd_pattern_and_the_controller_checks(capsys):
    crd = yaml.safe_load((assets.crd_dir() / "ippools.lbctl.io.yaml").read_text())
    pattern = re.compile(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
                         ["properties"]["addresses"]["items"]["pattern"])
    docs = []
    for f in ("metallb-crs.yaml", "metallb-configmap.yaml", "metallb-bgp.yaml", "metallb-bgp-v1beta1.yaml",
              "metallb-configmap-bgp.yaml"):
        docs += lbctl_import(capsys, "metallb", DATA / f).docs
    for f in ("seed-addons.yml", "legacy-full.yml", "config-layer2.yml", "legacy-bgp.yml", "config-sample.yml",
              "config-layer3.yml"):
        docs += lbctl_import(capsys, "kubespray", DATA / f, "--as", "ippools").docs
    kinds = [d["kind"] for d in docs]
    assert kinds.count("IPPool") == 23 and kinds.count("BGPPeer") == 10 and kinds.count("BFDProfile") == 3
    for doc in docs:
        if doc["kind"] == "IPPool":
            assert all(pattern.match(a) for a in doc["spec"]["addresses"]), doc
            assert parse_pool(doc["metadata"]["name"], doc["spec"]).error is None, doc
        elif doc["kind"] == "BGPPeer":
            parse_peer(doc["metadata"]["name"], doc["spec"])
        elif doc["kind"] == "BFDProfile":
            parse_bfd_profile(doc["metadata"]["name"], doc["spec"])


def test_bgp_kinds_map_one_to_one(capsys):
    r = lbctl_import(capsys, "metallb", DATA / "metallb-bgp.yaml")
    assert r.code == 0, r.err
    assert r.docs == [
        {"apiVersion": "lbctl.io/v1alpha1", "kind": "BFDProfile", "metadata": {"name": "fast"},
         "spec": {"receiveInterval": 100, "transmitInterval": 100}},
        {"apiVersion": "lbctl.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "peer1"},
         "spec": {"myASN": 4200000000, "peerASN": 64512, "peerAddress": "10.6.0.1"}},
        {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "bgp-pool"},
         "spec": {"addresses": ["10.6.0.0/24"], "bgp": {"advertisements": [{"communities": ["1234:1"]}]},
                  "layer2": {"enabled": False}}},
    ]
    assert r.starting("note: Community metallb-system/vpn-only: not needed as an object: its names are expanded")


def test_two_node_selectors_are_refused(capsys):
    r = lbctl_import(capsys, "metallb", DATA / "metallb-two-nodeselectors.yaml")
    assert r.code == 3 and r.docs == []
    assert r.refused[0].startswith("refused: L2Advertisement metallb-system/edge: spec.nodeSelectors: 2 selectors "
                                   "(MetalLB announces from nodes matching any); an IPPool's layer2.nodeSelector "
                                   "holds one")
    assert r.refused[1] == ("refused: IPAddressPool metallb-system/edge: every L2Advertisement that selects it "
                            "(L2Advertisement metallb-system/edge) was refused (see above)")


def test_legacy_configmap(capsys):
    r = lbctl_import(capsys, "metallb", DATA / "metallb-configmap.yaml", "--as", "values")
    assert r.code == 0, r.err
    assert r.values == {"pools": [
        {"name": "loadbalanced", "addresses": ["192.168.56.50-192.168.56.99"]},
        {"name": "kube-service-pool", "addresses": ["192.168.56.100-192.168.56.109"], "autoAssign": False,
         "avoidBuggyIPs": True},
        {"name": "bgp-space", "addresses": ["198.51.100.0/24"],
         "bgp": {"advertisements": [{"communities": ["65535:65282"]}]}, "layer2": {"enabled": False}}],
        "bgp": {"enabled": True, "peers": [{"name": "peer-10-0-0-1", "peerAddress": "10.0.0.1", "peerASN": 64501, "myASN": 64500}]}}
    where = "ConfigMap metallb-system/config: data.config"
    assert r.refused == []
    assert r.starting(f"warning: {where}: address-pools[1]: pool 'kube_service_pool' is imported as IPPool "
                      "'kube-service-pool'")


def test_legacy_config_given_bare_and_address_pool_kind():
    conv = convert_metallb([
        {"address-pools": [{"name": "a", "protocol": "layer2", "addresses": ["192.168.56.0/28"]}]},
        {"apiVersion": "metallb.io/v1beta1", "kind": "AddressPool", "metadata": {"name": "b"},
         "spec": {"protocol": "layer2", "addresses": ["192.168.56.16/28"], "autoAssign": False}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "AddressPool", "metadata": {"name": "c"},
         "spec": {"protocol": "bgp", "addresses": ["192.168.56.32/28"]}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "AddressPool", "metadata": {"name": "d"},
         "spec": {"protocol": "bgp", "addresses": ["192.168.56.48/28"], "bgpAdvertisements": [
             {"aggregationLength": 28, "localPref": 50, "communities": ["tag"]}]}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "Community", "metadata": {"name": "tags"},
         "spec": {"communities": [{"name": "tag", "value": "large:1:2:3"}]}},
    ])
    bgp_only = {"layer2": {"enabled": False}}
    assert conv.pools == {"a": {"addresses": ["192.168.56.0/28"]},
                          "b": {"addresses": ["192.168.56.16/28"], "autoAssign": False},
                          "c": {"addresses": ["192.168.56.32/28"], "bgp": {"advertisements": [{}]}, **bgp_only},
                          "d": {"addresses": ["192.168.56.48/28"], **bgp_only, "bgp": {"advertisements": [
                              {"aggregationLength": 28, "localPref": 50, "communities": ["large:1:2:3"]}]}}}
    assert refusals(conv) == []


def test_pool_without_l2advertisement_is_refused():
    conv = convert_metallb([pool("quiet", ["192.168.56.50/31"])])
    assert conv.pools == {}
    assert refusals(conv) == ["refused: IPAddressPool metallb-system/quiet: no L2Advertisement or BGPAdvertisement "
                              "selects it: MetalLB hands out its addresses but announces them nowhere, while lbctl "
                              "announces every pool it serves; add an advertisement if it should be announced"]


def test_l2advertisement_without_pools_selects_every_pool():
    conv = convert_metallb([pool("a", ["192.168.56.0/30"]), pool("b", ["192.168.56.4/30"]),
                            l2("all", interfaces=["eth1"])])
    assert conv.refusals == []
    assert conv.pools == {"a": {"addresses": ["192.168.56.0/30"], "layer2": {"interfaces": ["eth1"]}},
                          "b": {"addresses": ["192.168.56.4/30"], "layer2": {"interfaces": ["eth1"]}}}


def test_several_advertisements_per_pool():
    narrow = {"nodeSelectors": [{"matchLabels": {"lb": "yes"}}]}
    other = {"interfaces": ["eth2"]}
    # an unrestricted advertisement covers every node and interface: the union is that
    conv = convert_metallb([pool("a", ["192.168.56.0/30"]), l2("n", ipAddressPools=["a"], **narrow),
                            l2("wide", ipAddressPools=["a"])])
    assert conv.refusals == [] and conv.pools["a"] == {"addresses": ["192.168.56.0/30"]}
    # the same restriction twice is one
    conv = convert_metallb([pool("a", ["192.168.56.0/30"]), l2("n1", ipAddressPools=["a"], **narrow),
                            l2("n2", ipAddressPools=["a"], **narrow)])
    assert conv.pools["a"]["layer2"] == {"nodeSelector": {"matchLabels": {"lb": "yes"}}}
    # two different restrictions: MetalLB's union cannot be written as one layer2 block
    conv = convert_metallb([pool("a", ["192.168.56.0/30"]), l2("n", ipAddressPools=["a"], **narrow),
                            l2("o", ipAddressPools=["a"], **other)])
    assert conv.pools == {}
    assert refusals(conv)[0].startswith("refused: IPAddressPool metallb-system/a: 2 L2Advertisements select it "
                                        "with different nodeSelectors/interfaces")


def test_l2advertisement_fields_lbctl_lacks():
    conv = convert_metallb([pool("a", ["192.168.56.0/30"]), pool("b", ["192.168.56.4/30"], labels={"x": "y"}),
                            l2("svc", ipAddressPools=["a"], serviceSelectors=[{"matchLabels": {"app": "web"}}]),
                            l2("pref", ipAddressPoolSelectors=[{"matchLabels": {"x": "y"}}], preferredNodeSelectors=[
                                {"weight": 50, "preference": {"matchLabels": {"fast": "yes"}}}])])
    assert conv.pools == {"b": {"addresses": ["192.168.56.4/30"]}}
    assert [r.what for r in conv.refusals] == ["L2Advertisement metallb-system/svc: spec.serviceSelectors",
                                               "L2Advertisement metallb-system/pref: spec.preferredNodeSelectors",
                                               "IPAddressPool metallb-system/a"]


@pytest.mark.parametrize("alloc,what", [
    ({"namespaceSelectors": [{"matchLabels": {"a": "1"}}, {"matchLabels": {"b": "2"}}]},
     "spec.serviceAllocation.namespaceSelectors: 2 selectors (MetalLB accepts a match of any)"),
    ({"serviceSelectors": [{"matchLabels": {"a": "1"}}, {"matchLabels": {"b": "2"}}]},
     "spec.serviceAllocation.serviceSelectors: 2 selectors"),
    ({"namespaces": ["x"], "namespaceSelectors": [{"matchLabels": {"a": "1"}}]},
     "spec.serviceAllocation: sets both namespaces and namespaceSelectors: MetalLB admits a namespace that is "
     "listed OR selected, lbctl requires both"),
    ({"nodes": ["n1"]}, "spec.serviceAllocation.nodes: unknown field"),
])
def test_allocation_rules_lbctl_cannot_hold_refuse_the_pool(alloc, what):
    conv = convert_metallb([pool("a", ["192.168.56.0/30"], serviceAllocation=alloc), l2("l2")])
    assert conv.pools == {}
    assert refusals(conv)[0].startswith(f"refused: IPAddressPool metallb-system/a: {what}"), refusals(conv)


def test_namespaces_and_names():
    docs = [pool("a", ["192.168.56.0/30"]), l2("l2"),
            pool("a", ["192.168.56.8/30"], ns="other"), l2("l2", ns="other"),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "controller"}},
            {"apiVersion": "metallb.io/v1beta1", "kind": "Frobnicator", "metadata": {"name": "f"}}]
    conv = convert_metallb(docs)
    assert conv.pools == {"a": {"addresses": ["192.168.56.0/30"]}}
    assert refusals(conv) == [
        "refused: Frobnicator metallb-system/f: unknown MetalLB kind: lbctl does not know what it configures",
        "refused: IPAddressPool other/a: an IPPool named 'a' already comes from IPAddressPool metallb-system/a; "
        "IPPool names are cluster-wide"]
    assert "Deployment metallb-system/controller: skipped: not MetalLB configuration" in conv.notes
    only = convert_metallb(docs, namespace="other")
    assert only.pools == {"a": {"addresses": ["192.168.56.8/30"]}}
    assert "IPAddressPool metallb-system/a: skipped: MetalLB in namespace other does not read it" in only.notes


@pytest.mark.parametrize("doc,where", [
    (pool("a", ["192.168.56.9-192.168.56.1"]), "IPAddressPool metallb-system/a: spec.addresses[0]: "
                                               "'192.168.56.9-192.168.56.1' is reversed"),
    (pool("a", []), "IPAddressPool metallb-system/a: spec.addresses: must be a non-empty list"),
    (pool("a", ["192.168.56.0/30"], autoAssign="sometimes"), "spec.autoAssign: must be true or false"),
    (l2("x", nodeSelectors=[{"matchExpressions": [{"key": "a", "operator": "Near"}]}]),
     "L2Advertisement metallb-system/x: spec.nodeSelectors[0]: selector.matchExpressions[0].operator 'Near'"),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config"}, "data": {"config": "a: ["}},
     "ConfigMap metallb-system/config: data.config: is not valid YAML"),
    ({"address-pools": [{"name": "p", "addresses": ["192.168.56.0/30"]}]}, "address-pools[0]: protocol: is missing"),
    (["not", "a", "map"], "document 2: is not a YAML map"),
])
def test_malformed_objects_exit_2_naming_file_and_key(capsys, tmp_path, doc, where):
    f = tmp_path / "metallb.yaml"
    f.write_text(yaml.safe_dump_all([l2("fine"), doc]))
    r = lbctl_import(capsys, "metallb", f)
    assert r.code == 2 and r.out == ""
    assert r.lines[0].startswith(f"error: {f}: ") and where in r.lines[0], r.lines


def test_needs_input(capsys):
    r = lbctl_import(capsys, "metallb")
    assert r.code == 2 and r.lines == ["error: give FILEs or --from-cluster"]


def test_bgp_objects_of_both_api_versions(capsys):
    r = lbctl_import(capsys, "metallb", DATA / "metallb-bgp-v1beta1.yaml")
    assert r.code == 3
    docs = {(d["kind"], d["metadata"]["name"]): d for d in r.docs}
    assert sorted(docs) == [("BFDProfile", "fast"), ("BGPPeer", "new-peer"), ("BGPPeer", "old-peer"),
                            ("IPPool", "v6"), ("IPPool", "web"), ("Secret", "old-peer-bgp-password")]
    assert docs[("BGPPeer", "old-peer")]["spec"] == {  # v1beta1, every field
        "myASN": 64513, "peerASN": 64512, "peerAddress": "198.18.0.1", "peerPort": 1179, "sourceAddress": "198.18.0.2",
        "holdTime": "9s", "keepaliveTime": "3s", "routerID": "198.18.0.10", "bfdProfile": "fast", "ebgpMultiHop": True,
        "nodeSelectors": [{"matchLabels": {"rack": "a"}}],
        "passwordSecret": {"name": "old-peer-bgp-password", "namespace": "lbctl-system"}}
    assert docs[("BGPPeer", "new-peer")]["spec"] == {  # v1beta2
        "myASN": 64513, "peerASN": 64514, "peerAddress": "2001:db8::1", "enableGracefulRestart": True,
        "bfdProfile": "fast", "passwordSecret": {"name": "tor-pw", "namespace": "lbctl-system"}}
    assert docs[("BFDProfile", "fast")]["spec"] == {"receiveInterval": 100, "transmitInterval": 100,
                                                    "detectMultiplier": 3, "echoInterval": 50, "echoMode": True,
                                                    "passiveMode": False, "minimumTtl": 250}
    assert docs[("IPPool", "web")]["spec"] == {"addresses": ["198.18.20.0/24"], "bgp": {"advertisements": [
        {"aggregationLength": 24, "localPref": 100, "communities": ["large:64513:1:2", "no-export", "65000:1"],
         "peers": ["old-peer"], "nodeSelectors": [{"matchLabels": {"rack": "a"}}]}]}}  # and layer 2 (web-l2)
    assert docs[("IPPool", "v6")]["spec"] == {"addresses": ["2001:db8:2::/120"], "layer2": {"enabled": False},
                                              "bgp": {"advertisements": [{"aggregationLengthV6": 120}]}}
    assert r.refused == [
        "refused: BGPPeer metallb-system/new-peer: spec.connectTime: lbctl does not set the TCP connect retry timer "
        "(the daemon's default applies); the peer is imported without it",
        "refused: BGPPeer metallb-system/dyn: spec.dynamicASN: lbctl's BGPPeer needs the peer's ASN (peerASN); "
        "MetalLB learned it from the OPEN message; the peer is not imported",
        "refused: BGPPeer metallb-system/unnumbered: spec.interface: unnumbered BGP (a session over an interface's "
        "IPv6 link-local address) has no lbctl equivalent; give the router's address as peerAddress; the peer is not "
        "imported",
        "refused: BGPPeer metallb-system/in-vrf: spec.vrf: lbctl's sessions run in the node's default VRF only; the "
        "peer is not imported",
        "refused: BGPAdvertisement metallb-system/svc: spec.serviceSelectors: lbctl advertises every Service of a "
        "pool and cannot limit advertisements by Service labels; pools that rely on this advertisement are not "
        "imported",
        "refused: IPAddressPool metallb-system/svc-only: every BGPAdvertisement that selects it (BGPAdvertisement "
        "metallb-system/svc) was refused (see above)",
    ]
    assert r.starting("warning: BGPPeer metallb-system/new-peer: spec.passwordSecret: copy Secret "
                      "metallb-system/tor-pw (key password) to namespace lbctl-system")


def test_legacy_configmap_bgp(capsys):
    r = lbctl_import(capsys, "metallb", DATA / "metallb-configmap-bgp.yaml", "--as", "values")
    assert r.code == 0, r.err
    assert r.values == {
        "pools": [{"name": "bgp-agg", "addresses": ["198.18.30.0/24"], "layer2": {"enabled": False},
                   "bgp": {"advertisements": [  # edge: 65000:7 unquoted, rebuilt as Go's YAML read it
                       {"aggregationLength": 24, "localPref": 120, "communities": ["65000:7", "no-export"]}, {}]}}],
        "bgp": {"enabled": True, "peers": [{"name": "peer-198-18-0-1", "peerAddress": "198.18.0.1", "peerASN": 64512, "myASN": 64513,
                           "peerPort": 1179, "holdTime": "30s", "routerID": "198.18.0.10",
                           "sourceAddress": "198.18.0.2", "bfdProfile": "slow", "ebgpMultiHop": True,
                           "nodeSelectors": [{"matchLabels": {"rack": "a"}, "matchExpressions": [
                               {"key": "role", "operator": "NotIn", "values": ["cp"]}]}],
                           "passwordSecret": {"name": "peer-198-18-0-1-bgp-password", "namespace": "lbctl-system"}}],
                "bfdProfiles": [{"name": "slow", "receiveInterval": 1000, "transmitInterval": 1000,
                                 "detectMultiplier": 5, "echoMode": False, "passiveMode": True, "minimumTtl": 250}]}}
    assert "s3cret" not in r.out


def test_peer_names_clash_across_namespaces_and_bad_bgp_input_names_the_object():
    peer = {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
            "spec": {"myASN": 1, "peerASN": 2, "peerAddress": "198.18.0.1"}}
    conv = convert_metallb([{**peer, "metadata": {"name": "tor", "namespace": "a"}},
                            {**peer, "metadata": {"name": "tor", "namespace": "b"}}])
    assert refusals(conv) == ["refused: BGPPeer b/tor: a BGPPeer named 'tor' already comes from BGPPeer a/tor; "
                              "BGPPeer names are cluster-wide"]
    with pytest.raises(InputError) as exc:
        convert_metallb([{**peer, "metadata": {"name": "tor"}, "spec": {**peer["spec"], "holdTime": "1s"}}])
    assert exc.value.where == "BGPPeer metallb-system/tor" and exc.value.doc == 0
    assert "spec.holdTime must be 0 or from 3s to 65535s" in exc.value.message


def test_dangling_references_are_warned():
    conv = convert_metallb([
        {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "tor"},
         "spec": {"myASN": 1, "peerASN": 2, "peerAddress": "198.18.0.1", "bfdProfile": "gone"}},
        pool("p", ["198.18.1.0/28"]),
        {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "a"},
         "spec": {"peers": ["tor", "other"]}}])
    assert conv.pools["p"]["bgp"] == {"advertisements": [{"peers": ["tor", "other"]}]}
    assert conv.warnings == [
        "BGPPeer tor: bfdProfile 'gone' was not imported; the peer stays Invalid until a BFDProfile of that name "
        "exists",
        "IPPool p: spec.bgp.advertisements[0].peers names 'other', which was not imported as a BGPPeer"]
