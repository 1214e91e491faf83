"""Sync and gap fill: bring rooms, logs, keys and messages up to date.

After every (re)connection `full` lists the rooms, brings each room's
verified log and keys up to date and fetches everything past each room's
cursor; pushes are handled in order by `handle_burst`, and a gap in pushed
sequence numbers is fetched (the Clone pattern). Every reply goes through
the trust core, which decides what is believed; this part only asks.

A page of history, or a burst of pushes for one room, is verified and
written to the cache in one transaction (`ingest_page`); a message that did
not open is stored with its error (and, if a key or an op may still open
it, its envelope), is not unread until it opens, and is tried again after
each `refresh` of its room and at the end of `full` (`recover.py`; the
passes of one `full` ask within one deadline). This part must never decide
itself whether a message is shown: the trust core does, message by
message, in seq order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable
from functools import partial
from typing import Any, TypeVar

from curvechat.client import events as ev
from curvechat.client.crypt import open_split
from curvechat.client.errors import KeyChanged, ServerRefused, UntrustedLog
from curvechat.client.model import CachedMessage
from curvechat.client.parts import Parts
from curvechat.client.recover import Recover
from curvechat.client.recovery import keeps_envelope
from curvechat.client.trust.api import Opened
from curvechat.client.withheld import Withheld, pages
from curvechat.protocol import ErrorCode, encode
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_BATCH, MAX_PAGE

GONE = (ErrorCode.NOT_MEMBER, ErrorCode.NO_SUCH_ROOM)

MAX_KEY_PAGES = 64
"""Pages of key packets one fetch reads at most (32,000 packets)."""


R = TypeVar("R")


async def _ask_ahead(request: Coroutine[Any, Any, R]) -> asyncio.Future[R]:
    """Start a request and let it write its frame (its first step) before the
    caller goes on with work that does not await."""
    ahead = asyncio.ensure_future(request)
    await asyncio.sleep(0)
    return ahead


async def _drop(ahead: asyncio.Future[Any] | None) -> None:
    """Cancel a request asked ahead that is not wanted any more."""
    if ahead is not None:
        ahead.cancel()
        await asyncio.gather(ahead, return_exceptions=True)


def by_seq(items: Iterable[m.StoredMessage]) -> list[m.StoredMessage]:
    """A page in seq order, whatever order the server sent it in."""
    return sorted(items, key=lambda item: item.seq)


class Sync:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.recover = Recover(parts, self.verify)
        """Rows that did not open, tried again (`recover.py`)."""
        self.withheld = Withheld(parts)
        """Seqs the server did not hand out when asked (`withheld.py`)."""

    async def full(self) -> int:
        """The sync after a (re)connection. Lock held. Returns the number of
        messages it brought in. The passes over rows that did not open it
        makes (in the refreshes of its pages, and at its end) ask within one
        deadline."""
        with self.recover.one_deadline():
            try:
                return await self._full()
            finally:
                self.withheld.sync_done()  # what it found, told even if it failed

    async def _full(self) -> int:
        self.withheld.new_round()
        reply = await self.p.ask(m.ListRooms(), m.RoomList)
        plan = self.p.core.listing(reply.rooms)
        for info in reply.rooms:
            self.p.cache.set_head(info.room, info.head)
        for room in plan.fetch_ops:
            with contextlib.suppress(UntrustedLog):  # told as a Problem; the others go on
                await self.refresh_ops(room)
        for room, min_epoch in plan.fetch_keys.items():
            await self.fetch_keys(room, min_epoch)
        await self.audit_directory()
        count = 0
        rooms = [r.room for r in self.p.cache.rooms()]
        # One request names at most MAX_BATCH rooms: sync them a batch at a time.
        for start in range(0, max(len(rooms), 1), MAX_BATCH):
            names = rooms[start : start + MAX_BATCH]
            only = len(rooms) > MAX_BATCH
            cursors = self._cursors(names)
            first = m.Sync(cursors=cursors, limit=MAX_PAGE, only=only)
            batch = await self.p.ask(first, m.SyncReply)
            again: dict[str, int] | None = None  # the cursors last asked again from
            while True:
                # Ask for the next batch before opening this one, from where
                # this one should leave the cursors (kept only if it does).
                expect = dict(cursors)
                for msgs in batch.rooms:
                    if msgs.room in expect and msgs.items:
                        top = max(item.seq for item in msgs.items)
                        expect[msgs.room] = max(expect[msgs.room], top)
                ahead = None
                if batch.more and expect != cursors:  # (a page moving nothing: no further)
                    ask = m.Sync(cursors=expect, limit=MAX_PAGE, only=only)
                    ahead = await _ask_ahead(self.p.ask(ask, m.SyncReply))
                try:
                    for msgs in batch.rooms:
                        if msgs.room not in cursors:
                            continue  # not asked for
                        self.p.cache.set_head(msgs.room, msgs.head)
                        count += await self.ingest_page(msgs.room, msgs.items, live=False)
                        self.withheld.note(msgs.room, cursors[msgs.room], msgs.items)
                except BaseException:
                    await _drop(ahead)
                    raise
                if ahead is None:
                    break
                cursors = self._cursors(names)
                if cursors == expect:
                    batch = await ahead
                else:  # a gap or a refused page: ask again from where we are
                    await _drop(ahead)
                    if cursors == again:
                        break  # it moved nothing: a gap too wide to pass (withheld.py)
                    again = cursors
                    ask = m.Sync(cursors=cursors, limit=MAX_PAGE, only=only)
                    batch = await self.p.ask(ask, m.SyncReply)
        await self.withheld.ask_again(partial(self.ingest_page, live=False))
        for room in rooms:  # what another process of this home synced meanwhile
            await self.p.tell_stored(room, live=False)
        return count + await self.recover.rooms()

    async def relist(self) -> None:
        """The rooms' epochs as the server has them (a refused send: ours
        may not be the room's, `trust/position.py`). Lock held."""
        reply = await self.p.ask(m.ListRooms(), m.RoomList)
        for info in reply.rooms:
            self.p.core.position.reported(info.room, info.epoch)

    def _cursors(self, names: list[str]) -> dict[str, int]:
        return {r.room: r.cursor for r in self.p.cache.rooms() if r.room in names}

    async def audit_directory(self) -> None:
        """Compare the directory's keys of everyone we share a room with to
        our pins: a server that substitutes a key is noticed at every sync."""
        core = self.p.core
        peers = sorted(
            {u for r in self.p.cache.rooms() for u in core.log(r.room).state.members} - {self.p.me}
        )
        for start in range(0, len(peers), MAX_BATCH):
            reply = await self.p.ask(m.Lookup(users=peers[start : start + MAX_BATCH]), m.Directory)
            for entry in reply.users:
                if entry.user in peers:
                    with contextlib.suppress(KeyChanged):
                        core.check_pin(entry.user, entry.sign_pub, directory=True)

    async def refresh_ops(self, room: str) -> bool:
        """Fetch and verify the ops past our log's head. Lock held. Returns
        False if the server no longer serves the room to us."""
        core = self.p.core
        while True:
            index = core.log(room).index
            try:
                reply = await self.p.ask(m.Members(room=room, after=index), m.MemberLog)
            except ServerRefused as exc:
                if exc.code in GONE:
                    core.withdrawn(room)
                    return False
                raise
            if reply.room != room:
                raise UntrustedLog(f"{room}: the server answered with the log of {reply.room}")
            core.feed_ops(room, reply.ops)
            if len(reply.ops) < MAX_PAGE or core.log(room).index == index:
                return True

    async def refresh(self, room: str, *, all_keys: bool = False) -> None:
        """Bring the verified log and the epoch keys of `room` up to date,
        then try again the messages that did not open if that changed them.
        With `all_keys`, fetch also the packets below the newest epoch held
        (history shared after an add is older). Lock held. Raises
        UntrustedLog if the log does not verify."""
        if await self.refresh_ops(room):
            held = self.p.core.held(room)
            if all_keys:  # from the oldest epoch we lack, up to keys we hold
                lacking = next(e for e in range(len(held) + 1) if e not in held)
                await self.fetch_keys(room, lacking, until_held=True)
                held = self.p.core.held(room)
            await self.fetch_keys(room, self.p.core.keys_from(room))
            await self.recover.room(room)

    async def fetch_keys(self, room: str, min_epoch: int, *, until_held: bool = False) -> None:
        """Key packets for us from `min_epoch` on, page by page, at most
        `MAX_KEY_PAGES` (a server sending page after page of packets that
        do not file cannot keep the lock; the rest come at the next fetch);
        with `until_held`, only until a page brings no key we lacked, and
        packets of epochs we hold are passed over unopened."""
        for _ in range(MAX_KEY_PAGES):
            try:
                reply = await self.p.ask(m.FetchKeys(room=room, min_epoch=min_epoch), m.KeyPackets)
            except ServerRefused as exc:
                if exc.code in GONE:
                    return
                raise
            filed = self.p.core.feed_packets(room, reply.packets, new_only=until_held)
            top = max((p.epoch for p in reply.packets), default=min_epoch - 1)
            if len(reply.packets) < MAX_PAGE or top < min_epoch or (until_held and not filed):
                return
            min_epoch = top + 1

    async def verify(self, room: str, envs: list[m.Envelope]) -> list[Opened]:
        """Verify and open `envs` of `room`. If some were sealed under
        another key for an epoch than the one we hold, that epoch's packets
        are asked for again (once a round: did a member give us another?)
        and they are opened again. Lock held."""
        core = self.p.core
        verified = core.verify_many(room, envs, crypt=open_split)
        again = core.keys_to_ask_again(room)
        if again:
            try:
                await self.fetch_keys(room, min(again))
            except BaseException:
                core.ask_keys_later(room, again)  # not asked: the next try asks
                raise
            verified = core.verify_many(room, envs, crypt=open_split)
        return verified

    async def ingest(self, room: str, item: m.StoredMessage, *, live: bool) -> int:
        """Verify, decrypt and store one message; 1 if it was new. Lock held."""
        return await self.ingest_page(room, [item], live=live)

    async def ingest_page(self, room: str, items: Iterable[m.StoredMessage], *, live: bool) -> int:
        """Verify, decrypt and store a page of messages of `room` in one cache
        transaction; the number that were new. Lock held."""
        cache, core = self.p.cache, self.p.core
        page: dict[int, m.StoredMessage] = {}
        for item in by_seq(items):
            page.setdefault(item.seq, item)  # a seq twice in one page: the first
        known = cache.known_seqs(room, list(page))
        fresh = [item for seq, item in page.items() if seq not in known]
        if not fresh:
            await self.p.tell_stored(room, live=live)  # another process stored them
            return 0
        if core.needs_refresh(room, (i.envelope for i in fresh if i.envelope.room == room)):
            with contextlib.suppress(UntrustedLog):
                await self.refresh(room)
        shown: list[tuple[CachedMessage, bool]] = []
        verified = await self.verify(room, [i.envelope for i in fresh])
        # No await from here to the end of the transaction.
        with cache.batch(room) as batch:
            for item, checked in zip(fresh, verified, strict=True):
                env = item.envelope
                opened = core.check_replay(room, item.seq, env, checked)
                mine = env.sender == self.p.me
                keep = opened.error is not None and keeps_envelope(opened.rule)  # to open again
                if batch.add(
                    item.seq,
                    item.ts,
                    env.sender,
                    env.txn,
                    opened.sent_ms,
                    opened.text,
                    opened.error,
                    count_unread=not mine and opened.error is None,  # else when it opens
                    epoch=env.epoch,
                    envelope=encode(env) if keep else None,
                    rule=opened.rule,
                ):
                    msg = CachedMessage(
                        room,
                        item.seq,
                        item.ts,
                        env.sender,
                        env.txn,
                        opened.sent_ms,
                        opened.text,
                        opened.error,
                    )
                    shown.append((msg, mine))
        # Rows another process of this home stored (below the page, in it, or
        # past it up to the cursor) are told in their place among ours.
        if shown:
            await self.p.tell_stored(room, shown[0][0].seq - 1, live=live)
        for msg, mine in shown:
            self.p.emit(ev.MessageReceived(msg, mine=mine, live=live))
        await self.p.tell_stored(room, live=live)
        return len(shown)

    async def handle_burst(self, pushes: list[m.AnyReply]) -> None:
        """One element of `bursts`: message pushes of one room, or one other
        push. Lock held."""
        first = pushes[0]
        if isinstance(first, m.MessagePush):
            await self.handle_messages(
                first.room, [p.message for p in pushes if isinstance(p, m.MessagePush)]
            )
        else:
            await self.handle_push(first)

    async def handle_push(self, msg: m.AnyReply) -> None:
        """One push from the server, in order. Lock held."""
        cache = self.p.cache
        if isinstance(msg, m.Resync):
            # The node withheld pushes while we did not read: fetch by seq.
            count = await self.full()
            self.p.emit(ev.CaughtUp(count))
            return
        if isinstance(msg, m.RoomPush):
            if msg.reason in ("removed", "left"):
                # Only a hint: the room is hidden until a listing shows it again (R3).
                self.p.core.withdrawn(msg.room, msg.reason)
                return
            await self.refresh(msg.room, all_keys=msg.reason == "keys")
            joined = cache.room(msg.room)
            if joined is not None and not joined.left:
                await self.catch_up(msg.room, joined.cursor)
            self.p.emit(ev.RoomUpdated(msg.room, msg.reason))
            return
        if isinstance(msg, m.MessagePush):
            await self.handle_messages(msg.room, [msg.message])

    async def handle_messages(self, room: str, items: list[m.StoredMessage]) -> None:
        """Pushed messages of one room, in order: stored in one transaction,
        a gap before or between them fetched first. Lock held."""
        cache = self.p.cache
        cached = cache.room(room)
        if cached is None or cached.left:
            await self.refresh(room)
            cached = cache.room(room)
            if cached is None or cached.left:
                return
        cursor = cached.cursor
        late = [item for item in items if item.seq <= cursor]
        if late:
            # Stored by another process of this home (told), or at seqs
            # recorded as withheld (stored in their place): `ingest_page`
            # stores only the seqs not stored yet.
            await self.ingest_page(room, late, live=True)
            if len(late) == len(items):
                return
        run: list[m.StoredMessage] = []
        for item in by_seq(items):
            if item.seq <= cursor:
                continue
            if item.seq > cursor + 1:
                if run:
                    await self.ingest_page(room, run, live=True)
                    run = []
                await self.fill_gap(room, cursor, item.seq)
            run.append(item)
            cursor = item.seq
        if run:
            await self.ingest_page(room, run, live=True)

    async def catch_up(self, room: str, cursor: int) -> None:
        """Fetch everything after `cursor` (a room we just joined or rejoined).
        The next page is asked for before this one is opened, so that the
        server reads it while we verify."""
        reply = await self.p.ask(m.History(room=room, after=cursor, limit=MAX_PAGE), m.Messages)
        while True:
            self.p.cache.set_head(room, reply.head)
            top = max((item.seq for item in reply.items), default=cursor)
            more = cursor < top < reply.head  # else done, or a server that makes no progress
            ahead = None
            if more:
                ask = m.History(room=room, after=top, limit=MAX_PAGE)
                ahead = await _ask_ahead(self.p.ask(ask, m.Messages))
            try:
                await self.ingest_page(room, reply.items, live=False)
                self.withheld.note(room, cursor, reply.items)
            except BaseException:
                await _drop(ahead)
                raise
            if ahead is None:
                await self.p.tell_stored(room, live=False)  # another process's catch-up
                return
            cursor = top
            reply = await ahead

    async def fill_gap(self, room: str, cursor: int, upto: int) -> None:
        """Fetch the messages between the cursor and a pushed seq (Clone
        pattern): all are stored, since `upto` was pushed, so what the
        server does not give is recorded as withheld."""
        async for page in pages(self.p.ask, room, cursor, upto - 1):
            await self.ingest_page(room, page.items, live=False)
            self.withheld.note(
                room, page.after, page.items, upto - 1 if page.last is None else page.last
            )

    async def older(self, room: str, before: int | None, limit: int) -> None:
        """Fetch a page of older history into the cache (lock taken here)."""
        reply = await self.p.ask(
            m.History(room=room, before=before, limit=min(limit, MAX_PAGE)), m.Messages
        )
        # Only rows below `before`: one put far above would move the room's head.
        items = [i for i in reply.items if before is None or i.seq < before]
        async with self.p.lock:
            self.p.cache.set_head(room, reply.head)
            await self.ingest_page(room, items, live=False)
