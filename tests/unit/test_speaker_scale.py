"""benchmarks/speaker_scale.py's pure parts: the expected share and failover picks, /metrics and
/proc/net/udp parsing."""

from __future__ import annotations

from pathlib import Path

from benchmarks.peersim import peer_names
from benchmarks.speaker_scale import REAL, addresses, metric, plan, udp_drops
from lbctl.core.election import owner, rank


def test_plan_is_the_rendezvous_share_and_picks_owners_the_speaker_backs_up() -> None:
    ips, nodes = addresses(300), [REAL, *peer_names(20)]
    expected, picks = plan(ips, nodes, 3)
    assert expected == {ip for ip in ips if owner(ip, nodes) == REAL}
    assert 0 < len(expected) < 60  # about 300 / 21
    assert len(picks) == 3 and len({p for p, _ in picks}) == 3
    sizes = [len(s) for _, s in picks]
    assert sizes == sorted(sizes, reverse=True)
    for peer, owned in picks:
        assert owned and all(rank(ip, nodes)[:2] == [peer, REAL] for ip in owned)
        # stopping that peer hands exactly these IPs to the real speaker
        rest = [n for n in nodes if n != peer]
        assert {ip for ip in ips if owner(ip, rest) == REAL} == expected | owned


def test_addresses_stay_in_the_benchmark_range() -> None:
    ips = addresses(5000)
    assert ips[0] == "198.18.32.0" and ips[-1] == "198.18.51.135" and len(set(ips)) == 5000


def test_metric_sums_samples_and_tells_missing_from_zero() -> None:
    text = ("# HELP lbctl_speaker_announced_ips x\nlbctl_speaker_announced_ips 26.0\n"
            'lbctl_speaker_heartbeat_drops_total{interface="eth0"} 3.0\n'
            'lbctl_speaker_heartbeat_drops_total{interface="eth1"} 4.0\n'
            "lbctl_speaker_announced_ips_other 9.0\n")
    assert metric(text, "lbctl_speaker_announced_ips") == 26.0
    assert metric(text, "lbctl_speaker_heartbeat_drops_total") == 7.0
    assert metric(text, "lbctl_speaker_live_peers") is None


def test_udp_drops_reads_the_drops_column_of_the_heartbeat_port(tmp_path: Path) -> None:
    proc = tmp_path / "123" / "net"
    proc.mkdir(parents=True)
    (proc / "udp").write_text(
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref "
        "pointer drops\n"
        "  1: 00000000:1F0A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000 2993\n"
        "  2: 00000000:1D31 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0000 5\n")
    assert udp_drops(123, proc=str(tmp_path)) == 2993
