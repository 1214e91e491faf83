"""The membership requests: create a room, add, share more history with a
member just added, remove, leave, promote, a new epoch, list rooms and
members, and the access rule every room request shares (`_member_view`).
Each op is applied to the same `MemberState` the clients use and checked
(signer, target key, key packets, epoch) before the store commits it; the
room's cached view is replaced under its lock.

Refusals are `Refusal(code, message)`; the node turns them into `Error`
replies. What this module must never do: touch a socket (pushes go through
`node.push`), or commit an op the member state did not accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from curvechat.crypto.membership import MemberState
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_MEMBERS, MAX_PAGE, MAX_ROOMS_PER_USER, dm_members
from curvechat.server.contacts import refusal_text, refusing
from curvechat.server.epochpace import EpochPace
from curvechat.server.rooms import RoomView, note_adder
from curvechat.store import (
    Conflict,
    EpochRecord,
    MemberChange,
    OpRecord,
    PacketRecord,
    RoomExists,
    RoomRecord,
    Store,
    StoreFull,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from curvechat.server.context import NodeContext
    from curvechat.server.session import Session
    from curvechat.store.reserve import Need


class Refusal(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


NEEDS: dict[str, Need] = {"remove": "departure", "leave": "leave"}
"""What a membership change is for, as the disk reserve asks (`Store.check_space`):
content, unless it is a departure."""


def store_refusal(exc: StoreUnavailable) -> Refusal:
    """What a client is told when the store did not take a request."""
    if isinstance(exc, StoreFull):
        return Refusal(ErrorCode.STORE_FULL, str(exc))
    return Refusal(ErrorCode.STORE_UNAVAILABLE, f"store unavailable: {exc}")


def room_info(record: RoomRecord, members: int) -> m.RoomInfo:
    return m.RoomInfo(
        room=record.room,
        head=record.head,
        epoch=record.epoch,
        op_head=record.op_head,
        members=members,
    )


def packet_records(room: str, packets: Sequence[m.KeyPacket]) -> list[PacketRecord]:
    return [PacketRecord(room, p.epoch, p.recipient, p.sender, p.box) for p in packets]


class RoomHandlers:
    """The room and membership half of `Handlers` (server/handlers.py)."""

    node: NodeContext
    store: Store
    epoch_pace: EpochPace
    history_pace: EpochPace

    @staticmethod
    def _paced(pace: EpochPace, room: str, user: str, what: str) -> None:
        if not pace.allow(room, user):
            raise Refusal(
                ErrorCode.RATE_LIMITED,
                f"{what} of this room come faster than {pace.rate:g} a second from one "
                "member; try again in a moment",
            )

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

    async def _check_room_counts(self, users: list[str]) -> None:
        """Refuse to add `users` to one more room if any is in the most rooms
        a user may be in (read before the change: adds at once may pass it
        by as many as they are)."""
        counts = await self.store.room_counts(users)
        full = sorted(u for u in users if counts.get(u, 0) >= MAX_ROOMS_PER_USER)
        if full:
            raise Refusal(
                ErrorCode.TOO_LARGE,
                f"{', '.join(full[:5])} {'is' if len(full) == 1 else 'are'} in"
                f" {MAX_ROOMS_PER_USER:,} rooms, the most one user may be in",
            )

    async def _check_adds(self, actor: str, targets: Sequence[str]) -> None:
        """Refuse (`contacts_only`) to let `actor` put `targets` in a room if
        any of them takes rooms only from contacts and `actor` is not one."""
        others = [t for t in targets if t != actor]
        refused = refusing(actor, others, await self.store.contacts(others)) if others else []
        if refused:
            raise Refusal(ErrorCode.CONTACTS_ONLY, refusal_text(refused, actor))

    async def create_room(self, sess: Session, req: m.CreateRoom) -> m.AnyReply:
        assert sess.user is not None
        pair = dm_members(req.room)
        if pair is not None and sess.user not in pair:
            raise Refusal(ErrorCode.FORBIDDEN, "only its two users can open a direct-message room")
        state = MemberState.empty(req.room)
        records: list[OpRecord] = []
        adders: dict[str, str] = {}
        for signed in req.ops:
            state, op = state.apply(signed)
            note_adder(adders, op.kind, op.actor, op.target)
            if op.index == 0 and op.actor != sess.user:
                raise Refusal(ErrorCode.FORBIDDEN, "the room must be created by its requester")
            if op.kind not in ("create", "add", "promote"):
                raise Refusal(ErrorCode.BAD_OP, f"a new room cannot start with {op.kind!r}")
            if op.kind != "promote" and op.target_key != await self._registered_key(op.target):
                raise Refusal(ErrorCode.BAD_OP, f"the key given for {op.target} is not theirs")
            records.append(OpRecord(op.index, signed.op, signed.sig))
        self._check_epoch(sess, req.room, req.epoch, expected_epoch=0, state=state)
        await self._check_adds(sess.user, list(state.members))
        await self._check_room_counts(list(state.members))
        changes = [MemberChange(u, True, mem.admin) for u, mem in state.members.items()]
        try:
            record = await self.store.create_room(
                req.room,
                records,
                changes,
                EpochRecord(0, req.epoch.after_op, sess.user),
                packet_records(req.room, req.epoch.packets),
            )
        except RoomExists as exc:
            raise Refusal(ErrorCode.ROOM_EXISTS, f"room {req.room} exists") from exc
        self.node.rooms.put(RoomView(record=record, state=state, adders=adders))
        self.node.push(
            list(state.members), m.RoomPush(room=req.room, reason="members"), skip=sess.routing_id
        )
        return m.RoomChanged(info=room_info(record, len(state.members)))

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
            self.store.check_space(NEEDS.get(kind, "content"))
            if kind == "add":
                if len(state.members) > MAX_MEMBERS:
                    raise Refusal(
                        ErrorCode.TOO_LARGE,
                        f"{room} has {len(before)} members, the most a room holds",
                    )
                if op.target_key != await self._registered_key(op.target):
                    raise Refusal(ErrorCode.BAD_OP, f"the key given for {op.target} is not theirs")
                await self._check_adds(sess.user, [op.target])
                await self._check_room_counts([op.target])
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
                    packet_records(room, packets),
                )
            except Conflict as exc:
                await self.node.rooms.reload(room)
                raise Refusal(ErrorCode.CONFLICT, "the room changed meanwhile; refetch") from exc
            departure = op.index if kind in ("remove", "leave") else view.last_departure
            adders = dict(view.adders)
            note_adder(adders, op.kind, op.actor, op.target)
            self.node.rooms.put(
                RoomView(
                    record=record,
                    state=state,
                    last_departure=departure,
                    adders=adders,
                    lock=view.lock,
                )
            )
        everyone = sorted(before | set(state.members))
        self.node.push(
            [u for u in everyone if u in state.members],
            m.RoomPush(room=room, reason="epoch" if epoch else "members"),
            skip=sess.routing_id,
        )
        if kind in ("remove", "leave"):
            gone: Literal["removed", "left"] = "left" if kind == "leave" else "removed"
            self.node.push([op.target], m.RoomPush(room=room, reason=gone), skip=sess.routing_id)
        return m.RoomChanged(info=room_info(record, len(state.members)))

    async def add_member(self, sess: Session, req: m.AddMember) -> m.AnyReply:
        return await self._change(sess, req.room, req.op, "add", packets=req.packets)

    async def share_keys(self, sess: Session, req: m.ShareKeys) -> m.AnyReply:
        """More of the room's history for a member the sender added last
        (after an `add_member` whose packets could not hold it all)."""
        assert sess.user is not None
        view = await self._member_view(sess, req.room)
        self._paced(self.history_pace, req.room, sess.user, "history shares")
        async with view.lock:  # no membership change in between
            view = await self.node.rooms.get(req.room) or view
            if not view.state.is_member(req.recipient):
                raise Refusal(ErrorCode.BAD_OP, f"{req.recipient} is not a member of {req.room}")
            if view.adders.get(req.recipient) != sess.user:
                raise Refusal(
                    ErrorCode.FORBIDDEN,
                    f"only the member who added {req.recipient} shares history with them",
                )
            self.store.check_space()
            self._check_packets(
                sess,
                req.room,
                req.packets,
                recipients={req.recipient},
                epochs=range(0, view.record.epoch + 1),
            )
            # The store keeps the first packet of each (epoch, recipient).
            stored = await self.store.put_packets(req.room, packet_records(req.room, req.packets))
        if stored:  # nothing new, nothing to fetch: no push for the recipient to act on
            self.node.push([req.recipient], m.RoomPush(room=req.room, reason="keys"))
        return m.RoomChanged(info=room_info(view.record, len(view.state.members)))

    async def remove_member(self, sess: Session, req: m.RemoveMember) -> m.AnyReply:
        return await self._change(sess, req.room, req.op, "remove", upload=req.epoch)

    async def leave(self, sess: Session, req: m.Leave) -> m.AnyReply:
        return await self._change(sess, req.room, req.op, "leave")

    async def promote(self, sess: Session, req: m.Promote) -> m.AnyReply:
        return await self._change(sess, req.room, req.op, "promote")

    async def new_epoch(self, sess: Session, req: m.NewEpoch) -> m.AnyReply:
        assert sess.user is not None
        view = await self._member_view(sess, req.room)
        self._paced(self.epoch_pace, req.room, sess.user, "new epochs")
        async with view.lock:
            view = await self.node.rooms.get(req.room) or view
            self._check_epoch(
                sess, req.room, req.epoch, expected_epoch=view.record.epoch + 1, state=view.state
            )
            self.store.check_space("departure" if view.epoch_is_stale else "content")
            try:
                record = await self.store.add_epoch(
                    req.room,
                    EpochRecord(req.epoch.epoch, req.epoch.after_op, sess.user),
                    packet_records(req.room, req.epoch.packets),
                )
            except Conflict as exc:
                await self.node.rooms.reload(req.room)
                raise Refusal(ErrorCode.CONFLICT, "another member started this epoch") from exc
            self.node.rooms.put(
                RoomView(
                    record=record,
                    state=view.state,
                    last_departure=view.last_departure,
                    adders=view.adders,
                    lock=view.lock,
                )
            )
        self.node.push(
            view.members(), m.RoomPush(room=req.room, reason="epoch"), skip=sess.routing_id
        )
        return m.RoomChanged(info=room_info(record, len(view.state.members)))

    async def list_rooms(self, sess: Session, req: m.ListRooms) -> m.AnyReply:
        assert sess.user is not None
        records = await self.store.rooms_of(sess.user)
        infos = []
        # The views kept, else the store's counts (one read): reading every
        # room's view would push the rooms out of the node's cache for a user
        # in more than it keeps, and replay their logs at every list.
        views = {r.room: self.node.rooms.peek(r.room) for r in records}
        counts = await self.store.member_counts([r for r, v in views.items() if v is None])
        for record in records:
            view = views[record.room]
            count = len(view.state.members) if view else counts.get(record.room, 0)
            infos.append(room_info(record, count))
        return m.RoomList(rooms=infos)

    async def members(self, sess: Session, req: m.Members) -> m.AnyReply:
        await self._member_view(sess, req.room)
        ops = await self.store.ops(req.room, req.after, limit=MAX_PAGE)
        return m.MemberLog(room=req.room, ops=[m.SignedOp(op=o.op, sig=o.sig) for o in ops])
