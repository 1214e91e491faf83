"""What the engine's parts (sync, outbox, keys, commands) share: the
connection, the trust core, the cache, one lock and the event sink.

State changes (membership logs, keys, messages) happen under `lock`, in
order, whichever part makes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from curvechat.client import events as ev
from curvechat.client.errors import ServerRefused
from curvechat.client.model import CachedMessage
from curvechat.client.trust import EpochRecord, TrustCore
from curvechat.crypto.identity import Identity
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m

if TYPE_CHECKING:
    from curvechat.client.cache import Cache

EventHandler = Callable[[ev.Event], None]
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
    told: dict[str, int] = field(default_factory=dict)
    """Per room, the highest seq the front end was told of (`MessageReceived`)
    or that the cache held when the engine started. A row above it that the
    cache holds and this engine did not store was stored by another process
    of the same home (a `send`, a second `tail`): it is told all the same
    (`untold`), or the front end would never show it."""

    def __post_init__(self) -> None:
        sink = self.emit

        def emit(event: ev.Event) -> None:
            if isinstance(event, ev.MessageReceived):
                room, seq = event.message.room, event.message.seq
                if seq > self.told.get(room, 0):
                    self.told[room] = seq
            sink(event)

        self.emit = emit

    @property
    def me(self) -> str:
        return self.identity.user

    def untold(self, room: str, seqs: Iterable[int]) -> list[CachedMessage]:
        """The messages of `room` the cache holds at `seqs` above what the
        front end was told, in seq order."""
        ahead = [seq for seq in seqs if seq > self.told.get(room, 0)]
        return self.cache.messages_at(room, ahead) if ahead else []

    def tell(self, messages: Iterable[CachedMessage], *, live: bool) -> None:
        for msg in messages:
            self.emit(ev.MessageReceived(msg, mine=msg.sender == self.me, live=live))

    def tell_cached(self, room: str, *, live: bool) -> None:
        """Tell what the cache holds of `room` up to its cursor above what
        the front end was told: rows another process of this home stored
        and moved the cursor over (so a sync of this one fetches nothing)."""
        cached = self.cache.room(room)
        cursor = 0 if cached is None else cached.cursor
        while self.told.get(room, 0) < cursor:
            rows = self.cache.messages(room, after=self.told.get(room, 0), limit=512)
            rows = [msg for msg in rows if msg.seq <= cursor]
            if not rows:
                return
            self.tell(rows, live=live)

    async def ask(self, req: m.AnyRequest, kind: type[R], *, timeout: float | None = None) -> R:
        """Send `req` and return its reply, which must be a `kind` (within
        `timeout` seconds; None: the connection's request timeout)."""
        return expect(await self.conn.request(req, timeout), kind)

    async def rotate(self, room: str, epoch: int) -> EpochRecord:
        """Make epoch `epoch` of `room` for its current members (the trust
        core makes and boxes the key; the server must take it). Lock held."""
        key, packets = self.core.new_epoch(room, epoch)
        upload = m.EpochUpload(epoch=epoch, after_op=key.after_op, packets=packets)
        await self.ask(m.NewEpoch(room=room, epoch=upload), m.RoomChanged)
        self.core.own_epoch(key)
        return EpochRecord(epoch=epoch, after_op=key.after_op, key=key.key, sender=self.me)


def expect(reply: m.AnyReply, kind: type[R]) -> R:
    """`reply`, which must be a `kind` (else ServerRefused, bad_frame)."""
    if not isinstance(reply, kind):
        raise ServerRefused(
            ErrorCode.BAD_FRAME, f"expected {kind.__name__}, got {type(reply).__name__}"
        )
    return reply
