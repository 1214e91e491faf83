"""A chat node: a CURVE-secured ROUTER socket in front of a store.

The node authenticates connections (ZAP, never touching the store so a slow
store cannot stall handshakes), maps each connection's CURVE key to a user,
serves requests in order per connection, and pushes every committed message
to the online members of its room.

It must never see plaintext: it checks envelopes' routing fields (room,
sender, epoch) and stores them as they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import gc
import logging
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils.monitor import parse_monitor_message

from curvechat.dashboard.events import EventLog
from curvechat.protocol import (
    ErrorCode,
    RemoteProtocolError,
    decode_request,
    encode,
    encode_reply,
    peek_request_id,
)
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_FRAME_BYTES, PROTOCOL_VERSION
from curvechat.server.flow import Flow, FlowControl
from curvechat.server.handlers import Handlers, Refusal
from curvechat.server.lru import Recent
from curvechat.server.metrics import NodeMetrics
from curvechat.server.ratelimit import RateLimits, TokenBucket
from curvechat.server.rooms import RoomCache
from curvechat.store import Store, StoreUnavailable

log = logging.getLogger("curvechat.server")

MIN_LIBZMQ = (4, 3, 2)
SESSION_TIMEOUT_S = 30.0
SESSION_QUEUE_MAX = 256
REQUEST_BYTES_MAX = 2 * 1024 * 1024  # request bytes waiting to be served, per connection
MAX_CONNECTIONS_PER_USER = 16
COMPACT_AFTER_DROPS = 1_000  # sessions dropped before the reaper compacts the tables
KEYS_REMEMBERED = 10_000  # per-key memory (users of keys, keys seen), most recent first
LOST_SESSIONS_KEPT = 200  # dropped sessions kept for the dashboard's connection table
UNREGISTERED_OK = (m.Hello, m.Register, m.Ping, m.Bye)
# Disconnect reasons that are not failures (a clean exit): no warning event.
CLEAN_EXIT = "left"
NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
NODE_NAME_RULE = "1-64 characters of A-Z a-z 0-9 _ . : -, starting with a letter or digit"


def valid_node_name(name: str) -> bool:
    """Whether `name` may name a node: it goes into URL paths, metric labels,
    InfluxDB tags and log lines as it is."""
    return NODE_NAME_RE.fullmatch(name) is not None


# Set in the task that serves one pipelined send: resolved once its commit is
# queued in the store, which lets the connection's next request start.
_send_queued: contextvars.ContextVar[asyncio.Future[None] | None] = contextvars.ContextVar(
    "send_queued", default=None
)


def check_libzmq() -> None:
    """Refuse to run on a libzmq without CURVE or older than 4.3.2 (CVE-2019-6250,
    CVE-2019-13132 in the CURVE handshake path)."""
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support; refusing to start")
    version = zmq.zmq_version_info()
    if version < MIN_LIBZMQ:
        raise RuntimeError(
            f"libzmq {'.'.join(map(str, version))} is older than 4.3.2 (known CURVE CVEs)"
        )


@dataclass
class Session:
    """One client connection (one ROUTER routing id)."""

    routing_id: bytes
    transport_key: str  # z85 CURVE key, from ZAP's User-Id
    user: str | None = None
    resolved: bool = False
    connected_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    last_seen: float = field(default_factory=time.monotonic)
    client: str = ""
    queue: asyncio.Queue[tuple[int, bytes, float]] = field(
        default_factory=lambda: asyncio.Queue(SESSION_QUEUE_MAX)
    )
    bucket: TokenBucket | None = None
    worker: asyncio.Task[None] | None = None
    sends: set[asyncio.Task[None]] = field(default_factory=set)  # pipelined, not yet acked
    # For operators (the dashboard's connection table), not for serving:
    fd: int = -1  # the connection's socket, to match the monitor's disconnect events
    request_t0: float = 0.0  # perf_counter when the request being served arrived
    last_ping_ms: int | None = None
    rtt_ms: float | None = None  # as the client last reported it
    reconnects: int = 0  # as the client last reported it
    pinged: bool = False  # it has reported its reconnect count at least once
    outbox: int = 0  # messages waiting in the client's outbox, as it last reported
    gone: str | None = None  # why the connection ended: disconnected, timeout, left (clean exit)
    gone_ms: int | None = None
    dropped_ms: int | None = None  # when the node forgot it
    first_here: bool = True  # no other connection with this key since the node started
    flow: Flow = field(default_factory=Flow)  # bytes queued to it, and confirmed read
    queued_bytes: int = 0  # request bytes received and not yet served


class _AllowKnownGood:
    """ZAP credentials provider: any well-formed CURVE key may connect (the key
    *is* the login; unknown keys may only register). Keys on the deny list are
    refused. Purely in memory: a slow store cannot stall handshakes."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.denied: set[bytes] = set()
        self._metrics = metrics

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.denied:
            self._metrics.handshakes.labels("denied").inc()
            return False
        return True


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
        self.public_key = public_key
        self._secret_key = secret_key
        self.bind = bind
        self.node_name = node_name or f"{os.uname().nodename}:{os.getpid()}"
        self.boot = os.urandom(6).hex()
        # Cluster mode: the live nodes' connect strings, kept fresh by the
        # Cluster from the registry and handed to every client in its welcome.
        self.peers: list[str] = []
        self.peer_nodes: list[dict[str, Any]] = []  # the other nodes, for the dashboard
        self.metrics = NodeMetrics()
        self.metrics.set_node(self.node_name, self.boot)
        self.limits = limits or RateLimits()
        self._user_buckets: dict[str, TokenBucket] = {}
        self.rooms = RoomCache(store)
        self.sessions: dict[bytes, Session] = {}
        self.by_user: dict[str, set[bytes]] = {}
        self.endpoint: str | None = None
        self._ctx = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._user_cache: Recent[str, str] = Recent(KEYS_REMEMBERED)
        self._handlers = Handlers(self)
        self._stopped = asyncio.Event()
        self.started_at = time.time()
        self.events = EventLog(self.node_name)
        self._dropped = 0  # sessions dropped since the tables were last compacted
        self._by_fd: dict[int, Session] = {}  # bounded by the open sockets' numbers
        # transport keys that have had a connection here since the node started
        self._keys_seen: Recent[str, bool] = Recent(KEYS_REMEMBERED)
        self.lost_sessions: deque[Session] = deque(maxlen=LOST_SESSIONS_KEPT)
        self.metrics.track(
            connected_clients=lambda: sum(1 for s in self.sessions.values() if s.gone is None),
            request_queue_depth=lambda: sum(s.queue.qsize() for s in self.sessions.values()),
            push_backlog_bytes=lambda: self.flow.backlog,
        )

    # --- lifecycle ---------------------------------------------------------
    async def start(self) -> str:
        """Bind and start serving; returns the bound endpoint."""
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        provider = _AllowKnownGood(self.metrics)
        self._provider = provider
        self._auth.configure_curve_callback("curvechat", credentials_provider=provider)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_secretkey = self._secret_key
        sock.curve_publickey = self.public_key
        sock.zap_domain = b"curvechat"
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES + 1024)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 5000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 15000)
        sock.setsockopt(zmq.HANDSHAKE_IVL, 10000)
        sock.setsockopt(zmq.SNDHWM, 10000)
        sock.setsockopt(zmq.RCVHWM, 10000)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.bind(self.bind)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_DISCONNECTED
        )
        self._tasks = [
            asyncio.create_task(self._recv_loop(), name="recv"),
            asyncio.create_task(self._monitor_loop(monitor), name="monitor"),
            asyncio.create_task(self._reaper(), name="reaper"),
        ]
        log.info("node %s listening on %s", self.node_name, self.endpoint)
        self.events.add("node_up", f"node {self.node_name} started, listening on {self.endpoint}")
        return self.endpoint

    async def stop(self) -> None:
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
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            self._sock.close(linger=500)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()
        self._stopped.set()

    # --- transport ---------------------------------------------------------
    async def _recv_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while True:
            try:
                frames = await sock.recv_multipart(copy=False)
            except zmq.ZMQError as exc:
                log.warning("receive failed: %s", exc)
                continue
            if len(frames) < 2:
                continue
            routing_id = frames[0].bytes
            if len(frames) != 2:
                self._send(
                    routing_id,
                    encode_reply(
                        0,
                        m.Error(
                            code=ErrorCode.BAD_FRAME,
                            message=f"expected one frame, got {len(frames) - 1}",
                        ),
                    ),
                )
                continue
            payload = frames[1]
            try:
                key = payload.get("User-Id")
            except zmq.ZMQError:
                continue  # no ZAP identity: never serve it
            self._accept(routing_id, str(key), payload.bytes, fd=_source_fd(payload))

    def _accept(self, routing_id: bytes, key: str, data: bytes, fd: int = -1) -> None:
        sess = self.sessions.get(routing_id)
        if sess is None or sess.transport_key != key:
            sess = Session(routing_id=routing_id, transport_key=key)
            sess.first_here = key not in self._keys_seen
            self._keys_seen.put(key, True)
            self.sessions[routing_id] = sess
        if fd >= 0 and self._by_fd.get(fd) is not sess:
            sess.fd = fd
            self._by_fd[fd] = sess
        sess.gone = sess.gone_ms = None  # it spoke: whatever we concluded, it is here
        sess.last_seen = time.monotonic()
        limited = self._rate_limited(sess)
        if limited is not None:
            self.metrics.requests.labels("?", ErrorCode.RATE_LIMITED).inc()
            self._send(
                routing_id,
                encode_reply(
                    peek_request_id(data), m.Error(code=ErrorCode.RATE_LIMITED, message=limited)
                ),
            )
            return
        if sess.queued_bytes + len(data) > REQUEST_BYTES_MAX:
            self.metrics.requests.labels("?", ErrorCode.RATE_LIMITED).inc()
            self._send(
                routing_id,
                encode_reply(
                    peek_request_id(data),
                    m.Error(
                        code=ErrorCode.RATE_LIMITED,
                        message="too many request bytes in flight on this connection",
                    ),
                ),
            )
            return
        try:
            sess.queue.put_nowait((0, data, time.perf_counter()))
            sess.queued_bytes += len(data)
        except asyncio.QueueFull:
            rid = peek_request_id(data)
            self.metrics.requests.labels("?", ErrorCode.RATE_LIMITED).inc()
            self._send(
                routing_id,
                encode_reply(
                    rid,
                    m.Error(
                        code=ErrorCode.RATE_LIMITED,
                        message="too many requests in flight on this connection",
                    ),
                ),
            )
            return
        if sess.worker is None or sess.worker.done():
            sess.worker = asyncio.create_task(self._session_worker(sess))

    def _rate_limited(self, sess: Session) -> str | None:
        """None if the request may go on, else why it may not."""
        burst = self.limits.burst_seconds
        if sess.bucket is None:
            rate = self.limits.per_connection
            sess.bucket = TokenBucket(rate, max(1.0, rate * burst))
        if not sess.bucket.take():
            return (
                f"more than {self.limits.per_connection:g} requests/s on this connection; "
                f"retry in {sess.bucket.retry_after():.2f} s"
            )
        if sess.user is not None:
            bucket = self._user_buckets.get(sess.user)
            if bucket is None:
                rate = self.limits.per_user
                bucket = self._user_buckets[sess.user] = TokenBucket(rate, max(1.0, rate * burst))
            if not bucket.take():
                return (
                    f"more than {self.limits.per_user:g} requests/s for {sess.user}; "
                    f"retry in {bucket.retry_after():.2f} s"
                )
        return None

    async def _session_worker(self, sess: Session) -> None:
        # Requests of one connection are served in order: a client that
        # pipelines sends gets them committed in the order it sent them.
        # Sends are pipelined: the next request starts as soon as a send's
        # commit is queued in the store (which commits its queue in order), so
        # one connection's sends share group commits. Any other request first
        # waits until the connection's sends in flight are answered.
        loop = asyncio.get_running_loop()
        while not sess.queue.empty():
            _, data, t0 = sess.queue.get_nowait()
            sess.queued_bytes -= len(data)
            try:
                frame = decode_request(data)
            except RemoteProtocolError as exc:
                self.metrics.requests.labels("invalid", exc.code).inc()
                self._send(
                    sess.routing_id,
                    encode_reply(
                        peek_request_id(data), m.Error(code=exc.code, message=exc.message[:500])
                    ),
                )
                continue
            if not isinstance(frame.req, m.Send):
                if sess.sends:
                    await asyncio.wait(set(sess.sends))
                await self._serve_guarded(sess, frame, data, t0)
                continue
            if len(sess.sends) >= SESSION_QUEUE_MAX:
                await asyncio.wait(set(sess.sends), return_when=asyncio.FIRST_COMPLETED)
            queued: asyncio.Future[None] = loop.create_future()
            token = _send_queued.set(queued)
            try:
                task = asyncio.create_task(self._serve_guarded(sess, frame, data, t0, queued))
            finally:
                _send_queued.reset(token)
            sess.sends.add(task)
            task.add_done_callback(sess.sends.discard)
            await queued

    def send_queued(self) -> None:
        """Called by the send handler once its commit is queued in the store:
        the connection's next request may start (see _session_worker)."""
        queued = _send_queued.get()
        if queued is not None and not queued.done():
            queued.set_result(None)

    async def _serve_guarded(
        self,
        sess: Session,
        frame: m.ClientFrame,
        data: bytes,
        t0: float,
        queued: asyncio.Future[None] | None = None,
    ) -> None:
        try:
            await self._serve(sess, frame, t0)
        except Exception:
            # _serve answers every error it knows; this is a bug, and one
            # bad frame must not stop the connection's other requests.
            log.exception("unexpected failure serving a frame")
            self._send(
                sess.routing_id,
                encode_reply(
                    peek_request_id(data),
                    m.Error(code=ErrorCode.INTERNAL, message="internal server error"),
                ),
            )
        finally:
            if queued is not None and not queued.done():
                queued.set_result(None)  # refused or failed before its commit

    async def _serve(self, sess: Session, frame: m.ClientFrame, t0: float) -> None:
        req = frame.req
        kind = type(req).__struct_config__.tag
        try:
            if not sess.resolved:
                try:
                    sess.user = await self._user_for(sess.transport_key)
                except StoreUnavailable as exc:
                    raise Refusal(ErrorCode.STORE_UNAVAILABLE, f"store unavailable: {exc}") from exc
                sess.resolved = True
                if sess.user is not None:
                    self._admit(sess, sess.user)
            if sess.user is None and not isinstance(req, UNREGISTERED_OK):
                raise Refusal(
                    ErrorCode.NOT_REGISTERED, "this key is not registered; register first"
                )
            if self.flow.over_budget(sess.flow) and not isinstance(req, m.Ping | m.Bye):
                raise Refusal(
                    ErrorCode.RATE_LIMITED,
                    "this connection has not read what the node sent it; read it first",
                )
            sess.request_t0 = t0
            reply = await self._handlers.dispatch(sess, req)
            code = "ok"
        except Refusal as exc:
            reply = m.Error(code=exc.code, message=exc.message[:500])
            code = exc.code
        except Exception:
            log.exception("internal error serving %s", kind)
            reply = m.Error(code=ErrorCode.INTERNAL, message="internal server error")
            code = ErrorCode.INTERNAL
        self.metrics.observe_request(str(kind), code)
        self._send(sess.routing_id, encode_reply(frame.rid, reply))
        if isinstance(req, m.Send) and code == "ok":
            self.metrics.send_ack_seconds.observe(time.perf_counter() - t0)

    async def _user_for(self, transport_key: str) -> str | None:
        user = self._user_cache.get(transport_key)
        if user is None:
            user = await self._handlers.user_for_transport(transport_key)
            if user is not None:
                self._user_cache.put(transport_key, user)
        return user

    def bind_user(self, sess: Session, user: str) -> None:
        self._admit(sess, user)
        sess.user = user
        sess.resolved = True
        self._user_cache.put(sess.transport_key, user)

    def _admit(self, sess: Session, user: str) -> None:
        """Count the connection as one of `user`'s, within their limit."""
        peers = self.by_user.setdefault(user, set())
        live = [r for r in peers if r != sess.routing_id and self._live(r)]
        if len(live) >= self.max_connections_per_user:
            sess.user, sess.resolved = None, False
            self.metrics.connections_refused.inc()
            raise Refusal(
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"{user} already has {len(live)} connections to this node"
                f" (at most {self.max_connections_per_user})",
            )
        peers.add(sess.routing_id)

    def _live(self, routing_id: bytes) -> bool:
        other = self.sessions.get(routing_id)
        return other is not None and other.gone is None

    def _send(self, routing_id: bytes, data: bytes) -> bool:
        """Send without ever waiting, and count the bytes against the
        connection's flow (asking for proof of reading when due)."""
        if not self._send_frame(routing_id, data):
            return False
        sess = self.sessions.get(routing_id)
        if sess is not None:
            mark = self.flow.queued(sess.flow, len(data))
            if mark is not None:
                frame = encode_reply(0, m.Mark(mark=mark))
                if self._send_frame(routing_id, frame):
                    self.flow.marked(sess.flow, mark, len(frame))
        return True

    def _send_frame(self, routing_id: bytes, data: bytes) -> bool:
        """Send without ever waiting: a peer that is gone or whose queue is full
        loses this frame (clients detect the gap by seq and fetch it)."""
        assert self._sock is not None
        # With DONTWAIT, zmq.asyncio tries at once and returns a finished
        # future that carries the outcome (errors are not raised here).
        fut = cast(
            "asyncio.Future[object]",
            self._sock.send_multipart([routing_id, data], flags=zmq.NOBLOCK),
        )
        if not fut.done():  # only if sends were already queued: not expected
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            return True
        exc = fut.exception()
        if exc is None:
            return True
        self.metrics.pushes_dropped.inc()
        if isinstance(exc, zmq.ZMQError) and exc.errno == zmq.EHOSTUNREACH:
            self._drop_session(routing_id)
        elif not isinstance(exc, zmq.Again):
            log.warning("send to a client failed: %s", exc)
        return False

    def _drop_session(self, routing_id: bytes) -> None:
        sess = self.sessions.pop(routing_id, None)
        if sess is None:
            return
        sess.dropped_ms = int(time.time() * 1000)
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
        data = encode_reply(0, msg)
        sent = 0
        for user in users:
            for routing_id in list(self.by_user.get(user, ())):
                sess = self.sessions.get(routing_id)
                if routing_id == skip or sess is None or self._withheld(sess, len(data)):
                    continue
                if self._send(routing_id, data):
                    sent += 1
        return sent

    def _withheld(self, sess: Session, size: int) -> bool:
        """Whether a push must not be queued for `sess` (it does not read)."""
        was_limited = self.flow.node_limited
        scope = self.flow.refuse_push(sess.flow, size)
        if scope is None:
            return False
        self.metrics.pushes_withheld.labels(scope).inc()
        if scope == "node" and not was_limited:
            self.events.add(
                "memory_budget",
                f"the node holds {self.flow.backlog // 2**20} MiB its clients have not read:"
                " pushes to connections that do not read are withheld",
                level="warning",
            )
        return True

    async def push_remote(self, room: str, message: m.StoredMessage) -> int:
        """Push a message that ANOTHER node committed (learned from the cluster
        watch) to this node's online members of its room; returns how many
        pushes went out. The node's own commits are pushed by the handlers."""
        view = await self.rooms.get(room)
        if view is None:
            return 0
        sent = self.push(view.members(), m.MessagePush(room=room, message=message))
        self.metrics.messages_delivered.inc(sent)
        return sent

    async def _monitor_loop(self, monitor: zmq.asyncio.Socket) -> None:
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                ev = event["event"]
                if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.metrics.handshakes.labels("ok").inc()
                elif ev in (
                    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                ):
                    self.metrics.handshakes.labels("failed").inc()
                    reason = "denied" if ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH else "handshake"
                    self.metrics.auth_failures.labels(reason).inc()
                elif ev == zmq.EVENT_DISCONNECTED:
                    self._connection_lost(int(event["value"]))
        finally:
            monitor.close(linger=0)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(SESSION_TIMEOUT_S / 3)
            cutoff = time.monotonic() - SESSION_TIMEOUT_S
            before = len(self.sessions)
            for routing_id, sess in list(self.sessions.items()):
                if (
                    (sess.gone is not None or sess.last_seen < cutoff)
                    and (sess.worker is None or sess.worker.done())
                    and not sess.sends
                ):
                    if sess.gone is None:
                        self._mark_gone(
                            sess,
                            "timeout",
                            "client_timeout",
                            f"{_who(sess)} timed out: silent for {SESSION_TIMEOUT_S:g} s",
                        )
                    self._drop_session(routing_id)
            self._dropped += before - len(self.sessions)
            if self._dropped >= COMPACT_AFTER_DROPS:
                self._dropped = 0
                self._compact()

    def _compact(self) -> None:
        """Give back the memory of many sessions gone at once (a storm of
        throwaway keys): dicts do not shrink by themselves, nor does the
        allocator return freed pages unasked."""
        self.sessions = dict(self.sessions)
        self.by_user = {u: set(r) for u, r in self.by_user.items()}
        self._by_fd = dict(self._by_fd)
        gc.collect()
        if _malloc_trim is not None:
            _malloc_trim(0)

    # --- what operators see ----------------------------------------------------
    def _connection_lost(self, fd: int) -> None:
        """The monitor saw connection `fd` close (peer gone or ZMTP heartbeat timeout)."""
        sess = self._by_fd.pop(fd, None)
        if sess is None or sess.fd != fd or sess.gone is not None:
            return
        self._mark_gone(
            sess,
            "disconnected",
            "client_disconnected",
            f"{_who(sess)} disconnected (connection closed or heartbeat timed out)",
        )

    def _mark_gone(self, sess: Session, reason: str, event: str | None, text: str = "") -> None:
        """Record that a client went away: for the table, the metrics, the
        events (a failure only: `event` None for a clean exit)."""
        sess.gone, sess.gone_ms = reason, int(time.time() * 1000)
        self.metrics.client_disconnects.labels(reason).inc()
        if event is not None:
            self.events.add(event, text, level="warning", user=sess.user)

    def note_bye(self, sess: Session) -> None:
        """The client says it is closing this connection on purpose: it left,
        it did not fail. Its socket closing next is then no news."""
        if sess.gone is None:
            self._mark_gone(sess, CLEAN_EXIT, None)

    def note_ping(
        self,
        sess: Session,
        rtt_ms: float | None,
        reconnects: int,
        outbox: int = 0,
        read_mark: int = 0,
        prev_node: str = "",
    ) -> None:
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
        if read_mark and self.flow.read(sess.flow, read_mark):
            self._send(sess.routing_id, encode_reply(0, m.Resync(reason="pushes withheld")))
        sess.last_ping_ms = int(time.time() * 1000)
        sess.outbox = outbox
        if rtt_ms is not None:
            sess.rtt_ms = rtt_ms
            self.metrics.client_rtt_seconds.observe(rtt_ms / 1000)
        previous, first = sess.reconnects, not sess.pinged
        sess.reconnects, sess.pinged = reconnects, True
        if first:
            if reconnects > 0:
                self._arrived(sess, reconnects, prev_node)
        elif reconnects > previous:
            self.metrics.client_reconnects.inc(reconnects - previous)
            self.events.add(
                "client_reconnected",
                f"{_who(sess)} reconnected (reconnect #{reconnects})",
                level="warning",
                user=sess.user,
            )

    def _arrived(self, sess: Session, reconnects: int, prev_node: str) -> None:
        """A new session whose client has reconnected before: one reconnect
        (back to this node), or one failover (from another node)."""
        back = prev_node == self.node_name if prev_node else not sess.first_here
        if back:
            restarted = " after this node restarted" if sess.first_here else ""
            self.metrics.client_reconnects.inc()
            self.events.add(
                "client_reconnected",
                f"{_who(sess)} reconnected{restarted} (reconnect #{reconnects})",
                level="warning",
                user=sess.user,
            )
            return
        # prev_node is the client's word: shown only if it could be a node's name
        source = f"from {prev_node}" if valid_node_name(prev_node) else "elsewhere"
        self.metrics.client_failovers.inc()
        self.events.add(
            "client_failover",
            f"{_who(sess)} arrived {source} after {reconnects} reconnect(s)",
            level="warning",
            user=sess.user,
        )

    # --- helpers for handlers ------------------------------------------------
    def welcome(self, sess: Session) -> m.Welcome:
        return m.Welcome(
            node=self.node_name,
            boot=self.boot,
            user=sess.user,
            time=int(time.time() * 1000),
            version=PROTOCOL_VERSION,
            peers=self.peers,
        )


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return cast("Callable[[int], int]", ctypes.CDLL("libc.so.6").malloc_trim)
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _libc_malloc_trim()


def _source_fd(frame: zmq.Frame) -> int:
    """The socket a received frame came in on (-1 if libzmq cannot say)."""
    try:
        return int(frame.get(zmq.SRCFD))
    except (zmq.ZMQError, ValueError, TypeError):
        return -1


def _who(sess: Session) -> str:
    return sess.user or f"unregistered key {sess.transport_key[:8]}…"


Handler = Callable[[Session, Any], Awaitable[m.AnyReply]]
__all__ = ["ChatNode", "Session", "check_libzmq", "encode"]
