"""What the server does for each request: access rules, membership rules
(the same `MemberState` the clients use), epoch bookkeeping, and commits.

Refusals are `Refusal(code, message)`; the node turns them into `Error`
replies. Nothing here touches sockets: replies are returned, pushes go
through `node.push`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zmq.utils.z85

from curvechat.crypto.errors import BadSignature, MembershipError
from curvechat.crypto.identity import transport_statement, verify
from curvechat.crypto.membership import MemberState
from curvechat.protocol import ErrorCode, decode_envelope, decode_member_op, encode
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_PAGE, REPLY_BUDGET_BYTES, dm_members
from curvechat.server.peerdir import PeerDirectory, RecordRefused
from curvechat.server.rooms import RoomView
from curvechat.store import (
    ChangeTooLarge,
    Conflict,
    EpochRecord,
    KeyTaken,
    MemberChange,
    NameTaken,
    NewMessage,
    NoSuchRoom,
    OpRecord,
    PacketRecord,
    RoomExists,
    RoomRecord,
    StoredRow,
    StoreUnavailable,
)

OUT_OF_ORDER_TEXT = (
    "the message sent before this one (after) is not stored; nothing was stored:"
    " resend from that one"
)

if TYPE_CHECKING:
    from curvechat.server.context import NodeContext
    from curvechat.server.session import Session


class Refusal(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _info(record: RoomRecord, members: int) -> m.RoomInfo:
    return m.RoomInfo(
        room=record.room,
        head=record.head,
        epoch=record.epoch,
        op_head=record.op_head,
        members=members,
    )


def _stored(row: StoredRow) -> m.StoredMessage:
    return m.StoredMessage(seq=row.seq, ts=row.ts_ms, envelope=decode_envelope(row.envelope))


def _fit(rows: list[StoredRow], budget: int, *, newest: bool = False) -> list[StoredRow]:
    """The rows that fit in `budget` envelope bytes (at least one): the oldest
    ones, or with `newest` the newest ones (a page read backwards)."""
    order = reversed(rows) if newest else iter(rows)
    kept: list[StoredRow] = []
    for row in order:
        if kept and budget - len(row.envelope) < 0:
            break
        budget -= len(row.envelope)
        kept.append(row)
    return kept[::-1] if newest else kept


def _packets(room: str, packets: Sequence[m.KeyPacket]) -> list[PacketRecord]:
    return [PacketRecord(room, p.epoch, p.recipient, p.sender, p.box) for p in packets]


class Handlers:
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
        }
        self.peerdir = PeerDirectory()

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
            raise Refusal(ErrorCode.STORE_UNAVAILABLE, f"store unavailable: {exc}") from exc
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
        sess.client = req.client
        return self.node.welcome(sess)

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
        try:
            await self.store.register(req.user, req.sign_pub, transport_pub)
        except NameTaken as exc:
            raise Refusal(
                ErrorCode.NAME_TAKEN, f"the name {req.user!r} belongs to another identity"
            ) from exc
        except KeyTaken as exc:
            raise Refusal(ErrorCode.KEY_TAKEN, "this key is registered to another user") from exc
        self.node.bind_user(sess, req.user)
        return m.Registered(user=req.user)

    async def lookup(self, sess: Session, req: m.Lookup) -> m.AnyReply:
        found = await self.store.users(req.users)
        return m.Directory(
            users=[
                m.UserKeys(user=u.user, sign_pub=u.sign_pub, peer=self.peerdir.record(u.user))
                for u in found.values()
            ]
        )

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
            self.node.metrics.peer_messages.inc(req.peer_messages)
        return m.Announced()

    # --- rooms ---------------------------------------------------------------
    async def _member_view(self, sess: Session, room: str) -> RoomView:
        view = await self.node.rooms.get(room)
        if view is None:
            raise Refusal(ErrorCode.NO_SUCH_ROOM, f"no such room: {room}")
        assert sess.user is not None
        if not view.state.is_member(sess.user):
            # A node that has not seen the latest change reloads once before
            # refusing (cheap: the record and the ops past the cached head);
            # a user refused at this version of the room is refused at once.
            if sess.user not in view.refused:
                view = await self.node.rooms.reload(room) or view
            if not view.state.is_member(sess.user):
                self.node.rooms.refuse(view, sess.user)
                raise Refusal(ErrorCode.NOT_MEMBER, f"you are not a member of {room}")
        return view

    async def _registered_key(self, user: str) -> bytes:
        found = await self.store.users([user])
        if user not in found:
            raise Refusal(ErrorCode.NO_SUCH_USER, f"no such user: {user}")
        return found[user].sign_pub

    def _check_packets(
        self,
        sess: Session,
        room: str,
        packets: Sequence[m.KeyPacket],
        *,
        recipients: set[str],
        epochs: range,
    ) -> None:
        for p in packets:
            if p.room != room or p.sender != sess.user:
                raise Refusal(ErrorCode.BAD_OP, "a key packet names another room or sender")
            if p.recipient not in recipients:
                raise Refusal(ErrorCode.BAD_OP, f"a key packet is for {p.recipient}, not a member")
            if p.epoch not in epochs:
                raise Refusal(ErrorCode.BAD_OP, f"a key packet is for epoch {p.epoch}")

    def _check_epoch(
        self,
        sess: Session,
        room: str,
        upload: m.EpochUpload,
        *,
        expected_epoch: int,
        state: MemberState,
    ) -> None:
        if upload.epoch != expected_epoch:
            raise Refusal(ErrorCode.CONFLICT, f"the next epoch is {expected_epoch}")
        if upload.after_op != state.index:
            raise Refusal(ErrorCode.CONFLICT, f"the membership log is at op {state.index}")
        members = set(state.members)
        self._check_packets(
            sess,
            room,
            upload.packets,
            recipients=members,
            epochs=range(upload.epoch, upload.epoch + 1),
        )
        missing = members - {p.recipient for p in upload.packets}
        if missing:
            raise Refusal(ErrorCode.BAD_OP, f"the new epoch has no key for {sorted(missing)}")

    async def create_room(self, sess: Session, req: m.CreateRoom) -> m.AnyReply:
        assert sess.user is not None
        pair = dm_members(req.room)
        if pair is not None and sess.user not in pair:
            raise Refusal(ErrorCode.FORBIDDEN, "only its two users can open a direct-message room")
        state = MemberState.empty(req.room)
        records: list[OpRecord] = []
        for signed in req.ops:
            state, op = state.apply(signed)
            if op.index == 0 and op.actor != sess.user:
                raise Refusal(ErrorCode.FORBIDDEN, "the room must be created by its requester")
            if op.kind not in ("create", "add", "promote"):
                raise Refusal(ErrorCode.BAD_OP, f"a new room cannot start with {op.kind!r}")
            if op.kind != "promote" and op.target_key != await self._registered_key(op.target):
                raise Refusal(ErrorCode.BAD_OP, f"the key given for {op.target} is not theirs")
            records.append(OpRecord(op.index, signed.op, signed.sig))
        self._check_epoch(sess, req.room, req.epoch, expected_epoch=0, state=state)
        changes = [MemberChange(u, True, mem.admin) for u, mem in state.members.items()]
        try:
            record = await self.store.create_room(
                req.room,
                records,
                changes,
                EpochRecord(0, req.epoch.after_op, sess.user),
                _packets(req.room, req.epoch.packets),
            )
        except RoomExists as exc:
            raise Refusal(ErrorCode.ROOM_EXISTS, f"room {req.room} exists") from exc
        self.node.rooms.put(RoomView(record=record, state=state))
        self.node.push(
            list(state.members), m.RoomPush(room=req.room, reason="members"), skip=sess.routing_id
        )
        return m.RoomChanged(info=_info(record, len(state.members)))

    async def _change(
        self,
        sess: Session,
        room: str,
        signed: m.SignedOp,
        kind: str,
        packets: Sequence[m.KeyPacket] = (),
        upload: m.EpochUpload | None = None,
    ) -> m.AnyReply:
        assert sess.user is not None
        view = await self._member_view(sess, room)
        async with view.lock:
            view = await self.node.rooms.get(room) or view
            before = set(view.state.members)
            state, op = view.state.apply(signed)
            if op.kind != kind:
                raise Refusal(ErrorCode.BAD_OP, f"expected a {kind!r} op, got {op.kind!r}")
            if op.actor != sess.user:
                raise Refusal(ErrorCode.FORBIDDEN, "ops must be signed by their sender")
            if kind == "add":
                if op.target_key != await self._registered_key(op.target):
                    raise Refusal(ErrorCode.BAD_OP, f"the key given for {op.target} is not theirs")
                self._check_packets(
                    sess,
                    room,
                    packets,
                    recipients={op.target},
                    epochs=range(0, view.record.epoch + 1),
                )
            epoch = None
            if upload is not None:
                self._check_epoch(
                    sess, room, upload, expected_epoch=view.record.epoch + 1, state=state
                )
                epoch = EpochRecord(upload.epoch, upload.after_op, sess.user)
                packets = upload.packets
            member = state.members.get(op.target)
            change = MemberChange(
                op.target, member is not None, member.admin if member is not None else False
            )
            try:
                record = await self.store.append_op(
                    room,
                    OpRecord(op.index, signed.op, signed.sig),
                    [change],
                    epoch,
                    _packets(room, packets),
                )
            except Conflict as exc:
                await self.node.rooms.reload(room)
                raise Refusal(ErrorCode.CONFLICT, "the room changed meanwhile; refetch") from exc
            departure = op.index if kind in ("remove", "leave") else view.last_departure
            self.node.rooms.put(
                RoomView(record=record, state=state, last_departure=departure, lock=view.lock)
            )
        everyone = sorted(before | set(state.members))
        self.node.push(
            [u for u in everyone if u in state.members],
            m.RoomPush(room=room, reason="epoch" if epoch else "members"),
            skip=sess.routing_id,
        )
        if kind in ("remove", "leave"):
            self.node.push(
                [op.target], m.RoomPush(room=room, reason="removed"), skip=sess.routing_id
            )
        return m.RoomChanged(info=_info(record, len(state.members)))

    async def add_member(self, sess: Session, req: m.AddMember) -> m.AnyReply:
        return await self._change(sess, req.room, req.op, "add", packets=req.packets)

    async def remove_member(self, sess: Session, req: m.RemoveMember) -> m.AnyReply:
        return await self._change(sess, req.room, req.op, "remove", upload=req.epoch)

    async def leave(self, sess: Session, req: m.Leave) -> m.AnyReply:
        return await self._change(sess, req.room, req.op, "leave")

    async def promote(self, sess: Session, req: m.Promote) -> m.AnyReply:
        return await self._change(sess, req.room, req.op, "promote")

    async def new_epoch(self, sess: Session, req: m.NewEpoch) -> m.AnyReply:
        assert sess.user is not None
        view = await self._member_view(sess, req.room)
        async with view.lock:
            view = await self.node.rooms.get(req.room) or view
            self._check_epoch(
                sess, req.room, req.epoch, expected_epoch=view.record.epoch + 1, state=view.state
            )
            try:
                record = await self.store.add_epoch(
                    req.room,
                    EpochRecord(req.epoch.epoch, req.epoch.after_op, sess.user),
                    _packets(req.room, req.epoch.packets),
                )
            except Conflict as exc:
                await self.node.rooms.reload(req.room)
                raise Refusal(ErrorCode.CONFLICT, "another member started this epoch") from exc
            self.node.rooms.put(
                RoomView(
                    record=record,
                    state=view.state,
                    last_departure=view.last_departure,
                    lock=view.lock,
                )
            )
        self.node.push(
            view.members(), m.RoomPush(room=req.room, reason="epoch"), skip=sess.routing_id
        )
        return m.RoomChanged(info=_info(record, len(view.state.members)))

    async def list_rooms(self, sess: Session, req: m.ListRooms) -> m.AnyReply:
        assert sess.user is not None
        records = await self.store.rooms_of(sess.user)
        infos = []
        for record in records:
            view = await self.node.rooms.get(record.room)
            infos.append(_info(record, len(view.state.members) if view else 0))
        return m.RoomList(rooms=infos)

    async def members(self, sess: Session, req: m.Members) -> m.AnyReply:
        await self._member_view(sess, req.room)
        ops = (await self.store.ops(req.room, req.after))[:MAX_PAGE]
        return m.MemberLog(room=req.room, ops=[m.SignedOp(op=o.op, sig=o.sig) for o in ops])

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
        if not done.duplicate:
            self.node.metrics.messages_accepted.inc()
        if not done.remote:  # a duplicate too: see Reactor._answer
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
            req.room, after=req.after, before=req.before, limit=req.limit
        )
        rows = _fit(rows, REPLY_BUDGET_BYTES, newest=req.after is None)
        record = await self.store.room(req.room)
        head = record.head if record is not None else view.record.head
        return m.Messages(room=req.room, items=[_stored(r) for r in rows], head=head)

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
            rows = await self.store.messages(record.room, after=cursor, limit=budget)
            rows = _fit(rows, size_budget)
            budget -= len(rows)
            size_budget -= sum(len(r.envelope) for r in rows)
            if rows and rows[-1].seq < record.head:
                more = True
            out.append(
                m.Messages(room=record.room, items=[_stored(r) for r in rows], head=record.head)
            )
        return m.SyncReply(rooms=out, more=more)

    async def fetch_keys(self, sess: Session, req: m.FetchKeys) -> m.AnyReply:
        assert sess.user is not None
        await self._member_view(sess, req.room)
        packets = (await self.store.key_packets(req.room, sess.user, req.min_epoch))[:MAX_PAGE]
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
