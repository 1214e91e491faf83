"""Prometheus metrics of one node, in a registry of its own (so several nodes
can live in one process, as they do in tests).

Names follow the Prometheus conventions: `curvechat_` prefix, base units
(`_seconds`, `_bytes`), `_total` on counters. The process's own figures
(`process_*`, as prometheus_client's process collector names them: CPU,
memory, open files) are served with them, so one scrape of `/metrics` says
everything about this node. The dashboard samples `registry` every second,
on the event loop; the count of open files (a listing of /proc/self/fd,
9-21 ms with 10,000 connections) is kept out of it, in `scrape_registry`,
which only `/metrics` reads.

This module only counts; it must never block, touch the store or see
message contents.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """`histogram.observe` of each of `amounts` (a pass's messages), with one
    increment per bucket they fall in instead of one per amount. It reads
    prometheus_client's own bucket bounds and values (`_upper_bounds`,
    `_buckets`, `_sum`); tests/server/test_metrics.py holds it to `observe`."""
    if not amounts:
        return
    bounds = histogram._upper_bounds  # ends with +Inf: every amount has a bucket
    buckets = histogram._buckets
    for index, n in Tally(bisect_left(bounds, a) for a in amounts).items():
        buckets[index].inc(n)
    histogram._sum.inc(sum(amounts))


def _boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


class ProcessStats(Collector):
    """The process's CPU time, memory and start time: one read of
    /proc/self/stat (the fields prometheus_client's ProcessCollector reads),
    cheap enough to sample every second."""

    def __init__(self, registry: CollectorRegistry) -> None:
        try:
            self._btime = _boot_time()
        except OSError:  # no /proc: nothing to report
            self._btime = 0.0
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        if not self._btime:
            return []
        try:
            with open("/proc/self/stat", "rb") as f:
                parts = f.read().split(b")")[-1].split()
        except OSError:
            return []
        return [
            GaugeMetricFamily(
                "process_virtual_memory_bytes", "Virtual memory size in bytes.", float(parts[20])
            ),
            GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                float(parts[21]) * _PAGE,
            ),
            GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                float(parts[19]) / _TICKS + self._btime,
            ),
            CounterMetricFamily(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                (float(parts[11]) + float(parts[12])) / _TICKS,
            ),
        ]


class OpenFiles(Collector):
    """The process's open and maximum file descriptors. Counting the open
    ones lists /proc/self/fd, one entry per connection: for scrapes only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        try:
            count = len(os.listdir("/proc/self/fd"))
        except OSError:
            return []
        most = None
        try:
            with open("/proc/self/limits", "rb") as f:
                for line in f:
                    if line.startswith(b"Max open files"):
                        most = float(line.split()[3])  # "unlimited": ValueError, left out
        except (OSError, ValueError, IndexError):
            pass
        out: list[Metric] = [
            GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", count)
        ]
        if most is not None:
            what = "Maximum number of open file descriptors."
            out.append(GaugeMetricFamily("process_max_fds", what, most))
        return out


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# Refusals that mean "you are not who you need to be": counted as auth failures.
AUTH_REFUSALS = frozenset({"not_registered", "bad_signature", "key_taken", "name_taken"})


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        """What the dashboard samples every second, and `/metrics` serves."""
        self.scrape_registry = CollectorRegistry()
        """What `/metrics` serves besides: too costly to sample every second."""
        r = self.registry
        ProcessStats(r)
        OpenFiles(self.scrape_registry)
        self.connected_clients = Gauge(
            "curvechat_connected_clients",
            "Client connections that are open and seen within the liveness window",
            registry=r,
        )
        self.handshakes = Counter(
            "curvechat_handshakes_total", "CURVE handshakes by result", ["result"], registry=r
        )
        self.auth_failures = Counter(
            "curvechat_auth_failures_total",
            "Failed CURVE handshakes and requests refused for identity reasons, by reason",
            ["reason"],
            registry=r,
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
        self.peer_returns = Counter(
            "curvechat_peer_returns_total",
            "Clients that came back from an outage with messages exchanged peer to peer",
            registry=r,
        )
        self.peer_messages = Counter(
            "curvechat_peer_messages_total",
            "Messages those clients wrote or took peer to peer while no server was reachable",
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
            buckets=LATENCY_BUCKETS,
        )
        self.send_deliver_seconds = Histogram(
            "curvechat_send_deliver_seconds",
            "Time from receiving a send to handing its push to the recipients' connections",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.store_commit_seconds = Histogram(
            "curvechat_store_commit_seconds",
            "Store commit latency of message batches (queueing for the group commit included)",
            registry=r,
            buckets=STORE_BUCKETS,
        )
        self.store_commits = Counter(
            "curvechat_store_commits_total",
            "Group-commit transactions of the store (batch size = messages / commits)",
            registry=r,
        )
        self.store_committed_messages = Counter(
            "curvechat_store_committed_messages_total",
            "Messages written by the store's group commits",
            registry=r,
        )
        self.store_up = Gauge(
            "curvechat_store_up", "1 if the store answered the last probe, else 0", registry=r
        )
        self.client_rtt_seconds = Histogram(
            "curvechat_client_rtt_seconds",
            "Round-trip times that clients report in their pings",
            registry=r,
            buckets=RTT_BUCKETS,
        )
        self.client_reconnects = Counter(
            "curvechat_client_reconnects_total",
            "Reconnects of clients back to this node: a new connection whose ping reports"
            " earlier reconnects (counted once per connection, not per key)",
            registry=r,
        )
        self.client_failovers = Counter(
            "curvechat_client_failovers_total",
            "Clients that arrived here by reconnecting from another node",
            registry=r,
        )
        self.client_disconnects = Counter(
            "curvechat_client_disconnects_total",
            "Client connections ended, by reason (disconnected: the connection closed or its "
            "heartbeat timed out; timeout: the session went silent; left: the client said "
            "goodbye, a clean exit and not a failure)",
            ["reason"],
            registry=r,
        )
        self.client_outbox = Gauge(
            "curvechat_client_outbox_messages",
            "Messages waiting in the outboxes of this node's connected clients, as they"
            " last reported in a ping",
            registry=r,
        )
        self.request_queue_depth = Gauge(
            "curvechat_request_queue_depth",
            "Requests received and waiting to be served, over all connections",
            registry=r,
        )
        self.push_backlog_bytes = Gauge(
            "curvechat_push_backlog_bytes",
            "Bytes queued for clients that they have not yet confirmed reading",
            registry=r,
        )
        self.pushes_withheld = Counter(
            "curvechat_pushes_withheld_total",
            "Pushes not queued for a connection that does not read (scope: its own"
            " budget, or the node's)",
            ["scope"],
            registry=r,
        )
        self.connections_refused = Counter(
            "curvechat_connections_refused_total",
            "Connections refused because their user had too many already",
            registry=r,
        )
        self.start_time = Gauge(
            "curvechat_node_start_time_seconds", "When this node started (Unix time)", registry=r
        )
        self.node_info = Gauge(
            "curvechat_node_info",
            "Always 1: the node's stable name (DATA/node.id, the `node` of welcome, pong,"
            " events and the InfluxDB tag) and its boot id (new at every start)",
            ["node", "boot"],
            registry=r,
        )
        self.stored_undecodable = Counter(
            "curvechat_stored_undecodable_total",
            "Stored messages a page could not decode (a damaged store): left out of it",
            registry=r,
        )
        # Cluster mode (stay at zero on a single node).
        self.watch_lag_seconds = Histogram(
            "curvechat_cluster_watch_lag_seconds",
            "From another node's commit of a message to this node pushing it (watch lag)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.watch_undecodable = Counter(
            "curvechat_cluster_undecodable_total",
            "Message values from the cluster watch this node could not decode (skipped)",
            registry=r,
        )
        self.watch_relists = Counter(
            "curvechat_cluster_relists_total",
            "Times the cluster watch's revision was compacted and the node re-listed",
            registry=r,
        )
        self.forwarded = Counter(
            "curvechat_cluster_forwarded_messages_total",
            "Sends routed over the node link: out (to the room's owner), in (committed"
            " here for another node), fallback (committed here in place of the room's owner,"
            " whose link failed or answers no ping)",
            ["way"],
            registry=r,
        )
        self.cas_retries = Counter(
            "curvechat_cluster_cas_retries_total",
            "Message commits redone because another writer moved a room's head first",
            registry=r,
        )
        self.cluster_nodes = Gauge(
            "curvechat_cluster_nodes", "Live nodes in the cluster's registry", registry=r
        )
        # etcd's space quota (server/capacity.py): the fullest member's file.
        self.etcd_db_bytes = Gauge(
            "curvechat_etcd_db_bytes",
            "Size of the fullest etcd member's database file (what etcd holds to its quota)",
            registry=r,
        )
        self.etcd_db_in_use_bytes = Gauge(
            "curvechat_etcd_db_in_use_bytes",
            "Bytes in use in that file (what a defragmentation would shrink it to)",
            registry=r,
        )
        self.etcd_quota_bytes = Gauge(
            "curvechat_etcd_quota_bytes", "etcd's space quota (--quota-backend-bytes)", registry=r
        )
        self.etcd_quota_used_ratio = Gauge(
            "curvechat_etcd_quota_used_ratio",
            "curvechat_etcd_db_bytes / curvechat_etcd_quota_bytes (NOSPACE at 1)",
            registry=r,
        )
        self.store_disk_free_bytes = Gauge(
            "curvechat_store_disk_free_bytes",
            "Free space on the embedded store's disk (single node)",
            registry=r,
        )
        self.store_disk_reserve_bytes = Gauge(
            "curvechat_store_disk_reserve_bytes",
            "Free space the node keeps on its store's disk (--disk-reserve-mb)",
            registry=r,
        )
        self.store_full = Gauge(
            "curvechat_store_full",
            "1 while new messages, users and rooms are refused for lack of disk space",
            registry=r,
        )
        self.start_time.set_to_current_time()
        self._store_totals = (0, 0)

    def set_node(self, node: str, boot: str) -> None:
        self.node_info.labels(node, boot).set(1)

    def observe_request(self, kind: str, code: str) -> None:
        self.requests.labels(kind, code).inc()
        if code in AUTH_REFUSALS:
            self.auth_failures.labels(code).inc()

    def track(
        self,
        *,
        connected_clients: Callable[[], float],
        request_queue_depth: Callable[[], float],
        push_backlog_bytes: Callable[[], float],
    ) -> None:
        """Gauges read from the node's state when scraped (never stale)."""
        self.connected_clients.set_function(connected_clients)
        self.request_queue_depth.set_function(request_queue_depth)
        self.push_backlog_bytes.set_function(push_backlog_bytes)

    def note_store_commits(self, commits: int, messages: int) -> None:
        """Bring the store-commit counters up to the store's own running totals."""
        done_commits, done_messages = self._store_totals
        if commits > done_commits:
            self.store_commits.inc(commits - done_commits)
        if messages > done_messages:
            self.store_committed_messages.inc(messages - done_messages)
        self._store_totals = (max(commits, done_commits), max(messages, done_messages))

    def note_cas_retries(self, total: int) -> None:
        """Bring the CAS-retry counter up to the store's running total."""
        seen = int(self.cas_retries._value.get())
        if total > seen:
            self.cas_retries.inc(total - seen)
