"""The fault injector on the real cluster: the pods' API server behind an HTTP load balancer.

Pods reach the API server through the `kubernetes` Service (198.19.0.1:443, in-cluster config), which kube-proxy
rewrites to the Service's endpoint. With faults on, that endpoint is not the API server but a front in the
control-plane namespace: nginx on CP_IP4:FRONT_PORT terminating TLS with the API server's own certificate and key
(so the pods' ServiceAccount ca.crt verifies it exactly as it verifies the API server: the certificate names
198.19.0.1 and kubernetes.default.svc), then the fault injector (lbctl.lab.faultproxy, plaintext HTTP), then
kube-apiserver with TLS. That is an API server behind a load balancer, as kubespray's `loadbalancer_apiserver`,
managed clusters and L7 proxies put it; the daemons meet every fault through their ordinary client and the
cluster's own Service routing.

The API server would write its own address into the Service's Endpoints (and put it back after every change),
so it runs with `--endpoint-reconciler-type=none` and the lab writes the Endpoints once, as operators of such a
front do; kube-controller-manager's EndpointSlice mirroring gives kube-proxy the slice. Only the pods take the
front: kubelets and kube-proxies keep the nodes' nginx stream proxy straight to the API server, and
kube-controller-manager and kube-scheduler dial it directly, so a fault tests lbctl, not the cluster's plumbing
(an API server restart reaches them all).
"""

from __future__ import annotations

from . import apiproxy, faultproxy
from .api import LabApi, wait_for
from .controlplane import ControlPlane
from .topology import CP_IP4

ENDPOINTS = "/api/v1/namespaces/default/endpoints"
SLICES = "/apis/discovery.k8s.io/v1beta1/namespaces/default/endpointslices"
APISERVER_ARGS = ["--endpoint-reconciler-type=none"]  # for cluster.start_control_plane


def start(cp: ControlPlane, api: LabApi) -> None:
    """The injector, the front before it, and the `kubernetes` Service's endpoint at the front."""
    assert cp.workdir
    faultproxy.spawn()
    apiproxy.start_front(cp.workdir / "certs" / "apiserver")
    api.apply(ENDPOINTS, endpoints())


def endpoints() -> dict:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": CP_IP4}],
                         "ports": [{"name": "https", "port": apiproxy.FRONT_PORT, "protocol": "TCP"}]}]}


def wait_mirrored(api: LabApi, timeout: float = 30) -> dict:
    """The EndpointSlice kube-proxy reads for `kubernetes`, once it names the front."""
    def front() -> dict | None:
        for s in api.get(SLICES, labelSelector="kubernetes.io/service-name=kubernetes")["items"]:
            ports = {p.get("port") for p in s.get("ports") or []}
            addrs = {a for e in s.get("endpoints") or [] for a in e.get("addresses") or []}
            if ports == {apiproxy.FRONT_PORT} and addrs == {CP_IP4}:
                return s
        return None
    return wait_for(front, timeout, f"the `kubernetes` EndpointSlice to name {CP_IP4}:{apiproxy.FRONT_PORT}",
                    interval=0.5)
