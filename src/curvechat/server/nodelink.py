"""The node link: one node hands a room's sends to the room's owner.

Each node in cluster mode binds one more ROUTER socket, its link, with
CURVE on (the node's own key pair). Another node connects a DEALER to it
with its own node key pair and sends `Forward` frames: a batch of messages
as the store takes them (and the forwarding node's boot id, for its logs).
The owner commits only for keys of nodes in the registry (each frame's
CURVE key is checked; any other key gets the error ``NotANode``), queues
the batch on its store's group commit in the order the frames came (so one
node's forwards keep their order) and answers `Forwarded` with one ack per
message, or the store error's kind.

Pushes: the owner commits a forwarded message as its own (its origin), so
a room's messages reach the owner's clients from the owner, in commit
order, and every other node's clients from that node's cluster watch, in
revision order (one path per node: pushes of a room never overtake each
other). The forwarding node marks the owner's acks `remote` and does not
push them itself.

`Forwarder.append` is what the node's hot path calls instead of the
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
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import zmq
import zmq.asyncio

from curvechat.protocol import decode_envelope
from curvechat.protocol import messages as m
from curvechat.server.ownership import Ownership, Route
from curvechat.store import Committed, NewMessage, StoreError
from curvechat.tasks import cancel_and_wait

if TYPE_CHECKING:
    from curvechat.server.metrics import NodeMetrics
    from curvechat.server.node import ChatNode

log = logging.getLogger("curvechat.server")
Submit = Callable[[Sequence[NewMessage]], "asyncio.Future[list[Committed]]"]

LINK_DOMAIN = "curvechat-nodes"
FORWARD_TIMEOUT_S = 2.0
MAX_FORWARD = 4096  # messages in one Forward frame
MAX_LINK_FRAME = 64 * 1024 * 1024


class Forward(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: int
    origin: Annotated[str, msgspec.Meta(max_length=64)]
    messages: Annotated[list[NewMessage], msgspec.Meta(max_length=MAX_FORWARD)]


class Forwarded(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: int
    results: list[Committed] = []
    error: str = ""  # the store error's kind when nothing was committed
    message: str = ""


class _Id(msgspec.Struct):
    id: int


_id_dec = msgspec.msgpack.Decoder(_Id)
_forward_dec = msgspec.msgpack.Decoder(Forward)
_forwarded_dec = msgspec.msgpack.Decoder(Forwarded)
_enc = msgspec.msgpack.Encoder()


async def _nothing(_batch: list[NewMessage], _acks: list[Committed]) -> None:
    return None


def _sent(done: Any) -> BaseException | None:
    """The error of a NOBLOCK send on an asyncio socket (None if it was sent).
    Such a send is finished when it returns; it goes through the asyncio
    socket, not a plain one, because a send may consume the edge of the
    socket's FD and only the asyncio socket then wakes its waiting reader."""
    return done.exception() if done.done() else None


class LinkRefused(StoreError):
    """The owner did not commit a forwarded batch (the message says why)."""

    code = "link_refused"

    def __init__(self, message: str, *, owner_failed: bool = True) -> None:
        super().__init__(message)
        # True: the owner cannot commit (do not ask it again for a while);
        # False: the link is not up (falling back costs nothing) or a room of
        # the batch is not there (the local commit says so to the caller).
        self.owner_failed = owner_failed


class NodeKeys:
    """The registered nodes' keys, and the ZAP credentials provider of the
    link's domain. The handshake admits any key (a node may connect before
    the owner has read it from the registry, and libzmq does not retry a
    refused handshake); every frame is then checked against `allowed`."""

    def __init__(self) -> None:
        self.allowed: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        return True


