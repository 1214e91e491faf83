"""Liveness of the node's connections, and what operators see of it.

Liveness is ZMTP's: the client heartbeats with a TTL, libzmq disconnects
a client from which no whole message came for that long (server/router.py),
and the socket monitor tells this module, which marks the session gone;
the reaper forgets gone sessions (and, as a backstop, ones silent for
SESSION_TIMEOUT_S) once nothing of theirs is in flight. Pings are reports
(RTT, reconnects, outbox, flow-control marks), not liveness.

This module must never send a request's reply or touch the store: it only
keeps the books (sessions, metrics, events) and asks the node to send a
resync when flow control says so.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from curvechat.bucket import TokenBucket
from curvechat.protocol import encode_reply
from curvechat.protocol import messages as m
from curvechat.server.addresses import PerAddress
from curvechat.server.session import Session
from curvechat.server.silent import Silent
from curvechat.tcpfd import peer_of, shut_down

if TYPE_CHECKING:
    from curvechat.server.node import ChatNode

# A backstop for sessions the monitor never reported gone: silent this long
# (several of the client's 30 s ping intervals), they are forgotten.
SESSION_TIMEOUT_S = 120.0
REAP_EVERY_S = 10.0
REAP_SLICE = 1_000  # sessions looked at between two turns of the event loop
COMPACT_AFTER_DROPS = 1_000  # sessions dropped before the reaper compacts the tables
CLIENT_EVENTS_PER_S = 2.0  # client events the log takes, on average; bursts of 200
RECONNECTS_PER_PING = 10  # reconnects one ping may add to the count (within a session)
RECONNECT_NOTE_MS = 60_000  # one event a minute at most for those, per connection
# Disconnect reasons that are not failures (a clean exit): no warning event.
CLEAN_EXIT = "left"
NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
NODE_NAME_RULE = "1-64 characters of A-Z a-z 0-9 _ . : -, starting with a letter or digit"


def valid_node_name(name: str) -> bool:
    """Whether `name` may name a node: it goes into URL paths, metric labels,
    InfluxDB tags and log lines as it is."""
    return NODE_NAME_RE.fullmatch(name) is not None


class _Users:
    """The fds whose session is a user's: a connection that has signed in
    (a known key's `hello`) or registered."""

    __slots__ = ("by_fd",)

    def __init__(self, by_fd: dict[int, Session]) -> None:
        self.by_fd = by_fd

    def __contains__(self, fd: object) -> bool:
        sess = self.by_fd.get(fd)  # type: ignore[call-overload]
        return sess is not None and sess.user is not None


class Liveness:
    def __init__(self, node: ChatNode) -> None:
        self.node = node
        self._dropped = 0  # sessions dropped since the tables were last compacted
        self._client_events = TokenBucket(rate=CLIENT_EVENTS_PER_S, burst=200)
        self.silent = Silent()
        """Connections past their handshake that have not spoken (server/silent.py)."""
        limits = node.limits
        self.addresses = (
            PerAddress(limits.per_address, loopback=limits.per_address_loopback)
            if limits.per_address
            else None
        )
        """Connections per address (server/addresses.py); None: not limited."""
        self._crowded_events = TokenBucket(rate=1 / 60, burst=1)
        self._flood_events = TokenBucket(rate=1 / 60, burst=1)

    async def monitor_loop(self, monitor: zmq.asyncio.Socket) -> None:
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                ev = event["event"]
                if ev == zmq.EVENT_ACCEPTED:
                    fd = int(event["value"])
                    if self._admit(fd):
                        self.silent.accepted(fd, time.monotonic())
                elif ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.node.metrics.handshakes.labels("ok").inc()
                elif ev in (
                    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                ):
                    self.node.metrics.handshakes.labels("failed").inc()
                    reason = "denied" if ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH else "handshake"
                    self.node.metrics.auth_failures.labels(reason).inc()
                elif ev == zmq.EVENT_DISCONNECTED:
                    self.silent.closed(int(event["value"]))
                    if self.addresses is not None:
                        self.addresses.closed(int(event["value"]))
                    self._connection_lost(int(event["value"]))
        finally:
            monitor.close(linger=0)

    def _admit(self, fd: int) -> bool:
        """Count connection `fd` against its address; shut it down if that
        address holds too many already (server/addresses.py)."""
        if self.addresses is None:
            return True
        peer = peer_of(fd)
        crowded = self.addresses.accepted(fd, peer)
        if crowded is None:
            return True
        port = self._port()
        if port is not None and shut_down(fd, port, peer):
            self.node.metrics.auth_failures.labels("address_limit").inc()
            if self._crowded_events.take():
                self.node.events.add(
                    "address_limit",
                    f"{crowded} holds {self.addresses.limit} connections: more from it are"
                    " closed as they come (--max-connections-per-address)",
                    level="warning",
                )
        return False

    async def reaper(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            self.close_silent(time.monotonic())
            self._dropped += await self.reap(time.monotonic() - SESSION_TIMEOUT_S)
            if self._dropped >= COMPACT_AFTER_DROPS:
                self._dropped = 0
                self._compact()

    def close_silent(self, now: float) -> int:
        """Shut down the connections that are not a user's (signed in or
        registered) `silent.SILENT_S` after they were accepted: silent ones,
        and ones that only ping (each would hold a descriptor for good);
        returns how many."""
        port = self._port()
        if port is None:
            return 0
        users = _Users(self.node.by_fd)
        closed = sum(shut_down(fd, port) for fd in self.silent.overdue(users, now))
        if closed:
            self.node.metrics.auth_failures.labels("silent").inc(closed)
        return closed

    def _port(self) -> int | None:
        endpoint = self.node.endpoint
        return None if endpoint is None else int(endpoint.rsplit(":", 1)[1])

    def cut(self, sess: Session) -> None:
        """Shut `sess`'s connection down now: it sent `reactor.FLOOD_CUT`
        frames in a row that were refused, without waiting for the answers."""
        if not self._shut(sess, self._port()):
            return
        self.node.metrics.auth_failures.labels("flood").inc()
        if self._flood_events.take():
            self.node.events.add(
                "flood_cut",
                f"{_who(sess)} sent frame after refused frame without waiting for the"
                " answers: its connection was shut down (more are, without an event"
                " for a minute)",
                level="warning",
            )

    def _shut(self, sess: Session, port: int | None) -> bool:
        """Shut `sess`'s connection down if it is open still; whether it was."""
        return port is not None and self.node.open_fd(sess) and shut_down(sess.fd, port)

    def not_a_user(self, sess: Session) -> None:
        """`sess` is no user's again (it said `bye` and spoke on, or its
        `hello` was refused): its connection is shut down SILENT_S from now
        unless it becomes a user's by then, as one just accepted."""
        if self.node.open_fd(sess):
            self.silent.accepted(sess.fd, time.monotonic())

    async def reap(self, cutoff: float) -> int:
        """Drop the sessions that are gone (or silent since before `cutoff`)
        and have nothing in flight, shutting down the connection of any
        still open (it said `bye` and did not close, or it has been silent
        that long: it would hold a descriptor for good); returns how many.
        REAP_SLICE sessions at
        a time, the event loop running between slices, and nothing allocated
        per session kept: a pass over 10,000 sessions that built a tuple for
        each took 7 ms at once and set off the cyclic GC's full collections."""
        node, port = self.node, self._port()
        sessions = node.sessions
        keys = list(sessions)  # the table may change between slices
        dropped = 0
        for start in range(0, len(keys), REAP_SLICE):
            if start:
                await asyncio.sleep(0)
            for routing_id in keys[start : start + REAP_SLICE]:
                sess = sessions.get(routing_id)
                if (
                    sess is None
                    or (sess.gone is None and sess.last_seen >= cutoff)
                    or (sess.worker is not None and not sess.worker.done())
                    or sess.sends
                ):
                    continue
                if sess.gone is None:
                    self._mark_gone(
                        sess,
                        "timeout",
                        "client_timeout",
                        f"{_who(sess)} timed out: silent for {SESSION_TIMEOUT_S:g} s",
                    )
                self._shut(sess, port)
                self.node.drop_session(routing_id)
                dropped += 1
        return dropped

    def _compact(self) -> None:
        """Give back the memory of many sessions gone at once (a storm of
        throwaway keys): dicts do not shrink by themselves, nor does the
        allocator return freed pages unasked."""
        self.node.sessions = dict(self.node.sessions)
        self.node.by_user = {u: set(r) for u, r in self.node.by_user.items()}
        self.node.by_fd = dict(self.node.by_fd)
        gc.collect()
        if _malloc_trim is not None:
            _malloc_trim(0)

    def _connection_lost(self, fd: int) -> None:
        """The monitor saw connection `fd` close (peer gone or ZMTP heartbeat timeout)."""
        sess = self.node.by_fd.pop(fd, None)
        if sess is None or sess.fd != fd or sess.gone is not None:
            return
        self._mark_gone(
            sess,
            "disconnected",
            "client_disconnected",
            f"{_who(sess)} disconnected (connection closed or heartbeat timed out)",
        )

    def unreachable(self, routing_id: bytes) -> None:
        """A send found no peer for `routing_id`: its connection closed before
        the monitor said so. That is the same news, told first; the session
        goes now, and the monitor's report that follows finds nothing to do."""
        sess = self.node.sessions.get(routing_id)
        if sess is not None and sess.gone is None:
            self._mark_gone(
                sess,
                "disconnected",
                "client_disconnected",
                f"{_who(sess)} disconnected (connection closed)",
            )
        self.node.drop_session(routing_id)

    def _mark_gone(self, sess: Session, reason: str, event: str | None, text: str = "") -> None:
        """Record that a client went away: for the table, the metrics, the
        events (a failure only: `event` None for a clean exit)."""
        sess.gone, sess.gone_ms = reason, int(time.time() * 1000)
        self.node.gone_sessions += 1
        self.node.metrics.client_disconnects.labels(reason).inc()
        if event is not None:
            self._client_event(event, text, sess.user)

    def note_bye(self, sess: Session) -> None:
        """The client says it is closing this connection on purpose: it left,
        it did not fail. Its socket closing next is then no news."""
        if sess.gone is None:
            self._mark_gone(sess, CLEAN_EXIT, None)

    def note_ping(self, sess: Session, ping: m.Ping) -> None:
        """Record what a client's ping reports: its RTT, its reconnect count,
        how many messages wait in its outbox, and how far it has read.

        Reconnects are counted per session (connection), never per key: one
        user may hold several sessions with one key (a TUI and a `tail`, two
        devices), each with a count of its own. A session's first report is
        its arrival: with a count above 0 it came by reconnecting, which is
        counted once, as a reconnect if it came back to this node (by name:
        `prev_node`, the node of its previous connection; a client that does
        not say falls back to "this key was connected here before") and as a
        failover if it came from another node. Later increases within one
        session are counted as they come (the engine does not make them: its
        count grows with each new connection)."""
        rtt_ms, reconnects, read_mark, prev_node = (
            ping.rtt_ms,
            ping.reconnects,
            ping.read_mark,
            ping.prev_node,
        )
        if read_mark and self.node.flow.read(sess.flow, read_mark):
            self.node.send(sess.routing_id, encode_reply(0, m.Resync(reason="pushes withheld")))
        sess.last_ping_ms = int(time.time() * 1000)
        sess.outbox = ping.outbox
        if rtt_ms is not None:
            sess.rtt_ms = rtt_ms
            self.node.metrics.client_rtt_seconds.observe(rtt_ms / 1000)
        previous, first = sess.reconnects, not sess.pinged
        sess.reconnects, sess.pinged = reconnects, True
        if first:
            if reconnects > 0:
                self._arrived(sess, reconnects, prev_node)
        elif reconnects > previous:
            # What one ping can say is bounded: at most RECONNECTS_PER_PING counted,
            # and one event a minute per connection (each is a warning in the log).
            self.node.metrics.client_reconnects.inc(min(reconnects - previous, RECONNECTS_PER_PING))
            if sess.last_ping_ms - sess.reconnect_noted_ms < RECONNECT_NOTE_MS:
                return
            sess.reconnect_noted_ms = sess.last_ping_ms
            self._client_event(
                "client_reconnected",
                f"{_who(sess)} reconnected (reconnect #{reconnects})",
                sess.user,
            )

    def _arrived(self, sess: Session, reconnects: int, prev_node: str) -> None:
        """A new session whose client has reconnected before: one reconnect
        (back to this node), or one failover (from another node)."""
        back = prev_node == self.node.node_name if prev_node else not sess.first_here
        if back:
            restarted = " after this node restarted" if sess.first_here else ""
            self.node.metrics.client_reconnects.inc()
            self._client_event(
                "client_reconnected",
                f"{_who(sess)} reconnected{restarted} (reconnect #{reconnects})",
                sess.user,
            )
            return
        # prev_node is the client's word: shown only if it could be a node's name
        source = f"from {prev_node}" if valid_node_name(prev_node) else "elsewhere"
        self.node.metrics.client_failovers.inc()
        self._client_event(
            "client_failover",
            f"{_who(sess)} arrived {source} after {reconnects} reconnect(s)",
            sess.user,
        )

    def _client_event(self, kind: str, text: str, user: str | None) -> None:
        """A warning event about a client, within the node's allowance for
        them (CLIENT_EVENTS_PER_S): connections from throwaway keys must not
        push every other event out of the log. The metrics count them all."""
        if self._client_events.take():
            self.node.events.add(kind, text, level="warning", user=user)


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return cast("Callable[[int], int]", ctypes.CDLL("libc.so.6").malloc_trim)
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _libc_malloc_trim()


def _who(sess: Session) -> str:
    return sess.user or f"unregistered key {sess.transport_key[:8]}…"
