"""ARP codec for the L2 speaker: a BPF filter, request parsing and reply/announcement building.

Sans-I/O: the shell owns the AF_PACKET socket and hands us frames. The hot path is one precompiled
struct (~1 us per parse+reply, hundreds of times faster than scapy; see benchmarks/codec_bench.py).
Parsers return None for anything they do not want to answer; they never raise on wire data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from string import hexdigits

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ETH_MIN_FRAME = 60  # 64 minus FCS; we pad ourselves rather than trust the driver to
SNAP_LEN = 0x40000  # "accept, whole packet": modern libpcap's snaplen (older ones used 65535)

# Ethernet header + ARP for IPv4 over Ethernet: dst src type | htype ptype hlen plen op sha spa tha tpa
_FRAME = struct.Struct("!6s6sHHHBBH6s4s6s4s")
ARP_FRAME_LEN = _FRAME.size  # 42
_REQUEST_HEAD = struct.pack("!HHHBBH", ETH_P_ARP, ARPHRD_ETHER, ETH_P_IP, 6, 4, ARPOP_REQUEST)
_REPLY_HEAD = struct.pack("!HHHBBH", ETH_P_ARP, ARPHRD_ETHER, ETH_P_IP, 6, 4, ARPOP_REPLY)
_REQ_FIELDS = struct.Struct("!6x6s10x6s4s6x4s")  # eth src, sha, spa, tpa

# --- classic BPF (linux/filter.h) -------------------------------------------------------------
BPF_LD_W_ABS = 0x20
BPF_LD_H_ABS = 0x28
BPF_LD_B_ABS = 0x30
BPF_JMP_JEQ_K = 0x15
BPF_RET_K = 0x06
SKF_AD_OFF = -0x1000
SKF_AD_VLAN_TAG_PRESENT = 12
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23

Insn = tuple[int, int, int, int]  # (code, jt, jf, k) as in struct sock_filter


def _u32(k: int) -> int:
    return k & 0xFFFFFFFF


# Accept only untagged Ethernet ARP requests for IPv4. With VLAN offload the tag is stripped into
# metadata, so offsets look untagged: the ancillary load is the only way to notice it, and without
# it we would answer ARP meant for a VLAN sub-interface. Every jf lands on the final "ret #0" (insn 9);
# jumps are relative to the next instruction.
ARP_REQUEST_BPF: tuple[Insn, ...] = (
    (BPF_LD_W_ABS, 0, 0, _u32(SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT)),  # 0: A = tag present?
    (BPF_JMP_JEQ_K, 0, 7, 0),  # 1: tagged -> drop
    (BPF_LD_H_ABS, 0, 0, 12),  # 2: ethertype (an in-band 802.1Q tag shows up as 0x8100 here)
    (BPF_JMP_JEQ_K, 0, 5, ETH_P_ARP),  # 3
    (BPF_LD_W_ABS, 0, 0, 14),  # 4: htype, ptype
    (BPF_JMP_JEQ_K, 0, 3, (ARPHRD_ETHER << 16) | ETH_P_IP),  # 5
    (BPF_LD_W_ABS, 0, 0, 18),  # 6: hlen, plen, op
    (BPF_JMP_JEQ_K, 0, 1, 0x06040000 | ARPOP_REQUEST),  # 7
    (BPF_RET_K, 0, 0, SNAP_LEN),  # 8: accept
    (BPF_RET_K, 0, 0, 0),  # 9: drop
)

BPF_JMP_JGT_K = 0x25
BPF_JMP_JA = 0x05  # unconditional, 32-bit offset in k: how a miss skips a long chain of owned IPs
BPF_MAXINSNS = 4096
FILTER_BUCKET = 64  # IPs per bucket: a bucket's body (2n+2 insns) must fit an 8-bit jump
MAX_FILTER_IPS = 960  # two chains (target, sender) of this many fit BPF_MAXINSNS; beyond: the generic filter

# Generic fallback when the owned set is too large for a narrow program: every untagged ARP request or
# reply (replies can only matter as conflicts; the owned set decides in user space).
ARP_BPF: tuple[Insn, ...] = (
    (BPF_LD_W_ABS, 0, 0, _u32(SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT)),  # 0
    (BPF_JMP_JEQ_K, 0, 8, 0),  # 1: tagged -> drop
    (BPF_LD_H_ABS, 0, 0, 12),  # 2
    (BPF_JMP_JEQ_K, 0, 6, ETH_P_ARP),  # 3
    (BPF_LD_W_ABS, 0, 0, 14),  # 4
    (BPF_JMP_JEQ_K, 0, 4, (ARPHRD_ETHER << 16) | ETH_P_IP),  # 5
    (BPF_LD_W_ABS, 0, 0, 18),  # 6
    (BPF_JMP_JEQ_K, 1, 0, 0x06040000 | ARPOP_REQUEST),  # 7
    (BPF_JMP_JEQ_K, 0, 1, 0x06040000 | ARPOP_REPLY),  # 8
    (BPF_RET_K, 0, 0, SNAP_LEN),  # 9: accept
    (BPF_RET_K, 0, 0, 0),  # 10: drop
)


def _ip_chain(ips: list[int]) -> list[Insn]:
    """A = an IPv4 address: accept if it is in `ips` (sorted), else fall through past the chain.

    Sorted buckets of FILTER_BUCKET addresses: "jgt bucket max" skips a bucket, inside it a chain of
    "jeq ip" each falls into its own accept; a miss inside a bucket jumps (ja) past the whole chain."""
    buckets: list[list[Insn]] = []
    for i in range(0, len(ips), FILTER_BUCKET):
        bucket = ips[i:i + FILTER_BUCKET]
        body: list[Insn] = []
        for ip in bucket:
            body += [(BPF_JMP_JEQ_K, 0, 1, ip), (BPF_RET_K, 0, 0, SNAP_LEN)]
        body.append((BPF_JMP_JA, 0, 0, 0))  # placeholder: within this bucket's range but not ours
        buckets.append([(BPF_JMP_JGT_K, len(body), 0, bucket[-1]), *body])
    out: list[Insn] = []
    remaining = sum(len(b) for b in buckets)
    for b in buckets:
        remaining -= len(b)
        out += b[:-1]
        out.append((BPF_JMP_JA, 0, 0, remaining))  # to the first insn after the chain
    return out


def arp_filter_for(owned: frozenset[bytes] | set[bytes], our_mac: bytes | None = None) -> tuple[Insn, ...]:
    """The kernel filter of one speaker's ARP socket: it passes only

    - requests whose target IP is in `owned` (to answer them), and
    - requests or replies whose sender IP is in `owned` and whose sender MAC is not `our_mac`: another
      host announcing or answering for our address (a conflict, or our successor's takeover).

    Every speaker sees every ARP frame on the segment; with this filter only the owner's thread wakes,
    the rest never leave the kernel. Too many IPs: the generic ARP_BPF.
    """
    if len(owned) > MAX_FILTER_IPS:
        return ARP_BPF
    ips = sorted(int.from_bytes(ip, "big") for ip in owned if len(ip) == 4)
    chain = _ip_chain(ips)
    prog: list[Insn] = [  # the generic checks, each mismatch jumping to the drop at 9
        (BPF_LD_W_ABS, 0, 0, _u32(SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT)),  # 0
        (BPF_JMP_JEQ_K, 0, 7, 0),  # 1
        (BPF_LD_H_ABS, 0, 0, 12),  # 2
        (BPF_JMP_JEQ_K, 0, 5, ETH_P_ARP),  # 3
        (BPF_LD_W_ABS, 0, 0, 14),  # 4
        (BPF_JMP_JEQ_K, 0, 3, (ARPHRD_ETHER << 16) | ETH_P_IP),  # 5
        (BPF_LD_W_ABS, 0, 0, 18),  # 6
        (BPF_JMP_JEQ_K, 3, 0, 0x06040000 | ARPOP_REQUEST),  # 7: request -> 11
        (BPF_JMP_JEQ_K, 1, 0, 0x06040000 | ARPOP_REPLY),  # 8: reply -> 10
        (BPF_RET_K, 0, 0, 0),  # 9: drop
        (BPF_JMP_JA, 0, 0, len(chain) + 1),  # 10: replies skip the target check
        (BPF_LD_W_ABS, 0, 0, 38),  # 11: A = target IP
        *chain,
    ]
    # Sender check: sha != our_mac, then spa in owned.
    if our_mac is not None and len(our_mac) == 6:
        prog += [
            (BPF_LD_W_ABS, 0, 0, 22),
            (BPF_JMP_JEQ_K, 0, 3, int.from_bytes(our_mac[:4], "big")),
            (BPF_LD_H_ABS, 0, 0, 26),
            (BPF_JMP_JEQ_K, 0, 1, int.from_bytes(our_mac[4:], "big")),
            (BPF_RET_K, 0, 0, 0),  # our own frame (looped back on kernels without PACKET_IGNORE_OUTGOING)
        ]
    prog.append((BPF_LD_W_ABS, 0, 0, 28))  # A = sender IP
    prog += _ip_chain(ips)
    prog.append((BPF_RET_K, 0, 0, 0))
    return tuple(prog)


_INSN = struct.Struct("=HBBI")  # native order, no padding: matches struct sock_filter (8 bytes)


def bpf_bytes(prog: tuple[Insn, ...] | list[Insn]) -> bytes:
    """The program as the array of struct sock_filter that sock_fprog.filter points at."""
    return b"".join(_INSN.pack(*insn) for insn in prog)


# --- frames ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArpRequest:
    sender_mac: bytes  # 6 bytes, ARP sha (not the Ethernet source)
    sender_ip: bytes  # 4 bytes; 0.0.0.0 for an RFC 5227 probe
    target_ip: bytes  # 4 bytes

    @property
    def is_probe(self) -> bool:
        return self.sender_ip == b"\x00\x00\x00\x00"


def parse_arp_request(frame: bytes | bytearray | memoryview) -> ArpRequest | None:
    """Decode an Ethernet ARP request, or None if it is not one we may answer.

    Probes (sender IP 0.0.0.0, RFC 5227 §2.1.1) are returned: answering them is how an owner defends
    its address against another host's duplicate-address detection. Linux does the same: a unicast
    reply to the prober's MAC with target IP 0.0.0.0, which build_arp_reply produces as is.
    Announcements (sender IP == target IP) are returned too; the caller decides about conflicts.
    """
    if len(frame) < ARP_FRAME_LEN:
        return None
    try:
        # One slice compare checks ethertype, htype, ptype, hlen, plen and op together.
        if frame[12:22] != _REQUEST_HEAD:
            return None
        src, sha, spa, tpa = _REQ_FIELDS.unpack_from(frame)
    except (struct.error, TypeError, ValueError):  # exotic buffer types; wire data must never raise
        return None
    # A group address cannot be a sender; replying to one would flood the segment.
    if sha[0] & 1 or src[0] & 1 or sha == ZERO_MAC:
        return None
    return ArpRequest(sha, spa, tpa)


_PAD = bytes(ETH_MIN_FRAME - ARP_FRAME_LEN)


_REPLY_FRAME = struct.Struct("!6s6s10s6s4s6s4s18x")  # dst src head sha spa tha tpa, zero-padded to 60
_TPA = slice(38, 42)


def answer_arp(frame: bytes, owned: frozenset[bytes] | set[bytes], our_mac: bytes) -> bytes | None:
    """The responder's hot path: the reply to send for `frame`, or None.

    Same rules as parse_arp_request + build_arp_reply, fused and reordered: the owned-set lookup
    comes first because nearly every ARP request on a LAN is for somebody else, and no object is
    built for a frame we drop. Announcements (sender IP == target IP) are never answered. Never raises.
    """
    if type(frame) is not bytes:  # slices of bytes are hashable; other buffers are copied once
        try:
            frame = bytes(frame)
        except TypeError:
            return None
    if len(frame) < ARP_FRAME_LEN:
        return None
    tpa = frame[_TPA]
    if tpa not in owned or frame[12:22] != _REQUEST_HEAD:
        return None
    sha, spa = frame[22:28], frame[28:32]
    if sha[0] & 1 or frame[6] & 1 or sha == ZERO_MAC or spa == tpa:
        return None
    return _REPLY_FRAME.pack(sha, our_mac, _REPLY_HEAD, our_mac, tpa, sha, spa)


_SPA = slice(28, 32)


def foreign_claim(frame: bytes, owned: frozenset[bytes] | set[bytes], our_mac: bytes) -> tuple[bytes, bytes] | None:
    """(owned IP, foreign MAC) when `frame` is an ARP request or reply from another MAC whose sender IP is
    one we own: a gratuitous announcement, or an answer on that address's behalf (RFC 5227 §2.4). Never raises.
    """
    if type(frame) is not bytes:
        try:
            frame = bytes(frame)
        except TypeError:
            return None
    if len(frame) < ARP_FRAME_LEN:
        return None
    spa = frame[_SPA]
    if spa not in owned:
        return None
    head = frame[12:22]
    if head != _REQUEST_HEAD and head != _REPLY_HEAD:
        return None
    sha = frame[22:28]
    if sha == our_mac or sha[0] & 1 or sha == ZERO_MAC:
        return None
    return spa, sha


def _frame(dst: bytes, src: bytes, op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    if len(src) != 6 or len(spa) != 4:  # struct would silently pad/truncate a wrong-sized field
        raise ValueError("need a 6-byte MAC and a 4-byte IPv4 address")
    return _FRAME.pack(dst, src, ETH_P_ARP, ARPHRD_ETHER, ETH_P_IP, 6, 4, op, sha, spa, tha, tpa) + _PAD


def build_arp_reply(our_mac: bytes, owned_ip: bytes, req: ArpRequest) -> bytes:
    """Unicast reply to the requester, padded to the 60-byte Ethernet minimum."""
    return _frame(req.sender_mac, our_mac, ARPOP_REPLY, our_mac, owned_ip, req.sender_mac, req.sender_ip)


def build_gratuitous(our_mac: bytes, ip: bytes, reply: bool) -> bytes:
    """Broadcast announcement after takeover.

    Request form is RFC 5227 §2.3 (SPA = TPA = ip, THA zero); reply form is RFC 5944 §4.6 (THA = our
    MAC). Receivers differ in which they honour, so send both (as MetalLB does).
    """
    if reply:
        return _frame(BROADCAST_MAC, our_mac, ARPOP_REPLY, our_mac, ip, our_mac, ip)
    return _frame(BROADCAST_MAC, our_mac, ARPOP_REQUEST, our_mac, ip, ZERO_MAC, ip)


def mac_to_bytes(mac: str) -> bytes:
    """'aa:bb:cc:dd:ee:ff' (or '-' separated) to 6 bytes; ValueError otherwise."""
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or not all(p and len(p) <= 2 and all(c in hexdigits for c in p) for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_to_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


# --- probing (lbctl probe): ask who answers for an address -----------------------------------

def build_arp_request(our_mac: bytes, our_ip: bytes, target_ip: bytes) -> bytes:
    """Broadcast who-has request, as a client on the segment would send it."""
    return _frame(BROADCAST_MAC, our_mac, ARPOP_REQUEST, our_mac, our_ip, ZERO_MAC, target_ip)


def parse_arp_reply(frame: bytes | bytearray | memoryview) -> tuple[bytes, bytes] | None:
    """(sender MAC, sender IP) of an Ethernet ARP reply, or None; never raises."""
    if len(frame) < ARP_FRAME_LEN or bytes(frame[12:22]) != _REPLY_HEAD:
        return None
    return bytes(frame[22:28]), bytes(frame[28:32])