def bind_link(
    ctx: zmq.asyncio.Context, public_key: bytes, secret_key: bytes, bind: str
) -> tuple[zmq.asyncio.Socket, str]:
    """The link's ROUTER socket, bound; returns it and the bound endpoint."""
    sock = ctx.socket(zmq.ROUTER)
    sock.curve_server = True
    sock.curve_secretkey = secret_key
    sock.curve_publickey = public_key
    sock.zap_domain = LINK_DOMAIN.encode()
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_LINK_FRAME)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
    sock.bind(bind)
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
        self._task: asyncio.Task[None] | None = None
        self._replies: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._serve(), name="node-link")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for task in list(self._replies):
            await cancel_and_wait(task)

    async def _serve(self) -> None:
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            if len(frames) != 2:
                continue
            rid, payload = frames[0].bytes, frames[1]
            key = str(payload.get("User-Id")).encode()
            if key not in self.keys.allowed:
                # Only the id is read of a frame from a key that is not a node's.
                try:
                    fid = _id_dec.decode(payload.buffer).id
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                reply = Forwarded(fid, error="NotANode", message="not a registered node's key")
                self._reply(rid, reply)
                continue
            try:
                fwd = _forward_dec.decode(payload.buffer)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("node link: bad frame: %s", exc)
                continue
            # Committed as the owner's own: the owner pushes them to its
            # clients (below) and every other node's watch to theirs.
            batch = [msgspec.structs.replace(x, origin="") for x in fwd.messages]
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
        _sent(self.sock.send_multipart([rid, _enc.encode(reply)], flags=zmq.NOBLOCK))


class _Peer:
    def __init__(self, name: str, sock: zmq.asyncio.Socket) -> None:
        self.name = name
        self.sock = sock
        self.reader: asyncio.Task[None] | None = None


