"""The one strict-ARP check: node sysctls with kube-ipvs0, and kube-proxy's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbctl import arpsysctl
from lbctl.core import strictarp
from lbctl.core.netifs import Interface

STRICT = {"arp_ignore": "1", "arp_announce": "2"}
LOOSE = {"arp_ignore": "0", "arp_announce": "0"}


def test_no_ipvs_dummy_passes_whatever_the_values() -> None:
    f = strictarp.node({"all": LOOSE}, ipvs_present=False)
    assert f.ok and "no kube-ipvs0" in f.message and "arp_ignore=0" in f.message


def test_ipvs_with_kube_proxy_strict_arp_passes() -> None:
    f = strictarp.node({"all": STRICT, "eth0": LOOSE}, ipvs_present=True, interfaces=["eth0"])
    assert f.level == "PASS" and "eth0: arp_ignore=1 arp_announce=2" in f.message


def test_ipvs_with_default_sysctls_fails_naming_values_and_fix() -> None:
    f = strictarp.node({"all": LOOSE, "eth0": LOOSE}, ipvs_present=True, interfaces=["eth0"])
    assert f.level == "FAIL" and f.what == "strict ARP"
    assert "not strict on eth0" in f.message and "arp_ignore=0 arp_announce=0" in f.message
    assert "strictARP: true" in f.message


def test_the_kernel_takes_the_larger_of_all_and_the_interface() -> None:
    sysctls = {"all": LOOSE, "eth0": STRICT, "eth1": {"arp_ignore": "1", "arp_announce": "1"}}
    assert strictarp.effective(sysctls, "eth0") == {"arp_ignore": 1, "arp_announce": 2}
    f = strictarp.node(sysctls, ipvs_present=True, interfaces=["eth0", "eth1"])
    assert f.level == "FAIL" and "not strict on eth1 " in f.message and "eth0," not in f.message
    assert strictarp.node(sysctls, True, ["eth0"]).ok


@pytest.mark.parametrize("ignore, announce, ok", [("1", "2", True), ("2", "2", True), ("8", "2", True),
                                                  ("3", "2", False), ("0", "2", False), ("1", "1", False)])
def test_which_values_are_strict(ignore: str, announce: str, ok: bool) -> None:
    assert strictarp.node({"all": {"arp_ignore": ignore, "arp_announce": announce}}, True).ok is ok


def test_unreadable_values_warn_instead_of_guessing() -> None:
    f = strictarp.node({"all": {"arp_ignore": None, "arp_announce": "2"}}, True)
    assert f.level == "WARN" and "cannot read" in f.message and "arp_ignore=?" in f.message
    assert strictarp.node({"all": {"arp_ignore": "x", "arp_announce": "2"}}, True).level == "WARN"
    assert strictarp.node({}, True).level == "WARN"
    # A missing per-interface file falls back to conf/all.
    assert strictarp.node({"all": STRICT, "eth0": {"arp_ignore": None, "arp_announce": None}}, True, ["eth0"]).ok


@pytest.mark.parametrize("conf, level, text", [
    ({"mode": "ipvs", "ipvs": {"strictARP": True}}, "PASS", "mode ipvs, strictARP"),
    ({"mode": "ipvs", "ipvs": {"strictARP": False}}, "FAIL", "mode ipvs without ipvs.strictARP: true"),
    ({"mode": "ipvs"}, "FAIL", "without ipvs.strictARP"),
    ({"mode": "ipvs", "ipvs": "yes"}, "FAIL", "without ipvs.strictARP"),
    ({"mode": "ipvs", "ipvs": {"strictARP": "true"}}, "FAIL", "without"),  # a string is not the boolean
    ({"mode": ""}, "PASS", "mode iptables"),
    ({}, "PASS", "mode iptables"),
    ({"mode": "nftables"}, "PASS", "mode nftables"),
    (None, "WARN", "no kube-system/kube-proxy ConfigMap"),
    (["mode", "ipvs"], "WARN", "not a KubeProxyConfiguration"),
])
def test_kube_proxy_configuration(conf: object, level: str, text: str) -> None:
    f = strictarp.kube_proxy(conf)  # type: ignore[arg-type]
    assert f.level == level and text in f.message and f.what == "kube-proxy"


def _conf(tmp: Path, values: dict[str, dict[str, str]]) -> Path:
    for scope, kv in values.items():
        (tmp / scope).mkdir()
        for k, v in kv.items():
            (tmp / scope / k).write_text(v + "\n")
    return tmp


def test_reader_reads_all_and_the_interfaces(tmp_path: Path) -> None:
    conf = _conf(tmp_path, {"all": STRICT, "eth0": LOOSE})
    assert arpsysctl.read(["eth0", "gone0"], conf) == {
        "all": STRICT, "eth0": LOOSE, "gone0": {"arp_ignore": None, "arp_announce": None}}


def test_check_takes_ipvs_from_the_links_and_reads_this_node() -> None:
    lo = Interface("lo", 1, "00:00:00:00:00:00", frozenset({"UP", "LOOPBACK"}), "loopback")
    ipvs = Interface("kube-ipvs0", 9, "02:00:00:00:00:09", frozenset({"BROADCAST", "NOARP"}), "ether")
    assert "no kube-ipvs0" in arpsysctl.check([lo], ["lo"]).message
    found = arpsysctl.check([lo, ipvs], ["lo", "../x"])  # a name that is not an interface is never a path
    assert found.level in ("PASS", "FAIL") and "lo: arp_ignore=" in found.message and "../x" not in found.message
