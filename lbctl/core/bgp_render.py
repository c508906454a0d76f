"""BIRD 2 configuration for the speaker's BGP sidecar: frozen dataclasses in, bird.conf text out.

Pure and deterministic: the same input gives the same bytes (peers, prefixes and communities are sorted), so
the speaker can compare renders and only call `birdc configure` when something changed. BIRD reconfigures a
protocol in place when only its export filter changed, so a pool change never resets a session.

The node exports only. Every BGP channel has `import none` (nothing a peer sends enters any table) and no
`kernel` protocol is rendered, so BIRD never writes the node's routing table. Exported prefixes live in BIRD's
own tables as `blackhole` statics, which without a kernel protocol stay inside BIRD.

Anything that cannot be rendered exactly is refused with RenderError naming the field, never rendered: BIRD's
config language has no string escapes, so a newline, quote or brace in a name would change the config's meaning.
A password is checked but never appears in an error message or a repr.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The BGP port BIRD listens on. Outbound sessions need no listener, but BIRD 2.0 opens one for every BGP
# protocol and fails the protocol when it cannot ("Cannot open listening socket"): a port above 1024 needs no
# capability (port 179 needs NET_BIND_SERVICE). Routers connect to 179, so nothing ever dials this port.
DEFAULT_LISTEN_PORT = 1790
MD5_KEY_MAX = 80  # TCP_MD5SIG_MAXKEYLEN: the kernel refuses longer keys
WELL_KNOWN_COMMUNITIES = {  # RFC 1997 / RFC 3765 names as MetalLB and FRR spell them
    "no-export": (65535, 65281), "no-advertise": (65535, 65282), "no-export-subconfed": (65535, 65283),
    "local-as": (65535, 65283), "no-peer": (65535, 65284), "blackhole": (65535, 666),
    "graceful-shutdown": (65535, 0), "accept-own": (65535, 1),
}
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")  # a Kubernetes name fits
SYMBOL_MAX = 64  # BIRD refuses longer symbols ("Symbol too long")
_COMMUNITY = re.compile(r"(\d{1,10}):(\d{1,10})")
_LARGE = re.compile(r"large:(\d{1,10}):(\d{1,10}):(\d{1,10})")
_U16, _U32 = 0xFFFF, 0xFFFFFFFF


class RenderError(ValueError):
    """Input that cannot be rendered exactly; the message names the peer and field."""


@dataclass(frozen=True)
class BfdProfile:
    """MetalLB's BFDProfile. Intervals in milliseconds."""

    name: str
    receive_interval_ms: int = 300
    transmit_interval_ms: int = 300
    detect_multiplier: int = 3
    echo_mode: bool = False  # BIRD has no echo mode: refused when true
    echo_interval_ms: int | None = None  # used only with echo mode
    passive_mode: bool = False
    minimum_ttl: int | None = None  # single hop: BIRD always requires 255 (RFC 5881), which satisfies any value


@dataclass(frozen=True)
class Export:
    """One prefix sent to one peer, with its attributes (aggregation was done upstream)."""

    prefix: str
    local_pref: int | None = None
    communities: tuple[str, ...] = ()  # "65000:100", "large:1:2:3" or a well-known name such as "no-export"


@dataclass(frozen=True)
class Peer:
    name: str
    address: str
    asn: int
    port: int = 179
    source_address: str | None = None
    hold_time_s: int = 90
    keepalive_time_s: int | None = None  # None: a third of the hold time (BIRD's default)
    ebgp_multihop: bool = False
    password: str | None = field(default=None, repr=False)
    bfd: BfdProfile | None = None
    graceful_restart: bool = False
    exports: tuple[Export, ...] = ()


@dataclass(frozen=True)
class BgpConfig:
    router_id: str
    local_asn: int
    peers: tuple[Peer, ...] = ()
    listen_port: int = DEFAULT_LISTEN_PORT
    connect_delay_s: int = 1  # first connect after startup; BIRD's default 5 s delays every start
    connect_retry_s: int = 5  # BIRD's default 120 s keeps a returning router waiting
    error_wait_s: tuple[int, int] = (1, 30)  # BIRD's default 60-300 s, ditto


