"""Prometheus metrics of the controller (own registry, so tests and embedding stay isolated)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.capacity = Gauge("lbctl_pool_capacity", "Addresses an IPPool can hand out", ["pool", "family"], registry=r)
        self.assigned = Gauge("lbctl_pool_assigned", "Addresses of an IPPool held by Services", ["pool", "family"], registry=r)
        self.pool_ready = Gauge("lbctl_pool_ready", "1 when the IPPool may hand out addresses", ["pool"], registry=r)
        self.allocations = Counter("lbctl_allocations_total", "Services given addresses", registry=r)
        self.releases = Counter("lbctl_releases_total", "Services whose addresses were freed", registry=r)
        self.failures = Counter("lbctl_allocation_failures_total", "Allocation attempts that failed", registry=r)
        self.pending = Gauge("lbctl_services_pending", "LoadBalancer Services waiting for an address", registry=r)
        self.retained = Gauge("lbctl_addresses_retained", "Addresses kept by Services outside every usable pool", registry=r)
        self.decision_errors = Counter("lbctl_decision_errors_total",
                                       "Decisions that raised (the Service is retried; the others go on)", registry=r)
        self.patch_seconds = Histogram("lbctl_status_patch_seconds", "Service status patch latency", registry=r,
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.patch_errors = Counter("lbctl_status_patch_errors_total", "Failed Service status patches", registry=r)
        self.bgp_status_writes = Counter("lbctl_bgp_status_writes_total",
                                         "Status writes of BGPPeers and BFDProfiles (Valid condition)", ["kind"],
                                         registry=r)
