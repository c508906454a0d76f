"""The `Valid` condition of every BGPPeer and BFDProfile, and whether its status needs a write.

Pure: the controller (controller/bgp_status.py) feeds the objects it watches and writes what `status_update`
returns. `Valid`, not `Ready`: the controller judges the spec only; whether a session is up is each speaker's
to say (SpeakerStatus `status.bgp`, `lbctl status`). The CRDs refuse what openAPI can say at `kubectl apply`;
what lands here is the rest (keepalive below hold, families, a missing BFDProfile, duplicates, what BIRD cannot
do). Password Secrets are the speakers' to read (the controller has no right to Secrets), so a valid peer's
message says that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .bfdprofiles import BFDProfile, parse_bfd_profile
from .bgp_fields import BGPError
from .bgppeers import judge_peers, parse_peer

VALID = "Valid"
INVALID = "Invalid"


@dataclass(frozen=True)
class Obj:
    """What the controller knows of one object: its spec, generation, and status as the server holds it."""

    spec: Any
    generation: int = 0
    status: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Condition:
    valid: bool
    reason: str
    message: str


def bfd_conditions(profiles: Mapping[str, Any]) -> dict[str, Condition]:
    """Per BFDProfile name (-> spec): Valid, or Invalid naming the field and value."""
    out: dict[str, Condition] = {}
    for name, spec in profiles.items():
        try:
            profile = parse_bfd_profile(name, spec)
        except BGPError as exc:
            out[name] = Condition(False, INVALID, str(exc))
            continue
        if profile.echo_mode:  # bgp_render refuses it: say so where the user looks, not only in a speaker's log
            out[name] = Condition(False, INVALID, "spec.echoMode: true has no equivalent in BIRD, the speakers' "
                                  "routing daemon (no BFD echo function); set it false")
            continue
        out[name] = Condition(True, VALID, _bfd_summary(profile))
    return out


def _bfd_summary(p: BFDProfile) -> str:
    return (f"receive {p.receive_interval} ms, transmit {p.transmit_interval} ms, x{p.detect_multiplier}: "
            f"a silent peer is down after {p.detect_time_ms} ms")


def peer_conditions(peers: Mapping[str, Any], profiles: Mapping[str, Any]) -> dict[str, Condition]:
    """Per BGPPeer name (-> spec): judge_peers' verdict, plus what the routing daemon could not do with the
    BFDProfile it names. A peer naming an Invalid BFDProfile is Invalid too: the speakers cannot render it."""
    bfd = bfd_conditions(profiles)
    verdicts = judge_peers(peers.items(), profiles.keys())
    out: dict[str, Condition] = {}
    for name, verdict in verdicts.items():
        if not verdict.ready:
            out[name] = Condition(False, INVALID, verdict.message)
            continue
        peer = parse_peer(name, peers[name])  # judged valid: parses
        if peer.bfd_profile is not None:
            cond = bfd[peer.bfd_profile]
            if not cond.valid:
                out[name] = Condition(False, INVALID, f"spec.bfdProfile: BFDProfile {peer.bfd_profile!r} is "
                                      f"invalid ({cond.message})")
                continue
            if peer.ebgp_multihop and peer.source_address is None:
                out[name] = Condition(False, INVALID, "spec.sourceAddress is required with spec.ebgpMultiHop and "
                                      "a bfdProfile: multihop BFD cannot pick its local address")
                continue
            if peer.ebgp_multihop and "minimumTtl" in (profiles[peer.bfd_profile] or {}):
                out[name] = Condition(False, INVALID, f"spec.bfdProfile: BFDProfile {peer.bfd_profile!r} sets "
                                      "minimumTtl, which has no equivalent on a multihop session in BIRD")
                continue
        message = verdict.message
        if peer.password_secret is not None:
            ns = peer.password_secret.namespace or "the speakers' namespace"
            message += (f"; password Secret {peer.password_secret.name} in {ns}: checked by the speakers "
                        f"(the controller does not read Secrets)")
        out[name] = Condition(True, VALID, message)
    return out


def status_update(cond: Condition, obj: Obj, now: str) -> dict[str, Any] | None:
    """The status to write for `cond` on `obj`, or None when the server already holds it. lastTransitionTime
    moves only when True/False flips; observedGeneration follows the spec judged."""
    current = obj.status if isinstance(obj.status, Mapping) else {}
    conds = current.get("conditions")
    old = next((c for c in conds if isinstance(c, Mapping) and c.get("type") == VALID), None) \
        if isinstance(conds, list) else None
    status = "True" if cond.valid else "False"
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    want = {"type": VALID, "status": status, "reason": cond.reason, "message": cond.message,
            "observedGeneration": obj.generation, "lastTransitionTime": since or now}
    if old is not None and dict(old) == want and current.get("observedGeneration") == obj.generation:
        return None
    others = [c for c in conds if isinstance(c, Mapping) and c.get("type") != VALID] if isinstance(conds, list) else []
    return {"observedGeneration": obj.generation, "conditions": [*others, want]}


def event_for(cond: Condition, obj: Obj) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event due when `cond` replaces the condition the server holds: a Warning
    when it is (still or newly) Invalid with another message, a Normal one when it becomes Valid again. Taken
    from the server's status, so a restarted controller posts nothing for verdicts already written."""
    current = obj.status if isinstance(obj.status, Mapping) else {}
    conds = current.get("conditions")
    old = next((c for c in conds if isinstance(c, Mapping) and c.get("type") == VALID), None) \
        if isinstance(conds, list) else None
    if not cond.valid:
        if old is not None and old.get("status") == "False" and old.get("message") == cond.message:
            return None
        return "Warning", cond.reason, cond.message
    if old is not None and old.get("status") == "False":
        return "Normal", cond.reason, cond.message
    return None
