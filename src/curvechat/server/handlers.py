"""What the server does for each request: the table from request type to
handler, the session requests (hello, register, lookup, announce), and the
message requests (send, history, sync, key packets) with their access rules
and commits. The membership requests (rooms, ops, epochs) are the
`RoomHandlers` half, in server/room_handlers.py; the contact requests the
`ContactHandlers` half, in server/contact_handlers.py.

Refusals are `Refusal(code, message)`; the node turns them into `Error`
replies. Nothing here touches sockets: replies are returned, pushes go
through `node.push`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import zmq.utils.z85

from curvechat.crypto.errors import BadSignature, MembershipError
from curvechat.crypto.identity import transport_statement, verify
from curvechat.protocol import (
    ErrorCode,
    ProtocolError,
    decode_member_op,
    encode,
)
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_PAGE, REPLY_BUDGET_BYTES
from curvechat.server.contact_handlers import ContactHandlers
from curvechat.server.epochpace import EpochPace
from curvechat.server.peerdir import PeerDirectory, RecordRefused
from curvechat.server.ratelimit import RegistrationPace
from curvechat.server.room_handlers import Refusal, RoomHandlers, store_refusal
from curvechat.server.rooms import RoomView
from curvechat.server.stored import fit_rows, push_stored, stored_message
from curvechat.store import (
    ChangeTooLarge,
    KeyTaken,
    NameTaken,
    NewMessage,
    NoSuchRoom,
    StoredRow,
    StoreUnavailable,
)
from curvechat.tcpfd import peer_of

OUT_OF_ORDER_TEXT = (
    "the message sent before this one (after) is not stored; nothing was stored:"
    " resend from that one"
)

if TYPE_CHECKING:
    from curvechat.server.context import NodeContext
    from curvechat.server.session import Session


log = logging.getLogger("curvechat.server")


PEER_MESSAGES_COUNTED = 10_000
"""The most one `announce` adds to `curvechat_peer_messages_total` (a client
names the figure: unbounded, one user could make the counter say anything)."""


class Handlers(RoomHandlers, ContactHandlers):
    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self.store = node.store
        self._table: dict[type, Any] = {
            m.Hello: self.hello,
            m.Register: self.register,
            m.Ping: self.ping,
            m.Lookup: self.lookup,
            m.CreateRoom: self.create_room,
            m.AddMember: self.add_member,
            m.ShareKeys: self.share_keys,
            m.RemoveMember: self.remove_member,
            m.Leave: self.leave,
            m.Promote: self.promote,
            m.NewEpoch: self.new_epoch,
            m.ListRooms: self.list_rooms,
            m.Members: self.members,
            m.Send: self.send,
            m.History: self.history,
            m.Sync: self.sync,
            m.FetchKeys: self.fetch_keys,
            m.Bye: self.bye,
            m.Announce: self.announce,
            m.Contacts: self.contacts,
            m.SetContacts: self.set_contacts,
        }
        self.peerdir = PeerDirectory()
        limits = node.limits
        self._registrations = RegistrationPace(
            limits.registrations_per_hour, loopback=limits.per_address_loopback
        )
        self.epoch_pace = EpochPace(node.limits.new_epochs)
        # share_keys: an invite of up to 10,000 epochs fits the burst
        self.history_pace = EpochPace(node.limits.new_epochs)
        self.contacts_pace = EpochPace(node.limits.new_epochs)

    async def dispatch(
        self, sess: Session, req: m.AnyRequest, queued: asyncio.Future[None] | None = None
    ) -> m.AnyReply:
        """Serve one request. `queued`, for a pipelined send, is resolved once
        its commit is queued in the store (the connection's next request may
        start then)."""
        try:
            reply: m.AnyReply
            if queued is not None and type(req) is m.Send:
                reply = await self.send(sess, req, queued)
            else:
                reply = await self._table[type(req)](sess, req)
        except StoreUnavailable as exc:
            raise store_refusal(exc) from exc
        except NoSuchRoom as exc:
            raise Refusal(ErrorCode.NO_SUCH_ROOM, f"no such room: {exc}") from exc
        except ChangeTooLarge as exc:
            raise Refusal(ErrorCode.TOO_LARGE, str(exc)) from exc
        except MembershipError as exc:
            raise Refusal(exc.code, exc.message) from exc
        return reply

    async def user_for_transport(self, transport_key: str) -> str | None:
        return await self.store.user_for_transport(zmq.utils.z85.decode(transport_key))

    # --- session -----------------------------------------------------------
    async def hello(self, sess: Session, req: m.Hello) -> m.AnyReply:
        if self.node.draining:
            raise Refusal(
                ErrorCode.DRAINING, f"node {self.node.node_name} is draining: use another node"
            )
        if self.node.store_cut_off:
            raise Refusal(
                ErrorCode.STORE_UNAVAILABLE,
                f"node {self.node.node_name} cannot reach etcd: use another node",
            )
        return self.node.welcome(sess, req)

    async def ping(self, sess: Session, req: m.Ping) -> m.AnyReply:
        self.node.liveness.note_ping(sess, req)
        return m.Pong(
            t=req.t, time=int(time.time() * 1000), node=self.node.node_name, boot=self.node.boot
        )

    async def bye(self, sess: Session, req: m.Bye) -> m.AnyReply:
        self.node.note_bye(sess)
        return m.ByeAck()

    async def register(self, sess: Session, req: m.Register) -> m.AnyReply:
        transport_pub = zmq.utils.z85.decode(sess.transport_key)
        try:
            verify(req.sign_pub, transport_statement(req.user, transport_pub), req.transport_sig)
        except BadSignature as exc:
            raise Refusal(
                ErrorCode.BAD_SIGNATURE, "the identity key did not sign this connection's key"
            ) from exc
        if sess.user is not None and sess.user != req.user:
            raise Refusal(ErrorCode.KEY_TAKEN, f"this key is already registered as {sess.user}")
        paced = sess.user is None  # a new user, or a new key: paced per address
        peer = peer_of(sess.fd) if paced else None
        if paced:
            too_many = self._registrations.refusal(peer, time.monotonic())
            if too_many is not None:
                raise Refusal(ErrorCode.RATE_LIMITED, too_many)
        try:
            try:
                await self.store.register(req.user, req.sign_pub, transport_pub)
            except (NameTaken, KeyTaken, StoreUnavailable):
                if paced:  # nothing was bound: it costs the address nothing
                    self._registrations.refund(peer)
                raise
        except NameTaken as exc:
            raise Refusal(
                ErrorCode.NAME_TAKEN, f"the name {req.user!r} belongs to another identity"
            ) from exc
        except KeyTaken as exc:
            raise Refusal(ErrorCode.KEY_TAKEN, "this key is registered to another user") from exc
        self.node.bind_user(sess, req.user)
        return m.Registered(user=req.user)

    async def lookup(self, sess: Session, req: m.Lookup) -> m.AnyReply:
        """Users' keys for anyone registered; a user's peer record (its
        addresses, its last time online) only for members of a room it shares
        with the one who asks, or for itself."""
        assert sess.user is not None
        found = await self.store.users(req.users)
        records = {u: r for u in found if (r := self.peerdir.record(u)) is not None}
        others = set(records) - {sess.user}
        if others:
            shared = await self._sharing(sess.user, others)
            records = {u: r for u, r in records.items() if u in shared or u not in others}
        return m.Directory(
            users=[
                m.UserKeys(user=u.user, sign_pub=u.sign_pub, peer=records.get(u.user))
                for u in found.values()
            ]
        )

    async def _sharing(self, user: str, others: set[str]) -> set[str]:
        """Which of `others` are members of a room `user` is in now."""
        out: set[str] = set()
        for record in await self.store.rooms_of(user):
            view = await self.node.rooms.get(record.room)
            if view is not None and view.record.op_head != record.op_head:
                view = await self.node.rooms.reload(record.room)  # its members changed since
            if view is not None:
                out |= others & view.state.members.keys()
                if out == others:
                    break
        return out

    async def announce(self, sess: Session, req: m.Announce) -> m.AnyReply:
        assert sess.user is not None
        found = await self.store.users([sess.user])
        try:
            self.peerdir.announce(sess.user, found[sess.user].sign_pub, req.record)
        except (RecordRefused, KeyError) as exc:
            code = exc.code if isinstance(exc, RecordRefused) else ErrorCode.NOT_REGISTERED
            raise Refusal(code, str(exc)) from exc
        if req.peer_messages:
            self.node.metrics.peer_returns.inc()
            self.node.metrics.peer_messages.inc(min(req.peer_messages, PEER_MESSAGES_COUNTED))
        return m.Announced()

    # --- messages --------------------------------------------------------------
    async def send(
        self, sess: Session, req: m.Send, queued: asyncio.Future[None] | None = None
    ) -> m.AnyReply:
        t_request = sess.request_t0  # before any await: the next send may overwrite it
        env = req.envelope
        if env.sender != sess.user:
            raise Refusal(ErrorCode.BAD_ENVELOPE, "the envelope's sender is not you")
        view = await self._member_view(sess, env.room)
        if env.epoch > view.record.epoch:
            view = await self.node.rooms.reload(env.room) or view
        _require_current_epoch(env, view)
        t0 = time.perf_counter()
        # The commit is queued when this task first runs, before anything the
        # connection's next send can do (tasks start in the order created).
        body = encode(env)
        commit = asyncio.ensure_future(
            self.node.append_messages([_expecting(env, body, view, req.after)])
        )
        if queued is not None and not queued.done():
            queued.set_result(None)
        (done,) = await commit
        if done.stale:
            # The room changed between our check and the commit: a membership
            # change or rotation, or only our cached view lagging behind the
            # store (cluster mode). Check again against the store's view.
            view = await self.node.rooms.reload(env.room) or view
            if sess.user not in view.members():
                raise Refusal(ErrorCode.NOT_MEMBER, f"you are not a member of {env.room}")
            _require_current_epoch(env, view)
            (done,) = await self.node.append_messages([_expecting(env, body, view, req.after)])
            if done.stale:
                raise Refusal(ErrorCode.STALE_EPOCH, "the room keeps changing; try again")
        if done.behind:
            raise Refusal(ErrorCode.OUT_OF_ORDER, OUT_OF_ORDER_TEXT)
        self.node.metrics.store_commit_seconds.observe(time.perf_counter() - t0)
        if done.duplicate:
            if not done.remote:  # pushed again as stored: see SendBatches._answer
                await push_stored(self.node, [(env.room, done.seq, sess.routing_id, len(body))])
        else:
            self.node.metrics.messages_accepted.inc()
        if not done.remote and not done.duplicate:
            push = m.MessagePush(
                room=env.room, message=m.StoredMessage(seq=done.seq, ts=done.ts_ms, envelope=env)
            )
            sent = self.node.push(view.members(), push, skip=sess.routing_id)
            self.node.metrics.messages_delivered.inc(sent)
            if sent:
                self.node.metrics.send_deliver_seconds.observe(time.perf_counter() - t_request)
        return m.SendAck(
            room=env.room, txn=env.txn, seq=done.seq, ts=done.ts_ms, duplicate=done.duplicate
        )

    async def history(self, sess: Session, req: m.History) -> m.AnyReply:
        view = await self._member_view(sess, req.room)
        if req.after is not None and req.before is not None:
            raise Refusal(ErrorCode.BAD_FRAME, "give `before` or `after`, not both")
        rows = await self.store.messages(
            req.room,
            after=req.after,
            before=req.before,
            limit=req.limit,
            max_bytes=REPLY_BUDGET_BYTES,
        )
        rows = fit_rows(rows, REPLY_BUDGET_BYTES, newest=req.after is None)
        record = await self.store.room(req.room)
        head = record.head if record is not None else view.record.head
        return m.Messages(room=req.room, items=self._items(rows), head=head)

    async def sync(self, sess: Session, req: m.Sync) -> m.AnyReply:
        assert sess.user is not None
        budget = min(req.limit, MAX_PAGE)
        size_budget = REPLY_BUDGET_BYTES
        out: list[m.Messages] = []
        more = False
        for record in await self.store.rooms_of(sess.user):
            if req.only and record.room not in req.cursors:
                continue
            cursor = req.cursors.get(record.room, 0)
            if record.head <= cursor:
                out.append(m.Messages(room=record.room, items=[], head=record.head))
                continue
            if budget <= 0 or size_budget <= 0:
                more = True
                continue
            rows = await self.store.messages(
                record.room, after=cursor, limit=budget, max_bytes=size_budget
            )
            rows = fit_rows(rows, size_budget)
            budget -= len(rows)
            size_budget -= sum(len(r.envelope) for r in rows)
            if rows and rows[-1].seq < record.head:
                more = True
            out.append(m.Messages(room=record.room, items=self._items(rows), head=record.head))
        return m.SyncReply(rooms=out, more=more)

    def _items(self, rows: list[StoredRow]) -> list[m.StoredMessage]:
        """A page's messages. One whose stored envelope does not decode (a
        damaged store) is left out, counted and logged, so that the rest of
        its room stays readable: clients record its seq as withheld and ask
        for it again at their next connection."""
        items = []
        for row in rows:
            try:
                items.append(stored_message(row))
            except ProtocolError as exc:
                self.node.metrics.stored_undecodable.inc()
                log.error(
                    "message %d of %r in the store cannot be read: %s", row.seq, row.room, exc
                )
        return items

    async def fetch_keys(self, sess: Session, req: m.FetchKeys) -> m.AnyReply:
        assert sess.user is not None
        await self._member_view(sess, req.room)
        packets = await self.store.key_packets(req.room, sess.user, req.min_epoch, limit=MAX_PAGE)
        return m.KeyPackets(
            room=req.room,
            packets=[
                m.KeyPacket(
                    room=p.room, epoch=p.epoch, recipient=p.recipient, sender=p.sender, box=p.box
                )
                for p in packets
            ],
        )


__all__ = ["Handlers", "Refusal", "decode_member_op"]


def _require_current_epoch(env: m.Envelope, view: RoomView) -> None:
    if env.epoch != view.record.epoch or view.epoch_is_stale:
        raise Refusal(
            ErrorCode.STALE_EPOCH,
            f"epoch {env.epoch} is not current (current {view.record.epoch}"
            f"{', needs rotation after a departure' if view.epoch_is_stale else ''})",
        )


def _expecting(env: m.Envelope, body: bytes, view: RoomView, after: str | None) -> NewMessage:
    """The message to commit, valid only while the room is as `view` saw it
    and once the sender's message `after` is stored."""
    return NewMessage(
        env.room,
        env.sender,
        env.txn,
        body,
        expect=(view.record.epoch, view.record.op_head),
        after=after,
    )
