"""A seeded random run against the real kube-apiserver and two real controller replicas (issue 12, acceptance 2).

Steps: Services created, changed (valid and invalid requests: bad IP annotations, unknown pools, foreign
classes, sharing keys, dual-stack policies, type changes), deleted and recreated; IPPools created, edited,
deleted and overlapping; Namespace labels; Service statuses edited by hand as admin; either replica SIGKILLed
or SIGTERMed and started again; the API server restarted. After each burst of steps, and after every restart,
the run waits until the controllers have settled and checks tests/lb_invariants.py from the API.

Settled, by what the API shows: a fresh sentinel Service (its own namespace and pool) has its address, so the
leader has seen every Service change made before it; then no Service and no AllocationFailed Event changed for
QUIET seconds; and every Service of ours has an address or a Warning (or QUIET_UNDECIDED seconds passed).
"""

from __future__ import annotations

import itertools
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbctl.lab.controlplane import SA_NS, ControlPlane
from lbctl.kube.client import ApiError
from tests.conftest import admin_client
from tests.lb_invariants import NOTES, Oracle, Violation, ips, ours, rewritten, snapshot, uid
from tests.procs import ControllerProcess, is_leader, terminate
from tests.wait import wait_for

POOLS = "/apis/lbctl.io/v1alpha1/ippools"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{SA_NS}/leases/lbctl-controller"
V4, V6 = "198.18.230.", "2001:db8:230::"  # .0-.31 / ::0-::1f: pools overlap and run out often; no other test's
SENTINEL_RANGE = "198.18.231.0/28"
RUN_LABEL = "lbctl.io/random-run"
PREFIXES = ("lbctl.io/", "metallb.io/", "metallb.universe.tf/")
BAD_IPS = ("198.18.230.3OO", "not-an-ip", "198.18.230.1,198.18.230.2", "2001:db8:230::zz", "198.18.230.")
PORTS = ((80, "TCP"), (443, "TCP"), (53, "UDP"), (8080, "TCP"))
# Short leader-election timings so a failover costs seconds, not the chart's 12 s (same code paths).
TIMING = ("--leader-election-lease-duration", "6", "--leader-election-renew-deadline", "4",
          "--leader-election-retry-period", "1")
QUIET, QUIET_UNDECIDED, SETTLE_TIMEOUT, POLL = 0.5, 5.0, 90.0, 0.1
MAX_SERVICES, MAX_POOLS, MAX_BURST = 40, 4, 10
WEIGHTS = {"create": 18, "update": 22, "typo": 5, "delete": 7, "recreate": 2, "status": 5, "pool-create": 4,
           "pool-edit": 5, "pool-delete": 2, "namespace": 3, "controller": 3, "apiserver": 0.6}


@dataclass
class Figures:
    seed: int
    steps: int = 0
    checks: int = 0
    steps_by_kind: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)  # steps the API server refused (422 ...), by kind
    kills: Counter[str] = field(default_factory=Counter)  # replica -> SIGKILLs
    terms: Counter[str] = field(default_factory=Counter)  # replica -> SIGTERMs
    quiet_restarts: int = 0  # restarts with a snapshot before and after (nothing may be written)
    apiserver_restarts: int = 0
    self_exits: list[str] = field(default_factory=list)  # replicas that exited without being told to
    leader_transitions: int = 0
    duration: float = 0.0
    violations: dict[str, Violation] = field(default_factory=dict)  # first occurrence of each distinct one
    notes: dict[str, Violation] = field(default_factory=dict)  # duplicates an admin made by hand (lb_invariants)

    def summary(self) -> str:
        kinds = Counter(v.kind for v in self.violations.values())
        first = min((v.step for v in self.violations.values()), default=None)
        return "\n".join([
            f"random run seed {self.seed}: {self.steps} steps in {self.duration:.0f} s, {self.checks} invariant checks",
            f"  steps: {dict(sorted(self.steps_by_kind.items()))}",
            f"  refused by the API server: {dict(sorted(self.rejected.items()))}",
            f"  SIGKILL {dict(sorted(self.kills.items()))}, SIGTERM {dict(sorted(self.terms.items()))}, "
            f"{self.quiet_restarts} of them and of the API restarts checked for rewrites; API server restarts "
            f"{self.apiserver_restarts}; leader transitions {self.leader_transitions}",
            f"  replicas exiting by themselves: {len(self.self_exits)} {self.self_exits[:5]}",
            f"  violations: {len(self.violations)} distinct {dict(kinds)}"
            + (f", first at step {first}" if first is not None else ""),
            *(f"    {v}" for v in sorted(self.violations.values(), key=lambda v: v.step)[:25]),
            f"  notes (not violations): {len(self.notes)}",
            *(f"    {v}" for v in sorted(self.notes.values(), key=lambda v: v.step)[:10]),
        ])


