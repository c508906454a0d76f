"""BFDProfile specs (lbctl.io/v1alpha1, cluster-scoped): the BFD timers a BGPPeer names in spec.bfdProfile.

Fields and defaults are MetalLB's (metallb.io/v1beta1 BFDProfile), which are FRR's bfdd defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .bgp_fields import BGPError, check_flag, check_int, check_known, check_name, check_object

FIELDS = ("receiveInterval", "transmitInterval", "detectMultiplier", "echoInterval", "echoMode", "passiveMode",
          "minimumTtl")


@dataclass(frozen=True)
class BFDProfile:
    name: str
    receive_interval: int = 300  # ms
    transmit_interval: int = 300  # ms
    detect_multiplier: int = 3
    echo_interval: int = 50  # ms
    echo_mode: bool = False
    passive_mode: bool = False
    minimum_ttl: int = 254

    @property
    def detect_time_ms(self) -> int:
        """How long a silent peer takes to be declared down (what failover waits for)."""
        return self.receive_interval * self.detect_multiplier


def parse_bfd_profile(name: Any, spec: Any) -> BFDProfile:
    """A BFDProfile from its name and spec; raises BGPError naming the field (and only BGPError)."""
    name = check_name(name, "metadata.name")
    spec = check_object(spec, "spec")
    check_known(spec, FIELDS, "spec")
    d = BFDProfile(name)

    def ms(key: str, default: int) -> int:
        return check_int(spec.get(key, default), f"spec.{key}", 10, 60000)

    return BFDProfile(
        name=name,
        receive_interval=ms("receiveInterval", d.receive_interval),
        transmit_interval=ms("transmitInterval", d.transmit_interval),
        detect_multiplier=check_int(spec.get("detectMultiplier", d.detect_multiplier), "spec.detectMultiplier", 2, 255),
        echo_interval=ms("echoInterval", d.echo_interval),
        echo_mode=check_flag(spec.get("echoMode"), "spec.echoMode"),
        passive_mode=check_flag(spec.get("passiveMode"), "spec.passiveMode"),
        minimum_ttl=check_int(spec.get("minimumTtl", d.minimum_ttl), "spec.minimumTtl", 1, 254),
    )


__all__ = ["BFDProfile", "BGPError", "parse_bfd_profile"]
