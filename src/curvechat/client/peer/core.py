"""The peer core (sans-IO): every decision of peer-to-peer mode.

Who may connect to our listener (its records part, records.py), which
rooms a peer is served, what an anti-entropy exchange gives and asks for,
whether a relayed envelope is taken, and the provisional order of what was
taken. It believes only what the trust core verified: a peer's record must
be signed by the identity key our verified log records (and we pinned) for
a member of a room we share, and a relayed envelope must pass the trust
core's message rules (M1-M5). The table `PEER_RULES` (rules.py) is what
docs/security.md cites; the first rule that fails decides, as in
`curvechat.client.trust.rules`.

Messages taken here are provisional: they live in memory, in the pool, and
are never written to the history. The server's copy of the same (sender,
txn) replaces them (`settle`); each author's outbox sends its own.

This module must never do I/O of its own, nor import a transport or the
cache's SQLite: the shell around it (`shell.py`) does the sockets, and the
trust core it is given is its only memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Final

from curvechat.client.errors import KeyChanged, NotReady
from curvechat.client.peer import bounds
from curvechat.client.peer.bounds import bounded
from curvechat.client.peer.records import PeerRecords
from curvechat.client.peer.rules import refuse
from curvechat.client.trust import Rotate, TrustCore
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol import peer as p

MAX_POOL: Final = 1000
"""Provisional messages of others kept per room (and of ours, apart)."""
MAX_FROM_ONE: Final = 250
"""From one sender, in all rooms together: no member can crowd out the
others, nor make us hold more by making more rooms with us in them."""


@dataclass(frozen=True, slots=True)
class Provisional:
    """A message taken peer to peer (or written by us while offline), not
    yet on the server."""

    room: str
    sender: str
    txn: str
    text: str
    sent_ms: int
    envelope: m.Envelope
    mine: bool
    via: str
    """Who gave it to us (ourselves for our own)."""

    @property
    def order(self) -> tuple[int, str, str]:
        """The provisional order: the sender's clock, then sender and txn,
        so every client holding the same messages shows the same order."""
        return (self.sent_ms, self.sender, self.txn)


class PeerCore(PeerRecords):
    def __init__(
        self,
        trust: TrustCore,
        *,
        max_pool: int = MAX_POOL,
        max_from_one: int = MAX_FROM_ONE,
        rotate_after_messages: int = 2**31,
        rotate_after_seconds: float = 2**40,
    ) -> None:
        super().__init__(trust)
        self.max_pool = max_pool
        self.max_from_one = max_from_one
        self.rotate_after_messages = rotate_after_messages
        """The client's rotation limits: a message that would use the key
        past them waits for the server (N9)."""
        self.rotate_after_seconds = rotate_after_seconds
        self._pool: dict[str, dict[tuple[str, str], Provisional]] = {}
        self._senders: Counter[str] = Counter()  # others' messages in every pool, per sender
        self._ours: dict[str, Counter[int]] = {}  # room -> our messages in its pool per epoch

    # --- our own messages (N9) ---------------------------------------------------
    def seal_own(self, room: str, txn: str, text: str, created_ms: int, now_ms: int) -> bool:
        """Seal a message of our outbox for peers, under the current epoch.
        False when that needs a rotation, a key or a pin decision first: it
        then waits for the server (N9), or when the pool holds as many of
        ours as it may (N7). True once it is in the pool."""
        if (self.me, txn) in self._pool.get(room, {}):
            return True
        ours = self._ours.get(room, Counter())
        if ours.total() >= self.max_pool:
            return False  # full for ours: not sealed only to be turned away
        try:
            grant = self.trust.encryption_grant(
                room,
                now_ms=now_ms,
                max_messages=self.rotate_after_messages,
                max_age_ms=int(self.rotate_after_seconds * 1000),
            )
        except (NotReady, KeyChanged):
            return False
        # What we sealed for peers under the key is not in the history yet:
        # it counts toward the key's use here.
        if isinstance(grant, Rotate) or ours[grant.record.epoch] >= grant.left:
            return False
        env = seal_message(
            self.trust.identity,
            room=room,
            epoch=grant.record.epoch,
            key=grant.record.key,
            txn=txn,
            plaintext=Plaintext(text=text, ts=created_ms),
        )
        return self._put(Provisional(room, self.me, txn, text, created_ms, env, True, self.me))

    def _put(self, item: Provisional) -> bool:
        """Into the room's pool, within N7's bounds; False if it is full for it."""
        pool = self._pool.setdefault(item.room, {})
        ours = self._ours.setdefault(item.room, Counter())
        if item.sender == self.me:
            full = ours.total() >= self.max_pool
        else:
            others = len(pool) - ours.total()
            full = others >= self.max_pool or self._senders[item.sender] >= self.max_from_one
        if full:
            return False
        pool[(item.sender, item.txn)] = item
        if item.sender == self.me:
            ours[item.envelope.epoch] += 1
        else:
            self._senders[item.sender] += 1
        return True

    # --- anti-entropy (N3, N6, N7) ----------------------------------------------
    def digests(self, room: str, turn: int) -> list[p.Digest]:
        """What exchange number `turn` about `room` lists (bounds.py): the
        whole pool, or its newest part and one older part in turn (N7)."""
        return [
            p.Digest(room=room, have=[p.TxnRef(i.sender, i.txn) for i in listed], after=a, until=u)
            for listed, a, u in bounds.slices(self.provisional(room), turn)
        ]

    def _check_shared(self, user: str, room: str) -> None:
        if room not in self.shared_rooms(user):
            raise refuse("N3", p.PeerCode.NOT_SHARED, f"{user} asked about a room")

    def _check_rate(self, user: str, room: str, now: float) -> None:
        """N10: `user`'s requests about `room` (at our monotonic time `now`)."""
        if not self.pacing.ask(user, room, now):
            raise refuse("N10", ErrorCode.RATE_LIMITED, f"{user} asked too often about a room")

    def _known(self, room: str, sender: str, txn: str) -> bool:
        """N6: in the pool or the history, or ours (we hold what we still
        send, and gave up on the rest: relayed back, it is not taken)."""
        return (
            sender == self.me
            or (sender, txn) in self._pool.get(room, {})
            or self.trust.store.seen_txn(room, sender, txn) is not None
        )

    def answer(self, user: str, digest: p.Digest, now: float) -> p.DigestReply:
        """What the listener answers a digest with (at our monotonic time
        `now`): the provisional messages `user` did not list, and the refs
        it listed that we lack."""
        self._check_shared(user, digest.room)
        self._check_rate(user, digest.room, now)
        have = {(ref.sender, ref.txn) for ref in digest.have}
        inside = bounds.part(digest.after, digest.until)
        give = [
            i.envelope
            for i in self.provisional(digest.room)
            if (i.sender, i.txn) not in have and inside(i.order)
        ]
        want: list[p.TxnRef] = []
        for ref in digest.have:
            if len(want) == p.MAX_WANT:
                break
            if not self._known(digest.room, ref.sender, ref.txn):
                want.append(ref)
        return p.DigestReply(room=digest.room, envelopes=bounded(give), want=want)

    def offer(self, room: str, want: list[p.TxnRef]) -> p.Offer:
        pool = self._pool.get(room, {})
        envs = [pool[(r.sender, r.txn)].envelope for r in want if (r.sender, r.txn) in pool]
        return p.Offer(room=room, envelopes=bounded(envs))

    def accept(
        self, user: str, room: str, envelopes: list[m.Envelope], now: float, *, asked: bool = True
    ) -> tuple[list[Provisional], list[p.Refused]]:
        """Envelopes relayed by `user` for `room` at our monotonic time `now`
        (N4-N7, N10): the ones taken (new to us), and the ones refused, each
        with its code. `asked`: `user` asked us (an offer), so the request
        counts too; not for the envelopes of a reply to our own digest."""
        self._check_shared(user, room)
        if asked:
            self._check_rate(user, room, now)
        taken: list[Provisional] = []
        refused: list[p.Refused] = []
        for env in envelopes[: p.MAX_RELAY]:
            if env.room != room:
                refused.append(p.Refused(env.txn, p.PeerCode.BAD_ENVELOPE))  # N4
                continue
            if self._known(room, env.sender, env.txn):
                continue  # N6: nothing new, nothing wrong
            if not self.pacing.verify(user, now):
                refused.append(p.Refused(env.txn, ErrorCode.RATE_LIMITED))  # N10
                continue
            opened = self.trust.verify(room, env)  # N5: the trust core's M1-M5
            if opened.error is not None or opened.text is None:
                refused.append(p.Refused(env.txn, p.PeerCode.BAD_ENVELOPE))
                continue
            item = Provisional(
                room, env.sender, env.txn, opened.text, opened.sent_ms or 0, env,
                env.sender == self.me, user,
            )  # fmt: skip
            if not self._put(item):
                refused.append(p.Refused(env.txn, p.PeerCode.POOL_FULL))  # N7
                continue
            taken.append(item)
        return taken, refused

    def told(
        self, user: str, room: str, refused: list[p.Refused], now: float
    ) -> list[tuple[str, int]]:
        """Of the envelopes `user` relayed for `room` that we refused, what
        to tell the user now (at our monotonic time `now`): each reason with
        its count, at most once a minute per member, room and reason (pacing).
        Refusals by our own bounds (a full pool, N10) are never told: they
        are not the relayer's doing, and come again later."""
        counts = Counter(
            bad.code
            for bad in refused
            if bad.code not in (p.PeerCode.POOL_FULL, ErrorCode.RATE_LIMITED)
        )
        return [(code, n) for code, n in counts.items() if self.pacing.tell(user, room, code, now)]

    # --- the server's copy (N8) -----------------------------------------------------
    def settle(self, room: str, sender: str, txn: str) -> bool:
        """The server has (sender, txn) in its history, or its author gave up
        on it: drop the provisional copy. True if there was one."""
        item = self._pool.get(room, {}).pop((sender, txn), None)
        if item is None:
            return False
        if sender == self.me:
            self._ours[room][item.envelope.epoch] -= 1
        else:
            self._senders[sender] -= 1
        return True

    def provisional(self, room: str) -> list[Provisional]:
        return sorted(self._pool.get(room, {}).values(), key=lambda i: i.order)

    def pending_rooms(self) -> list[str]:
        return sorted(room for room, pool in self._pool.items() if pool)
