"""Prometheus metrics of the speaker (own registry, so tests and embedding stay isolated)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Event-loop lag: the ARP/NDP and heartbeat threads share the GIL with the loop, so a slow callback is felt there.
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.announced = Gauge("lbctl_speaker_announced_ips", "IPs this node currently announces", registry=r)
        self.arp_seen = Counter("lbctl_speaker_arp_requests_total", "ARP requests received", ["interface"], registry=r)
        self.arp_answered = Counter("lbctl_speaker_arp_replies_total", "ARP requests answered", ["interface"],
                                    registry=r)
        self.ndp_answered = Counter("lbctl_speaker_ndp_replies_total", "Neighbor solicitations answered",
                                    ["interface"], registry=r)
        self.responder_limited = Counter("lbctl_speaker_responder_limited_total",
                                         "ARP requests and neighbour solicitations left unanswered by the flood "
                                         "limit (per requester and address)", ["interface", "kind"], registry=r)
        self.garps = Counter("lbctl_speaker_gratuitous_sent_total", "Gratuitous ARPs and unsolicited NAs sent",
                             ["interface"], registry=r)
        self.live_peers = Gauge("lbctl_speaker_live_peers", "Speakers heard recently, this one included", registry=r)
        self.registered_peers = Gauge("lbctl_speaker_registered_peers",
                                      "Speakers with a fresh Lease, this one included (compare with live_peers)",
                                      registry=r)
        self.ownership_changes = Counter("lbctl_speaker_ownership_changes_total",
                                         "IPs this node started or stopped announcing", ["change"], registry=r)
        self.heartbeats_rejected = Counter("lbctl_speaker_heartbeats_rejected_total",
                                           "Heartbeats dropped: bad signature, malformed or replayed", registry=r)
        self.heartbeats_previous_key = Counter("lbctl_speaker_heartbeats_previous_key_total",
                                               "Heartbeats verified by a key other than our signing key "
                                               "(a key rotation is under way)", registry=r)
        self.heartbeat_reincarnations = Counter("lbctl_speaker_heartbeat_reincarnations_total",
                                                "New heartbeat incarnations taken because peers refused ours",
                                                registry=r)
        self.socket_errors = Counter("lbctl_speaker_socket_errors_total", "Send/receive errors on raw sockets",
                                     ["interface"], registry=r)
        self.conflicts = Gauge("lbctl_speaker_ip_conflicts_active",
                               "Announced IPs another MAC claims right now (RFC 5227 conflict)", registry=r)
        self.conflicts_detected = Counter("lbctl_speaker_ip_conflicts_total",
                                          "Conflicts opened: another MAC announced or answered for an owned IP",
                                          ["interface"], registry=r)
        self.conflict_defences = Counter("lbctl_speaker_conflict_defences_total",
                                         "Gratuitous re-announcements made to defend an owned IP", registry=r)
        self.handover_yields = Counter("lbctl_speaker_handover_yields_total",
                                       "IPs released on SIGTERM as soon as the successor's announcement was seen",
                                       registry=r)
        self.isolated = Gauge("lbctl_speaker_isolated",
                              "1 while this speaker, suddenly hearing far fewer peers than recently, claims no new IP",
                              registry=r)
        self.isolation_held = Gauge("lbctl_speaker_isolation_held_ips",
                                    "IPs the election gives this node but an isolation hold keeps it from claiming",
                                    registry=r)
        self.heartbeat_drops = Counter("lbctl_speaker_heartbeat_drops_total",
                                       "Heartbeats the kernel dropped because a heartbeat socket's receive queue "
                                       "was full (SO_RXQ_OVFL)", registry=r)
        self.heartbeat_send_errors = Counter("lbctl_speaker_heartbeat_send_errors_total",
                                             "Heartbeats that could not be sent (link down, no route), by errno",
                                             ["interface", "error"], registry=r)
        self.heartbeat_receive_buffer = Gauge("lbctl_speaker_heartbeat_receive_buffer_bytes",
                                              "Receive queue granted to the heartbeat sockets (kernel bytes; "
                                              "capped by net.core.rmem_max)", registry=r)
        self.loop_lag = Histogram("lbctl_speaker_loop_lag_seconds",
                                  "How late the event loop ran a timer it was asked to run (sampled every "
                                  "0.1 s): time spent in callbacks between", buckets=LAG_BUCKETS, registry=r)
        # BGP mode (speaker/bgp.py): per BGPPeer name, from the sidecar's session table.
        self.bgp_up = Gauge("lbctl_bgp_session_up", "1 while the BGP session to this peer is Established",
                            ["peer"], registry=r)
        self.bgp_prefixes = Gauge("lbctl_bgp_prefixes_advertised", "Prefixes this node exports to the peer",
                                  ["peer"], registry=r)
        self.bgp_flaps = Counter("lbctl_bgp_session_flaps", "Established sessions that went down or restarted",
                                 ["peer"], registry=r)
        self.bgp_configures = Counter("lbctl_bgp_configures", "Changed configs applied to the BGP daemon",
                                      registry=r)
        self.bgp_config_errors = Counter("lbctl_bgp_config_errors",
                                         "Configs not applied: not renderable or refused by the daemon "
                                         "(the running config stays)", registry=r)
