"""A Kubernetes API held in dicts, for the allocation model (pure unit level, no I/O).

It keeps Services, Namespaces, IPPools and Events, answers the two writes the controller makes (Service and
IPPool status patches, Event creates) with the server's preconditions (uid: 404/409), and delivers every change
at once to the replicas that watch it, as the informers would. It also remembers since when each address stands
in each Service's status (`since`), so the model can tell who held an address first.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controller.reconciler import Reconciler
from lbctl.core.pools import parse_pool
from lbctl.core.service import read_service
from lbctl.kube.client import ApiError


@dataclass(frozen=True)
class Event:
    seq: int
    namespace: str
    name: str
    uid: str
    type: str
    reason: str
    message: str


def ingress_ips(body: dict[str, Any]) -> tuple[str, ...]:
    ingress = ((body.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return tuple(i["ip"] for i in ingress if isinstance(i, dict) and i.get("ip"))


class FakeApi:
    def __init__(self) -> None:
        self.seq = 0  # every change gets the next number (creationTimestamps, `since`, Events)
        self.services: dict[str, dict[str, Any]] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.pools: dict[str, dict[str, Any]] = {}
        self.events: list[Event] = []
        self.since: dict[tuple[str, str], int] = {}  # (uid, ip) -> seq at which the ip entered its status
        self.watchers: list[Reconciler] = []
        self.status_writes = 0  # Service status writes by the controller
        self.fail_writes = 0  # the next this many Service status writes fail with a 500
        self.failed_writes = 0

    def tick(self) -> int:
        self.seq += 1
        return self.seq

    def stamp(self) -> str:
        # Seconds resolution as the server's: neighbours in time share a timestamp (ties are broken by name).
        return f"2026-01-01T{self.tick() // 3:08d}Z"

    # ----- what a replica lists at start -------------------------------------------------------------------
    def list_into(self, r: Reconciler) -> None:
        r.services_listed([read_service(copy.deepcopy(b)) for b in self.services.values()])
        r.namespaces_listed({n: dict(labels) for n, labels in self.namespaces.items()})
        r.pool_statuses_listed({n: copy.deepcopy(p.get("status")) for n, p in self.pools.items()})
        r.pools_listed({n: self._pool_spec(p) for n, p in self.pools.items()})

    def _pool_spec(self, obj: dict[str, Any]) -> Any:
        return parse_pool(obj["metadata"]["name"], copy.deepcopy(obj["spec"]), obj["metadata"]["creationTimestamp"])

    # ----- users' writes -------------------------------------------------------------------------------------
    def put_service(self, ns: str, name: str, spec: dict[str, Any], annotations: dict[str, str],
                    labels: dict[str, str]) -> None:
        key = f"{ns}/{name}"
        old = self.services.get(key)
        if old is None:
            uid = f"uid-{self.tick()}"
            body = {"metadata": {"namespace": ns, "name": name, "uid": uid, "creationTimestamp": self.stamp(),
                                 "handEdits": 0},  # not the server's: how often users wrote the status
                    "status": {}}
        else:
            body = old
        body["metadata"]["annotations"] = dict(annotations)
        body["metadata"]["labels"] = dict(labels)
        body["spec"] = copy.deepcopy(spec)
        self.services[key] = body
        self._service_event(key)

    def delete_service(self, key: str) -> None:
        body = self.services.pop(key, None)
        if body is None:
            return
        self._set_ingress(body, ())
        self.tick()
        for r in self.watchers:
            r.service_gone(key)

    def edit_status(self, key: str, ips: Iterable[str]) -> None:
        """A status written by hand (kubectl edit --subresource=status)."""
        body = self.services[key]
        body["metadata"]["handEdits"] += 1
        body["metadata"]["statusBy"] = "user"
        self._set_ingress(body, tuple(ips))
        self._service_event(key)

    def put_namespace(self, name: str, labels: dict[str, str]) -> None:
        self.namespaces[name] = dict(labels)
        self.tick()
        for r in self.watchers:
            r.namespace_seen(name, dict(labels))

    def put_pool(self, name: str, spec: dict[str, Any]) -> None:
        obj = self.pools.get(name)
        if obj is None:
            obj = self.pools[name] = {"metadata": {"name": name, "creationTimestamp": self.stamp()}}
        obj["spec"] = copy.deepcopy(spec)
        self._pool_event(name)

    def delete_pool(self, name: str) -> None:
        if self.pools.pop(name, None) is not None:
            self.tick()
            for r in self.watchers:
                r.pool_seen(name, None)

    # ----- the watch -----------------------------------------------------------------------------------------
    def _service_event(self, key: str) -> None:
        self.tick()
        body = self.services[key]
        for r in self.watchers:
            r.service_seen(read_service(copy.deepcopy(body)))

    def _pool_event(self, name: str) -> None:
        self.tick()
        for r in self.watchers:
            r.pool_seen(name, self._pool_spec(self.pools[name]))

    def _set_ingress(self, body: dict[str, Any], ips: tuple[str, ...]) -> None:
        uid = body["metadata"]["uid"]
        for ip in ingress_ips(body):
            if ip not in ips:
                self.since.pop((uid, ip), None)
        for ip in ips:
            self.since.setdefault((uid, ip), self.seq + 1)
        body.setdefault("status", {})["loadBalancer"] = {"ingress": [{"ip": ip} for ip in ips]} if ips else {}

    # ----- the controller's writes (FakeKube) -----------------------------------------------------------------
    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"] and parts[4] == "services" and parts[-1] == "status":
            key = f"{parts[3]}/{parts[5]}"
            current = self.services.get(key)
            if current is None:
                raise ApiError(404, "NotFound", f"services {parts[5]} not found")
            uid = (body.get("metadata") or {}).get("uid")
            if uid and uid != current["metadata"]["uid"]:
                raise ApiError(409, "Conflict", "Precondition failed: UID in precondition")
            if self.fail_writes > 0:
                self.fail_writes -= 1
                self.failed_writes += 1
                raise ApiError(500, "InternalError", "injected: the write did not complete")
            ingress = (body["status"]["loadBalancer"] or {}).get("ingress") or []
            self._set_ingress(current, tuple(i["ip"] for i in ingress))
            current["metadata"]["statusBy"] = "controller"
            self.status_writes += 1
            self._service_event(key)
            return copy.deepcopy(current)
        if parts[-1] == "status" and "ippools" in parts:
            name = parts[-2]
            if name not in self.pools:
                raise ApiError(404, "NotFound", f"ippools {name} not found")
            self.pools[name]["status"] = copy.deepcopy(body["status"])
            self._pool_event(name)  # unchanged spec: the replicas must shrug it off
            return {}
        raise AssertionError(f"unexpected patch {path}")

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path.endswith("/events"), path
        inv = body["involvedObject"]
        self.events.append(Event(self.tick(), inv.get("namespace") or "", inv["name"], inv.get("uid") or "",
                                 body["type"], body["reason"], body["message"]))
        return {}


class FakeKube:
    """The two calls the controller's Reconciler and EventRecorder make, answered by the FakeApi."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.stopped = False  # a replica that is gone writes nothing more

    async def patch(self, path: str, body: Any, content_type: str = "") -> dict[str, Any]:
        if self.stopped:
            raise ApiError(503, "Stopped", "this replica is gone")
        return self.api.patch(path, body)

    async def create(self, path: str, body: Any) -> dict[str, Any]:
        if self.stopped:
            raise ApiError(503, "Stopped", "this replica is gone")
        return self.api.create(path, body)
