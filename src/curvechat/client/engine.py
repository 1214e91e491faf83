"""The engine every front end shares: `ChatClient`.

It wires the parts together and runs the commands: the connection
(failover, liveness), the trust core (every decision about keys, epochs,
members and messages; `trust/`), sync and gap fill (`sync.py`), the outbox
(`outbox.py`) and the pins (`keys.py`); what a front end is shown about
rooms is read in `summary.py`. Pushes are handled in order by one worker
(`pushworker.py`, a bounded queue) under the shared lock; the sync after
connecting and the commands take the same lock.

The engine never decides what to believe: it asks the server, feeds the
replies to the trust core, and acts on what the core returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

import zmq.utils.z85

from curvechat.client import events as ev
from curvechat.client.cache import Cache, CachedMessage, CacheRefusals, OutboxItem
from curvechat.client.connection import Connection
from curvechat.client.errors import (
    ClientError,
    NotConnected,
    NotReady,
    RequestTimeout,
    ServerRefused,
)
from curvechat.client.keys import KeyInfo, Keys
from curvechat.client.outbox import Outbox
from curvechat.client.parts import EventHandler, Parts, Requester
from curvechat.client.peer.core import Provisional
from curvechat.client.peer.shell import PeerMode, PeerOptions
from curvechat.client.pushworker import PushWorker
from curvechat.client.rooms import InviteResult, RoomCommands
from curvechat.client.state import ConnState, ConnStatus
from curvechat.client.summary import MemberInfo, RoomSummary, member_details, room_summaries
from curvechat.client.sync import Sync
from curvechat.client.told import Told
from curvechat.client.trust import TrustCore
from curvechat.crypto.identity import Identity
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol.connect import ServerAddress
from curvechat.protocol.limits import MAX_CONTACTS, is_user_name
from curvechat.protocol.text import clip

__all__ = ["CONTACT_ACTIONS", "ChatClient", "InviteResult", "KeyInfo"]

CONTACT_ACTIONS = ("add", "remove", "only", "anyone")
"""What `ChatClient.contacts` may do to the list (the CLI's parser keeps
its own copy, to stay clear of the engine's imports)."""

log = logging.getLogger("curvechat.client")


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
        peers: PeerOptions | None = None,
        **connection_options: Any,
    ) -> None:
        self.identity = identity
        self.me = identity.user
        self.cache = cache
        self._handlers: list[EventHandler] = [on_event] if on_event else []
        link: Any = conn or Connection(
            addresses,
            public_key=zmq.utils.z85.encode(identity.transport_pub),
            secret_key=zmq.utils.z85.encode(identity.transport_secret),
            on_push=self._on_push,
            on_status=self._on_status,
            on_live=self._on_live,
            **{"spread_key": identity.user, **connection_options},
        )
        if isinstance(link, Connection):
            link.outbox_depth = cache.outbox_count
        self.core = TrustCore(identity, cache, self._emit)
        self.parts = Parts(
            identity=identity, cache=cache, core=self.core, conn=link, emit=self._emit
        )
        # What was there, up to each room's cursor: the front end reads it.
        self.parts.told = Told({r.room: r.cursor for r in cache.rooms()})
        self.sync = Sync(self.parts)
        self.outbox = Outbox(
            self.parts,
            self.sync,
            rotate_after_messages=rotate_after_messages,
            rotate_after_seconds=rotate_after_seconds,
        )
        self.keys = Keys(self.parts, self.sync)
        self.room_commands = RoomCommands(self.parts, self.sync, self.keys)
        self._refusals = CacheRefusals(self._tell_cache_refused)
        self.pushes = PushWorker(self.parts, self.sync, self._refusals)
        self._tasks: list[asyncio.Task[None]] = []
        self.fatal: ClientError | None = None
        self.last_caught_up = 0
        self.owns_cache = False
        """Set by `open_client`: `close` closes the cache too."""
        self.peer = PeerMode(self, peers) if peers is not None else None
        """Peer-to-peer mode (`peer/`), when asked for."""

    @property
    def conn(self) -> Any:
        """The connection every part talks through (a test may swap in a double)."""
        return self.parts.conn

    @conn.setter
    def conn(self, value: Any) -> None:
        self.parts.conn = value

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
            asyncio.create_task(self.pushes.run(), name="engine-worker"),
            asyncio.create_task(self.outbox.run(), name="engine-outbox"),
        ]
        await self.conn.start()
        if self.peer is not None:
            await self.peer.start()

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()
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
            async with asyncio.timeout(timeout):
                await self.outbox.ready.wait()
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
        self.pushes.put(msg)

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
                self.sync.recover.new_round()
                self.pushes.jobs.overflowed = False  # what was dropped, this sync fetches
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
        except sqlite3.OperationalError as exc:
            # Another process of this home holds the cache past SQLite's wait
            # (a long write): not a bug, and not ready without a complete
            # sync either. Start over on a fresh connection, after the back-off.
            log.warning("the sync after connecting stopped: the local cache: %s", exc)
            self._refusals.refused(exc)
            self.conn.drop(f"sync failed: the local cache: {exc}", failed=True)
            return
        except Exception:
            # A bug must not leave the client connected and never ready.
            log.exception("the sync after connecting failed")
            self.conn.drop("sync failed: an internal error", failed=True)
            return
        self._refusals.passed()
        self.last_caught_up = count
        self._emit(ev.CaughtUp(count))
        self.outbox.ready.set()
        self.outbox.wake.set()

    def _tell_cache_refused(self, exc: sqlite3.Error) -> None:
        why = f"the local cache refuses writes ({exc}): what arrives is fetched once it takes them"
        self._emit(ev.Problem(None, why))

    # --- membership commands (rooms.py) ------------------------------------------------
    async def create_room(self, room: str, members: list[str]) -> None:
        await self.room_commands.create(room, members)

    async def invite(self, room: str, user: str) -> InviteResult:
        return await self.room_commands.invite(room, user)

    async def remove(self, room: str, user: str) -> None:
        await self.room_commands.remove(room, user)

    async def promote(self, room: str, user: str) -> None:
        await self.room_commands.promote(room, user)

    async def leave(self, room: str) -> None:
        await self.room_commands.leave(room)

    async def open_dm(self, user: str) -> str:
        return await self.room_commands.open_dm(user)

    def history_sharing(self, room: str) -> str:
        return self.room_commands.history_sharing(room)

    def set_history_sharing(self, room: str, mode: str) -> None:
        self.room_commands.set_history_sharing(room, mode)

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

    def queue_many(self, room: str, texts: list[str]) -> list[str]:
        """Queue `texts` for `room`, in order, with one durable commit; their txn ids."""
        return self.outbox.queue_many(room, texts)

    async def wait_ack(self, txn: str, timeout: float | None = None) -> m.SendAck:
        """Wait for the ack of a message queued with `send(..., wait=False)`.
        Raises RequestTimeout (still queued) or ServerRefused (it failed)."""
        return await self.outbox.wait_ack(txn, timeout)

    def expect_acks(self, items: list[OutboxItem]) -> None:
        """`wait_ack` answers for `items` (the outbox's, queued by an earlier process) too."""
        self.outbox.expect(items)

    def pending(self, room: str | None = None) -> list[OutboxItem]:
        return self.outbox.pending(room)

    # --- keys ---------------------------------------------------------------------------------
    async def lookup(self, users: list[str]) -> dict[str, bytes]:
        return await self.keys.lookup(users)

    def key_changes(self) -> list[str]:
        return self.keys.key_changes()

    async def key_info(self, user: str) -> KeyInfo:
        return await self.keys.key_info(user)

    def known_key_info(self, user: str) -> KeyInfo:
        """`key_info` from the cache alone, without asking the directory:
        the pending change as recorded now."""
        return self.keys.info(user)

    def verify_key(self, user: str, verified: bool = True) -> KeyInfo:
        return self.keys.verify(user, verified)

    async def accept_key(self, user: str, key: bytes) -> None:
        """Accept the changed key of `user`: `key` is the offered key the
        user was shown (`key_info(user).offered`); refused with
        `key_changed_again` if another key is offered by now."""
        await self.keys.accept(user, key)
        self.outbox.wake.set()

    # --- contacts ---------------------------------------------------------------------------------
    async def contacts(self, action: str | None = None, users: Sequence[str] = ()) -> m.ContactList:
        """The user's contact list on the server, and whether only the users
        on it may put the user in a room; with `action`, changed first:
        "add" or "remove" `users`, "only" (take rooms only from contacts) or
        "anyone" (from anyone)."""
        if action is None:
            return await self.parts.ask(m.Contacts(), m.ContactList)
        if action not in CONTACT_ACTIONS:
            raise NotReady(f"no contacts action {clip(action)!r}", "bad_value")
        return await self.set_contacts(
            only={"only": True, "anyone": False}.get(action),
            add=users if action == "add" else (),
            remove=users if action == "remove" else (),
        )

    async def set_contacts(
        self, *, only: bool | None = None, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> m.ContactList:
        """Add and remove contacts, and with `only`, take rooms only from
        them (True) or from anyone (False); the list as it now is."""
        for user in (*add, *remove):
            if not is_user_name(user):
                raise NotReady(f"{clip(user)!r} is not a valid user name", "bad_name")
        if self.me in add:
            raise NotReady("you cannot be a contact of your own", "bad_name")
        if len(set(add)) > MAX_CONTACTS or len(set(remove)) > MAX_CONTACTS:
            raise NotReady(f"a contact list holds at most {MAX_CONTACTS:,} users", "too_large")
        req = m.SetContacts(only=only, add=sorted(set(add)), remove=sorted(set(remove)))
        return await self.parts.ask(req, m.ContactList)

    # --- reading ----------------------------------------------------------------------------------
    def rooms(self) -> list[RoomSummary]:
        return room_summaries(self.cache, self.core, self.me)

    def members(self, room: str) -> dict[str, bool]:
        return {u: mem.admin for u, mem in self.core.log(room).state.members.items()}

    def member_details(self, room: str) -> list[MemberInfo]:
        return member_details(self.cache, self.core, self.me, room)

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
        # Told again if another process of this home opens them (told.py).
        self.parts.told.read_unreadable(room, [r.seq for r in rows if r.error is not None])
        return rows

    def provisional(self, room: str) -> list[Provisional]:
        """Messages taken peer to peer (or written offline) that are not on
        the server yet, in their provisional order."""
        return self.peer.core.provisional(room) if self.peer is not None else []

    def mark_read(self, room: str) -> None:
        """Clear `room`'s unread count; kept as it was, and logged, if another
        process of this home holds the cache past its busy timeout (the next
        mark clears it)."""
        try:
            self.cache.clear_unread(room)
        except sqlite3.OperationalError as exc:
            log.warning("could not mark %s read: %s", room, exc)
