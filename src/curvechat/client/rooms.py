"""Membership commands: create a room, invite, remove, promote, leave, open
a direct-message room, and how much history a member we add gets.

Each command signs an op on the head of our verified log, has the server
take it, and then feeds the op to the trust core (our own signature is the
evidence). Keys are wrapped only for the logged, pinned keys of members.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from curvechat.client import events as ev
from curvechat.client.errors import NotReady, ServerRefused
from curvechat.client.keys import Keys
from curvechat.client.parts import Parts
from curvechat.client.sealing import now_ms
from curvechat.client.sync import Sync
from curvechat.client.trust import RoomLog
from curvechat.crypto.identity import safety_number
from curvechat.crypto.membership import sign_op
from curvechat.crypto.roomkeys import EpochKey, new_epoch_key
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_BATCH, MAX_MEMBERS, dm_members, dm_room, is_room_id
from curvechat.protocol.text import clip

HISTORY_MODES = ("all", "verified")


@dataclass(frozen=True, slots=True)
class InviteResult:
    user: str
    verified: bool
    safety_number: str
    """Compare this with the invitee before trusting the invite went to them."""
    shared_history: bool
    epochs_not_shared: int = 0
    """Epochs of the history that did not reach the new member (the server
    refused `share_keys`: a node older than it, or the member left)."""


ADD_PACKETS = 100
"""History packets that go with the add itself: an etcd store writes the op
and its packets in one transaction, which holds 128 operations by default."""


def split_history(
    packets: list[m.KeyPacket],
) -> tuple[list[m.KeyPacket], list[list[m.KeyPacket]]]:
    """History packets (by epoch) for a member we add: the newest
    `ADD_PACKETS`, which go with the add, and the rest in `share_keys`
    pages of at most MAX_BATCH, newest first."""
    cut = max(len(packets) - ADD_PACKETS, 0)
    older = packets[:cut]
    pages = [older[max(end - MAX_BATCH, 0) : end] for end in range(cut, 0, -MAX_BATCH)]
    return packets[cut:], pages


class RoomCommands:
    def __init__(self, parts: Parts, sync: Sync, keys: Keys) -> None:
        self.p = parts
        self.sync = sync
        self.keys = keys

    def _signed(self, room: str, kind: str, target: str, target_key: bytes) -> m.SignedOp:
        """An op on our verified head, checked against the membership rules
        before anything (least of all key packets) goes to the server: an op
        the rules refuse raises MembershipError here."""
        state = self.p.core.log(room).state
        op = state.next_op(kind, self.p.me, target, target_key, now_ms())  # type: ignore[arg-type]
        signed = sign_op(self.p.identity, op)
        state.apply(signed)
        return signed

    async def create(self, room: str, members: list[str]) -> None:
        if not is_room_id(room):
            raise NotReady(
                f"{room!r} is not a valid room name (a-z, 0-9, '.', '_', '-'; up to 64)", "bad_room"
            )
        others = sorted(set(members) - {self.p.me})
        pair = dm_members(room)
        # A direct-message room is made with both of its users in it (else its
        # messages would reach no one but the sender): `open_dm` makes it so.
        if pair is not None and (self.p.me not in pair or set(others) != set(pair) - {self.p.me}):
            raise NotReady(
                f"{room} is a direct-message room of {pair[0]} and {pair[1]}: it is made"
                " with both of them in it (send a direct message to make it)",
                "forbidden",
            )
        if len(others) >= MAX_MEMBERS:
            raise NotReady(
                f"a room holds at most {MAX_MEMBERS} members, not {len(others) + 1}", "too_large"
            )
        keys = await self.keys.lookup(others) if others else {}
        async with self.p.lock:
            draft = RoomLog.empty(room)
            signed_ops = []
            for kind, user, key in [
                ("create", self.p.me, self.p.identity.sign_pub),
                *(("add", u, keys[u]) for u in others),
            ]:
                op = draft.state.next_op(kind, self.p.me, user, key, now_ms())  # type: ignore[arg-type]
                signed = sign_op(self.p.identity, op)
                draft.apply(signed)
                signed_ops.append(signed)
            epoch0 = new_epoch_key(room, 0, draft.index)
            packets = self.p.core.wrap_for(epoch0, {self.p.me: self.p.identity.sign_pub, **keys})
            await self.p.ask(
                m.CreateRoom(
                    room=room,
                    ops=signed_ops,
                    epoch=m.EpochUpload(epoch=0, after_op=draft.index, packets=packets),
                ),
                m.RoomChanged,
            )
            self.p.core.feed_ops(room, signed_ops)
            self.p.core.own_epoch(epoch0)
        self.p.emit(ev.RoomUpdated(room, "created"))

    async def _membership_change(
        self, room: str, build: Callable[[], tuple[m.AnyRequest, m.SignedOp]]
    ) -> None:
        for attempt in range(3):
            async with self.p.lock:
                await self.sync.refresh(room)
                if not self.p.core.log(room).is_member(self.p.me):
                    raise NotReady(f"you are not a member of {room}", "not_member")
                req, signed = build()
                try:
                    await self.p.ask(req, m.RoomChanged)
                except ServerRefused as exc:
                    if exc.code == ErrorCode.CONFLICT and attempt < 2:
                        continue
                    raise
                # The server took the op we signed on our verified head: it
                # is part of our log (a leave stays known even though the
                # server then stops serving the room to us).
                self.p.core.feed_ops(room, [signed])
                if self.p.core.log(room).is_member(self.p.me):
                    await self.sync.refresh(room)
                return

    def history_sharing(self, room: str) -> str:
        """Whether members we add get the room's earlier keys: "all" (the
        default: late joiners read the whole history) or "verified" (only
        members whose key we verified)."""
        mode = self.p.cache.get_meta(f"history:{room}")
        return mode if mode in HISTORY_MODES else "all"

    def set_history_sharing(self, room: str, mode: str) -> None:
        if mode not in HISTORY_MODES:
            raise NotReady(f"history sharing is one of {', '.join(HISTORY_MODES)}", "bad_value")
        self.p.cache.set_meta(f"history:{room}", mode)

    async def invite(self, room: str, user: str) -> InviteResult:
        key = (await self.keys.lookup([user]))[user]
        verified = self.p.core.verified(user)
        share = verified or self.history_sharing(room) == "all"

        pages: list[list[m.KeyPacket]] = []  # what does not fit in the add

        def build() -> tuple[m.AnyRequest, m.SignedOp]:
            if self.p.core.log(room).is_member(user):
                raise NotReady(f"{clip(user)} is already a member of {room}", "already_member")
            if len(self.p.core.log(room).state.members) >= MAX_MEMBERS:
                full = f"{room} has {MAX_MEMBERS} members, the most a room holds"
                raise NotReady(full, "too_large")
            self.p.core.refuse_if_key_changed(room)
            signed = self._signed(room, "add", user, key)
            packets = self.p.core.history_for(room, user, key) if share else []
            first, pages[:] = split_history(packets)
            return m.AddMember(room=room, op=signed, packets=first), signed

        await self._membership_change(room, build)
        left_out = await self._share_rest(room, user, pages)
        if not share:
            # The newcomer holds no key yet: start an epoch that includes them.
            async with self.p.lock:
                await self.p.rotate(room, self.p.core.next_epoch(room))
        self.p.emit(ev.RoomUpdated(room, "members"))
        return InviteResult(
            user=user,
            verified=verified,
            safety_number=safety_number(self.p.me, self.p.identity.sign_pub, user, key),
            shared_history=share,
            epochs_not_shared=left_out,
        )

    async def _share_rest(self, room: str, user: str, pages: list[list[m.KeyPacket]]) -> int:
        """Send the history that did not fit in the add; how many epochs of it
        the server refused (0: all delivered)."""
        async with self.p.lock:
            for done, page in enumerate(pages):
                try:
                    await self.p.ask(
                        m.ShareKeys(room=room, recipient=user, packets=page), m.RoomChanged
                    )
                except ServerRefused as exc:
                    left = sum(len(p) for p in pages[done:])
                    self.p.emit(
                        ev.Problem(
                            room, f"{left} earlier epochs were not shared with {user}: {exc}"
                        )
                    )
                    return left
        return 0

    async def remove(self, room: str, user: str) -> None:
        if dm_members(room) is not None:
            raise NotReady(
                f"{room} is a direct-message room: it keeps both of you (leave it instead)",
                "forbidden",
            )
        made: list[EpochKey] = []

        def build() -> tuple[m.AnyRequest, m.SignedOp]:
            log = self.p.core.log(room)
            member = log.state.members.get(user)
            if member is None:
                raise NotReady(f"{clip(user)} is not a member of {room}", "not_member")
            if user == self.p.me:
                raise NotReady(f"you cannot remove yourself from {room}: leave it", "forbidden")
            signed = self._signed(room, "remove", user, member.key)
            after = log.state.apply(signed)[0]
            epoch = new_epoch_key(room, self.p.core.next_epoch(room), after.index)
            recipients = {u: mem.key for u, mem in after.members.items()}
            for u, k in recipients.items():
                self.p.core.check_pin(u, k)
            packets = self.p.core.wrap_for(epoch, recipients)
            made.append(epoch)
            upload = m.EpochUpload(epoch=epoch.epoch, after_op=after.index, packets=packets)
            return m.RemoveMember(room=room, op=signed, epoch=upload), signed

        await self._membership_change(room, build)
        self.p.core.own_epoch(made[-1])
        self.p.emit(ev.RoomUpdated(room, "members"))

    async def promote(self, room: str, user: str) -> None:
        def build() -> tuple[m.AnyRequest, m.SignedOp]:
            member = self.p.core.log(room).state.members.get(user)
            if member is None:
                raise NotReady(f"{clip(user)} is not a member of {room}", "not_member")
            if member.admin:
                raise NotReady(f"{clip(user)} is already an admin of {room}", "already_admin")
            signed = self._signed(room, "promote", user, member.key)
            return m.Promote(room=room, op=signed), signed

        await self._membership_change(room, build)

    async def leave(self, room: str) -> None:
        def build() -> tuple[m.AnyRequest, m.SignedOp]:
            signed = self._signed(room, "leave", self.p.me, self.p.identity.sign_pub)
            return m.Leave(room=room, op=signed), signed

        await self._membership_change(room, build)
        self.p.core.left(room)
        self.p.emit(ev.RoomUpdated(room, "left"))

    async def open_dm(self, user: str) -> str:
        """The DM room with `user`, created if neither side has yet."""
        try:
            room = dm_room(self.p.me, user)
        except ValueError:
            raise NotReady(
                f"a direct message needs another user's valid name, not {clip(user)!r}", "bad_name"
            ) from None
        cached = self.p.cache.room(room)
        if cached is not None and not cached.left:
            return room
        try:
            await self.create(room, [user])
        except ServerRefused as exc:
            if exc.code != ErrorCode.ROOM_EXISTS:
                raise
            async with self.p.lock:
                await self.sync.full()
        return room
