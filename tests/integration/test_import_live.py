"""`lbctl import` against the real API server: MetalLB objects read live, and the IPPools and BGPPeers it
prints are accepted by their CRDs exactly as hand-written ones are."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DATA = Path(__file__).resolve().parents[1] / "data" / "import"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
POOLS = "/apis/lbctl.io/v1alpha1/ippools"
PEERS = "/apis/lbctl.io/v1alpha1/bgppeers"
NS = "metallb-import"
MLB = f"/apis/metallb.io/v1beta1/namespaces/{NS}"


def lbctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbctl.cli", "import", *args], capture_output=True, text=True,
                          timeout=60)


def served(kube: Any, path: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            kube.get(path)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def created_pools(kube: Any) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        kube.delete(f"{POOLS}/{name}")


@pytest.fixture(scope="module")
def metallb(kube: Any) -> Iterator[None]:
    crds = list(yaml.safe_load_all((DATA / "metallb-crds.yaml").read_text()))
    for crd in crds:
        kube.create(CRDS, crd)
    kube.create("/api/v1/namespaces", {"metadata": {"name": NS}})
    try:
        served(kube, f"{MLB}/ipaddresspools")
        served(kube, f"{MLB}/l2advertisements")
        served(kube, f"/apis/metallb.io/v1beta2/namespaces/{NS}/bgppeers")
        yield
    finally:
        kube.delete(f"/api/v1/namespaces/{NS}")
        for crd in crds:
            kube.delete(f"{CRDS}/{crd['metadata']['name']}")


LEGACY = yaml.safe_load((DATA / "metallb-configmap.yaml").read_text())


def test_without_metallb_crds_only_the_legacy_configmap_is_read(control_plane, kube):
    kubeconfig = str(control_plane.kubeconfig("admin"))
    out = lbctl("metallb", "--from-cluster", "--kubeconfig", kubeconfig, "-n", NS)
    assert out.returncode == 2 and out.stdout == ""
    assert "MetalLB CRDs not installed" in out.stderr and f"no legacy ConfigMap {NS}/config" in out.stderr

    ns = "metallb-legacy"
    kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    try:
        kube.create(f"/api/v1/namespaces/{ns}/configmaps", dict(LEGACY, metadata={"name": "config", "namespace": ns}))
        out = lbctl("metallb", "--from-cluster", "--kubeconfig", kubeconfig, "-n", ns, "--as", "values")
        assert out.returncode == 0, out.stderr
        values = yaml.safe_load(out.stdout)
        assert [p["name"] for p in values["pools"]] == ["loadbalanced", "kube-service-pool", "bgp-space"]
        assert [p["peerAddress"] for p in values["bgp"]["peers"]] == ["10.0.0.1"]
    finally:
        kube.delete(f"/api/v1/namespaces/{ns}")


def test_from_cluster_to_accepted_ippools(control_plane, kube, metallb, created_pools):
    def obj(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None,
            version: str = "v1beta1") -> dict[str, Any]:
        return {"apiVersion": f"metallb.io/{version}", "kind": kind, "spec": spec,
                "metadata": {"name": name, "namespace": NS, "labels": labels or {}}}

    kube.create(f"{MLB}/ipaddresspools", obj("IPAddressPool", "imp-a", {"addresses": ["198.18.250.0/28"]},
                                             labels={"imp": "a"}))
    kube.create(f"{MLB}/ipaddresspools", obj("IPAddressPool", "imp-b", {
        "addresses": ["198.18.250.16-198.18.250.20"], "autoAssign": False,
        "serviceAllocation": {"priority": 5, "namespaces": ["shop"]}}))
    kube.create(f"{MLB}/ipaddresspools", obj("IPAddressPool", "imp-quiet", {"addresses": ["198.18.250.32/28"]}))
    kube.create(f"{MLB}/l2advertisements", obj("L2Advertisement", "by-label", {
        "ipAddressPoolSelectors": [{"matchLabels": {"imp": "a"}}],
        "nodeSelectors": [{"matchLabels": {"lb": "true"}}], "interfaces": ["eth1"]}))
    kube.create(f"{MLB}/l2advertisements", obj("L2Advertisement", "by-name", {"ipAddressPools": ["imp-b"]}))
    kube.create(f"/apis/metallb.io/v1beta2/namespaces/{NS}/bgppeers", obj("BGPPeer", "router", {
        "peerAddress": "198.18.250.254", "peerASN": 64512, "myASN": 64513}, version="v1beta2"))
    # left over from MetalLB <= 0.12: MetalLB with CRDs ignores it, so does the import
    kube.create(f"/api/v1/namespaces/{NS}/configmaps", dict(LEGACY, metadata={"name": "config", "namespace": NS}))

    out = lbctl("metallb", "--from-cluster", "--kubeconfig", str(control_plane.kubeconfig("admin")),
                "--context", "lbctl", "--namespace", NS)
    assert out.returncode == 3, out.stderr
    refused = [line for line in out.stderr.splitlines() if line.startswith("refused: ")]
    assert refused == [
        f"refused: IPAddressPool {NS}/imp-quiet: no L2Advertisement or BGPAdvertisement selects it: MetalLB hands "
        "out its addresses but announces them nowhere, while lbctl announces every pool it serves; add an "
        "advertisement if it should be announced",
    ]
    assert f"note: ConfigMap {NS}/config: skipped: MetalLB >= 0.13 reads only its custom resources" in out.stderr
    peer, *pools = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert peer == {"apiVersion": "lbctl.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "router"},
                    "spec": {"peerAddress": "198.18.250.254", "peerASN": 64512, "myASN": 64513}}
    try:  # the BGPPeer CRD accepts what the import prints, and fills its defaults
        stored = kube.create(PEERS, peer)
        assert stored["spec"] == {"peerPort": 179, "ebgpMultiHop": False, "enableGracefulRestart": False,
                                  **peer["spec"]}
    finally:
        kube.delete(f"{PEERS}/router")
    assert pools == [
        {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "imp-a"},
         "spec": {"addresses": ["198.18.250.0/28"],
                  "layer2": {"nodeSelector": {"matchLabels": {"lb": "true"}}, "interfaces": ["eth1"]}}},
        {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "imp-b"},
         "spec": {"addresses": ["198.18.250.16-198.18.250.20"], "autoAssign": False,
                  "serviceAllocation": {"priority": 5, "namespaces": ["shop"]}}},
    ]
    for doc in pools:
        created_pools.append(doc["metadata"]["name"])
        stored = kube.create(POOLS, doc)
        layer2 = {"layer2": {"enabled": True, **doc["spec"]["layer2"]}} if "layer2" in doc["spec"] else {}
        assert stored["spec"] == {"autoAssign": True, "avoidBuggyIPs": False, **doc["spec"], **layer2}

    wrong = lbctl("metallb", "--from-cluster", "--kubeconfig", str(control_plane.kubeconfig("admin")),
                  "--context", "nope")
    assert wrong.returncode == 2 and "no context named 'nope'" in wrong.stderr


def test_imported_seed_pool_equals_the_hand_written_one(kube, tmp_path, created_pools):
    # the seed's addons.yml, renumbered into the test range
    addons = tmp_path / "addons.yml"
    addons.write_text('metallb_enabled: true\nmetallb_ip_range:\n  - "198.18.56.50-198.18.56.99"\n'
                      'metallb_protocol: "layer2"\n')
    out = lbctl("kubespray", str(addons), "--as", "ippools")
    assert out.returncode == 0, out.stderr
    (imported,) = [d for d in yaml.safe_load_all(out.stdout) if d]
    by_hand = yaml.safe_load("""
        apiVersion: lbctl.io/v1alpha1
        kind: IPPool
        metadata: {name: seed-by-hand}
        spec:
          addresses: ["198.18.56.50-198.18.56.99"]
    """)
    created_pools += [imported["metadata"]["name"], "seed-by-hand"]
    a, b = kube.create(POOLS, imported), kube.create(POOLS, by_hand)
    assert imported["metadata"]["name"] == "loadbalanced"
    assert a["spec"] == b["spec"] == {"addresses": ["198.18.56.50-198.18.56.99"], "autoAssign": True,
                                      "avoidBuggyIPs": False}
