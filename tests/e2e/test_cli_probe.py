"""`lbctl probe`, `explain` and `preflight` on the lab: the operator's tools agree with the wire."""

from __future__ import annotations

import subprocess
import sys

from lbctl.lab.api import wait_for
from lbctl.lab.processes import STATE
from lbctl.lab.topology import CLIENT_NS, CP_NS

from .conftest import Lab, ipv4_of, ipv6_of


def in_ns(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", "lbctl.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_probe_sees_exactly_one_mac_for_ipv4_and_ipv6(fresh: Lab) -> None:
    fresh.service("probed", wait_ip=False, ipFamilyPolicy="PreferDualStack")
    svc = fresh.wait_ips("probed", count=2)
    ip4, ip6 = ipv4_of(svc), ipv6_of(svc)
    owner = fresh.wait_arp_owner(ip4)
    out = in_ns(CLIENT_NS, "probe", ip4, "-i", "eth0", "-c", "5")
    assert out.returncode == 0, out.stdout + out.stderr
    mac = next(h.mac for h in fresh.topo.node_hosts if h.name == owner)
    assert f"{ip4} is-at {mac}: 5/5 ARP replies" in out.stdout
    assert ip6
    out6 = wait_for(lambda: (r := in_ns(CLIENT_NS, "probe", ip6, "-i", "eth0", "-c", "3")).returncode == 0 and r,
                    10, f"NDP answer for {ip6}")
    assert "NDP replies" in out6.stdout and out6.stdout.count("is-at") == 1
    silent = in_ns(CLIENT_NS, "probe", "198.18.0.49", "-i", "eth0", "-c", "2", "--timeout", "0.2")
    assert silent.returncode == 1 and "no ARP reply" in silent.stdout


def test_explain_names_the_announcing_node(fresh: Lab) -> None:
    ip = ipv4_of(fresh.service("explained"))
    owner = fresh.wait_arp_owner(ip)

    def explained() -> str | None:
        out = in_ns(CP_NS, "explain", "default/explained", "--kubeconfig", str(STATE / "cp" / "kubeconfig-admin"))
        return out.stdout if f"elected {owner}; announced by {owner}" in out.stdout else None
    text = wait_for(explained, 10, "explain to agree with the wire")
    assert f"holds {ip}" in text and "IPPool default" in text


def test_preflight_on_a_lab_node(fresh: Lab) -> None:
    out = in_ns(fresh.topo.node_hosts[0].netns, "preflight", "--node-only")
    assert out.returncode == 0, out.stdout
    assert "PASS  strict ARP    kube-ipvs0 exists and ARP is strict (eth0: arp_ignore=1 arp_announce=2)" in out.stdout
    assert "PASS  raw sockets" in out.stdout
