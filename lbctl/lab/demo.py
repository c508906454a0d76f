"""`lbctl lab demo`: the README's tour. Allocate an IP, serve traffic, break the owner, time the failover."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .. import tables
from . import lifecycle, probes, prober, realcluster, realspeakers, router
from .api import LabApi, wait_for
from .topology import BRIDGE_NS, CLIENT_NS, ROUTER_NS, Host, Topology, in_ns, sh

SERVICES = "/api/v1/namespaces/default/services"
FAILOVER_OK_S = 3.0  # the target is ~1 s; fail the demo only when clearly broken


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def say(line: str) -> None:
    print(f"   {line}", flush=True)


def demo_service(ipv6: bool) -> dict[str, Any]:
    """The backend pods behind one Service. Local: the node that owns the address serves it itself (the answer
    names that node) and the pods see the client's own address."""
    spec: dict[str, Any] = {"type": "LoadBalancer", "selector": {"app": realcluster.BACKEND},
                            "externalTrafficPolicy": "Local",
                            "ports": [{"name": "http", "port": 80, "targetPort": realcluster.BACKEND_PORT,
                                       "protocol": "TCP"}]}
    if ipv6:
        spec["ipFamilyPolicy"] = "PreferDualStack"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "demo", "namespace": "default"}, "spec": spec}


def run(nodes: int = 3, ipv6: bool = True, keep: bool = False, mode: str = "link", timing: str | None = None,
        bgp: bool = False) -> int:
    lifecycle.require_root()
    started_here = not lifecycle.is_up()
    if bgp and not started_here and not lifecycle.load_topology().bgp:
        print("lbctl lab demo: the lab that is up has no router; `lbctl lab down` first", file=sys.stderr)
        return 1
    try:
        return _run(nodes, ipv6, keep, mode, started_here, timing, bgp)
    finally:
        if started_here and not keep:
            step("Tearing the lab down (--keep leaves it up)")
            lifecycle.down(say=say)


def _run(nodes: int, ipv6: bool, keep: bool, mode: str, started_here: bool, timing: str | None, bgp: bool) -> int:
    if started_here:
        step("Lab: network namespaces on one bridge, a real cluster (kube-apiserver, controllers, scheduler; "
             "kubelet, containerd and kube-proxy per node) running the chart's image"
             + ("; an FRR router on the bridge, the client behind it" if bgp else ""))
        topo, _ = lifecycle.up(nodes, ipv6, say=say, timing=timing, bgp=bgp)
    else:
        step("Lab: already up; using it")
        topo = lifecycle.load_topology()
    api = LabApi()

    step("Service `demo`: type LoadBalancer, port 80")
    api.apply(SERVICES, demo_service(topo.ipv6))
    svc = wait_for(lambda: _with_ip(api.get(f"{SERVICES}/demo")), 30, "EXTERNAL-IP of Service demo")
    print(tables.services([svc]))
    ips = [i["ip"] for i in svc["status"]["loadBalancer"]["ingress"]]
    ip4 = next((ip for ip in ips if ":" not in ip), None)
    ip6 = next((ip for ip in ips if ":" in ip), None)
    if not ip4:
        print("lbctl lab demo: no IPv4 address allocated", file=sys.stderr)
        return 1
    if topo.bgp:
        return _bgp(topo, ip4, ip6, mode, keep)

    step(f"Traffic from the client ({topo.host('client').ip4}, namespace {CLIENT_NS})")
    answers = [wait_for(lambda: probes.curl(ip4), 10, f"an HTTP reply from {ip4}") for _ in range(5)]
    for a in answers:
        say(f"curl {probes.url_for(ip4)}  ->  {a}")
    owner = _arp_owner(topo, ip4)
    if not owner:
        print(f"lbctl lab demo: the client has no ARP entry for {ip4}", file=sys.stderr)
        return 1
    if ip6:
        body = probes.curl(ip6, timeout=2)
        entry = probes.neigh(ip6)
        who = topo.node_by_mac(entry.mac) if entry and entry.mac else None
        say(f"curl {probes.url_for(ip6)}  ->  {body or 'no answer'}   (NDP: {entry.mac if entry else '?'} = {who})")

    return _failover(topo, ip4, owner, mode, keep)


