"""The node link: one node hands a room's sends to the room's owner.

Each node in cluster mode binds one more ROUTER socket, its link, with
CURVE on (the node's own key pair). Another node connects a DEALER to it
with its own node key pair and sends `Forward` frames: a batch of messages
as the store takes them (and the forwarding node's boot id, for its logs).
The owner commits only for keys of nodes in the registry (each frame's
CURVE key is checked; any other key gets the error ``NotANode``) and only
envelopes that decode as an `Envelope` of their message's room, sender and
txn (else ``BadEnvelope``, nothing of the frame committed: the owner pushes
what it stored as it is, `protocol.message_push`), queues
the batch on its store's group commit in the order the frames came (so one
node's forwards keep their order) and answers `Forwarded` with one ack per
message, or the store error's kind. An empty `Forward` is a ping (see
server/linkwire.py), answered at once; while the owner reaches no etcd
member (server/storeguard.py) it answers pings and forwards with the error
``CutOff`` instead of queueing them on a store that cannot commit, and
while its round trips to etcd are slow it answers pings ``Slow`` (and
still commits the forwards that come).

Pushes: the owner commits a forwarded message as its own (its origin), so
a room's messages reach the owner's clients from the owner, in commit
order, and every other node's clients from that node's cluster watch, in
revision order (one path per node: pushes of a room never overtake each
other). The forwarding node marks the owner's acks `remote` and does not
push them itself.

`Forwarder.append` (server/forwarder.py; the frames are in
server/linkwire.py) is what the node's hot path calls instead of the
store's `append_messages`: it routes each message by `Ownership.route`,
forwards the owners' parts, queues the rest on the local store, and falls
back to committing locally when the owner does not answer within
FORWARD_TIMEOUT_S or answers with an error (the head compare-and-swap
fences a second writer; idempotency keys keep a message that both commit
stored once). A message the owner commits after the forwarding node gave
up on it has the owner's origin, so the forwarding node's watch delivers
it to that node's clients.

What this module must never do: decide ownership (ownership.py does),
commit a frame from a key that is not a registered node's, or forward a
message a second time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from curvechat.protocol import RemoteProtocolError, decode_envelope
from curvechat.protocol.errors import UNDECODABLE
from curvechat.server.forwarder import Forwarder, link_heartbeats
from curvechat.server.linkwire import (
    BAD_ENVELOPE,
    CUT_OFF,
    LINK_DOMAIN,
    MAX_LINK_FRAME,
    SLOW,
    Forwarded,
    Submit,
    enc,
    forward_dec,
    id_dec,
    sent,
)
from curvechat.server.ownership import Ownership
from curvechat.server.router import bind_or_close, binds_ipv6, open_monitor
from curvechat.server.silent import Silent
from curvechat.store import Committed, NewMessage, StoredRow, StoreError
from curvechat.tasks import cancel_and_wait
from curvechat.tcpfd import peer_of, shut_down, source_fd

if TYPE_CHECKING:
    from curvechat.server.metrics import NodeMetrics
    from curvechat.server.node import ChatNode

log = logging.getLogger("curvechat.server")

REFUSE_AFTER_S = 1.0
"""A connection whose key is not a node's is shut down this long after its
first frame (time for its ``NotANode`` answer to leave)."""
SWEEP_S = 1.0  # how often silent connections are looked for
MAX_UNPROVEN = 64
"""Link connections that have not sent a node's frame yet, at most: past it
the oldest are shut down (nodes are a few, and each pings at once)."""
YIELD_EVERY = 64
"""Frames the link reads before it lets the event loop run: a frame waiting
in the socket is read without a pause, so a stranger streaming small frames
kept the loop from everything else (the node's clients, its lease)."""
GUARDED = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


async def _nothing(_batch: list[NewMessage], _acks: list[Committed]) -> None:
    return None


class NodeKeys:
    """The registered nodes' keys, and the ZAP credentials provider of the
    link's domain. The handshake admits any key (a node may connect before
    the owner has read it from the registry, and libzmq does not retry a
    refused handshake); every frame is then checked against `allowed`, and
    the connection of a key that is not a node's is shut down once it has
    its answer (`LinkServer.guard`)."""

    def __init__(self) -> None:
        self.allowed: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        return True


def bind_link(
    ctx: zmq.asyncio.Context, public_key: bytes, secret_key: bytes, bind: str
) -> tuple[zmq.asyncio.Socket, str]:
    """The link's ROUTER socket, bound; returns it and the bound endpoint.
    Its routing ids are libzmq's counter, seeded when the node's ROUTER was
    made (server/silent.py)."""
    sock = ctx.socket(zmq.ROUTER)
    sock.ipv6 = binds_ipv6(bind)
    sock.curve_server = True
    sock.curve_secretkey = secret_key
    sock.curve_publickey = public_key
    sock.zap_domain = LINK_DOMAIN.encode()
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_LINK_FRAME)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    link_heartbeats(sock)
    bind_or_close(sock, bind)
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)


