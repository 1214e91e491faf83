"""The forwarding side of the node link: the node's `append_messages` in
cluster mode.

`Forwarder.append` routes each message by `Ownership.route`, forwards the
owners' parts over a DEALER per owner (CURVE, the node's own key pair),
queues the rest on the local store, and falls back to committing locally
when the owner does not answer within FORWARD_TIMEOUT_S or answers with an
error (the head compare-and-swap fences a second writer; idempotency keys
keep a message that both commit stored once). A message the owner commits
after this node gave up on it has the owner's origin, so this node's watch
delivers it to this node's clients. The owner's acks are marked `remote`:
the owner and the watches push them, this node does not.

The heartbeat: every PING_S each link is pinged (an empty `Forward`). A
link that answers nothing for SILENT_S (cut, or its owner stopped), or
whose owner answers that it reaches no etcd member, is unreachable: the
forwards waiting on it give up at once (their messages are committed here,
as after a timeout), and its rooms' sends go to their stand-in (ownership.py)
until it answers a ping again. So a cut link costs its forwards about
SILENT_S, not FORWARD_TIMEOUT_S, and nothing is sent into it while it stays
cut. An owner that answers pings ``Slow`` (its round trips to etcd are
slow) gets no new forward either (its rooms' sends go to their stand-in),
but keeps the ones in flight, which it commits; it stays usable as a
stand-in of last resort. This node tells `Ownership` each beat whether it
is slow or cut off itself (`slow_here`, `cut_off_here`), so that it
forwards its own rooms' sends to their stand-in too.

Order: the messages of the forwards given up are queued on the local store
in the order they were sent, before any send taken after. When the
stand-in is another node, a later send of the same sender can reach that
node's store before an earlier one is committed here (or by a slow owner);
the store then refuses it as ``behind`` (it names its predecessor) and the
client's outbox resends it after the earlier one: late, never out of
order.

What this module must never do: decide ownership (ownership.py does), or
forward a message a second time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import msgspec
import zmq
import zmq.asyncio

from curvechat.heartbeats import beat
from curvechat.protocol.errors import UNDECODABLE
from curvechat.server.linkwire import (
    BAD_ENVELOPE,
    CUT_OFF,
    FORWARD_TIMEOUT_S,
    MAX_LINK_FRAME,
    PING_S,
    SILENT_S,
    SLOW,
    Forward,
    Forwarded,
    LinkRefused,
    Submit,
    enc,
    forwarded_dec,
    sent,
)
from curvechat.server.ownership import Ownership, Route
from curvechat.store import Committed, NewMessage, StoreError
from curvechat.tasks import cancel_and_wait

if TYPE_CHECKING:
    from curvechat.server.metrics import NodeMetrics

log = logging.getLogger("curvechat.server")


def link_heartbeats(sock: zmq.Socket[bytes] | zmq.asyncio.Socket) -> None:
    """ZMTP heartbeats on either end of a node link: every 2 s, the peer
    dropped after 6 s without an answer. Its inbound queue is unbounded
    (`curvechat.heartbeats`): what bounds it is what the other node has
    in flight, its clients' windows of sends and the answers to them."""
    beat(sock, every_ms=2000, timeout_ms=6000)


