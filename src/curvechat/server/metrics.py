"""Prometheus metrics of one node, in a registry of its own (so several nodes
can live in one process, as they do in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected_clients = Gauge(
            "curvechat_connected_clients",
            "Client sessions seen within the liveness window",
            registry=r,
        )
        self.handshakes = Counter(
            "curvechat_handshakes_total", "CURVE handshakes by result", ["result"], registry=r
        )
        self.requests = Counter(
            "curvechat_requests_total",
            "Requests by type and result code",
            ["type", "code"],
            registry=r,
        )
        self.messages_accepted = Counter(
            "curvechat_messages_accepted_total",
            "Messages committed (not counting resends)",
            registry=r,
        )
        self.messages_delivered = Counter(
            "curvechat_messages_delivered_total",
            "Message pushes handed to client connections",
            registry=r,
        )
        self.pushes_dropped = Counter(
            "curvechat_pushes_dropped_total",
            "Pushes dropped (peer gone or its queue full)",
            registry=r,
        )
        self.send_ack_seconds = Histogram(
            "curvechat_send_ack_seconds",
            "Time from receiving a send to sending its ack",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.store_commit_seconds = Histogram(
            "curvechat_store_commit_seconds",
            "Store commit latency of message batches",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