def render(config: BgpConfig) -> str:
    """The whole bird.conf for `config`; raises RenderError for anything that cannot be rendered exactly."""
    router_id = _address(config.router_id, "router id", "routerID")
    if router_id.version != 4:
        raise RenderError(f"routerID {config.router_id!r} must be an IPv4 address")
    _int_range(config.local_asn, 1, _U32, "myASN")
    _int_range(config.listen_port, 1, 65535, "listen port")
    _int_range(config.connect_delay_s, 1, 65535, "connect delay time")
    _int_range(config.connect_retry_s, 1, 65535, "connect retry time")
    low, high = config.error_wait_s
    _int_range(low, 1, 65535, "error wait time")
    _int_range(high, low, 65535, "error wait time")
    symbols: dict[str, str] = {}
    for peer in config.peers:
        symbol = _symbol(peer.name)
        if symbol in symbols:
            raise RenderError(f"peers {symbols[symbol]!r} and {peer.name!r} have the same name once rendered "
                              f"({symbol}); rename one")
        symbols[symbol] = peer.name
    peers = sorted(config.peers, key=lambda p: _symbol(p.name))
    rendered = [_peer(config, peer) for peer in peers]
    statics = {4: set(), 6: set()}  # type: dict[int, set[IPNetwork]]
    for peer, (_, nets) in zip(peers, rendered):
        for net in nets:
            statics[net.version].add(net)
    out = [
        "# Rendered by lbctl: the node's BGP speaker exports only. Do not edit: the speaker rewrites it.",
        f"router id {router_id};",
        "log stderr { info, remote, warning, error, auth, fatal, bug };",
        "",
        "# Interfaces and their addresses: needed to reach directly connected peers. Read-only.",
        "protocol device lbctl_device {}",
        "",
        "# The prefixes to export, in BIRD's own tables only: no kernel protocol, so nothing reaches the FIB.",
    ]
    for family, name in ((4, "lbctl_v4"), (6, "lbctl_v6")):
        out.append(f"protocol static {name} {{")
        out.append(f"  ipv{family};")
        out.extend(f"  route {net} blackhole;" for net in sorted(statics[family]))
        out.append("}")
    if any(p.bfd for p in peers):
        out += ["", "# Session parameters come from each BGP protocol's bfd block.", "protocol bfd lbctl_bfd {}"]
    for text, _ in rendered:
        out += ["", text]
    return "\n".join(out) + "\n"


def _peer(config: BgpConfig, peer: Peer) -> tuple[str, list[IPNetwork]]:
    who = f"peer {peer.name!r}"
    address = _address(peer.address, who, "peerAddress")
    _int_range(peer.asn, 1, _U32, f"{who}: peerASN")
    _int_range(peer.port, 1, 65535, f"{who}: peerPort")
    if peer.hold_time_s != 0:
        _int_range(peer.hold_time_s, 3, 65535, f"{who}: holdTime (0 or 3-65535 s)")
    if peer.keepalive_time_s is not None:
        _int_range(peer.keepalive_time_s, 1, 65535, f"{who}: keepaliveTime")
        if peer.hold_time_s and peer.keepalive_time_s > peer.hold_time_s:
            raise RenderError(f"{who}: keepaliveTime {peer.keepalive_time_s} s exceeds holdTime "
                              f"{peer.hold_time_s} s")
    lines = [f"protocol bgp {_symbol(peer.name)} {{"]
    local = f"  local port {config.listen_port} as {config.local_asn};"
    if peer.source_address is not None:
        source = _address(peer.source_address, who, "sourceAddress")
        if source.version != address.version:
            raise RenderError(f"{who}: sourceAddress {source} and peerAddress {address} differ in family")
        local = f"  local {source} port {config.listen_port} as {config.local_asn};"
        lines += [local, "  strict bind on;"]
    else:
        lines.append(local)
    lines.append(f"  neighbor {address} port {peer.port} as {peer.asn};")
    if peer.ebgp_multihop:
        lines.append("  multihop;")
    lines.append(f"  hold time {peer.hold_time_s};")
    if peer.keepalive_time_s is not None:
        lines.append(f"  keepalive time {peer.keepalive_time_s};")
    lines += [f"  connect delay time {config.connect_delay_s};",
              f"  connect retry time {config.connect_retry_s};",
              f"  error wait time {config.error_wait_s[0]}, {config.error_wait_s[1]};",
              f"  graceful restart {'on' if peer.graceful_restart else 'off'};"]
    if peer.password is not None:
        lines.append(f'  password "{_password(peer)}";')
    if peer.bfd is not None:
        lines.append(_bfd(peer, who))
    families = {address.version}  # one family per session: a dual-stack router gets a peer per family
    groups: dict[tuple[int, int | None, tuple[str, ...]], list[IPNetwork]] = {}
    seen: set[IPNetwork] = set()
    for export in peer.exports:
        net = _network(export.prefix, who)
        if net in seen:
            raise RenderError(f"{who}: prefix {net} is exported twice; merge its attributes upstream")
        seen.add(net)
        if net.version not in families:
            raise RenderError(f"{who}: IPv{net.version} prefix {net} cannot go over an IPv{address.version} "
                              "session; export it to a peer of its own family")
        if export.local_pref is not None:
            _int_range(export.local_pref, 0, _U32, f"{who}: localPref of {net}")
        key = (net.version, export.local_pref, _communities(export.communities, f"{who}: {net}"))
        groups.setdefault(key, []).append(net)
    for family in sorted(families):
        lines.append(f"  ipv{family} {{")
        lines.append("    import none;  # export only: nothing a peer sends enters BIRD, let alone the node")
        lines.append("    export filter {")
        for (fam, local_pref, communities), nets in sorted(groups.items(), key=_group_order):
            if fam != family:
                continue
            lines.append(f"      if net ~ [ {', '.join(str(n) for n in sorted(nets))} ] then {{")
            if local_pref is not None:
                lines.append(f"        bgp_local_pref = {local_pref};")
            lines.extend(f"        {statement}" for statement in communities)
            lines.append("        accept;")
            lines.append("      }")
        lines.append("      reject;")
        lines.append("    };")
        lines.append("    next hop self on;")
        lines.append("  };")
    lines.append("}")
    return "\n".join(lines), sorted(seen, key=_net_order)


