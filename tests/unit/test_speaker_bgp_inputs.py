"""speaker/bgp.py without I/O: informer events into inputs, and the configs rendered from them."""

from __future__ import annotations

import base64

from lbctl.core.announce import IpIntent
from lbctl.core.election import NodeInfo
from lbctl.core.pools import parse_pool
from speaker.bgp import BgpSpeaker
from speaker.bgpd import BOOTSTRAP_TEXT
from speaker.metrics import Metrics

POOL = parse_pool("p", {"addresses": ["198.18.20.0/24"], "bgp": {"advertisements": [{}]}}, "")
NODE = NodeInfo("n1", {"rack": "a"}, addresses=("2001:db8::2", "198.18.1.2"))


def speaker() -> BgpSpeaker:
    intents = {"198.18.20.5": IpIntent("198.18.20.5", pool="p")}
    return BgpSpeaker("n1", "/nonexistent", lambda: (intents, {"p": POOL}, {"n1": NODE}), Metrics(), lambda: None,
                      namespace="lbctl-system")


def peer(name: str, address: str, **spec) -> dict:
    return {"metadata": {"name": name, "uid": f"uid-{name}"},
            "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": address, **spec}}


def secret(name: str, password: str | None) -> dict:
    data = {"password": base64.b64encode(password.encode()).decode()} if password is not None else {"x": "eA=="}
    return {"metadata": {"name": name}, "data": data}


def test_no_peer_is_the_bootstrap_config() -> None:
    got, anns, text, withdraw = speaker().desired()
    assert got.config is None and [a.ip for a in anns] == ["198.18.20.5"]
    assert text == withdraw == BOOTSTRAP_TEXT


def test_peers_passwords_and_the_reasons_for_those_left_out() -> None:
    sp = speaker()
    sp.take("BGPPeer", "SYNC", [
        peer("tor1", "198.18.1.1", passwordSecret={"name": "pw"}),
        peer("tor2", "198.18.1.9", passwordSecret={"name": "pw", "namespace": "elsewhere"}),
        peer("tor3", "198.18.1.10", holdTime="9s", keepaliveTime="10s"),  # keepalive not below hold: invalid
        peer("tor4", "198.18.1.11", passwordSecret={"name": "quote"}),
        peer("tor5", "198.18.1.12"), "not an object"])
    sp.take("Secret", "SYNC", [secret("pw", "s3cret"), secret("quote", 'a"b'), secret("nopw", None)])
    sp.take("BGPPeer", "DELETED", peer("tor5", "198.18.1.12"))
    got, _, text, withdraw = sp.desired()
    assert got.config and [p.name for p in got.config.peers] == ["tor1"]
    assert got.config.router_id == "198.18.1.2"  # the node's IPv4 InternalIP
    assert got.config.peers[0].password == "s3cret" and 'password "s3cret"' in text
    assert set(got.skipped) == {"tor2", "tor3", "tor4"}
    assert "could not be read" in got.skipped["tor2"]  # only Secrets in the speaker's own namespace are read
    assert "keepaliveTime" in got.skipped["tor3"]
    assert got.skipped["tor4"].startswith("cannot be rendered: peer 'tor4': password")  # the others go on
    assert "198.18.20.5/32" in text and "198.18.20.5/32" not in withdraw and "peer_tor1" in withdraw
    assert "timeformat protocol iso long;" in text
    sp.take("Secret", "DELETED", secret("pw", "s3cret"))
    assert "could not be read" in sp.desired()[0].skipped["tor1"]
