"""One logical connection to a chat service over a list of nodes.

A DEALER socket with CURVE to one node at a time (`nodesocket.NodeSocket`).
Requests carry a request id and are matched with their replies, and go
out only while live (requests.py); pushes (request id 0) go to a callback.
In cluster mode a welcome names the live nodes, which join the list; the
nodes are tried in the order `servers.attempt_order` gives (spread by the
user's name), and a node that drains asks us to move (`push_move`).
Liveness: ZMTP heartbeats (every few seconds; libzmq drops a silent node,
and the TTL they carry has the node drop us when we go silent) plus a rare
app-level ping (tens of seconds) that measures RTT
and reports to the node; a missed window, a dropped connection (socket
monitor) or a node that restarted under us (new boot id) closes the socket and
fails over to the next node after a jittered back-off (ZeroMQ Guide:
Freelance, Paranoid Pirate). Each failed attempt is filed by kind
(`failures`: refused, key mismatch, timeout, draining) for a front end that must know
at once whether waiting can help.

It must never interpret what it carries beyond the frame: the engine above
decides what a reply means.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import zmq
import zmq.asyncio

from curvechat.client import servers as sv
from curvechat.client.dealer import failure_kind, open_dealer
from curvechat.client.errors import NotConnected, RequestTimeout, ServerRefused
from curvechat.client.hello import Greeting
from curvechat.client.nodesocket import NodeSocket, PushHandler
from curvechat.client.pings import Pinger
from curvechat.client.requests import Requests
from curvechat.client.servers import ServerList
from curvechat.client.state import Backoff, ConnEvent, ConnState, ConnStatus, transition
from curvechat.protocol import RemoteProtocolError
from curvechat.protocol import messages as m
from curvechat.protocol.connect import ServerAddress
from curvechat.protocol.limits import libzmq_refusal

log = logging.getLogger("curvechat.client")

StatusHandler = Callable[[ConnStatus], None]
LiveHandler = Callable[[m.Welcome], Coroutine[Any, Any, None]]

BYE_TIMEOUT_S = 0.5  # how long a clean close waits for the node to note its goodbye
PING_INTERVAL_S = 30.0  # app-level pings: RTT and reports, not liveness
HEARTBEAT_S = 5.0  # ZMTP heartbeats at most this far apart (liveness)


class Connection(Requests):
    def __init__(
        self,
        addresses: list[ServerAddress],
        *,
        public_key: bytes,
        secret_key: bytes,
        on_push: PushHandler,
        on_status: StatusHandler | None = None,
        on_live: LiveHandler | None = None,
        client_id: str = "curvechat",
        ping_interval: float = PING_INTERVAL_S,
        liveness: int = 3,
        connect_timeout: float = 3.0,
        request_timeout: float = 10.0,
        backoff: Backoff | None = None,
        spread_key: str = "",
    ) -> None:
        self.servers = ServerList(addresses, key=spread_key)
        problem = libzmq_refusal(zmq.zmq_version_info(), zmq.has("curve"))
        if problem is not None:  # the same floor as the server
            raise RuntimeError(f"{problem}; refusing to connect")
        self._public = public_key
        self._secret = secret_key
        self._on_push = on_push
        self._on_status = on_status
        self._on_live = on_live
        self._greeting = Greeting(client_id)
        self.ping_interval = ping_interval
        self.liveness = liveness
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.backoff = backoff or Backoff()
        self._ctx = zmq.asyncio.Context()
        self._sock: NodeSocket | None = None
        self._live = asyncio.Event()
        self._lost = asyncio.Event()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._live_task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self._boot: str | None = None
        self._takes_sends = False  # the node's welcome said it takes `sends` requests
        self._drop_failed = False
        self._pinger = Pinger(
            ask=self._raw,
            make=self._make_ping,
            on_pong=self._pong,
            spawn=self._spawn,
            timeout=lambda: self.ping_interval * self.liveness,
        )
        self._closing = False
        self._prev_node = ""  # the node of the previous live connection, reported in pings
        self._current: ServerAddress | None = None  # the node of the socket
        self.outbox_depth: Callable[[], int] = lambda: 0  # reported in pings
        self.status = ConnStatus(ConnState.OFFLINE, since=time.time())
        self.reconnects = 0
        self.failures: dict[str, str] = {}
        """Endpoint → kind of its latest failed attempt (`servers.REFUSED`, …);
        a node that welcomes us leaves it."""
        self._lost_kind = sv.LOST

    # --- public ------------------------------------------------------------
    @property
    def addresses(self) -> list[ServerAddress]:
        return self.servers.all

    @property
    def live(self) -> bool:
        return self.status.state is ConnState.LIVE

    async def start(self) -> None:
        self._move(ConnEvent.START, endpoint=self.servers.first(time.monotonic()).endpoint)
        self._runner = asyncio.create_task(self._run(), name="connection")

    async def close(self, *, goodbye: bool = True) -> None:
        """Close for good. On a live connection, first say goodbye (best
        effort, within BYE_TIMEOUT_S) so the node shows a clean exit, not a
        failure; `goodbye=False` closes as a killed process would."""
        if self.status.state is ConnState.CLOSED:
            return
        was_live = self._live.is_set()
        self._closing = True  # no more pings: the goodbye is the last request
        self._live.clear()
        self._move(ConnEvent.CLOSE, detail="closed")
        for task in (self._runner, self._live_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if goodbye and was_live and self._sock is not None and not self._lost.is_set():
            with contextlib.suppress(NotConnected, RequestTimeout, ServerRefused):
                await self._raw(m.Bye(), min(BYE_TIMEOUT_S, self.request_timeout))
        await self._close_socket("closed")
        self._ctx.term()

    async def wait_live(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._live.wait()
        except TimeoutError:
            return False
        return True

    def drop(self, reason: str, *, failed: bool = False) -> None:
        """Give up on the current connection: the run loop closes it and
        reconnects, with back-off. `failed` (e.g. its first sync was refused)
        counts it as one more failed attempt, so a refusal that persists backs
        off up to the cap instead of reconnecting at the first step forever."""
        self._drop_failed = failed
        self._mark_lost(reason)

    def retry_now(self) -> None:
        """Cut a back-off wait short (e.g. the user asked to reconnect)."""
        self._wake.set()

    # --- internals -----------------------------------------------------------
    def _move(self, event: ConnEvent, **fields: Any) -> None:
        """A transition of the state table; `next_retry_at` and `detail` reset,
        `moving` lasts while the attempts to move go on."""
        state = transition(self.status.state, event)
        moving = self.status.moving and event in (ConnEvent.RETRY, ConnEvent.FAILED)
        fields = {"next_retry_at": None, "detail": "", "moving": moving, **fields}
        self._update(state=state, since=time.time(), **fields)

    def _update(self, **fields: Any) -> None:
        self.status = dataclasses.replace(self.status, **fields)
        if self._on_status is not None:
            self._on_status(self.status)

    def _open_socket(self, addr: ServerAddress) -> None:
        sock, monitor = open_dealer(
            self._ctx,
            addr,
            public_key=self._public,
            secret_key=self._secret,
            beat_s=min(self.ping_interval, HEARTBEAT_S),
            liveness=self.liveness,
        )
        self._sock = NodeSocket(
            sock,
            monitor,
            on_push=lambda msg: self._on_push(msg),  # looked up at each push
            on_signal=self._signal,
            on_lost=self._mark_lost,
            on_invalid=self._unreadable,
            on_overrun=self._overrun,
        )
        self._current = addr
        self._lost.clear()
        self._lost_reason = ""
        self._lost_kind = sv.LOST

    async def _close_socket(self, reason: str) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            await sock.close(reason)

    def _mark_lost(self, reason: str, kind: str = sv.LOST) -> None:
        if not self._lost.is_set():
            self._lost_reason = reason
            self._lost_kind = kind
            self._lost.set()

    def _unreadable(self, exc: RemoteProtocolError) -> None:
        """The node sent a reply or a batch this client cannot read: what it
        answered is lost, so the connection is not to be trusted with more. It
        is dropped as a failed attempt (the back-off grows while the node keeps
        doing it, and another node is tried if there is one)."""
        self.drop(f"the node sent a frame this client cannot read ({exc.code})", failed=True)

    def _overrun(self, what: str) -> None:
        """The node sent past its flow control (`inflow`): what it sends
        piles up here, so it is dropped as a failed attempt, as above."""
        self.drop(f"the node does not keep to flow control: {what}", failed=True)

    def _signal(self, msg: m.AnyReply) -> None:
        """A push the connection acts on itself, at once."""
        if isinstance(msg, m.Mark):
            self._pinger.mark(msg.mark)  # flow control: prove at once that we read up to it
        elif isinstance(msg, m.Move):
            self.servers.learn(msg.peers, moving=True)  # where to go, with these
            self._spawn(self._moving(msg.reason))

    async def _sleep(self, delay: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _connect_once(self, addr: ServerAddress) -> m.Welcome:
        self._open_socket(addr)
        hello = asyncio.create_task(self._hello())
        hello.add_done_callback(lambda t: t.cancelled() or t.exception())
        lost = asyncio.create_task(self._lost.wait())
        try:
            await asyncio.wait({hello, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not hello.done():
                hello.cancel()
        if hello.cancelled() or not hello.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await hello
            raise NotConnected(self._lost_reason or "connection failed")
        reply = hello.result()
        if not isinstance(reply, m.Welcome):
            raise NotConnected(f"unexpected reply to hello: {type(reply).__name__}")
        return reply

    async def _hello(self) -> m.AnyReply:
        endpoint = self._current.endpoint if self._current else ""
        return await self._greeting.greet(
            endpoint, lambda h: self._raw(h, self.connect_timeout), time.monotonic()
        )

    async def _run(self) -> None:
        attempt = 0
        addr = self.servers.first(time.monotonic())
        ever_live = False
        while True:
            if self.status.state is ConnState.RECONNECTING:
                self._move(ConnEvent.RETRY, endpoint=addr.endpoint, attempt=attempt)
            else:
                self._update(endpoint=addr.endpoint, attempt=attempt)
            try:
                welcome = await self._connect_once(addr)
            except (NotConnected, RequestTimeout, ServerRefused) as exc:
                kind = failure_kind(exc, self._lost_kind if self._lost.is_set() else None)
                if kind == sv.DRAINING:  # it takes no new connection: the next one, at once
                    self.servers.mark_draining(addr, time.monotonic())
                self.failures[addr.endpoint] = kind
                await self._close_socket(str(exc))
                attempt += 1
                failed, addr = addr, self.servers.after(addr, time.monotonic())
                now = sv.next_attempt_now(attempt, len(self.addresses))
                delay = 0.0 if now else self.backoff.delay(attempt)
                self._move(
                    ConnEvent.FAILED,
                    attempt=attempt,
                    next_retry_at=time.time() + delay,
                    detail=f"{failed.endpoint}: {exc}",
                )
                await self._sleep(delay)
                continue
            if ever_live:
                self.reconnects += 1
                self._prev_node = self.status.node or ""
            ever_live = True
            streak, attempt = attempt, 0
            self._drop_failed = False
            self._boot = welcome.boot
            self._takes_sends = welcome.sends
            self.failures.pop(addr.endpoint, None)
            self.servers.learn(welcome.peers)
            self._move(ConnEvent.WELCOMED, endpoint=addr.endpoint, attempt=0, node=welcome.node)
            self._live.set()
            if self._on_live is not None:
                self._live_task = asyncio.create_task(self._on_live(welcome), name="on-live")
            reason = await self._watch()
            self._live.clear()
            if self._live_task is not None:
                self._live_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._live_task
                self._live_task = None
            moving = self._lost_kind == sv.DRAINING
            await self._close_socket(reason)
            addr = self.servers.instead_of(addr, time.monotonic())  # itself if it is alone
            if self._drop_failed:
                attempt = streak + 1
            delay = self.backoff.delay(attempt)
            self._move(
                ConnEvent.LOST,
                attempt=attempt,
                next_retry_at=time.time() + delay,
                detail=reason,
                moving=moving,
            )
            await self._sleep(delay)

    async def _watch(self) -> str:
        """Ping while live; return the reason once the connection is lost."""
        window = self.ping_interval * self.liveness
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ping_interval):
                    await self._lost.wait()
            if self._lost.is_set():
                return self._lost_reason
            if self._sock is None:
                return self._lost_reason or "no socket"
            silent = time.monotonic() - self._sock.last_rx
            if silent > window:
                return f"no reply for {silent:.1f} s"
            self._spawn(self._pinger.ping())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _moving(self, reason: str) -> None:
        """The node asked us to move (it is draining, or names where to go):
        say goodbye (its sends in flight are answered first), then reconnect
        to the next node."""
        if self._current is not None and reason not in sv.DIRECTED:
            self.servers.mark_draining(self._current, time.monotonic())
        self._live.clear()  # nothing but the goodbye goes out on this connection now
        with contextlib.suppress(NotConnected, RequestTimeout, ServerRefused):
            await self._raw(m.Bye(), BYE_TIMEOUT_S)
        self._mark_lost(sv.moving_detail(self.status.node or "?", reason), sv.DRAINING)

    def _make_ping(self, read_mark: int) -> m.Ping | None:
        if self._closing or not self._live.is_set():
            return None
        return m.Ping(
            t=int(time.time() * 1000),
            rtt_ms=self.status.rtt_ms,
            reconnects=self.reconnects,
            outbox=self.outbox_depth(),
            read_mark=read_mark,
            prev_node=self._prev_node,
        )

    def _pong(self, reply: m.Pong, rtt_ms: float) -> None:
        self._update(rtt_ms=rtt_ms)
        if self._boot is not None and reply.boot != self._boot:
            self._mark_lost(f"server {reply.node} restarted")
