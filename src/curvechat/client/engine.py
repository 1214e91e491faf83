"""The engine every front end shares: identity, connection, sync, outbox and
end-to-end encryption.

State changes (membership logs, keys, messages) happen under one lock, in
order: pushes and syncs are queued to one worker; commands take the same lock.
The outbox has its own task that sends one message at a time, in order, and
keeps a message until the server acknowledged it (a resend after a lost reply
carries the same txn id, so the server stores it once).

The engine never trusts the server for content or membership: it verifies
every membership op against the chain and the pinned keys before it wraps a
key for anyone, and verifies every envelope's signature before showing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq.utils.z85

from curvechat.client import events as ev
from curvechat.client.cache import Cache, CachedMessage, OutboxItem
from curvechat.client.connection import Connection
from curvechat.client.errors import (
    ClientError,
    KeyChanged,
    NotConnected,
    NotReady,
    RequestTimeout,
    ServerRefused,
    UntrustedLog,
)
from curvechat.client.state import ConnState, ConnStatus
from curvechat.crypto.envelope import Plaintext, open_message, seal_message
from curvechat.crypto.errors import CryptoError, MembershipError
from curvechat.crypto.identity import Identity, fingerprint, safety_number
from curvechat.crypto.membership import GENESIS_PREV, MemberState, sign_op
from curvechat.crypto.roomkeys import EpochKey, new_epoch_key, unwrap_key_packet, wrap_epoch_key
from curvechat.protocol import ErrorCode, LocalProtocolError, decode_member_op
from curvechat.protocol import messages as m
from curvechat.protocol.connect import ServerAddress
from curvechat.protocol.limits import (
    MAX_BATCH,
    MAX_PAGE,
    MAX_TEXT_CHARS,
    dm_members,
    dm_room,
    is_room_id,
    is_user_name,
)

log = logging.getLogger("curvechat.client")

RETRY_LATER = {ErrorCode.STORE_UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL}
STORE_DOWN_FAILOVER = 3  # store_unavailable refusals in a row before trying another node
EventHandler = Callable[[ev.Event], None]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    user: str
    fingerprint: str
    safety_number: str
    """Compare this with the peer (in person, by phone) to rule out a key
    substituted by the server."""
    changed: bool
    """A new key was seen and awaits `accept_key`."""
    offered_fingerprint: str | None = None
    offered_safety_number: str | None = None


@dataclass(frozen=True, slots=True)
class RoomSummary:
    room: str
    members: list[str]
    admins: list[str]
    head: int
    cursor: int
    unread: int
    epoch: int | None


MAX_UNCOLLECTED = 10_000
"""Acks kept for `wait_ack` before the collected ones are dropped."""


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _by_seq(items: list[m.StoredMessage]) -> list[m.StoredMessage]:
    """A page in seq order, whatever order the server sent it in."""
    return sorted(items, key=lambda item: item.seq)


def _now_ms() -> int:
    return int(time.time() * 1000)


def new_txn() -> str:
    return secrets.token_urlsafe(16)


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
        **connection_options: Any,
    ) -> None:
        if rotate_after_messages < 1 or rotate_after_seconds <= 0:
            raise ValueError("rotation limits must be positive")
        self.rotate_after_messages = rotate_after_messages
        self.rotate_after_seconds = rotate_after_seconds
        self.identity = identity
        self.me = identity.user
        self.cache = cache
        self._handlers: list[EventHandler] = [on_event] if on_event else []
        self.conn = Connection(
            addresses,
            public_key=zmq.utils.z85.encode(identity.transport_pub),
            secret_key=zmq.utils.z85.encode(identity.transport_secret),
            on_push=self._on_push,
            on_status=self._on_status,
            on_live=self._on_live,
            **connection_options,
        )
        self.conn.outbox_depth = cache.outbox_count
        self._lock = asyncio.Lock()
        self._store_down = 0  # store_unavailable refusals of sends in a row
        self._states: dict[str, MemberState] = {}
        self._ever_keys: dict[str, dict[str, bytes]] = {}
        self._last_departure: dict[str, int] = {}
        """Index of each room's latest remove/leave op (-1: none)."""
        self._jobs: asyncio.Queue[m.AnyReply] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._flush_wake = asyncio.Event()
        self._waiters: dict[str, asyncio.Future[m.SendAck]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.fatal: ClientError | None = None
        self.last_caught_up = 0
        pinned = cache.pin(self.me)
        if pinned is None:
            cache.set_pin(self.me, identity.sign_pub)
        elif pinned != identity.sign_pub:
            raise KeyChanged(self.me, pinned, identity.sign_pub)
        for room in cache.rooms(include_left=True):
            self._load_state(room.room)

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
            asyncio.create_task(self._flusher(), name="engine-outbox"),
        ]
        await self.conn.start()

    async def close(self) -> None:
        await self.conn.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for fut in self._waiters.values():
            fut.cancel()  # the message stays in the outbox for the next run

    async def __aenter__(self) -> ChatClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def retry_now(self) -> None:
        """Cut a reconnect back-off short (the user asked to reconnect now)."""
        self.conn.retry_now()

    @property
    def status(self) -> ConnStatus:
        return self.conn.status

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until connected, registered and synced. Raises the fatal error
        (e.g. the name is taken) if there is one."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        if self.fatal is not None:
            raise self.fatal
        return True

    # --- connection callbacks ----------------------------------------------------
    def _on_status(self, status: ConnStatus) -> None:
        if status.state is not ConnState.LIVE:
            self._ready.clear()
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
            async with self._lock:
                count = await self._sync()
        except ServerRefused as exc:
            if exc.code in (ErrorCode.NAME_TAKEN, ErrorCode.KEY_TAKEN, ErrorCode.BAD_SIGNATURE):
                self.fatal = exc
                self._ready.set()
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
        self._ready.set()
        self._flush_wake.set()

    # --- sync ------------------------------------------------------------------------
    async def _sync(self) -> int:
        reply = await self.conn.request(m.ListRooms())
        assert isinstance(reply, m.RoomList)
        listed = {info.room: info for info in reply.rooms}
        for room in self.cache.rooms():
            if room.room not in listed:
                self.cache.set_left(room.room, True)
                self._emit(ev.RoomUpdated(room.room, "removed"))
        for info in reply.rooms:
            self.cache.ensure_room(info.room)
            self.cache.set_left(info.room, False)
            self.cache.set_head(info.room, info.head)
            try:
                await self._refresh_room(info.room, info)
            except UntrustedLog:
                continue  # reported as a Problem; the other rooms go on
        await self._audit_directory()
        count = 0
        rooms = [r.room for r in self.cache.rooms()]
        # One request names at most MAX_BATCH rooms: sync them a batch at a time.
        for start in range(0, max(len(rooms), 1), MAX_BATCH):
            names = rooms[start : start + MAX_BATCH]
            while True:
                cursors = {r.room: r.cursor for r in self.cache.rooms() if r.room in names}
                batch = await self.conn.request(
                    m.Sync(cursors=cursors, limit=MAX_PAGE, only=len(rooms) > MAX_BATCH)
                )
                assert isinstance(batch, m.SyncReply)
                for msgs in batch.rooms:
                    self.cache.set_head(msgs.room, msgs.head)
                    for item in _by_seq(msgs.items):
                        count += await self._ingest(msgs.room, item, live=False)
                if not batch.more:
                    break
        return count

    async def _audit_directory(self) -> None:
        """Compare the directory's keys of everyone we share a room with to
        our pins: a server that substitutes a key is noticed at every sync."""
        peers = sorted({u for st in self._states.values() for u in st.members} - {self.me})
        for start in range(0, len(peers), MAX_BATCH):
            reply = await self.conn.request(m.Lookup(users=peers[start : start + MAX_BATCH]))
            assert isinstance(reply, m.Directory)
            for entry in reply.users:
                with contextlib.suppress(KeyChanged):
                    self._check_pin(entry.user, entry.sign_pub, directory=True)

    def _load_state(self, room: str) -> MemberState:
        state = MemberState.empty(room)
        ever: dict[str, bytes] = {}
        self._last_departure[room] = -1
        for op_bytes, sig in self.cache.ops(room):
            try:
                state, op = state.apply(m.SignedOp(op=op_bytes, sig=sig))
            except MembershipError as exc:
                self._emit(ev.Problem(room, f"local membership log is invalid: {exc}"))
                self.cache.drop_ops(room)
                state, ever = MemberState.empty(room), {}
                self._last_departure[room] = -1
                break
            self._note_op(room, op, ever)
        self._states[room] = state
        self._ever_keys[room] = ever
        return state

    def _note_op(self, room: str, op: m.MemberOp, ever: dict[str, bytes]) -> None:
        if op.kind in ("create", "add"):
            ever[op.target] = op.target_key
        elif op.kind in ("remove", "leave"):
            self._last_departure[room] = op.index

    def _state(self, room: str) -> MemberState:
        return self._states.get(room) or self._load_state(room)

    def _added_me(self, room: str, user: str) -> bool:
        """Whether `user` added us to `room` at some point (verified log): the
        one who adds a member wraps the older epochs for them, and may have
        left since."""
        for op_bytes, _sig in self.cache.ops(room):
            op = decode_member_op(op_bytes)
            if op.kind == "add" and op.actor == user and op.target == self.me:
                return True
        return False

    def _members_at(self, room: str, index: int) -> set[str]:
        """Who was a member right after membership op `index` (verified log)."""
        state = MemberState.empty(room)
        for op_bytes, sig in self.cache.ops(room)[: index + 1]:
            state, _ = state.apply(m.SignedOp(op=op_bytes, sig=sig))
        return set(state.members)

    def _check_pin(self, user: str, key: bytes, *, directory: bool = False) -> None:
        """Pin `key` for `user` on first sight; on a different key, record the
        change (once), tell the front end, and raise KeyChanged. When the
        directory shows the pinned key again, a pending change is dropped:
        there is nothing left to accept (a room whose log still names the
        other key brings it back at the next send there)."""
        pinned = self.cache.pin(user)
        if pinned is None:
            self.cache.set_pin(user, key)
        elif pinned == key:
            if directory and user in self.cache.key_changes():
                self.cache.drop_key_change(user)
                self._emit(
                    ev.Problem(
                        None,
                        f"the server shows the pinned key of {user} again; the pending key "
                        "change was dropped (compare safety numbers if in doubt)",
                    )
                )
        else:
            if self.cache.key_changes().get(user) != key:
                self.cache.record_key_change(user, key)
                self._emit(ev.KeyChangeDetected(user))
            raise KeyChanged(user, pinned, key)

    async def _refresh_room(self, room: str, info: m.RoomInfo | None = None) -> None:
        """Bring the verified membership log and the epoch keys of `room` up to
        date. Caller holds the lock. Raises UntrustedLog if the log does not verify."""
        state = self._state(room)
        if info is None or info.op_head > state.index:
            while True:
                try:
                    reply = await self.conn.request(m.Members(room=room, after=state.index))
                except ServerRefused as exc:
                    if exc.code in (ErrorCode.NOT_MEMBER, ErrorCode.NO_SUCH_ROOM):
                        self.cache.set_left(room, True)
                        self._emit(ev.RoomUpdated(room, "removed"))
                        return
                    raise
                assert isinstance(reply, m.MemberLog)
                state = self._apply_ops(room, state, reply.ops)
                if len(reply.ops) < MAX_PAGE:
                    break
            self.cache.ensure_room(room)
            self.cache.set_left(room, not state.is_member(self.me))
        keys = self.cache.epoch_keys(room)
        if info is None or info.epoch not in keys:
            await self._fetch_keys(room, 0 if not keys else max(keys) + 1)

    def _apply_ops(self, room: str, state: MemberState, ops: list[m.SignedOp]) -> MemberState:
        ever = self._ever_keys.setdefault(room, {})
        new_ops: list[tuple[int, bytes, bytes]] = []
        try:
            for signed in ops:
                next_state, op = state.apply(signed)
                if op.kind in ("create", "add"):
                    self._check_pin(op.target, op.target_key)
                self._note_op(room, op, ever)
                state = next_state
                new_ops.append((op.index, signed.op, signed.sig))
        except (MembershipError, KeyChanged) as exc:
            self._emit(ev.Problem(room, f"membership log rejected: {exc}"))
            raise UntrustedLog(f"{room}: {exc}") from exc
        finally:
            if new_ops:
                self.cache.add_ops(room, new_ops)
                self._states[room] = state
        return state

    async def _fetch_keys(self, room: str, min_epoch: int) -> None:
        while True:
            try:
                reply = await self.conn.request(m.FetchKeys(room=room, min_epoch=min_epoch))
            except ServerRefused as exc:
                if exc.code in (ErrorCode.NOT_MEMBER, ErrorCode.NO_SUCH_ROOM):
                    return
                raise
            assert isinstance(reply, m.KeyPackets)
            for packet in reply.packets:
                self._accept_packet(room, packet)
            if len(reply.packets) < MAX_PAGE:
                return
            min_epoch = reply.packets[-1].epoch + 1

    def _accept_packet(self, room: str, packet: m.KeyPacket) -> None:
        """Store the epoch key of a packet if it verifies and its sender could
        have sent it: a current member (who may wrap old epochs for someone
        they add), a member at the op the epoch is based on, or whoever added
        us (who wrapped the older epochs for us, and may have left since)."""
        sender_key = self._ever_keys.get(room, {}).get(packet.sender)
        if sender_key is None:
            self._emit(ev.Problem(room, f"key packet from {packet.sender}, who is not in the log"))
            return
        try:
            key = unwrap_key_packet(self.identity, packet, sender_key)
        except CryptoError as exc:
            self._emit(ev.Problem(room, f"key packet for epoch {packet.epoch} rejected: {exc}"))
            return
        state = self._state(room)
        if key.after_op > state.index or (
            not state.is_member(packet.sender)
            and packet.sender not in self._members_at(room, key.after_op)
            and not self._added_me(room, packet.sender)
        ):
            self._emit(
                ev.Problem(
                    room,
                    f"key packet for epoch {key.epoch} from {packet.sender}, who could not "
                    "have made it",
                )
            )
            return
        self.cache.put_epoch_key(room, key.epoch, key.after_op, key.key)

    async def _ingest(self, room: str, item: m.StoredMessage, *, live: bool) -> int:
        """Verify, decrypt and store one message; 1 if it was new. Lock held."""
        if self.cache.has_message(room, item.seq):
            return 0
        env = item.envelope
        text: str | None = None
        error: str | None = None
        sent_ms: int | None = None
        if env.room != room:
            error = f"envelope names room {env.room}"
        else:
            keys = self.cache.epoch_keys(room)
            if env.epoch not in keys or env.sender not in self._ever_keys.get(room, {}):
                with contextlib.suppress(UntrustedLog):
                    await self._refresh_room(room)
                keys = self.cache.epoch_keys(room)
            sender_key = self._ever_keys.get(room, {}).get(env.sender)
            if env.epoch not in keys:
                error = f"no key for epoch {env.epoch}"
            elif sender_key is None:
                error = f"sender {env.sender} is not in the room's membership log"
            else:
                try:
                    plain = open_message(env, key=keys[env.epoch][1], sender_sign_pub=sender_key)
                    text, sent_ms = plain.text, plain.ts
                except CryptoError as exc:
                    error = f"failed to verify or decrypt: {type(exc).__name__}"
            if error is None:
                earlier = self.cache.seen_txn(room, env.sender, env.txn)
                if earlier is not None and earlier < item.seq:
                    text, error = None, f"replay of message {earlier}"
                elif earlier is not None and earlier > item.seq:
                    # The copy came first: the lower seq is the original.
                    self.cache.mark_replay(room, earlier, item.seq)
                    self._emit(ev.Problem(room, f"message {earlier} was a replay of {item.seq}"))
        mine = env.sender == self.me
        stored = self.cache.put_message(
            room,
            item.seq,
            item.ts,
            env.sender,
            env.txn,
            sent_ms,
            text,
            error,
            count_unread=not mine,
            epoch=env.epoch,
        )
        if not stored:
            return 0
        msg = CachedMessage(room, item.seq, item.ts, env.sender, env.txn, sent_ms, text, error)
        self._emit(ev.MessageReceived(msg, mine=mine, live=live))
        return 1

    # --- pushes ----------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            msg = await self._jobs.get()
            try:
                async with self._lock:
                    await self._handle_push(msg)
            except (NotConnected, RequestTimeout):
                pass  # the next sync after reconnect covers it
            except ClientError as exc:
                self._emit(ev.Problem(getattr(msg, "room", None), str(exc)))
            except Exception:
                log.exception("push handling failed")

    async def _handle_push(self, msg: m.AnyReply) -> None:
        if isinstance(msg, m.RoomPush):
            if msg.reason == "removed":
                self.cache.set_left(msg.room, True)
            else:
                await self._refresh_room(msg.room)
                joined = self.cache.room(msg.room)
                if joined is not None and not joined.left:
                    await self._catch_up(msg.room, joined.cursor)
            self._emit(ev.RoomUpdated(msg.room, msg.reason))
            return
        if not isinstance(msg, m.MessagePush):
            return
        room = msg.room
        cached = self.cache.room(room)
        if cached is None or cached.left:
            await self._refresh_room(room)
            cached = self.cache.room(room)
            if cached is None:
                return
        seq = msg.message.seq
        if seq <= cached.cursor:
            return
        if seq > cached.cursor + 1:
            await self._fill_gap(room, cached.cursor, seq)
        await self._ingest(room, msg.message, live=True)

    async def _catch_up(self, room: str, cursor: int) -> None:
        """Fetch everything after `cursor` (a room we just joined or rejoined)."""
        while True:
            reply = await self.conn.request(m.History(room=room, after=cursor, limit=MAX_PAGE))
            assert isinstance(reply, m.Messages)
            self.cache.set_head(room, reply.head)
            for item in _by_seq(reply.items):
                await self._ingest(room, item, live=False)
            top = max((item.seq for item in reply.items), default=cursor)
            if top <= cursor or top >= reply.head:
                return  # done, or a server that makes no progress
            cursor = top

    async def _fill_gap(self, room: str, cursor: int, upto: int) -> None:
        """Fetch the messages between the cursor and a pushed seq (Clone pattern)."""
        while cursor < upto - 1:
            reply = await self.conn.request(
                m.History(room=room, after=cursor, limit=min(MAX_PAGE, upto - 1 - cursor))
            )
            assert isinstance(reply, m.Messages)
            if not reply.items:
                return
            for item in _by_seq(reply.items):
                await self._ingest(room, item, live=False)
            top = max(item.seq for item in reply.items)
            if top <= cursor:
                return  # a server that makes no progress
            cursor = top

    # --- keys and epochs -----------------------------------------------------------------
    async def lookup(self, users: list[str]) -> dict[str, bytes]:
        """Identity keys of `users` from the directory, checked against (or
        pinned on first use into) the local pins. Raises KeyChanged."""
        for user in users:
            if not is_user_name(user):
                raise NotReady(f"{user!r} is not a valid user name", "bad_name")
        reply = await self.conn.request(m.Lookup(users=sorted(set(users))))
        assert isinstance(reply, m.Directory)
        found = {u.user: u.sign_pub for u in reply.users}
        missing = sorted(set(users) - set(found))
        if missing:
            raise ServerRefused(ErrorCode.NO_SUCH_USER, f"no such user: {', '.join(missing)}")
        for user, key in found.items():
            self._check_pin(user, key, directory=True)
        return found

    def _member_keys(self, state: MemberState) -> dict[str, bytes]:
        keys = {}
        for user, member in state.members.items():
            self._check_pin(user, member.key)
            keys[user] = member.key
        return keys

    def _wrap_for_all(self, key: EpochKey, recipients: dict[str, bytes]) -> list[m.KeyPacket]:
        return [
            wrap_epoch_key(self.identity, key, user, pub)
            for user, pub in sorted(recipients.items())
        ]

    def _departed_since(self, room: str, after_op: int) -> bool:
        return self._last_departure.get(room, -1) > after_op

    async def _current_epoch(self, room: str) -> tuple[int, bytes]:
        """The epoch to encrypt with, rotating first if someone left since it
        began. Lock held."""
        keys = self.cache.epoch_keys(room)
        if not keys:
            await self._refresh_room(room)
            keys = self.cache.epoch_keys(room)
            if not keys:
                raise NotReady(f"no key for room {room} yet", "no_key")
        current = max(keys)
        after_op, key = keys[current]
        if self._departed_since(room, after_op):
            return await self._rotate(room, current + 1)
        used, since_ms = self.cache.epoch_usage(room, current)
        age_s = (_now_ms() - since_ms) / 1000
        if used >= self.rotate_after_messages or age_s >= self.rotate_after_seconds:
            # Epoch hygiene (as Megolm): a leaked epoch key exposes at most
            # this many messages, or this much time.
            return await self._rotate(room, current + 1)
        return current, key

    async def _rotate(self, room: str, epoch: int) -> tuple[int, bytes]:
        state = self._state(room)
        new = new_epoch_key(room, epoch, state.index)
        packets = self._wrap_for_all(new, self._member_keys(state))
        await self.conn.request(
            m.NewEpoch(
                room=room, epoch=m.EpochUpload(epoch=epoch, after_op=state.index, packets=packets)
            )
        )
        self.cache.put_epoch_key(room, epoch, state.index, new.key)
        return epoch, new.key

    # --- commands -------------------------------------------------------------------------
    def _signed(self, state: MemberState, kind: str, target: str, target_key: bytes) -> m.SignedOp:
        op = m.MemberOp(
            room=state.room,
            index=state.index + 1,
            prev=state.head,
            kind=kind,  # type: ignore[arg-type]
            actor=self.me,
            target=target,
            target_key=target_key,
            ts=_now_ms(),
        )
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
        keys = await self.lookup(others) if others else {}
        async with self._lock:
            state = MemberState.empty(room)
            signed_ops = []
            assert state.head == GENESIS_PREV
            for kind, user, key in [
                ("create", self.me, self.identity.sign_pub),
                *(("add", u, keys[u]) for u in others),
            ]:
                signed = self._signed(state, kind, user, key)
                state, _ = state.apply(signed)
                signed_ops.append(signed)
            epoch0 = new_epoch_key(room, 0, state.index)
            packets = self._wrap_for_all(epoch0, {self.me: self.identity.sign_pub, **keys})
            await self.conn.request(
                m.CreateRoom(
                    room=room,
                    ops=signed_ops,
                    epoch=m.EpochUpload(epoch=0, after_op=state.index, packets=packets),
                )
            )
            self.cache.ensure_room(room)
            self.cache.set_left(room, False)
            self.cache.add_ops(
                room, [(decode_member_op(s.op).index, s.op, s.sig) for s in signed_ops]
            )
            self._load_state(room)
            self.cache.put_epoch_key(room, 0, state.index, epoch0.key)
        self._emit(ev.RoomUpdated(room, "created"))

    async def _membership_change(
        self, room: str, build: Callable[[MemberState], m.AnyRequest]
    ) -> None:
        for attempt in range(3):
            async with self._lock:
                await self._refresh_room(room)
                state = self._state(room)
                if not state.is_member(self.me):
                    raise NotReady(f"you are not a member of {room}", "not_member")
                try:
                    req = build(state)
                    await self.conn.request(req)
                except ServerRefused as exc:
                    if exc.code == ErrorCode.CONFLICT and attempt < 2:
                        continue
                    raise
                await self._refresh_room(room)
                return

    async def invite(self, room: str, user: str) -> None:
        key = (await self.lookup([user]))[user]

        def build(state: MemberState) -> m.AnyRequest:
            if state.is_member(user):
                raise NotReady(f"{user} is already a member of {room}", "already_member")
            held = self.cache.epoch_keys(room)
            packets = [
                wrap_epoch_key(
                    self.identity, EpochKey(room=room, epoch=e, after_op=a, key=k), user, key
                )
                for e, (a, k) in sorted(held.items())
            ]
            return m.AddMember(room=room, op=self._signed(state, "add", user, key), packets=packets)

        await self._membership_change(room, build)
        self._emit(ev.RoomUpdated(room, "members"))

    async def remove(self, room: str, user: str) -> None:
        def build(state: MemberState) -> m.AnyRequest:
            member = state.members.get(user)
            if member is None:
                raise NotReady(f"{user} is not a member of {room}", "not_member")
            signed = self._signed(state, "remove", user, member.key)
            after, _ = state.apply(signed)
            held = self.cache.epoch_keys(room)
            epoch = new_epoch_key(room, (max(held) + 1) if held else 0, after.index)
            packets = self._wrap_for_all(epoch, self._member_keys(after))
            return m.RemoveMember(
                room=room,
                op=signed,
                epoch=m.EpochUpload(epoch=epoch.epoch, after_op=after.index, packets=packets),
            )

        await self._membership_change(room, build)
        self._emit(ev.RoomUpdated(room, "members"))

    async def promote(self, room: str, user: str) -> None:
        def build(state: MemberState) -> m.AnyRequest:
            member = state.members.get(user)
            if member is None:
                raise NotReady(f"{user} is not a member of {room}", "not_member")
            return m.Promote(room=room, op=self._signed(state, "promote", user, member.key))

        await self._membership_change(room, build)

    async def leave(self, room: str) -> None:
        def build(state: MemberState) -> m.AnyRequest:
            return m.Leave(
                room=room, op=self._signed(state, "leave", self.me, self.identity.sign_pub)
            )

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
            async with self._lock:
                await self._sync()
        return room

    # --- sending ------------------------------------------------------------------------------
    async def send(
        self, room: str, text: str, *, wait: bool = True, timeout: float | None = None
    ) -> m.SendAck | str:
        """Queue `text` for `room` in the persistent outbox and (with `wait`)
        wait for the server's ack. Returns the ack, or the txn id if not
        waiting. Raises RequestTimeout if not acknowledged within `timeout`
        (the message stays queued and goes out when the connection returns)."""
        if not text.strip():
            raise NotReady("empty message", "empty")
        if len(text) > MAX_TEXT_CHARS:
            raise LocalProtocolError(
                ErrorCode.TOO_LARGE, f"message of {len(text)} characters (max {MAX_TEXT_CHARS})"
            )
        try:
            text.encode()
        except UnicodeEncodeError:  # lone surrogates (e.g. undecodable input bytes)
            raise LocalProtocolError(ErrorCode.BAD_FRAME, "text is not valid Unicode") from None
        cached = self.cache.room(room)
        if cached is None or cached.left:
            raise NotReady(f"you are not a member of {room}", "not_member")
        self._refuse_if_key_changed(room)
        txn = new_txn()
        if len(self._waiters) > MAX_UNCOLLECTED:
            for old in [t for t, f in self._waiters.items() if f.done()]:
                del self._waiters[old]
        fut: asyncio.Future[m.SendAck] = asyncio.get_running_loop().create_future()
        self._waiters[txn] = fut
        self.cache.enqueue(room, txn, text)
        self._flush_wake.set()
        if not wait:
            return txn
        return await self.wait_ack(txn, timeout)

    async def wait_ack(self, txn: str, timeout: float | None = None) -> m.SendAck:
        """Wait for the ack of a message queued with `send(..., wait=False)`.
        Raises RequestTimeout (still queued) or ServerRefused (it failed)."""
        fut = self._waiters.get(txn)
        if fut is None:
            raise NotReady(f"no message {txn} is waiting for an ack", "no_such_message")
        try:
            ack = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise RequestTimeout(
                "not acknowledged yet; the message is queued and will be sent on reconnect"
            ) from None
        except ServerRefused:
            self._waiters.pop(txn, None)
            raise
        self._waiters.pop(txn, None)
        return ack

    def pending(self, room: str | None = None) -> list[OutboxItem]:
        return [i for i in self.cache.outbox() if room is None or i.room == room]

    async def _flusher(self) -> None:
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            if not self._ready.is_set() or self.fatal is not None:
                continue
            try:
                await self._flush()
            except Exception:
                # A bug must not stop the outbox for good: log, retry shortly.
                log.exception("outbox flush failed")
                asyncio.get_running_loop().call_later(1.0, self._flush_wake.set)

    async def _flush(self) -> None:
        for item in self.cache.outbox():
            if self._key_change_in(item.room):
                continue  # held until the user accepts the new key
            try:
                ack = await self._send_one(item)
            except NotConnected:
                break
            except RequestTimeout:
                # The outcome is unknown; resending the same txn is safe.
                asyncio.get_running_loop().call_later(1.0, self._flush_wake.set)
                break
            except ServerRefused as exc:
                if exc.code in RETRY_LATER:
                    if exc.code == ErrorCode.STORE_UNAVAILABLE:
                        self._note_store_down()
                    asyncio.get_running_loop().call_later(1.0, self._flush_wake.set)
                    break
                self._fail(item, exc.code, exc.message)
                continue
            except (ClientError, CryptoError, LocalProtocolError) as exc:
                self._fail(item, getattr(exc, "code", "client_error"), str(exc))
                continue
            self._store_down = 0
            self.cache.dequeue(item.txn)
            fut = self._waiters.get(item.txn)
            if fut is not None and not fut.done():
                fut.set_result(ack)  # kept until wait_ack collects it
            self._emit(ev.SendAcked(item.room, item.txn, ack.seq))

    def _note_store_down(self) -> None:
        """The node keeps answering store_unavailable (cut off from its store,
        or the store lost quorum): after a few in a row, try another node if
        there is one. Other nodes may still reach the store; if none can,
        the back-off of the reconnects grows."""
        self._store_down += 1
        if self._store_down >= STORE_DOWN_FAILOVER and len(self.conn.addresses) > 1:
            self._store_down = 0
            self._emit(ev.Problem(None, "the node's store is unavailable: trying another node"))
            self.conn.drop("store unavailable on this node", failed=True)

    def _fail(self, item: OutboxItem, code: str, message: str) -> None:
        self.cache.dequeue(item.txn)
        fut = self._waiters.get(item.txn)
        if fut is not None and not fut.done():
            fut.set_exception(ServerRefused(code, message))
            fut.add_done_callback(_retrieve)
        self._emit(ev.SendFailed(item.room, item.txn, code, message))

    async def _send_one(self, item: OutboxItem) -> m.SendAck:
        for attempt in range(4):
            epoch = -1
            try:
                async with self._lock:
                    epoch, key = await self._current_epoch(item.room)
                    env = seal_message(
                        self.identity,
                        room=item.room,
                        epoch=epoch,
                        key=key,
                        txn=item.txn,
                        plaintext=Plaintext(text=item.text, ts=item.created_ms),
                    )
                ack = await self.conn.request(m.Send(envelope=env))
            except ServerRefused as exc:
                if exc.code in (ErrorCode.STALE_EPOCH, ErrorCode.CONFLICT) and attempt < 3:
                    # Someone else rotated first, or the server wants a rotation.
                    async with self._lock:
                        await self._refresh_room(item.room)
                        keys = self.cache.epoch_keys(item.room)
                        if keys and max(keys) == epoch and exc.code == ErrorCode.STALE_EPOCH:
                            with contextlib.suppress(ServerRefused):
                                await self._rotate(item.room, epoch + 1)
                    continue
                raise
            assert isinstance(ack, m.SendAck)
            async with self._lock:
                stored = self.cache.put_message(
                    item.room,
                    ack.seq,
                    ack.ts,
                    self.me,
                    item.txn,
                    item.created_ms,
                    item.text,
                    None,
                    epoch=epoch,
                )
                msg = CachedMessage(
                    item.room, ack.seq, ack.ts, self.me, item.txn, item.created_ms, item.text, None
                )
            if stored:  # not if a sync or push brought it in first: report it once
                self._emit(ev.MessageReceived(msg, mine=True, live=True))
            return ack
        raise AssertionError("the last attempt returns or raises")

    # --- keys -------------------------------------------------------------------------
    def _key_change_in(self, room: str) -> str | None:
        changes = self.cache.key_changes()
        for user in self._state(room).members:
            if user in changes:
                return user
        return None

    def _refuse_if_key_changed(self, room: str) -> None:
        user = self._key_change_in(room)
        if user is not None:
            pinned = self.cache.pin(user) or b""
            raise KeyChanged(user, pinned, self.cache.key_changes()[user])

    def key_changes(self) -> list[str]:
        """Users whose identity key changed and awaits acceptance."""
        return sorted(self.cache.key_changes())

    async def key_info(self, user: str) -> KeyInfo:
        """Fingerprint and safety number of `user` (asks the directory when
        connected, which also notices a changed key)."""
        if user != self.me and self.conn.live:
            with contextlib.suppress(KeyChanged):
                await self.lookup([user])
        if user == self.me:
            pinned: bytes | None = self.identity.sign_pub
        else:
            pinned = self.cache.pin(user)
        if pinned is None:
            raise NotReady(f"no key known for {user} (not connected?)", "no_such_user")
        offered = self.cache.key_changes().get(user)
        mine = self.identity.sign_pub
        return KeyInfo(
            user=user,
            fingerprint=fingerprint(pinned),
            safety_number=safety_number(self.me, mine, user, pinned),
            changed=offered is not None,
            offered_fingerprint=fingerprint(offered) if offered else None,
            offered_safety_number=safety_number(self.me, mine, user, offered) if offered else None,
        )

    async def accept_key(self, user: str) -> None:
        """Accept the changed key of `user` (after comparing safety numbers):
        re-verify the rooms and release messages held in the outbox."""
        if self.cache.accept_key_change(user) is None:
            raise NotReady(f"no key change is pending for {user}", "no_key_change")
        if self.conn.live:
            async with self._lock:
                with contextlib.suppress(NotConnected, RequestTimeout):
                    await self._sync()
        self._flush_wake.set()

    # --- reading ----------------------------------------------------------------------------------
    def rooms(self) -> list[RoomSummary]:
        out = []
        for room in self.cache.rooms():
            state = self._state(room.room)
            keys = self.cache.epoch_keys(room.room)
            out.append(
                RoomSummary(
                    room=room.room,
                    members=sorted(state.members),
                    admins=sorted(u for u, mem in state.members.items() if mem.admin),
                    head=room.head,
                    cursor=room.cursor,
                    unread=room.unread,
                    epoch=max(keys) if keys else None,
                )
            )
        return out

    def members(self, room: str) -> dict[str, bool]:
        return {u: mem.admin for u, mem in self._state(room).members.items()}

    async def history(
        self, room: str, *, limit: int = 100, before: int | None = None
    ) -> list[CachedMessage]:
        """The last `limit` messages before `before` (or the newest), fetching
        older pages from the server when the cache does not have them."""
        rows = self.cache.messages(room, limit=limit, before=before)
        older_exist = not rows or rows[0].seq > 1
        if len(rows) < limit and older_exist and self.conn.live:
            bound = rows[0].seq if rows else before
            reply = await self.conn.request(
                m.History(room=room, before=bound, limit=min(limit, MAX_PAGE))
            )
            assert isinstance(reply, m.Messages)
            async with self._lock:
                self.cache.set_head(room, reply.head)
                for item in _by_seq(reply.items):
                    await self._ingest(room, item, live=False)
            rows = self.cache.messages(room, limit=limit, before=before)
        return rows

    def mark_read(self, room: str) -> None:
        self.cache.clear_unread(room)
