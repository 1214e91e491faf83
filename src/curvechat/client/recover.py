"""Messages that did not open, tried again: the I/O around `recovery.py`.

When a room's log and keys have been brought up to date (`Sync.refresh`),
and at the end of every sync (`Sync.full`), `Recover.room` makes a pass
over the room's rows that did not open, if `Recovery.begin` says one is
due: it opens again the kept envelopes of the rows the change can unblock
(and drops those that no longer decode), asks the node it is connected to
for the seqs `Recovery.pick_refetch` picks (`history`, within one
deadline: the sync's, `Recover.one_deadline`, for every pass made during
a sync), and stores what `recovery.py` decides, in seq order, in one
transaction per step. A row that opens is told as a `MessageReceived`,
like a message just received, and counts as unread if someone else sent
it; a row that becomes a replay marker is told as a `ReplayMarked`.

Copies asked for again are opened through `Sync.verify`, which asks for an
epoch's packets again (once a round) when a copy was sealed under another
key than the one held: a row stored unopened because that ask found
nothing, or failed with its connection, opens in a later round.

It must never decide what replaces what, nor ask for more than the plan
picked, nor refresh a room's log or keys otherwise (a pass never starts
another).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence

from curvechat.client import events as ev
from curvechat.client.crypt import open_split
from curvechat.client.errors import RequestTimeout, ServerRefused
from curvechat.client.parts import Parts
from curvechat.client.recovery import (
    REFETCH_PER_PASS,
    REFETCH_SECONDS,
    REFETCH_SPANS,
    REOPEN_PER_PASS,
    Fate,
    Pass,
    Recovery,
    Span,
    keeps_envelope,
    placed,
    refetched,
    reopened,
)
from curvechat.client.trust.api import Opened
from curvechat.protocol import encode
from curvechat.protocol import messages as m

Judge = Callable[[int, Opened, int | None], Fate]
"""(seq, how the copy fared, seq of a shown message with its sender and txn) -> fate"""

Verify = Callable[[str, list[m.Envelope]], Awaitable[list[Opened]]]
"""Opens a page of a room's envelopes, asking for an epoch's packets again
if some were sealed under another key than the one held (`Sync.verify`)."""

Row = tuple[str, str | None]
"""A row that did not open: its error and the rule that refused it."""


class Recover:
    def __init__(self, parts: Parts, verify: Verify) -> None:
        self.p = parts
        self._verify = verify
        self.plan = Recovery()
        self._deadline: float | None = None
        """When the asking of the sync under way ends (loop time), if one is."""

    def new_round(self, *, key_accepted: bool = False) -> None:
        """A new connection, or a key change the user accepted."""
        self.plan.new_round(key_accepted=key_accepted)
        self.p.core.new_round()

    @contextlib.contextmanager
    def one_deadline(self) -> Iterator[None]:
        """The passes made inside it (those of one sync: started by the
        refreshes it makes, and at its end) ask within one deadline,
        `REFETCH_SECONDS` from its start, all together. Inside another one,
        that one's deadline holds."""
        if self._deadline is not None:
            yield
            return
        self._deadline = asyncio.get_running_loop().time() + REFETCH_SECONDS
        try:
            yield
        finally:
            self._deadline = None

    def _until(self) -> float:
        """When the asking of a pass that starts now ends."""
        if self._deadline is not None:
            return self._deadline
        return asyncio.get_running_loop().time() + REFETCH_SECONDS

    async def rooms(self) -> int:
        """A pass over every joined room where one is due, their asking
        within one deadline (the sync's, inside `one_deadline`). Lock held.
        Returns how many messages opened."""
        core, me = self.p.core, self.p.me
        self.plan.keep([r for r in self.plan.known() if core.log(r).is_member(me)])
        deadline = self._until()
        count = 0
        for room in self.plan.in_turn([cached.room for cached in self.p.cache.rooms()]):
            count += await self.room(room, deadline)
        return count

    async def room(self, room: str, deadline: float | None = None) -> int:
        """A pass over the rows of `room` that did not open, if one is due;
        its asking ends at `deadline` (loop time; None: the sync's inside
        `one_deadline`, else `REFETCH_SECONDS` from now). Lock held. Returns
        how many opened. A room that is not joined, or that the verified
        log says the user is not in, gets no pass; what the passes did there
        is forgotten in the latter case only (a listing that leaves a room
        out only hides it)."""
        core = self.p.core
        if not core.log(room).is_member(self.p.me):
            self.plan.forget(room)
            return 0
        cached = self.p.cache.room(room)
        if cached is None or cached.left:
            return 0
        held = core.held(room)
        due = self.plan.begin(room, (core.log(room).index, len(held)))
        if due is None:
            return 0
        opened = self._reopen(room, due, sorted(held))
        if due.refetch:
            opened += await self._refetch(room, self._until() if deadline is None else deadline)
        return opened

    def _reopen(self, room: str, due: Pass, held: Sequence[int]) -> int:
        """Open again the kept envelopes of the rows `due` can unblock: those
        waiting for a key now held, then those refused by the log past
        `due.log_from`, at most `REOPEN_PER_PASS` together. A row whose
        envelope no longer decodes drops it (it is asked for again by seq
        only): else it would be picked again in every pass."""
        cache = self.p.cache
        rows = cache.waiting_for_keys(room, held, REOPEN_PER_PASS)
        more_keys = len(rows) >= REOPEN_PER_PASS
        log_to = due.log_from
        if log_to is not None and not more_keys:
            room_left = REOPEN_PER_PASS - len(rows)
            by_log = cache.waiting_for_log(room, log_to, room_left)
            log_to = max(by_log) if len(by_log) >= room_left else None
            rows.update(by_log)
        self.plan.reopened_to(room, more_keys=more_keys, log_to=log_to)
        if not rows:
            return 0
        envs = cache.kept_envelopes(room, sorted(rows))
        gone = [seq for seq in rows if seq not in envs]
        if gone:
            cache.drop_envelopes(room, gone)
        verdicts = self.p.core.verify_many(room, list(envs.values()), open_split)
        kept = [
            (seq, None, env, v, rows[seq])
            for (seq, env), v in zip(envs.items(), verdicts, strict=True)
        ]
        return self._settle(
            room,
            kept,
            lambda seq, copy, shown_at: reopened(copy, was=rows[seq][0], shown_at=shown_at),
        )

    async def _refetch(self, room: str, deadline: float) -> int:
        """Ask a node again for the rows `Recovery.pick_refetch` picks, and
        put in their place what opens."""
        if deadline <= asyncio.get_running_loop().time():
            return 0  # no time left: the rows keep their turn
        cache = self.p.cache
        below_first, below_rest = self.plan.below(room)
        first = cache.unopened(room, waits=False, below=below_first, limit=REFETCH_PER_PASS)
        rest = cache.unopened(room, waits=True, below=below_rest, limit=REFETCH_PER_PASS)
        spans = self.plan.pick_refetch(room, first, rest)
        copies = await self._fetch(room, spans, deadline)
        verdicts = await self._verify(room, [item.envelope for item in copies])
        waits = set(rest)
        return self._settle(
            room,
            [(i.seq, i.ts, i.envelope, v, None) for i, v in zip(copies, verdicts, strict=True)],
            lambda seq, copy, shown_at: refetched(copy, waits=seq in waits, shown_at=shown_at),
        )

    async def _fetch(
        self, room: str, spans: Sequence[Span], deadline: float
    ) -> list[m.StoredMessage]:
        """The copies a node serves for the seqs of `spans` (each once, in
        seq order), asked for until `deadline`; a refusal or a timeout ends
        the asking."""
        loop = asyncio.get_running_loop()
        wanted = set().union(*(span.seqs for span in spans))
        out: dict[int, m.StoredMessage] = {}
        todo = [(span.after, span.limit, max(span.seqs, default=0)) for span in spans]
        asks = 0
        while todo and asks < REFETCH_SPANS:
            after, limit, last = todo.pop(0)
            left = deadline - loop.time()
            if left <= 0:
                break
            asks += 1
            ask = m.History(room=room, after=after, limit=limit)
            try:
                reply = await self.p.ask(ask, m.Messages, timeout=left)
            except (ServerRefused, RequestTimeout):
                break
            if reply.room != room:
                continue
            for item in reply.items:
                if item.seq in wanted:
                    out.setdefault(item.seq, item)
            # A reply cut short by the node's size budget: the rest of the
            # span is asked for next, while requests are left.
            end = max((item.seq for item in reply.items), default=after)
            if after < end < last:
                todo.insert(0, (end, last - end, last))
        return [out[seq] for seq in sorted(out)]

    def _settle(
        self,
        room: str,
        copies: Sequence[tuple[int, int | None, m.Envelope, Opened, Row | None]],
        judge: Judge,
    ) -> int:
        """Store what `judge` decides for each (seq, server time or None
        for the row's, envelope, verdict, the row if the envelope is its
        own), in seq order: each decided after the ones before it are
        stored (M6, the epochs of the rows that opened), and told. Returns
        how many opened."""
        cache, me = self.p.cache, self.p.me
        opened: list[int] = []
        replays: list[tuple[int, int]] = []
        with cache.batch(room) as batch:
            for seq, ts, env, copy, own in sorted(copies, key=lambda c: c[0]):
                shown_at = None if copy.error else cache.seen_txn(room, env.sender, env.txn)
                fate = judge(seq, copy, shown_at)
                if fate is not Fate.KEEP:
                    around = cache.epochs_around(room, seq)
                    fate = placed(fate, env.epoch, around, own=own is not None)
                if fate is Fate.HOLD:
                    keep = encode(env) if keeps_envelope(copy.rule) else None
                    batch.rewrite(seq, ts, env, error=copy.error, rule=copy.rule, envelope=keep)
                elif fate is Fate.DROP and own is not None:
                    batch.rewrite(seq, ts, env, error=own[0], rule=own[1])
                elif fate is Fate.OPEN:
                    unread = env.sender != me
                    if batch.rewrite(
                        seq, ts, env, sent_ms=copy.sent_ms, text=copy.text, count_unread=unread
                    ):
                        opened.append(seq)
                elif fate is Fate.REPLAY and shown_at is not None:
                    replay = f"replay of message {shown_at}"
                    if batch.rewrite(seq, ts, env, error=replay, rule="M6"):
                        replays.append((seq, shown_at))
        for seq, original in replays:
            self.p.emit(ev.ReplayMarked(room, seq, original))
        for msg in cache.messages_at(room, opened):
            self.p.emit(ev.MessageReceived(msg, mine=msg.sender == me, live=False))
        return len(opened)