class Forwarder:
    """The forwarding side, and the node's `append_messages` in cluster mode."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        public_key: bytes,
        secret_key: bytes,
        ownership: Ownership,
        submit: Submit,
        origin: str,
    ) -> None:
        self._ctx = ctx
        self._public = public_key
        self._secret = secret_key
        self.ownership = ownership
        self.submit = submit
        self.origin = origin
        self._peers: dict[str, _Peer] = {}
        self._links: dict[str, tuple[str, bytes]] = {}  # name -> (endpoint, key)
        self._pending: dict[int, asyncio.Future[list[Committed]]] = {}
        self._ids = itertools.count(1)
        self.forwarded = 0  # messages sent to an owner
        self.fallbacks = 0  # messages committed here after the owner failed
        self.metrics: NodeMetrics | None = None

    def set_links(self, links: dict[str, tuple[str, bytes]]) -> None:
        """The other nodes' link endpoints and keys, from the registry."""
        for name in list(self._peers):
            if links.get(name) != self._links.get(name):
                self._close(name)
        self._links = dict(links)
        for name in links:  # connected now, so that the first forward finds it up
            self._peer(name)

    async def close(self) -> None:
        for name in list(self._peers):
            self._close(name)
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    def _close(self, name: str) -> None:
        peer = self._peers.pop(name)
        if peer.reader is not None:
            peer.reader.cancel()
        peer.sock.close(linger=0)

    def _peer(self, name: str) -> _Peer | None:
        peer = self._peers.get(name)
        if peer is not None:
            return peer
        link = self._links.get(name)
        if link is None:
            return None
        endpoint, key = link
        sock = self._ctx.socket(zmq.DEALER)
        sock.curve_secretkey = self._secret
        sock.curve_publickey = self._public
        sock.curve_serverkey = key
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for a link not up
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_LINK_FRAME)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        sock.connect(endpoint)
        peer = self._peers[name] = _Peer(name, sock)
        peer.reader = asyncio.create_task(self._read(peer), name=f"node-link-{name}")
        return peer

    async def _read(self, peer: _Peer) -> None:
        while True:
            payload = await peer.sock.recv()
            try:
                reply = _forwarded_dec.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("node link: bad reply from %s", peer.name)
                continue
            future = self._pending.pop(reply.id, None)
            if future is None or future.done():
                continue
            if reply.error:
                future.set_exception(
                    LinkRefused(
                        f"{reply.error}: {reply.message}",
                        owner_failed=reply.error not in ("NoSuchRoom", "NotANode"),
                    )
                )
            else:
                future.set_result(reply.results)

    def _forward(self, name: str, batch: Sequence[NewMessage]) -> asyncio.Future[list[Committed]]:
        future: asyncio.Future[list[Committed]] = asyncio.get_running_loop().create_future()
        peer = self._peer(name)
        if peer is None:
            future.set_exception(LinkRefused(f"no link to {name}", owner_failed=False))
            return future
        fid = next(self._ids)
        frame = _enc.encode(Forward(fid, self.origin, list(batch)))
        error = _sent(peer.sock.send(frame, flags=zmq.NOBLOCK))
        if error is not None:  # EAGAIN: the link is not up (IMMEDIATE); libzmq reconnects
            future.set_exception(LinkRefused(f"link to {name}: {error}", owner_failed=False))
            return future
        self._pending[fid] = future
        future.add_done_callback(lambda _f: self._pending.pop(fid, None))
        return future

    async def append(self, batch: Sequence[NewMessage]) -> list[Committed]:
        """Commit `batch` here or at the rooms' owners; one ack per message, in order."""
        now = time.monotonic()
        parts: dict[str | None, list[int]] = {}
        route = self.ownership.route
        for i, msg in enumerate(batch):
            how, owner = route(msg.room, now)
            parts.setdefault(owner if how is Route.FORWARD else None, []).append(i)
        if len(parts) == 1 and None in parts:
            return await self.submit(batch)
        # Everything is queued (locally or on a link) before the first await,
        # so the order of calls is the order of commits per room.
        queued = []
        for owner, idx in parts.items():
            part = [batch[i] for i in idx]
            fut = self.submit(part) if owner is None else self._forward(owner, part)
            queued.append((owner, idx, part, fut))
        results: list[Committed | None] = [None] * len(batch)
        failed: BaseException | None = None
        for owner, idx, part, fut in queued:
            # Every part is settled even when one failed: each forward's
            # outcome is taken (none is left to fail unseen), and the parts
            # committed are committed; the caller gets the first error.
            try:
                acks = await fut if owner is None else await self._settle(owner, part, fut)
            except StoreError as exc:
                failed = failed or exc
                continue
            for i, ack in zip(idx, acks, strict=True):
                results[i] = ack
        if failed is not None:
            raise failed
        return [r for r in results if r is not None]

    async def _settle(
        self, owner: str, part: list[NewMessage], fut: asyncio.Future[list[Committed]]
    ) -> list[Committed]:
        try:
            async with asyncio.timeout(FORWARD_TIMEOUT_S):
                acks = await asyncio.shield(fut)
            if len(acks) != len(part):
                raise LinkRefused(f"{owner} answered {len(acks)} acks for {len(part)} messages")
            self.ownership.link_worked(owner)
            self.forwarded += len(part)
            if self.metrics is not None:
                self.metrics.forwarded.labels("out").inc(len(part))
            return [msgspec.structs.replace(a, remote=True) for a in acks]
        except TimeoutError:
            fut.cancel()
            self.ownership.link_failed(owner, time.monotonic())
            log.warning(
                "node link to %s: no answer in %g s; committing here", owner, FORWARD_TIMEOUT_S
            )
        except LinkRefused as exc:
            if exc.owner_failed:
                self.ownership.link_failed(owner, time.monotonic())
                log.warning("node link to %s: %s; committing here", owner, exc)
            else:  # not up: every send would say so (the fallback counter does)
                log.debug("node link to %s: %s; committing here", owner, exc)
        self.fallbacks += len(part)
        if self.metrics is not None:
            self.metrics.forwarded.labels("fallback").inc(len(part))
        # A duplicate here may be the owner's late commit of this very
        # forward: it has the owner's origin, so this node's watch pushes it.
        return await self.submit(part)


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

    def start(self, bind: str, advertise_host: str) -> str:
        """Bind, serve, and route the node's sends; returns the advertised endpoint."""
        node = self.node
        ctx = node.curve_domain(LINK_DOMAIN, self.keys)
        sock, bound = bind_link(ctx, node.public_key, node.secret_key, bind)
        self.server = LinkServer(sock, self._submit, self.keys)
        self.server.metrics = node.metrics
        self.server.on_committed = self._push_committed
        self.server.start()
        self.forwarder = Forwarder(
            ctx, node.public_key, node.secret_key, self.ownership, self._submit, node.boot
        )
        self.forwarder.metrics = node.metrics
        node.append_messages = self.forwarder.append
        port = bound.rsplit(":", 1)[1]
        self.endpoint = f"tcp://{advertise_host}:{port}"
        return self.endpoint

    async def _push_committed(self, batch: list[NewMessage], acks: list[Committed]) -> None:
        """What this node committed for another one, to its own clients in
        commit order (its watch skips its own commits)."""
        for msg, ack in zip(batch, acks, strict=True):
            if ack.stale or ack.behind:
                continue
            try:
                envelope = decode_envelope(msg.envelope)
            except Exception:  # checked by the forwarding node: not expected
                log.warning("node link: undecodable envelope in %s", msg.room)
                continue
            stored = m.StoredMessage(seq=ack.seq, ts=ack.ts_ms, envelope=envelope)
            await self.node.push_remote(msg.room, stored)

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
