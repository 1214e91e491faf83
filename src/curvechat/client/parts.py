"""What the engine's parts (sync, outbox, keys, commands) share: the
connection, the trust core, the cache, one lock and the event sink.

State changes (membership logs, keys, messages) happen under `lock`, in
order, whichever part makes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from curvechat.client import events as ev
from curvechat.client.acks import retrieve
from curvechat.client.errors import ServerRefused
from curvechat.client.told import UNREADABLE_KEPT, Told
from curvechat.client.trust import EpochRecord, TrustCore
from curvechat.crypto.identity import Identity
from curvechat.crypto.roomkeys import EpochKey
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m

if TYPE_CHECKING:
    from curvechat.client.cache import Cache

EventHandler = Callable[[ev.Event], None]
TELL_PAGE = 512
"""Rows read at a time to tell those another process stored."""
R = TypeVar("R", bound=m.AnyReply)


class Requester(Protocol):
    """The connection as the parts use it (tests may pass a double)."""

    @property
    def addresses(self) -> list[Any]: ...
    @property
    def live(self) -> bool: ...
    async def request(self, req: m.AnyRequest, timeout: float | None = None) -> m.AnyReply: ...
    def submit(
        self, req: m.AnyRequest, timeout: float | None = None
    ) -> asyncio.Future[m.AnyReply]: ...
    def submit_sends(
        self, reqs: Sequence[m.Send], timeout: float | None = None
    ) -> list[asyncio.Future[m.AnyReply]]: ...
    def drop(self, reason: str, *, failed: bool = False) -> None: ...


@dataclass
class Parts:
    identity: Identity
    cache: Cache
    core: TrustCore
    conn: Requester
    emit: EventHandler
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    told: Told = field(default_factory=lambda: Told({}))
    """Which cached messages the front end was told of (`told.py`)."""
    _opened_at: dict[str, int] = field(default_factory=dict)
    """room -> the cache's count of writes by other processes, when `tell_opened` last read it."""

    def __post_init__(self) -> None:
        sink = self.emit

        def emit(event: ev.Event) -> None:
            if isinstance(event, ev.MessageReceived):
                msg = event.message
                self.told.shown(msg.room, msg.seq, readable=msg.error is None)
            sink(event)

        self.emit = emit

    @property
    def me(self) -> str:
        return self.identity.user

    async def ask(self, req: m.AnyRequest, kind: type[R], *, timeout: float | None = None) -> R:
        """Send `req` and return its reply, which must be a `kind` (within
        `timeout` seconds; None: the connection's request timeout)."""
        return expect(await self.conn.request(req, timeout), kind)

    async def rotate(self, room: str, epoch: int) -> EpochRecord:
        """Make epoch `epoch` of `room` for its current members (the trust
        core makes and boxes the key; the server must take it). Lock held."""
        key, answer = self.begin_rotation(room, epoch)
        expect(await answer, m.RoomChanged)
        return self.rotated(key)

    def begin_rotation(self, room: str, epoch: int) -> tuple[EpochKey, asyncio.Future[m.AnyReply]]:
        """`rotate` up to the request: the key, and the future of the
        server's answer (the request is on its way). Lock held."""
        key, packets = self.core.new_epoch(room, epoch)
        upload = m.EpochUpload(epoch=epoch, after_op=key.after_op, packets=packets)
        answer = self.conn.submit(m.NewEpoch(room=room, epoch=upload))
        answer.add_done_callback(retrieve)
        return key, answer

    def rotated(self, key: EpochKey) -> EpochRecord:
        """The server took the epoch `key` begun: it is ours to seal under."""
        self.core.own_epoch(key)
        return EpochRecord(epoch=key.epoch, after_op=key.after_op, key=key.key, sender=self.me)

    def tell_opened(self, room: str) -> None:
        """Tell again the rows of `room` told as unreadable that the cache
        holds opened now: another process of this home opened them; and the
        rows it holds now at seqs the told mark passed while it held none
        (a range withheld here that another process filled). Read only when
        another process wrote to the cache since last asked."""
        unreadable, missing = self.told.unreadable(room), self.told.missing(room)
        if not unreadable and not missing:
            return
        version = self.cache.written_elsewhere()
        if self._opened_at.get(room) == version:
            return
        self._opened_at[room] = version
        gaps = set(missing)
        for msg in self.cache.messages_at(room, sorted({*unreadable, *missing})):
            if msg.error is None or msg.seq in gaps:
                self.emit(ev.MessageReceived(msg, mine=msg.sender == self.me, live=False))

    def tell_stored_now(self, room: str, upto: int | None = None, *, live: bool) -> None:
        """Tell, in seq order, the rows of `room` the cache holds up to `upto`
        (its cursor at most) that the front end was not told of: another
        process of this home stored them. All at once: see `tell_stored`."""
        self.tell_opened(room)
        while not self._tell_page(room, upto, live=live):
            pass

    async def tell_stored(self, room: str, upto: int | None = None, *, live: bool) -> None:
        """As `tell_stored_now`, a page of rows at a time, letting the event
        loop run between pages (another process may have synced thousands)."""
        self.tell_opened(room)
        while not self._tell_page(room, upto, live=live):
            await asyncio.sleep(0)

    def _tell_page(self, room: str, upto: int | None, *, live: bool) -> bool:
        """One page of `tell_stored`; True when there is nothing more."""
        start = self.told.upto(room)
        if upto is not None and start >= upto:
            return True  # no need to ask the cache
        cached = self.cache.room(room)
        limit = 0 if cached is None else cached.cursor
        if upto is not None:
            limit = min(limit, upto)
        if start >= limit:
            return True
        rows = self.cache.messages(room, after=start, limit=TELL_PAGE)
        for msg in rows:
            if msg.seq <= limit and not self.told.told(room, msg.seq):
                self.emit(ev.MessageReceived(msg, mine=msg.sender == self.me, live=live))
        seen = [msg.seq for msg in rows if msg.seq <= limit]
        done = len(rows) < TELL_PAGE or len(seen) < len(rows)
        mark = limit if done else seen[-1]
        self.told.passed(room, mark, _missing(start, mark, seen))
        return done


def _missing(start: int, mark: int, seen: list[int]) -> list[int]:
    """The seqs above `start` up to `mark` not in `seen` (ascending), the
    newest UNREADABLE_KEPT at most: what the told mark passes over with no
    row cached there."""
    have = set(seen)
    out: list[int] = []
    seq = mark
    while seq > start and len(out) < UNREADABLE_KEPT:
        if seq not in have:
            out.append(seq)
        seq -= 1
    return out[::-1]


def expect(reply: m.AnyReply, kind: type[R]) -> R:
    """`reply`, which must be a `kind` (else ServerRefused, bad_frame)."""
    if not isinstance(reply, kind):
        raise ServerRefused(
            ErrorCode.BAD_FRAME, f"expected {kind.__name__}, got {type(reply).__name__}"
        )
    return reply