def _bfd(peer: Peer, who: str) -> str:
    bfd = peer.bfd
    assert bfd is not None
    who = f"{who}: BFD profile {bfd.name!r}"
    _check_name(bfd.name, "BFD profile name")
    if bfd.echo_mode:
        raise RenderError(f"{who}: echoMode has no equivalent in BIRD (no BFD echo function)")
    if peer.ebgp_multihop and peer.source_address is None:
        raise RenderError(f"{who}: multihop BFD needs sourceAddress (BIRD cannot pick the local address itself)")
    if bfd.minimum_ttl is not None:
        _int_range(bfd.minimum_ttl, 1, 254, f"{who}: minimumTtl")
        if peer.ebgp_multihop:
            raise RenderError(f"{who}: minimumTtl on a multihop session has no equivalent in BIRD")
    _int_range(bfd.receive_interval_ms, 10, 60000, f"{who}: receiveInterval (ms)")
    _int_range(bfd.transmit_interval_ms, 10, 60000, f"{who}: transmitInterval (ms)")
    _int_range(bfd.detect_multiplier, 2, 255, f"{who}: detectMultiplier")
    return (f"  bfd {{ min rx interval {bfd.receive_interval_ms} ms; min tx interval {bfd.transmit_interval_ms} ms;"
            f" multiplier {bfd.detect_multiplier}; passive {'on' if bfd.passive_mode else 'off'}; }};")


def _communities(values: tuple[str, ...], who: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise RenderError(f"{who}: communities must be a list, not the string {values!r}")
    plain: set[tuple[int, int]] = set()
    large: set[tuple[int, int, int]] = set()
    for value in values:
        text = value if isinstance(value, str) else repr(value)
        if text in WELL_KNOWN_COMMUNITIES:
            plain.add(WELL_KNOWN_COMMUNITIES[text])
        elif m := _COMMUNITY.fullmatch(text):
            a, b = int(m[1]), int(m[2])
            if a > _U16 or b > _U16:
                raise RenderError(f"{who}: community {text!r}: each half must be 0-65535")
            plain.add((a, b))
        elif m := _LARGE.fullmatch(text):
            parts = (int(m[1]), int(m[2]), int(m[3]))
            if any(p > _U32 for p in parts):
                raise RenderError(f"{who}: large community {text!r}: each part must be 0-4294967295")
            large.add(parts)
        else:
            raise RenderError(f"{who}: community {text!r} is not 'a:b' (0-65535 each), 'large:a:b:c' or one of "
                              f"{', '.join(sorted(WELL_KNOWN_COMMUNITIES))}")
    return (tuple(f"bgp_community.add(({a}, {b}));" for a, b in sorted(plain))
            + tuple(f"bgp_large_community.add(({a}, {b}, {c}));" for a, b, c in sorted(large)))


def _group_order(item: tuple[tuple[int, int | None, tuple[str, ...]], list[IPNetwork]]) -> tuple:
    (family, local_pref, communities), _ = item
    return family, -1 if local_pref is None else local_pref, communities


def _net_order(net: IPNetwork) -> tuple[int, int, int]:
    return net.version, int(net.network_address), net.prefixlen


def _symbol(name: str) -> str:
    _check_name(name, "peer name")
    symbol = "peer_" + name.replace("-", "_").replace(".", "_")
    if len(symbol) > SYMBOL_MAX:  # readable head, and a digest of the whole name so long names stay distinct
        symbol = symbol[:SYMBOL_MAX - 11] + "_" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return symbol


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RenderError(f"{what} {name!r} must be 1-253 letters, digits, '.', '-' or '_', starting and "
                          "ending with a letter or digit")


def _password(peer: Peer) -> str:
    password = peer.password
    # BIRD strings have no escapes: a quote, backslash or control character cannot be rendered exactly.
    if (not isinstance(password, str) or not password or len(password.encode()) > MD5_KEY_MAX
            or any(c in '"\\' or not c.isprintable() for c in password)):
        raise RenderError(f"peer {peer.name!r}: password must be 1-{MD5_KEY_MAX} bytes of printable characters "
                          "without '\"' or '\\' (its value is not shown)")
    return password


def _address(text: object, who: str, what: str) -> IPAddress:
    return _parse(ipaddress.ip_address, text, f"{who}: {what} {text!r} is not an IP address")


def _network(text: object, who: str) -> IPNetwork:
    return _parse(_ip_network, text, f"{who}: prefix {text!r} is not a network (host bits must be zero)")


# Cached: the speaker renders again on every change, mostly the same prefixes. Networks are immutable.
_ip_network = functools.lru_cache(maxsize=1 << 16)(ipaddress.ip_network)


def _parse(parser, text: object, message: str):
    if isinstance(text, str):
        try:
            return parser(text)
        except ValueError:
            pass
    raise RenderError(message)


def _int_range(value: object, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RenderError(f"{what} {value!r} must be an integer from {low} to {high}")
