"""The engine every front end shares: `ChatClient`.

It wires the parts together and runs the commands: the connection
(failover, liveness), the trust core (every decision about keys, epochs,
members and messages; `trust/`), sync and gap fill (`sync.py`), the outbox
(`outbox.py`) and the pins (`keys.py`). Pushes and syncs are handled in
order by one worker under the shared lock; commands take the same lock.

The engine never decides what to believe: it asks the server, feeds the
replies to the trust core, and acts on what the core returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq.utils.z85

from curvechat.client import events as ev
from curvechat.client.cache import Cache, CachedMessage, OutboxItem
from curvechat.client.connection import Connection
from curvechat.client.errors import (
    ClientError,
    NotConnected,
    NotReady,
    RequestTimeout,
    ServerRefused,
)
from curvechat.client.keys import KeyInfo, Keys
from curvechat.client.outbox import Outbox, now_ms
from curvechat.client.parts import EventHandler, Parts, Requester
from curvechat.client.state import ConnState, ConnStatus
from curvechat.client.sync import Sync
from curvechat.client.trust import RoomLog, TrustCore
from curvechat.crypto.identity import Identity, safety_number
from curvechat.crypto.membership import sign_op
from curvechat.crypto.roomkeys import EpochKey, new_epoch_key
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol.connect import ServerAddress
from curvechat.protocol.limits import dm_members, dm_room, is_room_id

__all__ = ["ChatClient", "InviteResult", "KeyInfo", "MemberInfo", "RoomSummary"]

log = logging.getLogger("curvechat.client")

HISTORY_MODES = ("all", "verified")


@dataclass(frozen=True, slots=True)
class RoomSummary:
    room: str
    members: list[str]
    admins: list[str]
    head: int
    cursor: int
    unread: int
    epoch: int | None


@dataclass(frozen=True, slots=True)
class MemberInfo:
    user: str
    admin: bool
    verified: bool
    """The user compared safety numbers with this member (`keys --verify`)."""
    key_changed: bool


@dataclass(frozen=True, slots=True)
class InviteResult:
    user: str
    verified: bool
    safety_number: str
    """Compare this with the invitee before trusting the invite went to them."""
    shared_history: bool


class ChatClient:
    def __init__(
        self,
        identity: Identity,
        cache: Cache,
        addresses: list[ServerAddress],
        *,
        on_event: EventHandler | None = None,
        rotate_after_messages: int = 100,
        rotate_after_seconds: float = 7 * 86400,
        conn: Requester | None = None,
        **connection_options: Any,
    ) -> None:
        self.identity = identity
        self.me = identity.user
        self.cache = cache
        self._handlers: list[EventHandler] = [on_event] if on_event else []
        self.conn: Any = conn or Connection(
            addresses,
            public_key=zmq.utils.z85.encode(identity.transport_pub),
            secret_key=zmq.utils.z85.encode(identity.transport_secret),
            on_push=self._on_push,
            on_status=self._on_status,
            on_live=self._on_live,
            **connection_options,
        )
        if isinstance(self.conn, Connection):
            self.conn.outbox_depth = cache.outbox_count
        self.core = TrustCore(identity, cache, self._emit)
        self.parts = Parts(
            identity=identity, cache=cache, core=self.core, conn=self.conn, emit=self._emit
        )
        self.sync = Sync(self.parts)
        self.outbox = Outbox(
            self.parts,
            self.sync,
            rotate_after_messages=rotate_after_messages,
            rotate_after_seconds=rotate_after_seconds,
        )
        self.keys = Keys(self.parts, self.sync)
        self._jobs: asyncio.Queue[m.AnyReply] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.fatal: ClientError | None = None
        self.last_caught_up = 0
        self.owns_cache = False
        """Set by `open_client`: `close` closes the cache too."""

    # --- lifecycle -------------------------------------------------------------
    def subscribe(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    def _emit(self, event: ev.Event) -> None:
        for handler in list(self._handlers):
            try:
                handler(event)
            except Exception:
                log.exception("event handler failed")

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name="engine-worker"),
            asyncio.create_task(self.outbox.run(), name="engine-outbox"),
        ]
        await self.conn.start()

    async def close(self) -> None:
        await self.conn.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.outbox.cancel_waiters()
        if self.owns_cache:
            self.owns_cache = False
            self.cache.close()

    async def __aenter__(self) -> ChatClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def retry_now(self) -> None:
        """Cut a reconnect back-off short (the user asked to reconnect now)."""
        self.conn.retry_now()

    @property
    def lock(self) -> asyncio.Lock:
        return self.parts.lock

    @property
    def status(self) -> ConnStatus:
        status: ConnStatus = self.conn.status
        return status

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until connected, registered and synced. Raises the fatal error
        (e.g. the name is taken) if there is one."""
        try:
            await asyncio.wait_for(self.outbox.ready.wait(), timeout)
        except TimeoutError:
            return False
        if self.fatal is not None:
            raise self.fatal
        return True

    # --- connection callbacks ----------------------------------------------------
    def _on_status(self, status: ConnStatus) -> None:
        if status.state is not ConnState.LIVE:
            self.outbox.ready.clear()
        self._emit(ev.StatusChanged(status))

    def _on_push(self, msg: m.AnyReply) -> None:
        self._jobs.put_nowait(msg)

    async def _on_live(self, welcome: m.Welcome) -> None:
        try:
            if welcome.user is None:
                await self.conn.request(
                    m.Register(
                        user=self.me,
                        sign_pub=self.identity.sign_pub,
                        transport_sig=self.identity.transport_sig(),
                    )
                )
            elif welcome.user != self.me:
                raise ServerRefused(
                    ErrorCode.KEY_TAKEN, f"this key is registered as {welcome.user}, not {self.me}"
                )
            async with self.lock:
                count = await self.sync.full()
        except ServerRefused as exc:
            if exc.code in (ErrorCode.NAME_TAKEN, ErrorCode.KEY_TAKEN, ErrorCode.BAD_SIGNATURE):
                self.fatal = exc
                self.outbox.halted = True
                self.outbox.ready.set()
                self._emit(ev.Problem(None, f"could not sign in: {exc}"))
                return
            # Anything else (store unavailable, rate limited, …) may pass:
            # try again on a fresh connection, after the back-off.
            self._emit(ev.Problem(None, f"sync refused: {exc}"))
            self.conn.drop(f"sync refused: {exc.code}", failed=True)
            return
        except (NotConnected, RequestTimeout) as exc:
            # Not ready without a complete sync: start over on a fresh connection.
            self.conn.drop(f"sync failed: {exc}", failed=True)
            return
        self.last_caught_up = count
        self._emit(ev.CaughtUp(count))
        self.outbox.ready.set()
        self.outbox.wake.set()

    async def _worker(self) -> None:
        while True:
            msg = await self._jobs.get()
            try:
                async with self.lock:
                    await self.sync.handle_push(msg)
            except (NotConnected, RequestTimeout):
                pass  # the next sync after reconnect covers it
            except ClientError as exc:
                self._emit(ev.Problem(getattr(msg, "room", None), str(exc)))
            except Exception:
                log.exception("push handling failed")

    # --- membership commands ---------------------------------------------------------
    def _signed(self, room: str, kind: str, target: str, target_key: bytes) -> m.SignedOp:
        state = self.core.log(room).state
        op = state.next_op(kind, self.me, target, target_key, now_ms())  # type: ignore[arg-type]
        return sign_op(self.identity, op)

    async def create_room(self, room: str, members: list[str]) -> None:
        if not is_room_id(room):
            raise NotReady(
                f"{room!r} is not a valid room name (a-z, 0-9, '.', '_', '-'; up to 64)", "bad_room"
            )
        others = sorted(set(members) - {self.me})
        pair = dm_members(room)
        if pair is not None and (self.me not in pair or set(others) - set(pair)):
            raise NotReady(
                f"{room} is a direct-message room of {pair[0]} and {pair[1]}", "forbidden"
            )
        keys = await self.keys.lookup(others) if others else {}
        async with self.lock:
            draft = RoomLog.empty(room)
            signed_ops = []
            for kind, user, key in [
                ("create", self.me, self.identity.sign_pub),
                *(("add", u, keys[u]) for u in others),
            ]:
                op = draft.state.next_op(kind, self.me, user, key, now_ms())  # type: ignore[arg-type]
                signed = sign_op(self.identity, op)
                draft.apply(signed)
                signed_ops.append(signed)
            epoch0 = new_epoch_key(room, 0, draft.index)
            packets = self.core.wrap_for(epoch0, {self.me: self.identity.sign_pub, **keys})
            await self.parts.ask(
                m.CreateRoom(
                    room=room,
                    ops=signed_ops,
                    epoch=m.EpochUpload(epoch=0, after_op=draft.index, packets=packets),
                ),
                m.RoomChanged,
            )
            self.core.feed_ops(room, signed_ops)
            self.core.own_epoch(epoch0)
        self._emit(ev.RoomUpdated(room, "created"))

    async def _membership_change(
        self, room: str, build: Callable[[], tuple[m.AnyRequest, m.SignedOp]]
    ) -> None:
        for attempt in range(3):
            async with self.lock:
                await self.sync.refresh(room)
                if not self.core.log(room).is_member(self.me):
                    raise NotReady(f"you are not a member of {room}", "not_member")
                req, signed = build()
                try:
                    await self.parts.ask(req, m.RoomChanged)
                except ServerRefused as exc:
                    if exc.code == ErrorCode.CONFLICT and attempt < 2:
                        continue
                    raise
                # The server took the op we signed on our verified head: it
                # is part of our log (a leave stays known even though the
                # server then stops serving the room to us).
                self.core.feed_ops(room, [signed])
                if self.core.log(room).is_member(self.me):
                    await self.sync.refresh(room)
                return

    def history_sharing(self, room: str) -> str:
        """Whether members we add get the room's earlier keys: "all" (the
        default: late joiners read the whole history) or "verified" (only
        members whose key we verified)."""
        mode = self.cache.get_meta(f"history:{room}")
        return mode if mode in HISTORY_MODES else "all"

    def set_history_sharing(self, room: str, mode: str) -> None:
        if mode not in HISTORY_MODES:
            raise NotReady(f"history sharing is one of {', '.join(HISTORY_MODES)}", "bad_value")
        self.cache.set_meta(f"history:{room}", mode)

    async def invite(self, room: str, user: str) -> InviteResult:
        key = (await self.keys.lookup([user]))[user]
        verified = self.core.verified(user)
        share = verified or self.history_sharing(room) == "all"

        def build() -> tuple[m.AnyRequest, m.SignedOp]:
            if self.core.log(room).is_member(user):
                raise NotReady(f"{user} is already a member of {room}", "already_member")
            self.core.refuse_if_key_changed(room)
            packets = self.core.history_for(room, user, key) if share else []
            signed = self._signed(room, "add", user, key)
            return m.AddMember(room=room, op=signed, packets=packets), signed

        await self._membership_change(room, build)
        if not share:
            # The newcomer holds no key yet: start an epoch that includes them.
            async with self.lock:
                held = self.core.held(room)
                await self.outbox.rotate(room, max(held) + 1 if held else 0)
        self._emit(ev.RoomUpdated(room, "members"))
        return InviteResult(
            user=user,
            verified=verified,
            safety_number=safety_number(self.me, self.identity.sign_pub, user, key),
            shared_history=share,
        )

    async def remove(self, room: str, user: str) -> None:
        made: list[EpochKey] = []

        def build() -> tuple[m.AnyRequest, m.SignedOp]:
            log = self.core.log(room)
            member = log.state.members.get(user)
            if member is None:
                raise NotReady(f"{user} is not a member of {room}", "not_member")
            signed = self._signed(room, "remove", user, member.key)
            after = log.state.apply(signed)[0]
            held = self.core.held(room)
            epoch = new_epoch_key(room, (max(held) + 1) if held else 0, after.index)
            recipients = {u: mem.key for u, mem in after.members.items()}
            for u, k in recipients.items():
                self.core.check_pin(u, k)
            packets = self.core.wrap_for(epoch, recipients)
            made.append(epoch)
            upload = m.EpochUpload(epoch=epoch.epoch, after_op=after.index, packets=packets)
            return m.RemoveMember(room=room, op=signed, epoch=upload), signed

        await self._membership_change(room, build)
        self.core.own_epoch(made[-1])
        self._emit(ev.RoomUpdated(room, "members"))

    async def promote(self, room: str, user: str) -> None:
        def build() -> tuple[m.AnyRequest, m.SignedOp]:
            member = self.core.log(room).state.members.get(user)
            if member is None:
                raise NotReady(f"{user} is not a member of {room}", "not_member")
            signed = self._signed(room, "promote", user, member.key)
            return m.Promote(room=room, op=signed), signed

        await self._membership_change(room, build)

    async def leave(self, room: str) -> None:
        def build() -> tuple[m.AnyRequest, m.SignedOp]:
            signed = self._signed(room, "leave", self.me, self.identity.sign_pub)
            return m.Leave(room=room, op=signed), signed

        await self._membership_change(room, build)
        self.cache.set_left(room, True)
        self._emit(ev.RoomUpdated(room, "left"))

    async def open_dm(self, user: str) -> str:
        """The DM room with `user`, created if neither side has yet."""
        try:
            room = dm_room(self.me, user)
        except ValueError:
            raise NotReady(
                f"a direct message needs another user's valid name, not {user!r}", "bad_name"
            ) from None
        cached = self.cache.room(room)
        if cached is not None and not cached.left:
            return room
        try:
            await self.create_room(room, [user])
        except ServerRefused as exc:
            if exc.code != ErrorCode.ROOM_EXISTS:
                raise
            async with self.lock:
                await self.sync.full()
        return room

    # --- sending ------------------------------------------------------------------------------
    async def send(
        self, room: str, text: str, *, wait: bool = True, timeout: float | None = None
    ) -> m.SendAck | str:
        """Queue `text` for `room` in the persistent outbox and (with `wait`)
        wait for the server's ack. Returns the ack, or the txn id if not
        waiting. Raises RequestTimeout if not acknowledged within `timeout`
        (the message stays queued and goes out when the connection returns)."""
        txn = self.outbox.queue(room, text)
        if not wait:
            return txn
        return await self.outbox.wait_ack(txn, timeout)

    def queue(self, room: str, text: str) -> str:
        """Queue `text` for `room` in the persistent outbox; its txn id."""
        return self.outbox.queue(room, text)

    async def wait_ack(self, txn: str, timeout: float | None = None) -> m.SendAck:
        """Wait for the ack of a message queued with `send(..., wait=False)`.
        Raises RequestTimeout (still queued) or ServerRefused (it failed)."""
        return await self.outbox.wait_ack(txn, timeout)

    def pending(self, room: str | None = None) -> list[OutboxItem]:
        return self.outbox.pending(room)

    # --- keys ---------------------------------------------------------------------------------
    async def lookup(self, users: list[str]) -> dict[str, bytes]:
        return await self.keys.lookup(users)

    def key_changes(self) -> list[str]:
        return self.keys.key_changes()

    async def key_info(self, user: str) -> KeyInfo:
        return await self.keys.key_info(user)

    def verify_key(self, user: str, verified: bool = True) -> KeyInfo:
        return self.keys.verify(user, verified)

    async def accept_key(self, user: str) -> None:
        await self.keys.accept(user)
        self.outbox.wake.set()

    # --- reading ----------------------------------------------------------------------------------
    def rooms(self) -> list[RoomSummary]:
        out = []
        for room in self.cache.rooms():
            state = self.core.log(room.room).state
            held = self.core.held(room.room)
            out.append(
                RoomSummary(
                    room=room.room,
                    members=sorted(state.members),
                    admins=sorted(u for u, mem in state.members.items() if mem.admin),
                    head=room.head,
                    cursor=room.cursor,
                    unread=room.unread,
                    epoch=max(held) if held else None,
                )
            )
        return out

    def members(self, room: str) -> dict[str, bool]:
        return {u: mem.admin for u, mem in self.core.log(room).state.members.items()}

    def member_details(self, room: str) -> list[MemberInfo]:
        changes = self.cache.key_changes()
        return [
            MemberInfo(
                user=u,
                admin=mem.admin,
                verified=u == self.me or self.core.verified(u),
                key_changed=u in changes,
            )
            for u, mem in sorted(self.core.log(room).state.members.items())
        ]

    async def history(
        self, room: str, *, limit: int = 100, before: int | None = None
    ) -> list[CachedMessage]:
        """The last `limit` messages before `before` (or the newest), fetching
        older pages from the server when the cache does not have them."""
        rows = self.cache.messages(room, limit=limit, before=before)
        older_exist = not rows or rows[0].seq > 1
        if len(rows) < limit and older_exist and self.conn.live:
            await self.sync.older(room, rows[0].seq if rows else before, limit)
            rows = self.cache.messages(room, limit=limit, before=before)
        return rows

    def mark_read(self, room: str) -> None:
        self.cache.clear_unread(room)