class LinkServer:
    """The owner's side: commits what other nodes forward."""

    def __init__(self, sock: zmq.asyncio.Socket, submit: Submit, keys: NodeKeys) -> None:
        self.sock = sock
        self.keys = keys
        self.submit = submit
        self.metrics: NodeMetrics | None = None
        #: pushes what was committed to this node's clients (NodeLink sets it)
        self.on_committed: Callable[[list[NewMessage], list[Committed]], Awaitable[None]] = _nothing
        #: whether the node reaches no etcd member now (NodeLink sets it)
        self.cut_off: Callable[[], bool] = lambda: False
        #: whether its round trips to etcd are slow now (NodeLink sets it)
        self.slow: Callable[[], bool] = lambda: False
        self._task: asyncio.Task[None] | None = None
        self._guard: asyncio.Task[None] | None = None
        self._replies: set[asyncio.Task[None]] = set()
        self.silent = Silent()
        """The link's connections that have not spoken (server/silent.py)."""
        self._nodes: set[int] = set()  # connections (fds) that sent a node's frame
        self._refusing: set[int] = set()  # connections to shut down once answered
        self._port = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._serve(), name="node-link")

    def guard(self, monitor: zmq.asyncio.Socket, port: int) -> None:
        """Shut down the link's connections that are no node's, as the
        node's ROUTER does its clients' (server/silent.py): one that sends
        nothing within SILENT_S of being accepted, and one whose key is not
        a registered node's once its frame is answered; and past
        MAX_UNPROVEN connections that have sent no node's frame, the oldest
        of them. Anyone can make a CURVE handshake: a connection held open
        holds a file descriptor, queues, and a routing id it may have
        named (libzmq aborts on a duplicate)."""
        self._port = port
        self._guard = asyncio.create_task(self._watch(monitor), name="node-link-guard")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await cancel_and_wait(self._guard)
        for task in list(self._replies):
            await cancel_and_wait(task)

    async def _serve(self) -> None:
        read = 0
        while True:
            read += 1
            if read % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            frames = await self.sock.recv_multipart(copy=False)
            if len(frames) != 2:
                continue
            rid, payload = frames[0].bytes, frames[1]
            key = str(payload.get("User-Id")).encode()
            if key not in self.keys.allowed:
                self._refuse(source_fd(payload))
                # Only the id is read of a frame from a key that is not a node's.
                try:
                    fid = id_dec.decode(payload.buffer).id
                except UNDECODABLE:
                    continue
                reply = Forwarded(fid, error="NotANode", message="not a registered node's key")
                self._reply(rid, reply)
                continue
            fd = source_fd(payload)
            if fd not in self._nodes:
                self._nodes.add(fd)
                self.silent.closed(fd)  # proven: never shut as one of the crowd
            try:
                fwd = forward_dec.decode(payload.buffer)
            except UNDECODABLE as exc:
                log.warning("node link: bad frame: %s", exc)
                continue
            if self.cut_off():
                reply = Forwarded(fwd.id, error=CUT_OFF, message="the owner reaches no etcd member")
                self._reply(rid, reply)
                continue
            bad = next((x for x in fwd.messages if not _well_formed(x)), None)
            if bad is not None:
                # Pushed as stored (codec.message_push): nothing unchecked is stored.
                log.warning("node link: a forward with an invalid envelope in %s", bad.room[:80])
                reply = Forwarded(fwd.id, error=BAD_ENVELOPE, message="invalid envelope")
                self._reply(rid, reply)
                continue
            if not fwd.messages:  # a ping
                slow = SLOW if self.slow() else ""
                self._reply(rid, Forwarded(fwd.id, error=slow))
                continue
            # Committed as the owner's own: the owner pushes them to its
            # clients (below) and every other node's watch to theirs.
            batch = [
                x if not x.origin else msgspec.structs.replace(x, origin="") for x in fwd.messages
            ]
            # Queued now, in the order the frames came (group commit keeps it).
            try:
                future = self.submit(batch)
            except StoreError as exc:  # the store is not open (stopping)
                self._reply(rid, Forwarded(fwd.id, error=type(exc).__name__, message=str(exc)))
                continue
            task = asyncio.ensure_future(self._answer(rid, fwd.id, future, batch))
            self._replies.add(task)
            task.add_done_callback(self._replies.discard)

    async def _answer(
        self,
        rid: bytes,
        fid: int,
        future: asyncio.Future[list[Committed]],
        batch: list[NewMessage],
    ) -> None:
        try:
            results = await future
        except StoreError as exc:
            self._reply(rid, Forwarded(fid, error=type(exc).__name__, message=str(exc)[:300]))
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("node link: commit failed")
            self._reply(rid, Forwarded(fid, error="internal", message="internal error"))
            return
        if self.metrics is not None:
            self.metrics.forwarded.labels("in").inc(len(batch))
        self._reply(rid, Forwarded(fid, results=results))
        await self.on_committed(batch, results)

    def _reply(self, rid: bytes, reply: Forwarded) -> None:
        # An error (the forwarding node is gone) needs nothing: it fell back.
        sent(self.sock.send_multipart([rid, enc.encode(reply)], flags=zmq.NOBLOCK))

    def _refuse(self, fd: int) -> None:
        """Shut connection `fd` down REFUSE_AFTER_S from now (if it is still
        the connection from the same address), once; a node whose key this
        node has not read from the registry yet connects again (DEALER)."""
        if not self._port or fd < 0 or fd in self._refusing:
            return
        self._refusing.add(fd)
        peer = peer_of(fd)

        def shut() -> None:
            self._refusing.discard(fd)
            if peer is not None and shut_down(fd, self._port, peer) and self.metrics:
                self.metrics.auth_failures.labels("not_a_node").inc()

        asyncio.get_running_loop().call_later(REFUSE_AFTER_S, shut)

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        swept = time.monotonic()
        try:
            while True:
                if await monitor.poll(SWEEP_S * 1000):
                    event = parse_monitor_message(await monitor.recv_multipart())
                    fd = int(event["value"])
                    if event["event"] == zmq.EVENT_ACCEPTED:
                        self.silent.accepted(fd, time.monotonic())
                        crowd = self.silent.crowded(MAX_UNPROVEN)
                        self._shut(crowd, "not_a_node")
                    elif event["event"] == zmq.EVENT_DISCONNECTED:
                        self.silent.closed(fd)
                        self._nodes.discard(fd)
                now = time.monotonic()
                if now - swept >= SWEEP_S:
                    swept = now
                    self._shut(self.silent.overdue(self._nodes, now), "silent")
        finally:
            monitor.close(linger=0)

    def _shut(self, fds: list[int], reason: str) -> None:
        closed = sum(shut_down(fd, self._port) for fd in fds)
        if closed and self.metrics is not None:
            self.metrics.auth_failures.labels(reason).inc(closed)


