"""ARP codec and BPF filter, checked against scapy as an independent encoder/decoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from lbctl.core import arp
from lbctl.core.arp import (
    ARP_REQUEST_BPF,
    ArpRequest,
    bpf_bytes,
    build_arp_reply,
    build_gratuitous,
    mac_to_bytes,
    mac_to_str,
    parse_arp_request,
)

PEER_MAC = "02:00:00:00:00:01"
OUR_MAC = "02:00:00:00:00:aa"
PEER_IP = "192.0.2.10"
VIP = "192.0.2.100"


def ip4(s: str) -> bytes:
    return bytes(int(x) for x in s.split("."))


def scapy_request(**kw) -> bytes:
    a = dict(op=1, hwsrc=PEER_MAC, psrc=PEER_IP, hwdst="00:00:00:00:00:00", pdst=VIP)
    a.update(kw)
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=a["hwsrc"]) / ARP(**a))


# --- parsing ---------------------------------------------------------------------------------


def test_parse_scapy_request():
    req = parse_arp_request(scapy_request())
    assert req == ArpRequest(mac_to_bytes(PEER_MAC), ip4(PEER_IP), ip4(VIP))


def test_parse_accepts_padded_frame_and_memoryview():
    frame = scapy_request() + bytes(18)
    assert parse_arp_request(memoryview(frame)) == parse_arp_request(frame) is not None


def test_probe_is_parsed_and_answered_unicast_like_linux():
    req = parse_arp_request(scapy_request(psrc="0.0.0.0"))
    assert req is not None and req.is_probe
    pkt = Ether(build_arp_reply(mac_to_bytes(OUR_MAC), ip4(VIP), req))
    assert pkt.dst == PEER_MAC and pkt[ARP].pdst == "0.0.0.0" and pkt[ARP].op == 2


@pytest.mark.parametrize(
    "frame",
    [
        scapy_request(op=2),
        scapy_request(op=3),
        scapy_request(hwtype=6),
        scapy_request(ptype=0x86DD),
        scapy_request(hwlen=8),
        scapy_request(plen=16),
        scapy_request(hwsrc="ff:ff:ff:ff:ff:ff"),
        scapy_request(hwsrc="01:00:5e:00:00:01"),
        scapy_request(hwsrc="00:00:00:00:00:00"),
        bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="01:00:5e:00:00:01") / ARP(hwsrc=PEER_MAC, pdst=VIP)),
        bytes(Ether(src=PEER_MAC) / Dot1Q(vlan=10) / ARP(op=1, hwsrc=PEER_MAC, psrc=PEER_IP, pdst=VIP)),
        bytes(Ether(src=PEER_MAC) / IP(src=PEER_IP, dst=VIP) / UDP()),
        b"",
        bytes(100),
    ],
    ids=lambda f: f"{len(f)}b",
)
def test_parse_rejects(frame):
    assert parse_arp_request(frame) is None


def test_every_truncation_is_rejected():
    frame = scapy_request()
    for n in range(len(frame)):
        assert parse_arp_request(frame[:n]) is None


@settings(max_examples=500)
@given(st.binary(max_size=128))
def test_garbage_never_raises(data):
    parse_arp_request(data)
    parse_arp_request(bytearray(data))


@given(st.binary(min_size=42, max_size=42))
def test_anything_accepted_is_a_real_request(data):
    req = parse_arp_request(data)
    if req is not None:
        pkt = Ether(data)
        assert pkt.type == 0x0806 and pkt[ARP].op == 1
        assert req.sender_mac == mac_to_bytes(pkt[ARP].hwsrc)


# --- building --------------------------------------------------------------------------------


def test_reply_matches_scapy_byte_for_byte():
    req = parse_arp_request(scapy_request())
    ours = build_arp_reply(mac_to_bytes(OUR_MAC), ip4(VIP), req)
    ref = Ether(dst=PEER_MAC, src=OUR_MAC) / ARP(op=2, hwsrc=OUR_MAC, psrc=VIP, hwdst=PEER_MAC, pdst=PEER_IP)
    assert len(ours) == 60
    assert ours == bytes(ref) + bytes(18)
    pkt = Ether(ours)
    assert (pkt.dst, pkt.src, pkt.type) == (PEER_MAC, OUR_MAC, 0x0806)
    a = pkt[ARP]
    assert (a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst) == (2, OUR_MAC, VIP, PEER_MAC, PEER_IP)


@pytest.mark.parametrize("reply", [False, True])
def test_gratuitous_matches_scapy(reply):
    ours = build_gratuitous(mac_to_bytes(OUR_MAC), ip4(VIP), reply=reply)
    tha = OUR_MAC if reply else "00:00:00:00:00:00"
    ref = Ether(dst="ff:ff:ff:ff:ff:ff", src=OUR_MAC) / ARP(
        op=2 if reply else 1, hwsrc=OUR_MAC, psrc=VIP, hwdst=tha, pdst=VIP
    )
    assert ours == bytes(ref) + bytes(18)
    assert len(ours) == 60


def test_gratuitous_request_is_not_answered_by_ourselves_as_probe():
    # Our own announcement parses as a request (the shell filters outgoing frames), never as a probe.
    req = parse_arp_request(build_gratuitous(mac_to_bytes(OUR_MAC), ip4(VIP), reply=False))
    assert req is not None and not req.is_probe and req.sender_ip == req.target_ip


def test_build_rejects_wrong_sizes():
    req = parse_arp_request(scapy_request())
    with pytest.raises(ValueError):
        build_arp_reply(b"\x02" * 5, ip4(VIP), req)
    with pytest.raises(ValueError):
        build_gratuitous(mac_to_bytes(OUR_MAC), b"\x00" * 16, reply=True)


def test_mac_helpers():
    assert mac_to_bytes("02:00:00:00:00:AA") == b"\x02\x00\x00\x00\x00\xaa"
    assert mac_to_bytes("2-0-0-0-0-aa") == b"\x02\x00\x00\x00\x00\xaa"
    assert mac_to_str(b"\x02\x00\x00\x00\x00\xaa") == "02:00:00:00:00:aa"
    for bad in ["", "02:00:00:00:00", "02:00:00:00:00:0g", "02:00:00:00:00:+1", "02:00:00:00:00:100"]:
        with pytest.raises(ValueError):
            mac_to_bytes(bad)


# --- BPF -------------------------------------------------------------------------------------

SKF_AD_VLAN_TAG_PRESENT_K = (arp.SKF_AD_OFF + arp.SKF_AD_VLAN_TAG_PRESENT) & 0xFFFFFFFF


def run_bpf(prog, pkt: bytes, vlan_tag_present: bool = False) -> int:
    """Minimal classic-BPF interpreter: ld/ldh/ldb abs, jeq/jgt #k, ret #k, and the VLAN ancillary load."""
    pc, acc = 0, 0
    for _ in range(4096):
        code, jt, jf, k = prog[pc]
        if code in (0x20, 0x28, 0x30):  # ld{,h,b} [k]
            if code == 0x20 and k == SKF_AD_VLAN_TAG_PRESENT_K:
                acc = int(vlan_tag_present)
            else:
                size = {0x20: 4, 0x28: 2, 0x30: 1}[code]
                if k + size > len(pkt):
                    return 0  # out-of-bounds load aborts the program with "drop", as in the kernel
                acc = int.from_bytes(pkt[k : k + size], "big")
            pc += 1
        elif code == 0x15:  # jeq #k
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x25:  # jgt #k (unsigned)
            pc += 1 + (jt if acc > k else jf)
        elif code == 0x05:  # ja k
            pc += 1 + k
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unsupported insn {code:#x}")
    raise AssertionError("no ret reached")


def test_bpf_accepts_requests_only():
    accept = run_bpf(ARP_REQUEST_BPF, scapy_request())
    assert accept == 0x40000
    assert run_bpf(ARP_REQUEST_BPF, scapy_request(psrc="0.0.0.0")) == accept
    for frame in [
        scapy_request(op=2),
        scapy_request(hwtype=6),
        scapy_request(ptype=0x86DD),
        scapy_request(hwlen=8),
        bytes(Ether(src=PEER_MAC) / IP(src=PEER_IP, dst=VIP) / UDP()),
        bytes(Ether(src=PEER_MAC) / Dot1Q(vlan=10) / ARP(op=1, hwsrc=PEER_MAC, psrc=PEER_IP, pdst=VIP)),
        scapy_request()[:21],
        b"",
    ]:
        assert run_bpf(ARP_REQUEST_BPF, frame) == 0


def test_bpf_drops_offloaded_vlan_tag():
    assert run_bpf(ARP_REQUEST_BPF, scapy_request(), vlan_tag_present=True) == 0


@given(st.binary(max_size=64), st.booleans())
def test_bpf_agrees_with_parser_on_op_and_types(data, tagged):
    # Whatever the kernel passes, the parser is the stricter judge (MAC checks), never the looser one.
    if run_bpf(ARP_REQUEST_BPF, data, tagged) == 0:
        assert tagged or parse_arp_request(data) is None


def test_bpf_program_is_well_formed():
    n = len(ARP_REQUEST_BPF)
    for pc, (code, jt, jf, k) in enumerate(ARP_REQUEST_BPF):
        assert 0 <= k < 1 << 32 and 0 <= jt < 256 and 0 <= jf < 256
        if code == 0x15:
            assert pc + 1 + max(jt, jf) < n
    assert ARP_REQUEST_BPF[-1] == (0x06, 0, 0, 0)
    raw = bpf_bytes(ARP_REQUEST_BPF)
    assert len(raw) == 8 * n
    assert [struct.unpack_from("=HBBI", raw, 8 * i) for i in range(n)] == list(ARP_REQUEST_BPF)


def test_bpf_matches_libpcap_when_available():
    pytest.importorskip("scapy.arch.common")
    from scapy.arch.common import compile_filter

    try:
        prog = compile_filter("arp and arp[6:2] = 1", linktype=1)
    except Exception as e:  # libpcap missing in the image: optional oracle
        pytest.skip(f"libpcap unavailable: {e}")
    insns = [(i.code, i.jt, i.jf, i.k) for i in prog.bf_insns[: prog.bf_len]]
    for frame in [scapy_request(), scapy_request(op=2), bytes(Ether() / IP())]:
        assert bool(run_bpf(insns, frame)) == bool(run_bpf(ARP_REQUEST_BPF, frame))


def test_probe_request_and_reply_match_scapy():
    from scapy.layers.l2 import ARP, Ether

    from lbctl.core.arp import build_arp_request, parse_arp_reply
    frame = build_arp_request(bytes.fromhex("020000000001"), bytes([198, 18, 0, 100]), bytes([198, 18, 0, 50]))
    pkt = Ether(frame)
    assert pkt.dst == "ff:ff:ff:ff:ff:ff" and pkt[ARP].op == 1 and pkt[ARP].pdst == "198.18.0.50"
    reply = bytes(Ether(src="02:00:00:00:00:22", dst="02:00:00:00:00:01") /
                  ARP(op=2, hwsrc="02:00:00:00:00:22", psrc="198.18.0.50", pdst="198.18.0.100"))
    assert parse_arp_reply(reply) == (bytes.fromhex("020000000022"), bytes([198, 18, 0, 50]))
    assert parse_arp_reply(frame) is None
    assert all(parse_arp_reply(reply[:n]) is None for n in range(28))


# --- the fused hot path (answer_arp) ------------------------------------------------------------

OWNED = frozenset({ip4(VIP)})


def test_answer_matches_scapy_byte_for_byte():
    ours = arp.answer_arp(scapy_request(), OWNED, mac_to_bytes(OUR_MAC))
    ref = Ether(dst=PEER_MAC, src=OUR_MAC) / ARP(op=2, hwsrc=OUR_MAC, psrc=VIP, hwdst=PEER_MAC, pdst=PEER_IP)
    assert ours == bytes(ref) + bytes(18)


def test_answer_only_owned_and_never_announcements():
    mac = mac_to_bytes(OUR_MAC)
    assert arp.answer_arp(scapy_request(pdst="192.0.2.101"), OWNED, mac) is None
    assert arp.answer_arp(scapy_request(), frozenset(), mac) is None
    assert arp.answer_arp(scapy_request(psrc=VIP), OWNED, mac) is None  # someone's GARP for our IP
    probe = arp.answer_arp(scapy_request(psrc="0.0.0.0"), OWNED, mac)  # RFC 5227 probe: defend, like Linux
    assert probe is not None and Ether(probe)[ARP].pdst == "0.0.0.0"


@pytest.mark.parametrize("frame", [scapy_request(op=2), scapy_request(hwsrc="01:00:5e:00:00:01"),
                                   scapy_request(hwsrc="00:00:00:00:00:00"), b"", bytes(100)],
                         ids=lambda f: f"{len(f)}b")
def test_answer_rejects(frame):
    assert arp.answer_arp(frame, OWNED, mac_to_bytes(OUR_MAC)) is None


def test_answer_every_truncation_is_dropped():
    frame = scapy_request()
    for n in range(len(frame)):
        assert arp.answer_arp(frame[:n], OWNED, mac_to_bytes(OUR_MAC)) is None


_mac6 = st.binary(min_size=6, max_size=6)
_unicast = _mac6.map(lambda m: bytes([m[0] & 0xFE]) + m[1:])  # mostly valid senders
_ip = st.sampled_from([ip4(VIP), ip4(VIP), ip4(PEER_IP), bytes(4)]) | st.binary(min_size=4, max_size=4)
# Near-requests: real field layout with every field free, so both branches are exercised.
_framed = st.builds(lambda dst, src, head, sha, spa, tha, tpa, tail: dst + src + head + sha + spa + tha + tpa + tail,
                    _mac6, _unicast | _mac6, st.sampled_from([arp._REQUEST_HEAD] * 3 + [arp._REPLY_HEAD])
                    | st.binary(min_size=10, max_size=10), _unicast | _mac6, _ip, _mac6, _ip, st.binary(max_size=20))


@settings(max_examples=1000)
@given(_framed | st.binary(max_size=64), st.sampled_from([bytes, bytearray, memoryview]))
def test_answer_agrees_with_parse_then_build(data, kind):
    mac = mac_to_bytes(OUR_MAC)
    req = parse_arp_request(data)
    want = None
    if req is not None and req.target_ip in OWNED and req.sender_ip != req.target_ip:
        want = build_arp_reply(mac, req.target_ip, req)
    assert arp.answer_arp(kind(data), OWNED, mac) == want


# --- the owned-IP filter ------------------------------------------------------------------------


def check_well_formed(prog) -> None:
    n = len(prog)
    assert n <= arp.BPF_MAXINSNS and prog[-1] == (0x06, 0, 0, 0)
    for pc, (code, jt, jf, k) in enumerate(prog):
        assert 0 <= k < 1 << 32 and 0 <= jt < 256 and 0 <= jf < 256
        if code in (0x15, 0x25):
            assert pc + 1 + max(jt, jf) < n
        if code == 0x05:
            assert pc + 1 + k < n


def test_owned_filter_wakes_only_for_owned_targets():
    owned = {ip4(VIP), ip4("192.0.2.7")}
    prog = arp.arp_filter_for(owned, mac_to_bytes(OUR_MAC))
    check_well_formed(prog)
    assert run_bpf(prog, scapy_request()) == 0x40000
    assert run_bpf(prog, scapy_request(pdst="192.0.2.7")) == 0x40000
    for frame in [scapy_request(pdst="192.0.2.101"), scapy_request(op=2), scapy_request()[:41], b"",
                  bytes(Ether(src=PEER_MAC) / IP(src=PEER_IP, dst=VIP) / UDP())]:
        assert run_bpf(prog, frame) == 0
    assert run_bpf(prog, scapy_request(), vlan_tag_present=True) == 0
    assert all(run_bpf(arp.arp_filter_for(set()), f) == 0 for f in [scapy_request(), scapy_request(psrc=VIP)])


ROGUE_MAC = "02:00:00:00:00:66"


def test_owned_filter_passes_foreign_claims_of_owned_ips():
    """A GARP or ARP reply from another MAC with an owned sender IP is a conflict: it must reach us."""
    owned = {ip4(VIP)}
    prog = arp.arp_filter_for(owned, mac_to_bytes(OUR_MAC))
    garp_req = scapy_request(hwsrc=ROGUE_MAC, psrc=VIP, pdst=VIP)
    garp_reply = scapy_request(op=2, hwsrc=ROGUE_MAC, psrc=VIP, hwdst=ROGUE_MAC, pdst=VIP)
    answer = scapy_request(op=2, hwsrc=ROGUE_MAC, psrc=VIP, hwdst=PEER_MAC, pdst=PEER_IP)
    asks_other = scapy_request(hwsrc=ROGUE_MAC, psrc=VIP, pdst="192.0.2.55")  # uses our IP as its source
    for frame in (garp_req, garp_reply, answer, asks_other):
        assert run_bpf(prog, frame) == 0x40000
    # Our own replies, and claims of addresses we do not own, stay in the kernel (our own GARP request
    # is a request for an owned target and passes as such; answer_arp never answers announcements).
    ours = [scapy_request(op=2, hwsrc=OUR_MAC, psrc=VIP), scapy_request(op=2, hwsrc=OUR_MAC, psrc=VIP, pdst=VIP)]
    others = [scapy_request(op=2, hwsrc=ROGUE_MAC, psrc="192.0.2.101", pdst="192.0.2.101"),
              scapy_request(hwsrc=ROGUE_MAC, psrc="192.0.2.101", pdst="192.0.2.101")]
    for frame in ours + others:
        assert run_bpf(prog, frame) == 0
    assert run_bpf(prog, garp_reply, vlan_tag_present=True) == 0
    assert run_bpf(arp.arp_filter_for(set(), mac_to_bytes(OUR_MAC)), garp_reply) == 0


def test_owned_filter_too_many_ips_falls_back_to_generic():
    many = {(0xC6120000 + i).to_bytes(4, "big") for i in range(arp.MAX_FILTER_IPS + 1)}
    assert arp.arp_filter_for(many) == arp.ARP_BPF
    check_well_formed(arp.ARP_BPF)
    assert run_bpf(arp.ARP_BPF, scapy_request()) and run_bpf(arp.ARP_BPF, scapy_request(op=2))
    assert not run_bpf(arp.ARP_BPF, scapy_request(op=3)) and not run_bpf(arp.ARP_BPF, scapy_request(), True)
    most = set(list(many)[: arp.MAX_FILTER_IPS])
    check_well_formed(arp.arp_filter_for(most, mac_to_bytes(OUR_MAC)))


def _dotted(i: int) -> str:
    return ".".join(str(b) for b in i.to_bytes(4, "big"))


ADDR = st.integers(0, 2**32 - 1) | st.integers(0xC6120000, 0xC61200FF)


@settings(max_examples=200)
@given(st.sets(ADDR, max_size=300), st.lists(ADDR, max_size=20), st.booleans())
def test_owned_filter_accepts_exactly_requests_for_owned(owned, probes, tagged):
    owned_b = {i.to_bytes(4, "big") for i in owned}
    prog = arp.arp_filter_for(owned_b, mac_to_bytes(OUR_MAC))
    check_well_formed(prog)
    for target in list(owned)[:20] + probes:
        frame = scapy_request(pdst=_dotted(target))  # sender PEER_IP, never owned here unless drawn
        want = not tagged and (target in owned or ip4(PEER_IP) in owned_b)
        assert bool(run_bpf(prog, frame, tagged)) == want


@settings(max_examples=200)
@given(st.sets(ADDR, max_size=300), st.lists(ADDR, max_size=20), st.sampled_from([1, 2, 3]),
       st.sampled_from([ROGUE_MAC, OUR_MAC, "02:00:00:00:00:ab", "03:00:00:00:00:aa"]), st.booleans())
def test_owned_filter_passes_exactly_foreign_senders_of_owned(owned, senders, op, mac, tagged):
    owned_b = {i.to_bytes(4, "big") for i in owned}
    prog = arp.arp_filter_for(owned_b, mac_to_bytes(OUR_MAC))
    target = 0xC0000237  # 192.0.2.55: not drawn from the owned range's hot spot, checked below
    for sender in list(owned)[:20] + senders:
        frame = scapy_request(op=op, hwsrc=mac, psrc=_dotted(sender), pdst=_dotted(target))
        foreign = sender in owned and mac != OUR_MAC and op in (1, 2)
        asked = op == 1 and target in owned
        assert bool(run_bpf(prog, frame, tagged)) == (not tagged and (foreign or asked))
        # The user-space check agrees with the filter on foreign claims (it also drops group MACs).
        claim = arp.foreign_claim(frame, owned_b, mac_to_bytes(OUR_MAC))
        assert (claim is not None) == (foreign and not mac_to_bytes(mac)[0] & 1)
