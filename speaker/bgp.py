"""BGP mode: the speaker drives the BIRD sidecar (speaker/bgpd.py) through a shared directory.

Inputs: BGPPeers, BFDProfiles, the password Secrets in the speaker's own namespace (informers here), and the
addresses of pools with BGP advertisements (the IntentIndex's `bgp` intents, from the speaker's informers).
Per change: lbctl.core.bgp_announce (which addresses this node advertises) -> bgp_plan -> bgp_render ->
bird.conf and withdraw.conf (same peers, no exports) written beside it -> `configure`. Only a changed render
is applied, so idle costs nothing; BIRD changes a session's export filter in place (no reset). A config BIRD
refuses (`configure check`) never replaces the running one: it is logged, counted and reported as an Event.

Every POLL_S the session table (`show protocols all`) feeds the SpeakerStatus `bgp` block, the metrics and
Events on session changes. The speaker holds a connection to the sidecar while it lives (see bgpd.py), and
pushes its config again whenever a (new) sidecar accepts it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import ipaddress
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lbctl import log
from lbctl.core.announce import IpIntent
from lbctl.core.bfdprofiles import BFDProfile, parse_bfd_profile
from lbctl.core.bgp_announce import advertised, announcements, renderable, symbols
from lbctl.core.bgp_fields import BGPError
from lbctl.core.bgp_plan import Announcement, Plan, plan
from lbctl.core.bgp_render import RenderError, render
from lbctl.core.bgppeers import PASSWORD_KEY, BGPPeer, judge_peers, parse_peer
from lbctl.core.bird_status import Session, parse_protocols
from lbctl.core.election import NodeInfo
from lbctl.core.pools import PoolSpec
from lbctl.core.timestamps import rfc3339
from lbctl.kube.client import Kube
from lbctl.kube.events import EventRecorder
from lbctl.kube.watch_health import WatchHealth

from . import bird_control
from .bgpd import BOOTSTRAP_TEXT, CONFIG, CONTROL, LINK, WITHDRAW
from .metrics import Metrics

logger = log.get(__name__)
BGPPEERS = "/apis/lbctl.io/v1alpha1/bgppeers"
BFDPROFILES = "/apis/lbctl.io/v1alpha1/bfdprofiles"
POLL_S = 2.0  # session table for status and metrics
RETRY_S = 1.0  # BIRD unreachable: try the push again
SETTLE_S = 0.02  # gather a burst of informer events into one render
# Full dates in `show protocols`, so a session's uptime survives midnight (lbctl/core/bird_status.py).
TIMEFORMAT = "timeformat protocol iso long;\n"
LEAVE_TIMEOUT_S = 3.0  # SIGTERM: longest wait for BIRD to show every session with nothing exported
LEAVE_LINGER_S = 0.1  # then this long for the last UPDATE to cross the wire and the router to take it

Source = Callable[[], tuple[Mapping[str, IpIntent], Mapping[str, PoolSpec], Mapping[str, NodeInfo]]]


class BgpSpeaker:
    def __init__(self, node: str, run_dir: str, source: Source, metrics: Metrics, on_status: Callable[[], None],
                 kube: Kube | None = None, namespace: str = "lbctl-system",
                 recorder: EventRecorder | None = None, inputs_synced: Callable[[], bool] = lambda: True) -> None:
        self.node, self.dir, self.source, self.metrics = node, Path(run_dir), source, metrics
        self.on_status, self.kube, self.namespace, self.recorder = on_status, kube, namespace, recorder
        self.inputs_synced = inputs_synced
        self.control = str(self.dir / CONTROL)
        self.peers: dict[str, tuple[Any, str]] = {}  # name -> (spec, uid)
        self.profiles: dict[str, Any] = {}
        self.passwords: dict[str, str] = {}  # Secret name (our namespace) -> its `password`
        self._synced: set[str] = set()
        self.health = WatchHealth()
        self._wake = asyncio.Event()
        self._poll_now = asyncio.Event()
        self.linked = False  # a sidecar accepted our connection: it is there and will not withdraw after our push
        self.applied: str | None = None  # the bird.conf text BIRD runs
        self._refused: str | None = None  # the last text BIRD refused (not retried until the render changes)
        self._refusal: str | None = None  # the last error reported
        self.leaving = False
        self.plan = Plan(None, {})
        self.anns: list[Announcement] = []
        self.sessions: dict[str, Session] = {}  # peer name -> last polled session
        self._up_since: dict[str, dt.datetime | None] = {}  # peer -> since of the session last seen Established
        self.status: dict[str, Any] = {"sessions": [], "advertised": [], "skipped": {}}

    def wake(self) -> None:
        self._wake.set()

    @property
    def synced(self) -> bool:
        return (self.kube is None or len(self._synced) == 3) and self.inputs_synced()

    def tasks(self) -> list[asyncio.Task[None]]:
        out = [asyncio.create_task(self._apply_forever(), name="bgp-apply"),
               asyncio.create_task(self._link_forever(), name="bgp-link"),
               asyncio.create_task(self._poll_forever(), name="bgp-poll")]
        if self.kube is not None:
            out += [asyncio.create_task(self._watch("BGPPeer", BGPPEERS), name="watch-bgppeers"),
                    asyncio.create_task(self._watch("BFDProfile", BFDPROFILES), name="watch-bfdprofiles"),
                    asyncio.create_task(self._watch("Secret", f"/api/v1/namespaces/{self.namespace}/secrets"),
                                        name="watch-secrets")]
        return out

    # --- inputs ----------------------------------------------------------------------------------------

    async def _watch(self, kind: str, path: str) -> None:
        assert self.kube is not None
        async for event, obj in self.kube.informer(path):
            if event == "ERROR":
                if self.health.failed(kind):
                    logger.warning("watch_failed", kind=kind, error=str(obj), keeping="last known state")
                continue
            self.health.recovered(kind)
            try:
                self.take(kind, event, obj)
            except Exception as exc:  # an odd object must not end the watch
                logger.warning("object_ignored", kind=kind, error=repr(exc))
                continue
            if event == "SYNC":
                self._synced.add(kind)
            self.wake()

    def take(self, kind: str, event: str, obj: Any) -> None:
        """One informer event (as Kube.informer yields them) into the inputs."""
        store: dict[str, Any] = {"BGPPeer": self.peers, "BFDProfile": self.profiles, "Secret": self.passwords}[kind]
        items = obj if event == "SYNC" else [obj]
        if event == "SYNC":
            store.clear()
        for item in items:
            if not isinstance(item, Mapping):
                continue
            meta = item.get("metadata") or {}
            name = meta.get("name")
            if not isinstance(name, str):
                continue
            if event == "DELETED":
                store.pop(name, None)
            elif kind == "BGPPeer":
                store[name] = (item.get("spec"), str(meta.get("uid") or ""))
            elif kind == "BFDProfile":
                store[name] = item.get("spec")
            else:
                password = _password(item)
                if password is None:
                    store.pop(name, None)
                else:
                    store[name] = password

    def desired(self) -> tuple[Plan, list[Announcement], str, str]:
        """(plan, announcements, bird.conf, withdraw.conf) from the inputs as they are now. RenderError."""
        intents, pools, nodes = self.source()
        anns = announcements(self.node, intents, pools, nodes)
        info = nodes.get(self.node)
        labels = dict(info.labels) if info else {}
        ipv4 = next((a for a in (info.addresses if info else ()) if _is_v4(a)), "")
        specs = sorted((name, spec) for name, (spec, _) in self.peers.items())
        profiles: dict[str, BFDProfile] = {}
        for name, spec in self.profiles.items():
            with contextlib.suppress(BGPError):
                profiles[name] = parse_bfd_profile(name, spec)
        verdicts = judge_peers(specs, profiles)
        invalid = {n: v.message for n, v in verdicts.items() if not v.ready}
        peers: list[BGPPeer] = []
        passwords: dict[str, str] = {}
        for name, spec in specs:
            try:
                peer = parse_peer(name, spec) if name not in invalid else None
            except BGPError as exc:
                invalid[name], peer = str(exc), None
            if peer is None:
                peers.append(BGPPeer(name, 1, 1, "0.0.0.0"))  # listed so that the plan names why it is left out
                continue
            peers.append(peer)
            ref = peer.password_secret
            if ref and (ref.namespace or self.namespace) == self.namespace and ref.name in self.passwords:
                passwords[name] = self.passwords[ref.name]
        got = plan(labels, ipv4, peers, profiles, anns, passwords, invalid)
        try:
            text = render(got.config) if got.config else BOOTSTRAP_TEXT
        except RenderError:
            got = renderable(got)  # without the peers the renderer refuses, or RenderError for the whole
            text = render(got.config) if got.config else BOOTSTRAP_TEXT
        if got.config is None:
            return got, anns, BOOTSTRAP_TEXT, BOOTSTRAP_TEXT
        bare = dataclasses.replace(got.config, peers=tuple(dataclasses.replace(p, exports=())
                                                           for p in got.config.peers))
        return got, anns, text + TIMEFORMAT, render(bare) + TIMEFORMAT

    # --- applying ----------------------------------------------------------------------------------------

    async def _apply_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(SETTLE_S)
            self._wake.clear()
            if self.leaving:
                return
            if not (self.linked and self.synced):
                continue  # a push before every input is known could drop a peer, resetting its session
            try:
                ok = await self.apply_once()
            except Exception:  # a bug on one input must not stop BGP for the rest
                logger.exception("bgp_apply_failed")
                ok = False
            if not ok:
                asyncio.get_running_loop().call_later(RETRY_S, self.wake)

    async def apply_once(self) -> bool:
        """Render and, when the text changed, apply; False when BIRD could not be reached (try again)."""
        try:
            got, anns, text, withdraw = self.desired()
        except (RenderError, BGPError) as exc:
            self._refuse(f"cannot render: {exc}", None)
            return True
        self.plan, self.anns = got, anns
        self._publish()
        if text == self.applied or text == self._refused:
            return True
        new_conf, new_withdraw = self.dir / f"{CONFIG}.new", self.dir / f"{WITHDRAW}.new"
        try:
            _write(new_withdraw, withdraw)
            _write(new_conf, text)
            for path in (new_withdraw, new_conf):
                await bird_control.configure(self.control, str(path), check_only=True)
        except bird_control.BirdError as exc:
            if not self.linked or "Connection" in str(exc) or "No such file" in str(exc):
                logger.warning("bird_unreachable", error=str(exc))
                return False
            self._refuse(f"BIRD refused the rendered config: {exc}", text)
            return True
        except OSError as exc:
            logger.error("bgp_config_write_failed", error=str(exc))
            return False
        os.replace(new_withdraw, self.dir / WITHDRAW)  # first: withdraw.conf always names the running peers
        os.replace(new_conf, self.dir / CONFIG)
        t0 = time.monotonic()
        try:
            reply = await bird_control.configure(self.control, str(self.dir / CONFIG))
        except bird_control.BirdError as exc:
            logger.warning("bird_configure_failed", error=str(exc))
            return False
        self.applied, self._refused, self._refusal = text, None, None
        self.metrics.bgp_configures.inc()
        logger.info("bgp_configured", peers=[p.name for p in got.config.peers] if got.config else [],
                    advertised=len(anns), skipped=dict(got.skipped), reply=reply.strip().splitlines()[-1:],
                    took_ms=round((time.monotonic() - t0) * 1000, 1))
        return True

    def _refuse(self, message: str, text: str | None) -> None:
        if text is not None:
            self._refused = text
        if message == self._refusal:
            return  # said once per distinct error, not once per informer event
        self._refusal = message
        self.metrics.bgp_config_errors.inc()
        logger.error("bgp_config_refused", error=message, keeping="the running config")
        if self.recorder:
            self.recorder.emit({"apiVersion": "v1", "kind": "Node", "name": self.node, "namespace": "", "uid": ""},
                               "Warning", "BGPConfigRefused", f"{self.node}: {message}; the running config stays")

    async def _link_forever(self) -> None:
        """Hold the sidecar's connection: it withdraws everything when it closes (we died)."""
        while not self.leaving:
            writer = None
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.dir / LINK))
                if await reader.readline():
                    self.linked, self.applied = True, None  # a new sidecar runs BIRD's bootstrap: push again
                    logger.info("bgp_sidecar_linked")
                    self.wake()
                    self._poll_now.set()
                    while await reader.read(4096):
                        pass
                    logger.warning("bgp_sidecar_gone", note="pushing the config again when it is back")
            except OSError:
                pass
            finally:
                self.linked = False
                if writer is not None:
                    writer.close()
            await asyncio.sleep(0.2)

    # --- sessions ----------------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            if self.linked:
                try:
                    await self.poll_once()
                except bird_control.BirdError as exc:
                    logger.debug("bird_poll_failed", error=str(exc))
            self._poll_now.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # a new sidecar: look at once, not up to POLL_S late
                await asyncio.wait_for(self._poll_now.wait(), POLL_S)

    async def poll_once(self) -> dict[str, Session]:
        text = await bird_control.command(self.control, "show protocols all")
        names = symbols(self.plan.config)
        now = dt.datetime.now(dt.timezone.utc)
        sessions = {names[s.protocol]: s for s in parse_protocols(text, now) if s.protocol in names}
        for peer in set(self._up_since) - set(names.values()):
            del self._up_since[peer]  # no longer a peer of this node: not a flap
        for peer, s in sessions.items():
            # Up before (even across a table without it: a restarted daemon) and now down or up anew: a flap.
            was = self._up_since.get(peer)
            if was is not None and (not s.up or s.since != was):
                self.metrics.bgp_flaps.labels(peer).inc()
                self._session_event(peer, s, "SessionDown" if not s.up else "SessionReset")
            elif was is None and s.up:
                self._session_event(peer, s, "SessionEstablished")
            if s.up:
                self._up_since[peer] = s.since
            else:
                self._up_since.pop(peer, None)
            self.metrics.bgp_flaps.labels(peer)  # shown from the first sight, at 0
            self.metrics.bgp_up.labels(peer).set(1 if s.up else 0)
            self.metrics.bgp_prefixes.labels(peer).set(s.exported)
        for peer in set(self.sessions) - set(sessions):
            for gauge in (self.metrics.bgp_up, self.metrics.bgp_prefixes):
                with contextlib.suppress(KeyError):
                    gauge.remove(peer)
        self.sessions = sessions
        self._publish()
        return sessions

    def _session_event(self, peer: str, s: Session, reason: str) -> None:
        logger.info("bgp_session", peer=peer, change=reason, state=s.state, address=s.address,
                    last_error=s.last_error)
        spec_uid = self.peers.get(peer)
        if not self.recorder or spec_uid is None:
            return
        obj = {"apiVersion": "lbctl.io/v1alpha1", "kind": "BGPPeer", "name": peer, "namespace": "",
               "uid": spec_uid[1]}
        why = f" ({s.last_error})" if s.last_error else ""
        message = {"SessionEstablished": f"{self.node}: session to {s.address} is up",
                   "SessionDown": f"{self.node}: session to {s.address} is {s.state}{why}",
                   "SessionReset": f"{self.node}: session to {s.address} went down and is up again"}[reason]
        self.recorder.emit(obj, "Normal" if reason == "SessionEstablished" else "Warning", reason, message)

    def _publish(self) -> None:
        sessions = [{"peer": peer, "address": s.address, "state": s.state,
                     "since": rfc3339(s.since) if s.since else None, "prefixesSent": s.exported,
                     "lastError": s.last_error} for peer, s in sorted(self.sessions.items())]
        status = {"sessions": sessions, "advertised": advertised(self.plan.config, self.anns),
                  "skipped": dict(sorted(self.plan.skipped.items()))}
        if status != self.status:
            self.status = status
            self.on_status()

    # --- leaving -------------------------------------------------------------------------------------------

    async def leave(self) -> float | None:
        """SIGTERM: withdraw every prefix and wait (bounded) until BIRD shows nothing exported on any session,
        plus LEAVE_LINGER_S for the routers to take the UPDATEs. Seconds it took, None when nothing to do."""
        self.leaving = True
        self.wake()
        if not self.linked or self.applied is None:
            return None
        t0 = time.monotonic()
        try:
            await bird_control.configure(self.control, str(self.dir / WITHDRAW))
            while time.monotonic() - t0 < LEAVE_TIMEOUT_S:
                sessions = await self.poll_once()
                if not any(s.up and s.exported for s in sessions.values()):
                    break
                await asyncio.sleep(0.01)
        except bird_control.BirdError as exc:
            logger.warning("bgp_withdraw_failed", error=str(exc), note="the sidecar withdraws when we are gone")
            return None
        exported_gone = time.monotonic() - t0
        await asyncio.sleep(LEAVE_LINGER_S)
        self.applied = None
        logger.info("bgp_withdrawn", exported_zero_ms=round(exported_gone * 1000, 1),
                    took_ms=round((time.monotonic() - t0) * 1000, 1))
        return time.monotonic() - t0


def _password(secret: Mapping[str, Any]) -> str | None:
    data = secret.get("data") or {}
    raw = data.get(PASSWORD_KEY) if isinstance(data, Mapping) else None
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _is_v4(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 4
    except ValueError:
        return False


def _write(path: Path, text: str) -> None:
    """Whole or not at all: BIRD must never read half a file (mode 0600: it may hold passwords)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
