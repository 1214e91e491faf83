"""Peer-to-peer mode's dialing side, `Dialer`: the links to other members'
listeners, and the exchanges a round makes over them.

An exchange with a listener (a member runs one per client, each with a
record of its own) goes over every room both share: it sends a digest,
takes the envelopes the reply carries, and offers the ones asked for. Up
to DIAL_AT_ONCE listeners are exchanged with at once, each within
PEER_BUDGET request timeouts; a listener still busy with its last exchange
is not dialed again, and a round waits for the others a given time at
most, so a member that is away or slow delays no other. What the core
takes is handed to `tell`; how each exchange went is told to the core,
which may withdraw the record (handed to `withdrawn`).

This module must never decide what to believe or whom to dial (the core
and the shell do), nor talk to the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import zmq.asyncio

from curvechat.client import events as ev
from curvechat.client.errors import PeerRefused, PeerUnreachable
from curvechat.client.peer.core import PeerCore, Provisional
from curvechat.client.peer.link import PeerLink
from curvechat.client.peer.records import Listener, listener
from curvechat.crypto.identity import Identity
from curvechat.protocol import peer as p
from curvechat.protocol.errors import ErrorCode, ProtocolError

log = logging.getLogger("curvechat.peer")

DIAL_AT_ONCE = 16
"""Listeners exchanged with at once in a round."""
PEER_BUDGET = 4
"""A listener's exchanges in one round may take this many request timeouts."""


class Dialer:
    def __init__(
        self,
        core: PeerCore,
        identity: Identity,
        *,
        timeout: float,
        tell: Callable[[list[Provisional]], None],
        emit: Callable[[ev.Event], None],
        withdrawn: Callable[[p.PeerRecord], None] = lambda record: None,
    ) -> None:
        self.core = core
        self.identity = identity
        self.timeout = timeout
        self._tell = tell  # what an exchange took
        self._emit = emit
        self._withdrawn = withdrawn  # a record the core withdrew after failed exchanges
        self.links: dict[Listener, PeerLink] = {}
        self._ctx = zmq.asyncio.Context()
        self._dialing: dict[Listener, asyncio.Task[None]] = {}  # its exchange under way
        self._answered: dict[Listener, bool] = {}  # whether its last exchange went through
        self._gate = asyncio.Semaphore(DIAL_AT_ONCE)
        self._turns: dict[Listener, int] = {}  # exchanges started, to rotate its rooms

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The exchanges under way."""
        return list(self._dialing.values())

    def close(self) -> None:
        """Forget the exchanges (cancelled by the caller) and close the links."""
        self._dialing.clear()
        for link in self.links.values():
            link.reset()
        self._ctx.term()

    async def dial(self, records: Sequence[p.PeerRecord], wait: float) -> set[str]:
        """Start an exchange with each of `records`' listeners that is not
        still busy with the one before, and wait for them `wait` seconds at
        most; the users among them one of whose listeners' last exchange
        went through."""
        self._forget({listener(r) for r in records})
        started = []
        for record in records:
            at = listener(record)
            busy = self._dialing.get(at)
            if busy is None or busy.done():
                task = asyncio.create_task(self._with(record), name=f"peer-{record.user}")
                self._dialing[at] = task
                started.append(task)
        if started:
            await asyncio.wait(started, timeout=wait)
        return {r.user for r in records if self._answered.get(listener(r))}

    def _forget(self, dialed: set[Listener]) -> None:
        """Close the links of listeners no longer dialed (records withdrawn
        or replaced), once their last exchange is over."""
        for at in [at for at in self.links if at not in dialed]:
            busy = self._dialing.get(at)
            if busy is None or busy.done():
                self.links.pop(at).reset()
                for kept in (self._dialing, self._answered, self._turns):
                    kept.pop(at, None)

    async def _with(self, record: p.PeerRecord) -> None:
        """Exchange every room we share with `record`'s user at its
        listener, within PEER_BUDGET request timeouts in all; tell the core
        whether it answered."""
        at = listener(record)
        link = self.links.get(at)
        if link is None:
            link = self.links[at] = PeerLink(self._ctx, self.identity, record, timeout=self.timeout)
        async with self._gate:
            rooms = self.core.shared_rooms(record.user)  # as they are now, past the gate
            # Each exchange starts one room further on: a budget spent before
            # the last rooms does not leave the same ones out every time.
            turn = self._turns[at] = self._turns.get(at, -1) + 1
            first = turn % len(rooms) if rooms else 0
            answered = False
            try:
                async with asyncio.timeout(self.timeout * PEER_BUDGET):
                    for room in rooms[first:] + rooms[:first]:
                        # Each digest as the pool is when it is sent: what an
                        # exchange took meanwhile is listed, not given back.
                        for part in (0, 1):
                            parts = self.core.digests(room, turn)
                            if part >= len(parts):
                                break
                            await self._exchange(link, parts[part])
                answered = True
            except TimeoutError:
                link.reset()  # a request cut short: its answer is not waited for
                log.debug("peer %s: over its time", record.user)
            except (PeerUnreachable, ProtocolError) as exc:
                log.debug("peer %s: %s", record.user, exc)
            except Exception:  # a task of its own: nothing else would see it
                log.exception("exchange with peer %s failed", record.user)
            self._answered[at] = answered
            if self.core.dialed(record, answered):
                self._withdrawn(record)

    async def _exchange(self, link: PeerLink, digest: p.Digest) -> None:
        room = digest.room
        reply = await link.ask(digest)
        if isinstance(reply, p.PeerError):
            # Paced (N10): it comes again next round, not worth a line each time.
            level = logging.DEBUG if reply.code == ErrorCode.RATE_LIMITED else logging.INFO
            log.log(level, "peer %s refused a digest of %s: %s", link.user, room, reply.code)
            return
        if not isinstance(reply, p.DigestReply) or reply.room != room:
            raise PeerUnreachable(f"{link.user}: not an answer to the digest")
        try:
            taken, refused = self.core.accept(
                link.user, room, reply.envelopes, time.monotonic(), asked=False
            )
        except PeerRefused:
            return  # the room stopped being shared meanwhile
        self._tell(taken)
        for code, n in self.core.told(link.user, room, refused, time.monotonic()):
            what = "a message" if n == 1 else f"{n} messages"
            text = f"{link.user} relayed {what} we refused ({code})"
            self._emit(ev.Problem(room, text))
        if reply.want:
            await link.ask(self.core.offer(room, reply.want))