def _with_ip(svc: dict[str, Any]) -> dict[str, Any] | None:
    return svc if ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") else None


def _arp_owner(topo: Topology, ip: str) -> str | None:
    entry = probes.neigh(ip)
    if not entry or not entry.mac:
        return None
    node = topo.node_by_mac(entry.mac) or "an unknown host"
    say(f"ip neigh: {ip} is at {entry.mac}  =  {node}   ({'/'.join(entry.state)})")
    return topo.node_by_mac(entry.mac)


def _failover(topo: Topology, ip4: str, owner: str, mode: str, keep: bool) -> int:
    host = topo.host(owner)
    how = (f"cutting {owner}'s link (its switch port {host.port} down)" if mode == "link"
           else f"SIGKILL to {owner}'s speaker")
    step(f"Failover: {how}, while the client sends a request every 20 ms")
    probe, t_break = _break_while_probing(ip4, host, mode,
                                          lambda: realcluster.kill_container(owner, b"lbctl-speaker"))
    out, err = probe.communicate(timeout=30)
    if probe.returncode:
        print(f"lbctl lab demo: prober failed: {err.strip()}", file=sys.stderr)
        return 1
    result = prober.analyse(prober.read_probes(out), t_break)
    say(f"before: every reply from {result.before}")
    if result.after is None or result.switch_s is None:
        say(f"after:  no other node answered within {5.0 - 1.0:.0f} s")
        return 1
    say(f"after:  {result.after} answers, {result.switch_s * 1000:.0f} ms after the {'link cut' if mode == 'link' else 'SIGKILL'}")
    say(f"longest gap without a reply: {result.gap_s * 1000:.0f} ms; "
        f"{result.failures} of {result.total} requests failed")
    _arp_owner(topo, ip4)
    if keep:
        _repair(topo, owner, mode)
    if result.switch_s > FAILOVER_OK_S:
        print(f"lbctl lab demo: failover took {result.switch_s:.1f}s (> {FAILOVER_OK_S:.0f}s)", file=sys.stderr)
        return 1
    step(f"OK: {ip4} moved from {owner} to {result.after} in {result.switch_s:.2f} s")
    return 0


def _break_while_probing(ip4: str, host: Host, mode: str,
                         kill: Callable[[], object]) -> tuple[subprocess.Popen[str], float]:
    """Start the client's prober (a request every 20 ms for 5 s); after 1 s cut `host`'s link (mode "link") or
    call `kill`. Returns the prober and when the break happened."""
    probe = probes.prober(ip4, interval=0.02, duration=5.0)
    time.sleep(1.0)
    t_break = time.monotonic()
    if mode == "link":
        sh("ip", "-n", BRIDGE_NS, "link", "set", host.port, "down")
    else:
        kill()
    return probe, t_break


def _repair(topo: Topology, owner: str, mode: str) -> None:
    """With --keep, leave a whole lab behind: re-plug the link or restart the speaker."""
    host = topo.host(owner)
    if mode == "link":
        sh("ip", "-n", BRIDGE_NS, "link", "set", host.port, "up")
        say(f"re-plugged {owner}'s link")
    else:
        say(f"{owner}'s kubelet restarts its speaker container")


# --- BGP mode: the client behind the router reaches the Service through the routes the router learned ---

