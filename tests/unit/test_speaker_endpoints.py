"""EndpointSlice reduction for ETP Local, in both API versions."""

from __future__ import annotations

from lbctl.core.endpoints import ready_nodes, slice_service

V1 = {"metadata": {"namespace": "ns", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
      "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "nodeName": "n1"},
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": False}, "nodeName": "n2"},
                    {"addresses": ["10.0.0.3"], "conditions": {}, "nodeName": "n3"},
                    {"addresses": ["10.0.0.4"], "conditions": {"ready": True}}]}
V1BETA1 = {"metadata": {"namespace": "ns", "name": "web-def", "labels": {"kubernetes.io/service-name": "web"}},
           "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True},
                          "topology": {"kubernetes.io/hostname": "n4"}},
                         {"addresses": ["10.0.0.2"], "conditions": {"ready": False},
                          "topology": {"kubernetes.io/hostname": "n5"}}]}


def test_v1_ready_nodes() -> None:
    assert ready_nodes(V1) == {"n1", "n3"}  # unknown readiness counts as ready (API contract)
    assert slice_service(V1) == "ns/web"


def test_v1beta1_topology() -> None:
    assert ready_nodes(V1BETA1) == {"n4"}


def test_odd_objects() -> None:
    assert ready_nodes({}) == frozenset()
    assert ready_nodes({"endpoints": None}) == frozenset()
    assert ready_nodes({"endpoints": [None, 3, {"nodeName": 5}, {"topology": "x"}]}) == frozenset()
    assert slice_service({"metadata": {"name": "x"}}) is None
