"""Opening messages: the message rules (M1-M6) applied, and the key each
envelope is opened under. A mixin of `TrustCore`, which holds the log, the
keys and the store it reads.

An envelope is opened under the key held for its epoch; one sealed under
another key is opened under another key a member gave us for that epoch
(kept beside the held one: `TrustCore.feed_packets`), if its giver's word
lets the sender in (M4), and its epoch's packets are asked for again once a
round when none does (`Splits.mismatched`).

This module must never do I/O, nor file a key: it only reads what the core
holds and says what the rules decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from curvechat.client import events as ev
from curvechat.client.trust import rules
from curvechat.client.trust.api import Opened, TrustStore
from curvechat.client.trust.jobs import Crypt, OpenJob, open_in_turn
from curvechat.client.trust.log import RoomLog
from curvechat.client.trust.position import Position
from curvechat.client.trust.rules import EpochRecord
from curvechat.client.trust.splits import Splits
from curvechat.crypto.envelope import Plaintext
from curvechat.crypto.errors import CryptoError, KeyMismatch
from curvechat.protocol import messages as m


class Opening:
    me: str
    store: TrustStore
    position: Position
    _splits: Splits
    _emit: Callable[[ev.Event], None]
    log: Callable[[str], RoomLog]
    held: Callable[[str], dict[int, EpochRecord]]

    def needs_refresh(self, room: str, envs: Iterable[m.Envelope]) -> bool:
        """Whether the log or keys may be behind for any of these envelopes
        (of `room`; the held keys and the log read once for them all)."""
        held, logged = self.held(room), self.log(room).logged_keys
        return any(env.epoch not in held or env.sender not in logged for env in envs)

    def verify(self, room: str, env: m.Envelope) -> Opened:
        """Decide whether an envelope may be shown (M1-M5) and decrypt it;
        where it came from (the server, a peer) is for the caller to judge."""
        return self.verify_many(room, [env])[0]

    def verify_many(
        self, room: str, envs: Sequence[m.Envelope], crypt: Crypt = open_in_turn
    ) -> list[Opened]:
        """`verify` for each envelope of `room`: the rules decide here, and
        the signature checks and decryptions of those they let through are
        handed to `crypt` at once (the engine may run them on threads)."""
        log, held = self.log(room), self.held(room)
        out: list[Opened] = []
        jobs: list[OpenJob] = []
        where: list[int] = []
        for env in envs:
            ctx = rules.MessageCtx(room=room, envelope=env, log=log, held=held)
            broken = rules.check_message(ctx)
            if broken is None:
                where.append(len(out))
                jobs.append(OpenJob(env, held[env.epoch].key, log.logged_keys[env.sender]))
                error = None  # until `crypt` has spoken
            elif broken.id == "M2":
                error = f"no key for epoch {env.epoch} (M2)"
            else:
                error = f"refused: {rules.explain(broken)}"
            out.append(Opened(env.sender, None, None, error, None if broken is None else broken.id))
        results = crypt(jobs)
        current = self.position.current(room, held)
        if len(results) != len(jobs):
            raise ValueError("the crypt function returned a result count other than asked")
        for i, job, res in zip(where, jobs, results, strict=True):
            env, sender = job.envelope, job.envelope.sender
            if isinstance(res, KeyMismatch):
                res = self._open_alternate(room, log, job, crypt) or res
                if isinstance(res, KeyMismatch):
                    self._splits.mismatched(room, job.envelope.epoch)
            if isinstance(res, CryptoError):
                giver = held[job.envelope.epoch].sender
                failed = self._splits.not_opened(
                    room, env, res, giver, me=self.me, current=env.epoch == current
                )
                out[i] = Opened(sender, None, None, failed, "M5")
            else:
                out[i] = Opened(sender, res.text, res.ts, None)
        return out

    def _open_alternate(
        self, room: str, log: RoomLog, job: OpenJob, crypt: Crypt
    ) -> Plaintext | None:
        """`job`'s envelope opened under another key kept for its epoch
        (`TrustCore.feed_packets`) whose giver's word lets its sender in (M4), if one
        opens it."""
        env = job.envelope
        for alt in self.store.alternates(room, env.epoch):
            if not log.member_since(env.sender, alt.after_op):
                continue
            res = crypt([OpenJob(env, alt.key, job.sender_sign_pub)])[0]
            if not isinstance(res, CryptoError):
                return res
        return None

    def open(self, room: str, seq: int, env: m.Envelope) -> Opened:
        """Decide whether a stored message is shown (M1-M6) and decrypt it."""
        return self.check_replay(room, seq, env, self.verify(room, env))

    def check_replay(self, room: str, seq: int, env: m.Envelope, opened: Opened) -> Opened:
        """M6 for a message `verify` let through: a txn seen at a lower seq
        is a replay; one seen at a higher seq was the replay. Call it in seq
        order, storing each message before the next is checked."""
        if opened.error is not None:
            return opened
        earlier = self.store.seen_txn(room, env.sender, env.txn)
        if earlier is not None and earlier < seq:
            return Opened(env.sender, None, None, f"replay of message {earlier}", "M6")
        if earlier is not None and earlier > seq:
            # The copy came first: the lower seq is the original.
            self.store.mark_replay(room, earlier, seq)
            self._emit(ev.ReplayMarked(room, earlier, seq))
            self._emit(ev.Problem(room, f"message {earlier} was a replay of {seq}"))
        return opened