def _bgp(topo: Topology, ip4: str, ip6: str | None, mode: str, keep: bool) -> int:
    nodes = len(topo.node_hosts)  # every worker has a ready backend; the control plane is excluded from LBs
    step(f"The router ({topo.host('router').ip4}, FRR, AS {router.ROUTER_ASN}) learned {ip4} from every node by BGP")
    try:
        router.wait_next_hops(f"{ip4}/32", nodes, timeout=30)
    except TimeoutError as e:
        print(f"lbctl lab demo: {e}\n{router.sessions_table(topo)}", file=sys.stderr)
        return 1
    print(router.sessions_table(topo))
    for line in in_ns(ROUTER_NS, "ip", "route", "show", ip4).stdout.rstrip().splitlines():
        say(f"router# {line.strip()}")
    if ip6:
        hops = [router.node_of(topo, h) or h for h in router.next_hops(f"{ip6}/128")]
        say(f"{ip6}: next hops {', '.join(sorted(hops)) or 'none yet'}")

    client = topo.host("client")
    step(f"Traffic from the client ({client.ip4}, its own subnet behind the router): a new connection each time, "
         "spread over the next hops")
    answers = Counter(wait_for(lambda: probes.node_answering(ip4), 10, f"an HTTP reply from {ip4}") for _ in range(12))
    say(f"12 x curl {probes.url_for(ip4)}  ->  " + ", ".join(f"{n} {c}x" for n, c in sorted(answers.items())))
    if ip6:
        say(f"curl {probes.url_for(ip6)}  ->  {probes.node_answering(ip6, timeout=2) or 'no answer'}")
    return _bgp_failover(topo, ip4, nodes, mode, keep)


def _bgp_failover(topo: Topology, ip4: str, nodes: int, mode: str, keep: bool) -> int:
    victim = router.node_of(topo, router.next_hops(f"{ip4}/32")[0]) or "node1"
    host = topo.host(victim)
    how = (f"cutting {victim}'s link (its switch port {host.port} down)" if mode == "link"
           else f"SIGKILL to {victim}'s speaker and its BGP daemon")
    step(f"A node goes: {how}, while the client opens a connection every 20 ms")

    def kill() -> None:
        realspeakers.kill(victim, signal.SIGKILL)  # its kubelet stopped first: nothing restarts it
        try:
            realcluster.kill_container(victim, b"bird")
        except realcluster.ClusterError as e:
            say(f"({e})")
    probe, t_break = _break_while_probing(ip4, host, mode, kill)
    try:
        hops, _ = router.wait_next_hops(f"{ip4}/32", nodes - 1, timeout=FAILOVER_OK_S + 2)
    except TimeoutError as e:
        probe.kill()
        print(f"lbctl lab demo: {e}", file=sys.stderr)
        return 1
    took = time.monotonic() - t_break
    why = router.notifications_sent().get(host.ip4, [])
    say(f"router: {victim}'s next hop gone {took * 1000:.0f} ms after the "
        f"{'link cut' if mode == 'link' else 'SIGKILL'}" + (f" ({why[-1]})" if why else ""))
    for line in in_ns(ROUTER_NS, "ip", "route", "show", ip4).stdout.rstrip().splitlines():
        say(f"router# {line.strip()}")
    out, err = probe.communicate(timeout=30)
    if probe.returncode:
        print(f"lbctl lab demo: prober failed: {err.strip()}", file=sys.stderr)
        return 1
    results = prober.read_probes(out)
    late = [p for p in results if p.t > t_break + took + 0.05]
    served = Counter(p.node for p in late if p.ok)
    say(f"client: {sum(not p.ok for p in results)} of {len(results)} connections failed; after the withdrawal "
        + (", ".join(f"{n} {c}x" for n, c in sorted(served.items())) or "nothing answered"))
    if keep:
        _bgp_repair(topo, victim, mode)
    if took > FAILOVER_OK_S or not late or any(not p.ok or p.node == victim for p in late):
        print(f"lbctl lab demo: traffic did not move off {victim} cleanly", file=sys.stderr)
        return 1
    step(f"OK: {ip4} served by {', '.join(sorted(served))} through the router; {victim} out of its table in "
         f"{took:.2f} s")
    return 0


def _bgp_repair(topo: Topology, victim: str, mode: str) -> None:
    if mode == "link":
        sh("ip", "-n", BRIDGE_NS, "link", "set", topo.host(victim).port, "up")
        say(f"re-plugged {victim}'s link")
    else:
        realspeakers.restore(LabApi(), topo)
        say(f"{victim}'s kubelet restarted its speaker and BGP daemon")
