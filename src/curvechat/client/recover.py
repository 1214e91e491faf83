"""Messages that did not open, tried again: the I/O around `recovery.py`.

When a room's log and keys have been brought up to date (`Sync.refresh`),
and at the end of every sync, `Recover.room` makes a pass over the room's
rows that did not open, if `Recovery.begin` says one is due: it opens their
kept envelopes again, asks the node it is connected to for the seqs still
not open (`history`), and stores what `recovery.py` decides, in seq order,
in one transaction per step. A row that opens is told as a
`MessageReceived`, like a message just received.

It must never decide what replaces what, nor ask for more than the plan
picked, nor refresh a room's log or keys (a pass never starts another).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from curvechat.client import events as ev
from curvechat.client.crypt import open_split
from curvechat.client.errors import RequestTimeout, ServerRefused
from curvechat.client.parts import Parts
from curvechat.client.recovery import Fate, Recovery, refetched, reopened, runs, still_stuck
from curvechat.client.trust.api import Opened
from curvechat.protocol import encode
from curvechat.protocol import messages as m

Judge = Callable[[int, Opened, int | None], Fate]
"""(seq, how the copy fared, seq of a shown message with its sender and txn) -> fate"""


class Recover:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.plan = Recovery()

    def new_round(self) -> None:
        """A new connection, or a key change the user accepted."""
        self.plan.new_round()

    async def rooms(self) -> int:
        """A pass over every joined room where one is due. Lock held.
        Returns how many messages opened."""
        count = 0
        for cached in self.p.cache.rooms():
            count += await self.room(cached.room)
        return count

    async def room(self, room: str) -> int:
        """A pass over the rows of `room` that did not open, if one is due.
        Lock held. Returns how many opened."""
        cache, core = self.p.cache, self.p.core
        cached = cache.room(room)
        if cached is None or cached.left:
            return 0
        if not self.plan.begin(room, (core.log(room).index, tuple(sorted(core.held(room))))):
            return 0
        stuck = cache.stuck(room)
        if not stuck:
            return 0
        # Their kept envelopes, opened again under what we hold now.
        again = self.plan.pick_reopen(room, [seq for seq, (_, has) in stuck.items() if has])
        envs = cache.kept_envelopes(room, again)
        kept = dict(zip(envs, core.verify_many(room, list(envs.values()), open_split), strict=True))
        opened, settled = self._settle(
            room,
            [(seq, None, env, kept[seq]) for seq, env in envs.items()],
            lambda seq, copy, shown_at: reopened(copy, was=stuck[seq][0], shown_at=shown_at),
        )
        # What is still not open, asked for again.
        has = {seq: kept_one for seq, (_, kept_one) in stuck.items()}
        wanted = self.plan.pick_refetch(room, still_stuck(has, again, settled))
        copies = await self._fetch(room, wanted)
        fetched = core.verify_many(room, [item.envelope for item in copies], open_split)
        more, _ = self._settle(
            room,
            [(i.seq, i.ts, i.envelope, v) for i, v in zip(copies, fetched, strict=True)],
            lambda seq, copy, shown_at: refetched(copy, kept=kept.get(seq), shown_at=shown_at),
        )
        return opened + more

    async def _fetch(self, room: str, seqs: Sequence[int]) -> list[m.StoredMessage]:
        """The copies a node serves for `seqs` (each once, in seq order); a
        refusal or a timeout ends the asking."""
        wanted = set(seqs)
        out: dict[int, m.StoredMessage] = {}
        for after, limit in runs(seqs):
            try:
                reply = await self.p.ask(m.History(room=room, after=after, limit=limit), m.Messages)
            except (ServerRefused, RequestTimeout):
                break
            if reply.room == room:
                for item in reply.items:
                    if item.seq in wanted:
                        out.setdefault(item.seq, item)
        return [out[seq] for seq in sorted(out)]

    def _settle(
        self,
        room: str,
        copies: list[tuple[int, int | None, m.Envelope, Opened]],
        judge: Judge,
    ) -> tuple[int, set[int]]:
        """Store what `judge` decides for each (seq, server time or None
        for the row's, envelope, verdict), in seq order: each decided after
        the ones before it are stored (M6). Returns how many opened, and
        the seqs that are settled (opened or marked a replay)."""
        cache = self.p.cache
        opened: list[int] = []
        settled: set[int] = set()
        with cache.batch(room) as batch:
            for seq, ts, env, copy in sorted(copies, key=lambda c: c[0]):
                shown_at = None if copy.error else cache.seen_txn(room, env.sender, env.txn)
                fate = judge(seq, copy, shown_at)
                if fate is Fate.HOLD:
                    batch.rewrite(seq, ts, env, error=copy.error, envelope=encode(env))
                elif fate is Fate.OPEN:
                    if batch.rewrite(seq, ts, env, sent_ms=copy.sent_ms, text=copy.text):
                        opened.append(seq)
                        settled.add(seq)
                elif fate is Fate.REPLAY:
                    replay = f"replay of message {shown_at}"
                    if batch.rewrite(seq, ts, env, error=replay):
                        settled.add(seq)
        for seq in settled:
            self.plan.settled(room, seq)
        for seq in opened:
            for msg in cache.messages(room, after=seq - 1, limit=1):
                self.p.emit(ev.MessageReceived(msg, mine=msg.sender == self.p.me, live=False))
        return len(opened), settled
