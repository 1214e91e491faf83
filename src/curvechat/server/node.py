"""A chat node: a CURVE-secured ROUTER socket in front of a store.

The node authenticates connections (ZAP, never touching the store so a slow
store cannot stall handshakes), maps each connection's CURVE key to a user,
keeps the sessions, the per-user limits and the liveness bookkeeping, and
pushes every committed message to the online members of its room. Reading
and writing the socket is the reactor's job (reactor.py), serving requests
in order the ordered path's (session.py).

Liveness is ZMTP's: clients heartbeat with a TTL, and one from which no
whole message came for that long is disconnected by libzmq (the monitor
tells the node); requests are not needed to stay connected.

It must never see plaintext: it checks envelopes' routing fields (room,
sender, epoch) and stores them as they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from curvechat.dashboard.events import EventLog
from curvechat.protocol import ErrorCode, encode, encode_reply
from curvechat.protocol import messages as m
from curvechat.protocol.limits import PROTOCOL_VERSION
from curvechat.server.fanout import Fanout, push_remote
from curvechat.server.flow import FlowControl, Scope
from curvechat.server.handlers import Handlers, Refusal
from curvechat.server.liveness import NODE_NAME_RULE, Liveness, valid_node_name
from curvechat.server.lru import Recent
from curvechat.server.metrics import NodeMetrics
from curvechat.server.ratelimit import ByteBudgets, RateLimits, TokenBucket
from curvechat.server.reactor import Reactor
from curvechat.server.rooms import RoomCache
from curvechat.server.router import (
    IO_THREADS,
    ZAP_DOMAIN,
    AllowKnownGood,
    check_libzmq,
    open_router,
)
from curvechat.server.session import OrderedPath, Session
from curvechat.store import Committed, NewMessage, Store, StoredRow
from curvechat.tcpfd import source_fd

log = logging.getLogger("curvechat.server")

MAX_CONNECTIONS_PER_USER = 16
KEYS_REMEMBERED = 10_000  # per-key memory (users of keys, keys seen), most recent first
LOST_SESSIONS_KEPT = 200  # dropped sessions kept for the dashboard's connection table


class ChatNode:
    def __init__(
        self,
        store: Store,
        *,
        public_key: bytes,
        secret_key: bytes,
        bind: str = "tcp://127.0.0.1:7700",
        node_name: str | None = None,
        limits: RateLimits | None = None,
        flow: FlowControl | None = None,
        max_connections_per_user: int = MAX_CONNECTIONS_PER_USER,
    ) -> None:
        check_libzmq()
        self.flow = flow or FlowControl()
        self.max_connections_per_user = max_connections_per_user
        self.store = store
        # Where sends are committed: the store's group commit, or in cluster
        # mode the room owners' (server/nodelink.py Forwarder.append).
        self.append_messages: Callable[[Sequence[NewMessage]], Awaitable[list[Committed]]] = (
            store.append_messages
        )
        self.public_key = public_key
        self._secret_key = secret_key
        self.bind = bind
        self.node_name = node_name or f"{os.uname().nodename}:{os.getpid()}"
        self.boot = os.urandom(6).hex()
        # Cluster mode: the live nodes' connect strings, kept fresh by the
        # Cluster from the registry and handed to every client in its welcome.
        self.peers: list[str] = []
        self.peer_nodes: list[dict[str, Any]] = []  # the other nodes, for the dashboard
        self.draining = False  # no new connections (server/drain.py)
        self.store_cut_off = False  # no etcd member answers (server/storeguard.py)
        self.store_slow = False  # etcd answers slowly: own no room (server/storeguard.py)
        self.etcd_quota: Callable[[], dict[str, Any] | None] = lambda: None  # server/capacity.py
        self.metrics = NodeMetrics()
        self.metrics.set_node(self.node_name, self.boot)
        self.limits = limits or RateLimits()
        self._user_buckets: dict[str, TokenBucket] = {}
        self.bytes = ByteBudgets(self.limits.user_bytes)
        self.rooms = RoomCache(store)
        self.sessions: dict[bytes, Session] = {}
        self.gone_sessions = 0  # of `sessions`, those marked gone (the reaper drops them)
        self.by_user: dict[str, set[bytes]] = {}
        self.endpoint: str | None = None
        self.dial: str | None = None
        """The endpoint clients are told to dial (`--advertise`), once known."""
        self._ctx = zmq.asyncio.Context(io_threads=IO_THREADS)
        self._sock: zmq.Socket[bytes] | None = None
        self._reactor: Reactor | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._user_cache: Recent[str, str] = Recent(KEYS_REMEMBERED)
        self.handlers = Handlers(self)
        self.ordered = OrderedPath(self)
        self._stopped = asyncio.Event()
        self.started_at = time.time()
        self.events = EventLog(self.node_name)
        self.liveness = Liveness(self)
        self.by_fd: dict[int, Session] = {}  # bounded by the open sockets' numbers
        # transport keys that have had a connection here since the node started
        self._keys_seen: Recent[str, bool] = Recent(KEYS_REMEMBERED)
        self.lost_sessions: deque[Session] = deque(maxlen=LOST_SESSIONS_KEPT)
        self.metrics.track(
            # Counted, not summed over every session: sampled each second,
            # with 10,000 idle connections a sum stalls the loop for ms.
            connected_clients=lambda: len(self.sessions) - self.gone_sessions,
            request_queue_depth=lambda: sum(s.waiting() for s in self.ordered.active.values()),
            push_backlog_bytes=lambda: self.flow.backlog,
        )

    # --- lifecycle ---------------------------------------------------------
    async def start(self) -> str:
        """Bind and start serving; returns the bound endpoint."""
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        provider = AllowKnownGood(self.metrics)
        self._provider = provider
        self._auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=provider)
        sock, monitor = open_router(
            self._ctx, self.bind, secret_key=self._secret_key, public_key=self.public_key
        )
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        self._reactor = Reactor(self, sock)
        self._reactor.start()
        self._tasks = [
            asyncio.create_task(self.liveness.monitor_loop(monitor), name="monitor"),
            asyncio.create_task(self.liveness.reaper(), name="reaper"),
        ]
        return self.endpoint

    def announce(self) -> None:
        """Say the node is up (a log line and the `node_up` event): once all
        of it is, its HTTP side and its cluster registration too, so that a
        start that fails after the socket is bound never says it."""
        log.info("node %s listening on %s", self.node_name, self.endpoint)
        self.events.add("node_up", f"node {self.node_name} started, listening on {self.endpoint}")

    async def stop(self) -> None:
        if self._reactor is not None:
            self._reactor.stop()
        if self._sock is not None:
            # Stop the monitor while its reader still reads: libzmq's I/O
            # thread sends monitor events blocking, under a lock that
            # disable_monitor() and close() take, so one event after the
            # reading end is closed (a client leaving as we stop) hangs them.
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
        for task in self._tasks:
            task.cancel()
        for sess in list(self.sessions.values()):
            if sess.worker is not None:
                sess.worker.cancel()
            for send in list(sess.sends):
                send.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._sock is not None:
            self._sock.close(linger=500)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
        self._stopped.set()

    @property
    def secret_key(self) -> bytes:
        """The node's CURVE secret key (its node link uses it too)."""
        return self._secret_key

    def curve_domain(self, domain: str, provider: Any) -> zmq.asyncio.Context:
        """Admit CURVE clients of sockets with `domain` by `provider`'s
        callback; returns the node's context, to make such sockets in."""
        assert self._auth is not None, "the node is not started"
        self._auth.configure_curve_callback(domain, credentials_provider=provider)
        return self._ctx

    # --- transport (the reactor reads and writes; this is its bookkeeping) ----
    def session_for(self, routing_id: bytes, key: str, payload: zmq.Frame) -> Session:
        """The session of a frame from `routing_id` with CURVE key `key`."""
        sess = self.sessions.get(routing_id)
        if sess is None or sess.transport_key != key:
            if sess is not None:
                # A peer may choose its routing id, and another key may come with
                # one once its connection is gone: that session ended with it.
                self.drop_session(routing_id)
            sess = Session(routing_id=routing_id, transport_key=key)
            sess.first_here = key not in self._keys_seen
            self._keys_seen.put(key, True)
            self.sessions[routing_id] = sess
        if sess.fd < 0 or sess.gone is not None:
            fd = source_fd(payload)
            if fd >= 0 and self.by_fd.get(fd) is not sess:
                sess.fd = fd
                self.by_fd[fd] = sess
        if sess.gone is not None:
            self.gone_sessions -= 1
            sess.gone = sess.gone_ms = None  # it spoke: whatever we concluded, it is here
            self._readmit(sess)
        return sess

    def _readmit(self, sess: Session) -> None:
        """A session back from gone (it said `bye`, or the monitor or the
        reaper gave up on it) is not one of its user's connections until its
        next request admits it again, within the user's limit: counted as
        they were, sessions that said `bye` and spoke again passed it."""
        if sess.user is not None:
            peers = self.by_user.get(sess.user)
            if peers is not None:
                peers.discard(sess.routing_id)
                if not peers:
                    del self.by_user[sess.user]
        sess.user, sess.resolved = None, False
        self.liveness.not_a_user(sess)

    def rate_limited(self, sess: Session, now: float, size: int = 0) -> str | None:
        """None if the request (a frame of `size` bytes, 0 for a send of a
        frame already counted) may go on, else why it may not."""
        burst = self.limits.burst_seconds
        if sess.bucket is None:
            rate = self.limits.per_connection
            sess.bucket = TokenBucket(rate, max(1.0, rate * burst))
        if not sess.bucket.take(now):
            return (
                f"more than {self.limits.per_connection:g} requests/s on this connection; "
                f"retry in {sess.bucket.retry_after():.2f} s"
            )
        if sess.user is not None:
            bucket = self._user_buckets.get(sess.user)
            if bucket is None:
                rate = self.limits.per_user
                bucket = self._user_buckets[sess.user] = TokenBucket(rate, max(1.0, rate * burst))
            if not bucket.take(now):
                return (
                    f"more than {self.limits.per_user:g} requests/s for {sess.user}; "
                    f"retry in {bucket.retry_after():.2f} s"
                )
        if size:
            # The session's user is known only once a request of it is served
            # (and again only then after a `bye`); its key's may be already.
            user = sess.user or self._user_cache.get(sess.transport_key)
            return self.bytes.charge(user, sess.transport_key, size, now)
        return None

    def send(self, routing_id: bytes, data: bytes) -> bool:
        """Send without ever waiting (see Reactor.send)."""
        assert self._reactor is not None
        return self._reactor.send(routing_id, data)

    def reply(self, sess: Session, rid: int, msg: m.AnyReply) -> None:
        if sess.dropped_ms is None:  # forgotten: another connection may hold its routing id now
            self.send(sess.routing_id, encode_reply(rid, msg))

    async def user_for(self, transport_key: str) -> str | None:
        user = self._user_cache.get(transport_key)
        if user is None:
            user = await self.handlers.user_for_transport(transport_key)
            if user is not None:
                self._user_cache.put(transport_key, user)
        return user

    def bind_user(self, sess: Session, user: str) -> None:
        self.admit(sess, user)
        sess.user = user
        sess.resolved = True
        self._user_cache.put(sess.transport_key, user)

    def admit(self, sess: Session, user: str) -> None:
        """Count the connection as one of `user`'s, within their limit."""
        peers = self.by_user.setdefault(user, set())
        live = [r for r in peers if r != sess.routing_id and self._live(r)]
        if len(live) >= self.max_connections_per_user:
            sess.user, sess.resolved = None, False
            self.liveness.not_a_user(sess)
            self.metrics.connections_refused.inc()
            raise Refusal(
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"{user} already has {len(live)} connections to this node"
                f" (at most {self.max_connections_per_user})",
            )
        peers.add(sess.routing_id)

    def open_fd(self, sess: Session) -> bool:
        """Whether `sess`'s connection is open still (the monitor has not
        reported it closed): its descriptor is `sess.fd`."""
        return sess.fd >= 0 and self.by_fd.get(sess.fd) is sess

    def _live(self, routing_id: bytes) -> bool:
        other = self.sessions.get(routing_id)
        return other is not None and other.gone is None

    def drop_session(self, routing_id: bytes) -> None:
        sess = self.sessions.pop(routing_id, None)
        if sess is None:
            return
        if sess.gone is not None:
            self.gone_sessions -= 1
        sess.dropped_ms = int(time.time() * 1000)
        if self.open_fd(sess):
            del self.by_fd[sess.fd]
        self.flow.forget(sess.flow)
        self.lost_sessions.append(sess)
        if sess.user is not None:
            peers = self.by_user.get(sess.user)
            if peers is not None:
                peers.discard(routing_id)
                if not peers:
                    del self.by_user[sess.user]
                    self._user_buckets.pop(sess.user, None)

    def push(self, users: list[str], msg: m.AnyReply, *, skip: bytes | None = None) -> int:
        """Send a push to every connection of `users`; returns how many went out."""
        out = self.fanout()
        sent = out.push(users, msg, skip=skip)
        return sent - out.flush()

    def fanout(self) -> Fanout:
        """A collector for one pass's acks and pushes (server/fanout.py)."""
        return Fanout(self, self.send if self._reactor is None else self._reactor.send)

    def receivers(self, users: Iterable[str]) -> list[Session]:
        """Every connection of `users`."""
        sessions = self.sessions
        return [
            sess
            for user in users
            for routing_id in self.by_user.get(user, ())
            if (sess := sessions.get(routing_id)) is not None
        ]

    def withheld(
        self, sess: Session, size: int, *, ahead: int = 0, pending: int = 0
    ) -> Scope | None:
        """Why a push must not be queued for `sess` (it does not read), or
        None; `ahead`, `pending`: see `FlowControl.refuse_push`. Counted."""
        was_limited = self.flow.node_limited
        scope = self.flow.refuse_push(sess.flow, size, ahead=ahead, pending=pending)
        if scope is not None:
            self._note_withheld(scope, 1, was_limited)
        return scope

    def room_for(self, sess: Session, ends: Sequence[int]) -> int:
        """How many of a run of pushes may be queued for `sess`, the run cut
        at the first one withheld (`FlowControl.room_for`)."""
        was_limited = self.flow.node_limited
        room, scope = self.flow.room_for(sess.flow, ends)
        if scope is not None:
            self._note_withheld(scope, len(ends) - room, was_limited)
        return room

    def note_withheld(self, scope: Scope, count: int) -> None:
        """Pushes withheld for the reason (`scope`) one before them was."""
        self.metrics.pushes_withheld.labels(scope).inc(count)

    def _note_withheld(self, scope: Scope, count: int, was_limited: bool) -> None:
        self.metrics.pushes_withheld.labels(scope).inc(count)
        if scope == "node" and not was_limited:
            self.events.add(
                "memory_budget",
                f"the node holds {self.flow.backlog // 2**20} MiB its clients have not read:"
                " pushes to connections that do not read are withheld",
                level="warning",
            )

    async def push_remote(self, rows: Sequence[StoredRow]) -> int:
        """Push messages ANOTHER node committed (server/fanout.py `push_remote`)."""
        return await push_remote(self, rows)

    def note_bye(self, sess: Session) -> None:
        self.liveness.note_bye(sess)

    # --- helpers for handlers ------------------------------------------------
    def welcome(self, sess: Session, hello: m.Hello) -> m.Welcome:
        """The welcome for `sess`'s `hello`, noting what the hello says of the
        client (its name, whether it reads `batch` frames). `sends` is said
        only to a client that asked (the node takes them)."""
        sess.client = hello.client
        sess.batch = hello.batch
        return m.Welcome(
            node=self.node_name,
            boot=self.boot,
            user=sess.user,
            time=int(time.time() * 1000),
            version=PROTOCOL_VERSION,
            peers=self.peers,
            sends=hello.sends,
        )


Handler = Callable[[Session, Any], Awaitable[m.AnyReply]]
__all__ = ["NODE_NAME_RULE", "ChatNode", "Session", "check_libzmq", "encode", "valid_node_name"]