def _well_formed(msg: NewMessage) -> bool:
    """Whether a forwarded message's envelope is an `Envelope` of its room,
    sender and txn (as the forwarding node checked its client's send)."""
    try:
        env = decode_envelope(msg.envelope)
    except RemoteProtocolError:
        return False
    return (env.room, env.sender, env.txn) == (msg.room, msg.sender, msg.txn)


class NodeLink:
    """The node's link in cluster mode: its server, its forwarder, the keys
    it admits and its view of ownership, kept in step with the registry."""

    def __init__(self, node: ChatNode, submit: Submit) -> None:
        self.node = node
        self.keys = NodeKeys()
        self.ownership = Ownership(node.node_name)
        self._submit = submit
        self.server: LinkServer | None = None
        self.forwarder: Forwarder | None = None
        self.endpoint = ""

    def start(self, bind: str, advertise_host: str, advertise: str | None = None) -> str:
        """Bind, serve, and route the node's sends; returns the advertised
        endpoint: `advertise` if given, else `advertise_host` and the bound port."""
        node = self.node
        ctx = node.curve_domain(LINK_DOMAIN, self.keys)
        sock, bound = bind_link(ctx, node.public_key, node.secret_key, bind)
        self.server = LinkServer(sock, self._submit, self.keys)
        self.server.metrics = node.metrics
        self.server.on_committed = self._push_committed
        self.server.cut_off = lambda: node.store_cut_off
        self.server.slow = lambda: node.store_slow
        self.server.start()
        self.server.guard(open_monitor(ctx, sock, GUARDED), int(bound.rsplit(":", 1)[1]))
        self.forwarder = Forwarder(
            ctx, node.public_key, node.secret_key, self.ownership, self._submit, node.boot
        )
        self.forwarder.metrics = node.metrics
        self.forwarder.slow_here = lambda: node.store_slow or node.store_cut_off
        self.forwarder.cut_off_here = lambda: node.store_cut_off
        self.forwarder.start()
        node.append_messages = self.forwarder.append
        port = bound.rsplit(":", 1)[1]
        self.endpoint = advertise or f"tcp://{advertise_host}:{port}"
        return self.endpoint

    async def _push_committed(self, batch: list[NewMessage], acks: list[Committed]) -> None:
        """What this node committed for another one, to its own clients in
        commit order (its watch skips its own commits)."""
        # A duplicate was pushed when it was first committed (here, or by
        # this node's watch if the forwarding node committed it). The
        # envelopes as forwarded: each was checked when its frame came in
        # (`_well_formed`).
        rows = [
            StoredRow(msg.room, ack.seq, ack.ts_ms, msg.sender, msg.txn, msg.envelope)
            for msg, ack in zip(batch, acks, strict=True)
            if not (ack.stale or ack.behind or ack.duplicate)
        ]
        if rows:
            await self.node.push_remote(rows)

    def update(self, me_up: bool, nodes: Sequence[tuple[str, str, str, bytes]]) -> None:
        """The registry's nodes as (name, status, link endpoint, z85 key)."""
        self.keys.allowed = {key for _n, _s, link, key in nodes if link}
        live = [name for name, status, link, _k in nodes if link and status == "up"]
        if not me_up:
            live = [n for n in live if n != self.node.node_name]
        if self.ownership.set_live(live):
            log.info("node link: rooms owned over %d live node(s): %s", len(live), ", ".join(live))
        if self.forwarder is not None:
            self.forwarder.set_links(
                {
                    name: (link, key)
                    for name, _s, link, key in nodes
                    if link and name != self.node.node_name
                }
            )

    async def stop(self) -> None:
        self.node.append_messages = self.node.store.append_messages
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.server is not None:
            await self.server.stop()
            self.server.sock.close(linger=0)
