"""The rendered bird.conf is accepted by BIRD's own parser (`bird -p -c FILE`), the daemon the sidecar runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lbctl.core.bgp_render import BfdProfile, BgpConfig, Export, Peer, render

BIRD = shutil.which("bird") or ("/usr/sbin/bird" if Path("/usr/sbin/bird").exists() else None)
pytestmark = pytest.mark.skipif(BIRD is None, reason="BIRD 2 is not installed (Debian package bird2): "
                                                     "cannot check rendered configs with `bird -p`")

BULK = tuple(Export(f"198.19.{i // 256}.{i % 256}/32", 100 + i % 3, (f"65000:{i % 5}",)) for i in range(1000))
CONFIGS = {
    "empty": BgpConfig("198.18.0.2", 64501),
    "everything": BgpConfig("198.18.0.2", 64501, (
        Peer("tor-a", "198.18.0.1", 64500, source_address="198.18.0.2", hold_time_s=9, keepalive_time_s=3,
             password="s3cret with spaces", bfd=BfdProfile("fast", 100, 100, 3, passive_mode=True, minimum_ttl=254),
             exports=(Export("198.18.10.1/32", 200, ("65000:1", "large:64500:1:2", "no-export", "no-advertise")),
                      Export("198.18.10.0/24"))),
        Peer("tor-b.v6", "2001:db8::1", 64500, port=1179, ebgp_multihop=True, source_address="2001:db8::2",
             graceful_restart=True, bfd=BfdProfile("slow", 1000, 1000, 5),
             exports=(Export("2001:db8:10::/64", 50, ("large:4200000000:4294967295:0",)),)),
        Peer("x" * 200 + ".example", "198.18.0.7", 64500, exports=(Export("198.18.10.1/32"),)),
        Peer("ibgp", "198.18.0.5", 64501, hold_time_s=0, exports=(Export("198.18.10.9/32", 4294967295),)),
    )),
    "bulk": BgpConfig("198.18.0.2", 64501, (Peer("a", "198.18.0.1", 64500, exports=BULK),
                                            Peer("b", "198.18.0.3", 64500, exports=BULK))),
}


def bird_parse(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "bird.conf"
    conf.write_text(text)
    return subprocess.run([BIRD, "-p", "-c", str(conf)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bird_accepts_the_rendered_config(tmp_path, name):
    proc = bird_parse(tmp_path, render(CONFIGS[name]))
    assert proc.returncode == 0, f"bird -p refused the {name} render: {proc.stderr.strip()}"


def test_the_check_itself_refuses_a_broken_config(tmp_path):
    """The check can fail: BIRD's parser refuses what the renderer must never emit."""
    broken = render(CONFIGS["everything"]).replace("import none;", "import none", 1)
    proc = bird_parse(tmp_path, broken)
    assert proc.returncode != 0 and "syntax error" in proc.stderr
