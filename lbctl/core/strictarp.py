"""Is ARP strict enough for kube-proxy in IPVS mode? Pure judgement of values a shell has read.

kube-proxy IPVS binds every Service IP, LoadBalancer IPs included, to the dummy `kube-ipvs0`. With the
kernel defaults (arp_ignore=0, arp_announce=0) every node then answers ARP for every LoadBalancer IP
and the MAC flaps between nodes. `ipvs.strictARP: true` makes kube-proxy set arp_ignore=1 and
arp_announce=2 on conf/all. The kernel applies the larger of conf/all and conf/<interface>, so an
interface can be strict even when `all` is not, and the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

IPVS_DEV = "kube-ipvs0"
KEYS = ("arp_ignore", "arp_announce")
# arp_ignore 1 and 2 answer only for addresses on the receiving interface, 8 never answers; 3 still
# answers for kube-ipvs0's global-scope addresses. arp_announce 2 never sources ARP from them.
STRICT_IGNORE = frozenset({1, 2, 8})
STRICT_ANNOUNCE = 2
FIX = "set kube-proxy ipvs.strictARP: true (kubespray: kube_proxy_strict_arp: true)"

Sysctls = Mapping[str, Mapping[str, str | None]]  # "all" or an interface -> {"arp_ignore": "1", ...}


@dataclass(frozen=True)
class Finding:
    level: str  # PASS | WARN | FAIL
    what: str
    message: str

    @property
    def ok(self) -> bool:
        return self.level == "PASS"


def effective(sysctls: Sysctls, interface: str) -> dict[str, int | None]:
    """The values the kernel applies on `interface`: max(conf/all, conf/interface); None if unreadable."""
    out: dict[str, int | None] = {}
    for key in KEYS:
        values = [_int((sysctls.get(scope) or {}).get(key)) for scope in ("all", interface)]
        known = [v for v in values if v is not None]
        out[key] = max(known) if known and values[0] is not None else None
    return out


def node(sysctls: Sysctls, ipvs_present: bool, interfaces: Iterable[str] = ()) -> Finding:
    """The node-side check: only matters when kube-ipvs0 exists; then every announcing interface
    (or conf/all when none is given) must be strict."""
    names = list(dict.fromkeys(interfaces)) or ["all"]
    values = {name: effective(sysctls, name) for name in names}
    shown = "; ".join(f"{name}: arp_ignore={_show(v['arp_ignore'])} arp_announce={_show(v['arp_announce'])}"
                      for name, v in values.items())
    if not ipvs_present:
        return Finding("PASS", "strict ARP", f"no {IPVS_DEV}: kube-proxy is not in IPVS mode here ({shown})")
    unknown = [n for n, v in values.items() if None in v.values()]
    if unknown:
        return Finding("WARN", "strict ARP", f"{IPVS_DEV} exists but cannot read ARP sysctls for "
                       f"{', '.join(unknown)} ({shown}); {FIX}")
    loose = [n for n, v in values.items() if not _strict(v)]
    if loose:
        return Finding("FAIL", "strict ARP", f"{IPVS_DEV} exists and ARP is not strict on {', '.join(loose)} "
                       f"({shown}; need arp_ignore=1 and arp_announce=2): every node answers ARP for every "
                       f"LoadBalancer IP; {FIX}")
    return Finding("PASS", "strict ARP", f"{IPVS_DEV} exists and ARP is strict ({shown})")


def kube_proxy(conf: Mapping[str, Any] | None) -> Finding:
    """The cluster-side check, from kube-proxy's KubeProxyConfiguration (the kube-proxy ConfigMap's
    config.conf, parsed); None when there is none to read."""
    if conf is None:
        return Finding("WARN", "kube-proxy", "no kube-system/kube-proxy ConfigMap to check")
    if not isinstance(conf, Mapping):
        return Finding("WARN", "kube-proxy", "kube-proxy config.conf is not a KubeProxyConfiguration mapping")
    mode = conf.get("mode") or "iptables"
    ipvs = conf.get("ipvs")
    strict = isinstance(ipvs, Mapping) and ipvs.get("strictARP") is True
    if mode == "ipvs" and not strict:
        return Finding("FAIL", "kube-proxy", f"mode ipvs without ipvs.strictARP: true; {FIX}")
    return Finding("PASS", "kube-proxy", f"mode {mode}" + (", strictARP" if strict else ""))


def _strict(v: Mapping[str, int | None]) -> bool:
    return v["arp_ignore"] in STRICT_IGNORE and v["arp_announce"] == STRICT_ANNOUNCE


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def _show(value: int | None) -> str:
    return "?" if value is None else str(value)