class _Peer:
    def __init__(self, name: str, sock: zmq.asyncio.Socket) -> None:
        self.name = name
        self.sock = sock
        self.reader: asyncio.Task[None] | None = None
        self.answered = time.monotonic()  # when it last answered anything
        self.answers = 0  # how many answers (to pings and forwards) came
        self.cut_off = False  # its last answer: it reaches no etcd member
        self.slow = False  # its last answer to a ping: its round trips to etcd are slow
        # Its forwards not yet answered (id -> messages, future), in send order.
        self.pending: dict[int, tuple[Sequence[NewMessage], asyncio.Future[list[Committed]]]] = {}


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
        self._unusable: dict[str, tuple[str, bytes]] = {}  # links already warned about
        self._ids = itertools.count(1)
        self.forwarded = 0  # messages sent to an owner
        self.fallbacks = 0  # messages committed here in place of their rooms' owner
        self.metrics: NodeMetrics | None = None
        #: whether this node should not own rooms now (NodeLink sets it)
        self.slow_here: Callable[[], bool] = lambda: False
        #: whether this node reaches no etcd member now (NodeLink sets it)
        self.cut_off_here: Callable[[], bool] = lambda: False
        self._heartbeat: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Ping every link every PING_S (see the module docstring)."""
        self._heartbeat = asyncio.create_task(self._beat_loop(), name="node-link-heartbeat")

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(PING_S)
            try:
                self.beat(time.monotonic())
            except Exception:  # a bug: say so, keep beating
                log.exception("node link heartbeat failed")

    def beat(self, now: float) -> None:
        """Say whether this node is slow, judge each link by its last
        answer, then ping it (a negative id: its answer settles nothing)."""
        me = self.ownership.me
        self.ownership.cut_off_here = self.cut_off_here()
        if self.ownership.set_slow(me, self.slow_here()):
            how = "to their stand-ins" if me in self.ownership.slow else "here again"
            log.info("this node's rooms' sends are committed %s", how)
        for peer in list(self._peers.values()):
            self._judge(peer, now)
            ping = enc.encode(Forward(-next(self._ids), self.origin, []))
            sent(peer.sock.send(ping, flags=zmq.NOBLOCK))  # EAGAIN: not up, so silent

    def _judge(self, peer: _Peer, now: float) -> None:
        if self.ownership.set_slow(peer.name, peer.slow):
            if peer.slow:
                # Its forwards in flight are left to it: it commits them,
                # slowly (or they time out and are committed here).
                log.warning(
                    "node link to %s: its etcd is slow, it says; its rooms go to stand-ins",
                    peer.name,
                )
            else:
                log.info("node link to %s: its etcd is quick again; forwarding to it", peer.name)
        silent = now - peer.answered > SILENT_S
        reachable = not (silent or peer.cut_off)
        if not self.ownership.set_reachable(peer.name, reachable):
            return
        if reachable:
            log.info("node link to %s answers again: forwarding to it", peer.name)
            return
        why = "reaches no etcd member" if peer.cut_off else f"no answer for {SILENT_S:g} s"
        log.warning("node link to %s: %s; its rooms' sends go to a stand-in", peer.name, why)
        self._give_up(peer, why)

    def _give_up(self, peer: _Peer, why: str) -> None:
        """Commit here what waits on `peer`'s link: each forward's messages
        are queued on the local store now, in the order they were sent, so
        that no send committed here from now on overtakes them (see the
        module docstring for sends that go to another stand-in)."""
        for part, future in list(peer.pending.values()):
            if future.done():
                continue
            refused = LinkRefused(f"link to {peer.name}: {why}", owner_failed=False)
            try:
                refused.local = self.submit(part)
            except StoreError as exc:  # the store is not open (stopping)
                future.set_exception(exc)
                continue
            future.set_exception(refused)

    def set_links(self, links: dict[str, tuple[str, bytes]]) -> None:
        """The other nodes' link endpoints and keys, from the registry."""
        for name in list(self._peers):
            if links.get(name) != self._links.get(name):
                self._close(name)
        self._links = dict(links)
        for name in links:  # connected now, so that the first forward finds it up
            self._peer(name)

    async def close(self) -> None:
        await cancel_and_wait(self._heartbeat)
        self._heartbeat = None
        for name in list(self._peers):
            self._close(name)

    def _close(self, name: str) -> None:
        peer = self._peers.pop(name)
        self.ownership.set_reachable(name, True)  # a new link is judged afresh
        self._give_up(peer, "its link was replaced")
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
        try:
            sock.ipv6 = True
            sock.curve_secretkey = self._secret
            sock.curve_publickey = self._public
            sock.curve_serverkey = key
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for a link not up
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_LINK_FRAME)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            link_heartbeats(sock)
            sock.connect(endpoint)
        except (zmq.ZMQError, ValueError, TypeError) as exc:
            # A registry entry libzmq cannot use (another node's bad
            # --link-advertise): no link to it; its rooms' sends are
            # committed here (the head CAS fences the two writers).
            sock.close(linger=0)
            if self._unusable.get(name) != link:
                self._unusable[name] = link
                log.warning("node link to %s: cannot use %r: %s", name, endpoint, exc)
            return None
        peer = self._peers[name] = _Peer(name, sock)
        peer.reader = asyncio.create_task(self._read(peer), name=f"node-link-{name}")
        return peer

    async def _read(self, peer: _Peer) -> None:
        while True:
            payload = await peer.sock.recv()
            try:
                reply = forwarded_dec.decode(payload)
            except UNDECODABLE:
                log.warning("node link: bad reply from %s", peer.name)
                continue
            # Any answer (to a ping or a forward) says the link is up; the
            # answered forward is settled first, with its own outcome.
            self._settle_reply(peer, reply)
            peer.answered = time.monotonic()
            peer.answers += 1
            peer.cut_off = reply.error == CUT_OFF
            if reply.id < 0 and reply.error != CUT_OFF:  # a ping's answer
                peer.slow = reply.error == SLOW
            self._judge(peer, peer.answered)

    def _settle_reply(self, peer: _Peer, reply: Forwarded) -> None:
        """Resolve the forward `reply` answers (a ping's answer resolves nothing)."""
        _part, future = peer.pending.pop(reply.id, (None, None))
        if future is None or future.done():
            return
        if reply.error:
            future.set_exception(
                LinkRefused(
                    f"{reply.error}: {reply.message}",
                    owner_failed=reply.error not in ("NoSuchRoom", "NotANode", BAD_ENVELOPE),
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
        frame = enc.encode(Forward(fid, self.origin, list(batch)))
        error = sent(peer.sock.send(frame, flags=zmq.NOBLOCK))
        if error is not None:  # EAGAIN: the link is not up (IMMEDIATE); libzmq reconnects
            future.set_exception(LinkRefused(f"link to {name}: {error}", owner_failed=False))
            return future
        peer.pending[fid] = (batch, future)
        future.add_done_callback(lambda _f: peer.pending.pop(fid, None))
        return future

    async def append(self, batch: Sequence[NewMessage]) -> list[Committed]:
        """Commit `batch` here or at the rooms' owners; one ack per message, in order."""
        now = time.monotonic()
        parts: dict[str | None, list[int]] = {}
        route = self.ownership.route
        instead = 0
        for i, msg in enumerate(batch):
            how, owner = route(msg.room, now)
            parts.setdefault(owner if how is Route.FORWARD else None, []).append(i)
            instead += how is Route.INSTEAD
        if instead:
            self._fell_back(instead)
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

    def _fell_back(self, n: int) -> None:
        """`n` messages committed here in place of their rooms' owner."""
        self.fallbacks += n
        if self.metrics is not None:
            self.metrics.forwarded.labels("fallback").inc(n)

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
            if exc.local is not None:  # given up by the heartbeat, already queued here
                self._fell_back(len(part))
                return await exc.local
            if exc.owner_failed:
                self.ownership.link_failed(owner, time.monotonic())
                log.warning("node link to %s: %s; committing here", owner, exc)
            else:  # not up: every send would say so (the fallback counter does)
                log.debug("node link to %s: %s; committing here", owner, exc)
        self._fell_back(len(part))
        # A duplicate here may be the owner's late commit of this very
        # forward: it has the owner's origin, so this node's watch pushes it.
        return await self.submit(part)