class RandomRun:
    def __init__(self, cp: ControlPlane, workdir: Path, seed: int, steps: int,
                 say: Callable[[str], None] = print) -> None:
        self.cp, self.workdir, self.steps, self.say = cp, workdir, steps, say
        self.rnd = random.Random(seed)
        self.fig = Figures(seed)
        self.oracle = Oracle()
        self.run_id = f"rr{seed % 100000}-{int(time.time()) % 100000}"
        self.nss = [f"{self.run_id}-{x}" for x in "abc"]
        self.sentinel_ns, self.sentinel_pool = f"{self.run_id}-sentinel", f"{self.run_id}-sentinel"
        self.kube = admin_client(cp)
        self.live: list[str] = []  # ns/name of every Service of the run
        self.pools: dict[str, dict[str, Any]] = {}
        self.view: list[dict[str, Any]] = []  # Services at the last check
        self.names = itertools.count()
        self.replicas: dict[str, ControllerProcess] = {}
        self.step = 0

    # ----- the run ---------------------------------------------------------------------------------
    def run(self) -> Figures:
        started = time.monotonic()
        try:
            self._setup()
            transitions, reported = self._transitions(), 0
            while self.step < self.steps:
                for _ in range(self.rnd.randint(1, MAX_BURST)):
                    self.step += 1
                    kind = self._pick()
                    self.fig.steps_by_kind[kind] += 1
                    if kind in ("controller", "apiserver"):
                        self._restart(kind)  # checks before (sometimes) and after, itself
                        break
                    self._do(kind)
                    if self.step >= self.steps:
                        break
                else:
                    self._check(self._settle())
                if self.step // 100 > reported:
                    reported = self.step // 100
                    self.say(f"step {self.step}: {self.fig.checks} checks, {len(self.fig.violations)} violations, "
                             f"{time.monotonic() - started:.0f} s")
            self._check(self._settle())
            self.fig.leader_transitions = self._transitions() - transitions
        finally:
            self.fig.steps, self.fig.duration = self.step, time.monotonic() - started
            self._teardown()
        return self.fig

    def _pick(self) -> str:
        w = dict(WEIGHTS)
        if len(self.live) >= MAX_SERVICES:
            w["create"], w["delete"] = 2, 20
        if not self.pools:
            w["pool-create"] = 20
        if len(self.pools) >= MAX_POOLS:
            w["pool-create"] = 0
        return self.rnd.choices(list(w), list(w.values()))[0]

    def _do(self, kind: str) -> None:
        action = {"create": self._create, "update": self._update, "typo": self._typo, "delete": self._delete,
                  "recreate": self._recreate, "status": self._hand_edit, "pool-create": self._pool_create,
                  "pool-edit": self._pool_edit, "pool-delete": self._pool_delete, "namespace": self._namespace}
        try:
            action[kind]()
        except ApiError as exc:
            self.fig.rejected[f"{kind} {exc.status}"] += 1
            self._trace(f"refused: {exc.status} {str(exc)[:200]}")

    # ----- settling and checking -------------------------------------------------------------------
    def _settle(self) -> list[dict[str, Any]]:
        """Wait until the controllers have acted on everything so far (module doc); the Services then."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        self._revive()
        sentinel = f"sentinel{next(self.names)}"
        path = f"/api/v1/namespaces/{self.sentinel_ns}/services"
        self.kube.create(path, {"metadata": {"name": sentinel, "annotations": {
            "lbctl.io/address-pool": self.sentinel_pool}}, "spec": {
            "type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}})
        seen, last, since = False, None, time.monotonic()
        while True:
            now = time.monotonic()
            self._revive()
            services = self.kube.list("/api/v1/services", labelSelector=f"{RUN_LABEL}={self.run_id}")
            events = [e for e in self.kube.list("/api/v1/events", fieldSelector="type=Warning,reason=AllocationFailed")
                      if e["involvedObject"].get("namespace") in self.nss]
            self.oracle.saw_warnings(events)
            seen = seen or bool(ips(self.kube.get(f"{path}/{sentinel}")))
            state = (max((int(s["metadata"]["resourceVersion"]) for s in services), default=0),
                     max((int(e["metadata"]["resourceVersion"]) for e in events), default=0))
            if state != last:
                last, since = state, now
            undecided = [s for s in services if ours(s) and not ips(s) and uid(s) not in self.oracle.warned]
            if seen and now - since >= QUIET and (not undecided or now - since >= QUIET_UNDECIDED):
                break
            if now > deadline:
                self._violate("unsettled", f"not settled in {SETTLE_TIMEOUT:.0f} s (sentinel served: {seen}, "
                              f"{len(undecided)} undecided)")
                break
            time.sleep(POLL)
        self.kube.delete(f"{path}/{sentinel}")
        return services

    def _check(self, services: list[dict[str, Any]]) -> None:
        self.fig.checks += 1
        self.view = services
        self._trace("check: " + ", ".join(f"{s['metadata']['namespace'][-1]}/{s['metadata']['name']}={','.join(ips(s))}"
                                          for s in services))
        for v in self.oracle.check(self.step, services):
            self._record(v)

    def _violate(self, kind: str, detail: str) -> None:
        self._record(Violation(self.step, kind, detail))

    def _record(self, v: Violation) -> None:
        key, book = f"{v.kind}: {v.detail}", self.fig.notes if v.kind in NOTES else self.fig.violations
        if key not in book:
            book[key] = v
            label = "NOTE" if v.kind in NOTES else "VIOLATION"
            self.say(f"{label} {v}")
            self._trace(f"{label} {v}")

    def _trace(self, line: str) -> None:
        """What each step did, in workdir/steps.log, to replay a violation by reading."""
        with open(self.workdir / "steps.log", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} step {self.step}: {line}\n")

    # ----- restarts --------------------------------------------------------------------------------
    def _restart(self, kind: str) -> None:
        quiet = self.rnd.random() < 0.5  # half of them with nothing else going on: then nothing may be written
        before = None
        if quiet:
            services = self._settle()
            self._check(services)
            before = snapshot(services)
        if kind == "apiserver":
            self.cp.outage(self.rnd.uniform(0.2, 3.0))
            self.kube.close()
            self.kube = admin_client(self.cp)  # fresh connections: the old ones died with the server
            self.fig.apiserver_restarts += 1
            what = "an API server restart"
            self._trace(what)
        else:
            name = self.rnd.choice(sorted(self.replicas))
            ctl, other = self.replicas[name], next(c for n, c in self.replicas.items() if n != name)
            assert ctl.proc is not None
            if self.rnd.random() < 0.5:
                ctl.proc.kill()
                ctl.proc.wait()
                self.fig.kills[name] += 1
                sig = "SIGKILL"
            else:
                terminate(ctl.proc, 15)
                self.fig.terms[name] += 1
                sig = "SIGTERM"
            if self.rnd.random() < 0.5:  # the survivor takes over before the replica comes back
                try:
                    wait_for(lambda: is_leader(other), 30, 0.1, f"replica {name}'s peer to lead after {sig}")
                except AssertionError as exc:
                    self._violate("no-takeover", str(exc))
            ctl.start(timeout=60)
            what = f"{sig} of replica {name}"
            self._trace(f"{what} (restarted, log {ctl.starts})")
        services = self._settle()
        self._check(services)
        if before is not None:
            self.fig.quiet_restarts += 1
            for v in rewritten(self.step, before, services, what):
                self._record(v)

    def _revive(self) -> None:
        """A replica that exited by itself is a finding; start it again, as its Deployment would."""
        for name, ctl in self.replicas.items():
            if ctl.proc and ctl.proc.poll() is not None:
                code = ctl.proc.returncode
                tail = " | ".join(ctl.log().strip().splitlines()[-3:])[-600:]
                self.fig.self_exits.append(f"step {self.step}: replica {name} exited {code}")
                self._violate("replica-exit", f"replica {name} exited {code} by itself: {tail}")
                ctl.start(timeout=60)

    def _transitions(self) -> int:
        try:
            return int(self.kube.get(LEASE)["spec"].get("leaseTransitions") or 0)
        except ApiError:
            return 0

    # ----- Services --------------------------------------------------------------------------------
    def _path(self, key: str, sub: str = "") -> str:
        ns, name = key.split("/")
        return f"/api/v1/namespaces/{ns}/services/{name}" + (f"/{sub}" if sub else "")

    def _some_ip(self) -> str:
        held = [ip for s in self.view for ip in ips(s)]
        if held and self.rnd.random() < 0.4:
            return self.rnd.choice(held)  # someone's address: sharing, or a conflict
        if self.rnd.random() < 0.1:
            return f"{V6}{self.rnd.randrange(32):x}"
        return f"{V4}{self.rnd.randrange(32)}"

    def _ports(self) -> list[dict[str, Any]]:
        return [{"name": f"p{port}", "port": port, "protocol": proto}
                for port, proto in self.rnd.sample(PORTS, self.rnd.choice((1, 1, 2)))]

    def _body(self, key: str) -> dict[str, Any]:
        ns, name = key.split("/")
        r = self.rnd.random
        ann: dict[str, str] = {}
        if r() < 0.25:
            ann[self.rnd.choice(PREFIXES) + "loadBalancerIPs"] = self._some_ip()
        elif r() < 0.05:
            ann["lbctl.io/loadBalancerIPs"] = self.rnd.choice(BAD_IPS)
        if r() < 0.2:
            ann["lbctl.io/address-pool"] = self.rnd.choice([*self.pools, f"{self.run_id}-nopool"])
        if r() < 0.3:
            ann[self.rnd.choice(PREFIXES) + "allow-shared-ip"] = self.rnd.choice(("k1", "k2"))
        spec: dict[str, Any] = {"type": "LoadBalancer" if r() < 0.9 else "ClusterIP",
                                "selector": {"app": self.rnd.choice("ab")}, "ports": self._ports()}
        spec.update(self._families())
        if spec["type"] == "LoadBalancer" and r() < 0.15:
            spec["externalTrafficPolicy"] = "Local"
        if r() < 0.05:
            spec["loadBalancerClass"] = "example.com/other"  # Kubernetes 1.20 prunes it: then ours after all
        labels = {RUN_LABEL: self.run_id, **({"tier": "web"} if r() < 0.3 else {})}
        return {"metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": ann}, "spec": spec}

    def _families(self) -> dict[str, Any]:
        r = self.rnd.random()
        if r < 0.1:
            return {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}
        if r < 0.2:
            return {"ipFamilyPolicy": "PreferDualStack"}
        if r < 0.3:
            return {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": self.rnd.choice((["IPv4", "IPv6"],
                                                                                          ["IPv6", "IPv4"]))}
        return {}

    def _create(self, key: str | None = None) -> None:
        key = key or f"{self.rnd.choice(self.nss)}/s{next(self.names)}"
        ns, body = key.split("/")[0], self._body(key)
        self._trace(f"create {key}: {body['metadata']['annotations']} {body['spec']}")
        self.kube.create(f"/api/v1/namespaces/{ns}/services", body)
        if key not in self.live:
            self.live.append(key)

    def _one(self, holding: bool = False) -> dict[str, Any] | None:
        """A Service of the run as the API has it now (one holding an address, if asked and any)."""
        keys = self.live
        if holding:
            keys = [f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in self.view if ips(s)] or keys
        keys = [k for k in keys if k in self.live]
        if not keys:
            return None
        try:
            return self.kube.get(self._path(self.rnd.choice(keys)))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _update(self) -> None:
        svc = self._one()
        if svc is None:
            return
        key = f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"
        spec = svc["spec"]
        r = self.rnd.random
        what = self.rnd.choice(("ip", "ip", "unrequest", "pool", "share", "share", "ports", "etp", "labels",
                                "family", "type", "class"))
        patch: dict[str, Any]
        if what == "ip":
            ann = {p + "loadBalancerIPs": None for p in PREFIXES}
            if r() < 0.2:
                patch = {"metadata": {"annotations": ann}, "spec": {"loadBalancerIP": self._some_ip()}}
            else:
                ann[self.rnd.choice(PREFIXES) + "loadBalancerIPs"] = self._some_ip()
                patch = {"metadata": {"annotations": ann}, "spec": {"loadBalancerIP": None}}
        elif what == "unrequest":
            patch = {"metadata": {"annotations": {p + "loadBalancerIPs": None for p in PREFIXES}},
                     "spec": {"loadBalancerIP": None}}
        elif what == "pool":
            pool = self.rnd.choice([*self.pools, f"{self.run_id}-nopool", None])
            patch = {"metadata": {"annotations": {"lbctl.io/address-pool": pool}}}
        elif what == "share":
            ann = {p + "allow-shared-ip": None for p in PREFIXES}
            ann[self.rnd.choice(PREFIXES) + "allow-shared-ip"] = self.rnd.choice(("k1", "k2", None))
            patch = {"metadata": {"annotations": ann}}
        elif what == "ports":
            ports = self._ports()
            old = {p["port"]: p.get("nodePort") for p in spec.get("ports") or []}
            for p in ports:  # keep allocated nodePorts where the port stays
                if old.get(p["port"]):
                    p["nodePort"] = old[p["port"]]
            patch = {"spec": {"ports": ports}}
        elif what == "etp":
            local = spec.get("externalTrafficPolicy") == "Local"
            patch = {"spec": {"externalTrafficPolicy": "Cluster" if local else "Local",
                              **({"healthCheckNodePort": None} if local else {})}}
        elif what == "labels":
            patch = {"metadata": {"labels": {"tier": self.rnd.choice(("web", "db", None))}}}
        elif what == "family":
            fams = self._families() or {"ipFamilyPolicy": "SingleStack",
                                        "ipFamilies": (spec.get("ipFamilies") or ["IPv4"])[:1],
                                        "clusterIPs": (spec.get("clusterIPs") or [])[:1]}
            patch = {"spec": fams}
        elif what == "type":
            if spec.get("type") == "LoadBalancer":
                patch = {"spec": {"type": "ClusterIP", "externalTrafficPolicy": None, "healthCheckNodePort": None,
                                  "ports": [{k: v for k, v in p.items() if k != "nodePort"}
                                            for p in spec.get("ports") or []]}}
            else:
                patch = {"spec": {"type": "LoadBalancer"}}
        else:
            patch = {"spec": {"loadBalancerClass": "example.com/other" if r() < 0.7 else None}}
        if what != "labels":
            self.oracle.asked_by([svc["metadata"]["uid"]])
        self.fig.steps_by_kind[f"update:{what}"] += 1
        self._trace(f"update {key} ({what}): {patch}")
        self.kube.patch(self._path(key), patch)

    def _typo(self) -> None:
        """A request made invalid on a Service that holds an address (bug 1: it must keep it reserved)."""
        svc = self._one(holding=True)
        if svc is None:
            return
        self.oracle.asked_by([svc["metadata"]["uid"]])
        key = f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"
        bad = self.rnd.choice(BAD_IPS)
        self._trace(f"typo {key}: loadBalancerIPs {bad!r} (holds {list(ips(svc))})")
        self.kube.patch(self._path(key), {"metadata": {"annotations": {"lbctl.io/loadBalancerIPs": bad}}})

    def _delete(self) -> None:
        if self.live:
            key = self.rnd.choice(self.live)
            self.live.remove(key)
            self._trace(f"delete {key}")
            self.kube.delete(self._path(key))

    def _recreate(self) -> None:
        """Delete and create a namesake at once: the controller may see only the new one."""
        if self.live:
            key = self.rnd.choice(self.live)
            self._trace(f"recreate {key}")
            self.kube.delete(self._path(key))
            self._create(key)

    def _hand_edit(self) -> None:
        """An admin writes a Service's status: someone else's address, any address, none, two, one twice."""
        svc = self._one()
        if svc is None:
            return
        key = f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"
        kind = self.rnd.choice(("copy", "copy", "any", "clear", "two", "twice"))
        if kind == "clear":
            ingress = None
        else:
            ip = self._some_ip()
            more = {"two": [f"{V4}{self.rnd.randrange(32)}"], "twice": [ip]}.get(kind, [])
            ingress = [{"ip": a} for a in [ip, *more]]
        self.oracle.hand_edited(uid(svc), ips(svc))
        self._trace(f"status of {key} by hand: {ingress}")
        self.fig.steps_by_kind[f"status:{kind}"] += 1
        self.kube.patch(self._path(key, "status"), {"status": {"loadBalancer": {"ingress": ingress}}})

    # ----- IPPools and Namespaces ------------------------------------------------------------------
    def _pool_spec(self) -> dict[str, Any]:
        r = self.rnd.random
        first = self.rnd.randrange(32)
        last = min(first + self.rnd.randint(1, 7), 31)
        if r() < 0.05:
            first, last = last, first  # reversed: the pool is Invalid
        addresses = [f"{V4}{first}-{V4}{last}"]
        if r() < 0.4:
            f6 = self.rnd.randrange(32)
            addresses.append(f"{V6}{f6:x}-{V6}{min(f6 + self.rnd.randint(1, 7), 31):x}")
        spec: dict[str, Any] = {"addresses": addresses, "autoAssign": r() < 0.8, "avoidBuggyIPs": r() < 0.1}
        rule = r()
        if rule < 0.1:
            spec["serviceAllocation"] = {"namespaces": [self.rnd.choice(self.nss)]}
        elif rule < 0.2:
            spec["serviceAllocation"] = {"namespaceSelector": {"matchLabels": {"tier": "gold"}}}
        elif rule < 0.3:
            spec["serviceAllocation"] = {"serviceSelector": {"matchLabels": {"tier": "web"}}, "priority": 5}
        return spec

    def _pool_create(self) -> None:
        name = f"{self.run_id}-p{next(self.names)}"
        spec = self._pool_spec()
        self.kube.create(POOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool", "metadata": {"name": name},
                                 "spec": spec})
        self._trace(f"pool create {name}: {spec}")
        self.pools[name] = spec

    def _pool_edit(self) -> None:
        if self.pools:
            name = self.rnd.choice(sorted(self.pools))
            spec = self._pool_spec()
            spec.setdefault("serviceAllocation", None)
            self._trace(f"pool edit {name}: {spec}")
            self.kube.patch(f"{POOLS}/{name}", {"spec": spec})
            self.pools[name] = spec

    def _pool_delete(self) -> None:
        if self.pools:
            name = self.rnd.choice(sorted(self.pools))
            del self.pools[name]
            self._trace(f"pool delete {name}")
            self.kube.delete(f"{POOLS}/{name}")

    def _namespace(self) -> None:
        ns, tier = self.rnd.choice(self.nss), self.rnd.choice(("gold", "silver", None))
        self._trace(f"namespace {ns} tier={tier}")
        self.kube.patch(f"/api/v1/namespaces/{ns}", {"metadata": {"labels": {"tier": tier}}})

    # ----- setup and teardown ----------------------------------------------------------------------
    def _setup(self) -> None:
        for ns in [*self.nss, self.sentinel_ns]:
            self.kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        self.kube.create(POOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool",
                                 "metadata": {"name": self.sentinel_pool},
                                 "spec": {"addresses": [SENTINEL_RANGE], "autoAssign": False,
                                          "serviceAllocation": {"namespaces": [self.sentinel_ns]}}})
        for name in "ab":
            logdir = self.workdir / f"replica-{name}"
            logdir.mkdir(parents=True, exist_ok=True)
            self.replicas[name] = ControllerProcess(self.cp, logdir, *TIMING, identity=f"{self.run_id}-{name}")
            self.replicas[name].start(timeout=60)
        self._check(self._settle())

    def _teardown(self) -> None:
        for ctl in self.replicas.values():
            if ctl.proc and ctl.proc.poll() is None:
                ctl.proc.send_signal(signal.SIGTERM)
        for ctl in self.replicas.values():
            ctl.stop()
        try:
            for name in [*self.pools, self.sentinel_pool]:
                self.kube.delete(f"{POOLS}/{name}")
            for ns in [*self.nss, self.sentinel_ns]:
                self.kube.delete(f"/api/v1/namespaces/{ns}")
        finally:
            self.kube.close()
