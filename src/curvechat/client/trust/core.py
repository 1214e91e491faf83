"""The client's trust core: the verified state of every room, changed only by
feeding it what a server sent, and every decision about it.

The engine around it does the I/O: it asks the server for ops, key packets
and messages, feeds the replies in here, and acts on what comes back (a key
to encrypt under, a rotation to make, a message to show, a problem to tell
the user). Each decision is one of the rule tables in `rules.py`; the core
only gathers the context for a table and applies its verdict.

This module must never do I/O of its own, nor import a transport: the store
it is given is its only memory, and everything it believes follows from a
signature it checked (`docs/security.md`, "Trust rules").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from curvechat.client import events as ev
from curvechat.client.errors import KeyChanged, NotReady, UntrustedLog
from curvechat.client.trust import rules
from curvechat.client.trust.api import Grant, ListingPlan, Opened, Rotate, TrustStore
from curvechat.client.trust.jobs import Crypt, OpenJob, open_in_turn
from curvechat.client.trust.log import RoomLog
from curvechat.client.trust.logbook import LogBook
from curvechat.client.trust.pins import Pins
from curvechat.client.trust.refusals import Refusals
from curvechat.client.trust.rules import EpochRecord
from curvechat.client.trust.splits import Splits
from curvechat.crypto.errors import CryptoError, MembershipError
from curvechat.crypto.identity import Identity
from curvechat.crypto.roomkeys import EpochKey, new_epoch_key, wrap_epoch_key
from curvechat.protocol import messages as m

EventSink = Callable[[ev.Event], None]


class TrustCore:
    def __init__(self, identity: Identity, store: TrustStore, on_event: EventSink) -> None:
        self.identity = identity
        self.me = identity.user
        self.store = store
        self._emit = on_event
        self._book = LogBook(store, on_event)
        self._refusals = Refusals(on_event)
        self._splits = Splits(on_event)
        # room -> the index of its log at which a stale_epoch refusal that the
        # log did not explain made us rotate (rotate_on_refusal)
        self._rotated_on_refusal: dict[str, int] = {}
        self._pending: dict[str, EpochKey] = {}  # room -> the key of an epoch not yet taken
        # The rooms whose departure this process told its front end.
        self._told_gone = {r.room for r in store.rooms(include_left=True) if r.left}
        self.pins = Pins(self.me, identity.sign_pub, store, on_event)
        self.check_pin = self.pins.check
        self.verified = self.pins.verified

    # --- the verified log ------------------------------------------------------
    def log(self, room: str) -> RoomLog:
        """The verified membership log of `room`, with what other processes of
        this home stored since (logbook.py)."""
        return self._book.get(room)

    def feed_ops(self, room: str, ops: Iterable[m.SignedOp]) -> RoomLog:
        """Extend the verified log of `room` by `ops` (a reply to `Members`).
        Ops that verify are kept up to the first that does not; that one
        raises UntrustedLog (told as a Problem). Keys recorded in the log are
        checked against the pins (P1, P2)."""
        log = self.log(room)
        accepted: list[tuple[int, bytes, bytes]] = []
        try:
            for signed in ops:
                if self._book.held_already(log, signed):
                    continue
                op = log.apply(signed, check=self._check_logged_key)  # the log stops before it
                accepted.append((op.index, signed.op, signed.sig))
        except (MembershipError, KeyChanged) as exc:
            self._emit(ev.Problem(room, f"membership log rejected: {exc}"))
            raise UntrustedLog(f"{room}: {exc}") from exc
        finally:
            self._keep(room, accepted)
        self.settle(room)
        return log

    def _keep(self, room: str, accepted: list[tuple[int, bytes, bytes]]) -> None:
        """Store the ops `feed_ops` applied. The store refuses them all if
        another process of this home stored another op at one of their
        indexes meanwhile: the server told the two different logs. The log
        in memory is then read again from the store, and the problem told."""
        if not accepted:
            return
        try:
            self.store.add_ops(room, accepted)
        except MembershipError as exc:
            self._book.forget(room)
            self._emit(ev.Problem(room, f"membership log rejected: {exc}"))
            raise UntrustedLog(f"{room}: {exc}") from exc
        self.store.ensure_room(room)

    def _check_logged_key(self, op: m.MemberOp) -> None:
        """P1, P2 for the key an op records, before the log takes the op."""
        if op.kind in ("create", "add"):
            self.check_pin(op.target, op.target_key)

    def settle(self, room: str) -> bool:
        """R1: the room counts as joined exactly when the verified log makes us
        a member. Returns whether it is joined."""
        joined = self.log(room).is_member(self.me)
        cached = self.store.room(room)
        if cached is None or cached.left == joined:
            self.store.set_left(room, not joined)
        if joined:
            self._told_gone.discard(room)
        return joined

    def withdrawn(self, room: str, reason: Literal["removed", "left"] = "removed") -> None:
        """R3: the server no longer serves `room` to us (we were removed, or it
        hides the room; "left": it says another connection of ours left it).
        Hidden; the log and keys stay. Told once in this process, also when
        another process of the home hid it first."""
        cached = self.store.room(room)
        if cached is None:
            return
        if not cached.left:
            self.store.set_left(room, True)
        if room not in self._told_gone:
            self._told_gone.add(room)
            self._emit(ev.RoomUpdated(room, reason))

    def left(self, room: str) -> None:
        """We left `room` (our own leave op was taken): hidden, and not told
        again as a removal when the server then stops serving it."""
        self.store.set_left(room, True)
        self._told_gone.add(room)

    def listing(self, infos: Iterable[m.RoomInfo]) -> ListingPlan:
        """A room listing: rooms no longer listed are hidden (R3); listed
        rooms whose log or keys may have moved on are to be fetched (R2).
        Whether a listed room is joined waits for its log (R1)."""
        listed = {info.room: info for info in infos}
        for cached in self.store.rooms():
            if cached.room not in listed:
                self.withdrawn(cached.room)
        plan = ListingPlan(fetch_ops=[], fetch_keys={})
        for room, info in listed.items():
            self.store.ensure_room(room)
            log = self.log(room)
            if info.op_head > log.index or not log.is_member(self.me):
                plan.fetch_ops.append(room)
            else:
                self.settle(room)
            held = self.held(room)
            if info.epoch not in held:
                plan.fetch_keys[room] = max(held) + 1 if held else 0
        return plan

    # --- epoch keys ----------------------------------------------------------------
    def held(self, room: str) -> dict[int, EpochRecord]:
        return self.store.epoch_records(room)

    def feed_packets(
        self, room: str, packets: Iterable[m.KeyPacket], *, new_only: bool = False
    ) -> int:
        """Key packets fetched for `room`: each is filed only if every packet
        rule (K1-K7) holds; a refused one is told as a Problem, once
        (`Refusals`). With `new_only`, one for an epoch we hold is passed
        over unopened (a fetch of late history walks over held epochs).
        Returns how many were filed."""
        filed = 0
        log, held = self.log(room), self.held(room)
        refused: list[tuple[m.KeyPacket, rules.Rule]] = []
        for packet in packets:
            sender_key = log.logged_keys.get(packet.sender)
            if (new_only and packet.epoch in held) or self._refusals.known_unopenable(
                packet, sender_key
            ):
                continue
            ctx = rules.PacketCtx(
                identity=self.identity, room=room, packet=packet, log=log, held=held
            )
            broken = rules.check_packet(ctx)
            if broken is not None:
                refused.append((packet, broken))
                if broken.id == "K4":
                    self._refusals.unopenable(room, packet, sender_key)
                continue
            key = ctx.opened
            assert key is not None and key.room == room
            if key.epoch not in held:
                self.store.put_epoch_key(room, key.epoch, key.after_op, key.key, packet.sender)
                held[key.epoch] = EpochRecord(key.epoch, key.after_op, key.key, packet.sender)
                filed += 1
        self._refusals.tell(room, refused)
        return filed

    def keys_from(self, room: str) -> int:
        """The first epoch to fetch key packets from (`Refusals.fetch_from`)."""
        newest = max(self.held(room), default=-1)
        return self._refusals.fetch_from(room, newest, self.log(room).logged_keys)

    def new_round(self) -> None:
        """A new connection (epochs refused this round are asked for again)."""
        self._refusals.new_round()

    def encryption_key(
        self, room: str, *, now_ms: int, max_messages: int, max_age_ms: int
    ) -> EpochRecord | Rotate:
        """The epoch key to encrypt a message for `room` under, or the
        rotation to make first. Raises NotReady (not a member, no key) or
        KeyChanged (P2)."""
        decision = self.encryption_grant(
            room, now_ms=now_ms, max_messages=max_messages, max_age_ms=max_age_ms
        )
        return decision.record if isinstance(decision, Grant) else decision

    def encryption_grant(
        self, room: str, *, now_ms: int, max_messages: int, max_age_ms: int
    ) -> Grant | Rotate:
        """As `encryption_key`, with how many messages the key may still
        encrypt before the count limit makes a new epoch due (at least 1).
        The grant holds only while nothing changes the room's log, keys or
        pins: a caller seals under it within one turn of the engine's lock."""
        log = self.log(room)
        if not log.is_member(self.me):
            raise NotReady(f"you are not a member of {room}", "not_member")
        self.refuse_if_key_changed(room)
        held = self.held(room)
        if not held:
            raise NotReady(f"no key for room {room} yet", "no_key")
        current = held[max(held)]
        broken = self._encrypt_broken(room, log, current)
        if broken is not None:
            return Rotate(current.epoch + 1, rules.explain(broken))
        used, since_ms = self.store.epoch_usage(room, current.epoch)
        if used >= max_messages or now_ms - since_ms >= max_age_ms:
            # Epoch hygiene (as Megolm): a leaked epoch key exposes at most
            # this many messages, or this much time.
            return Rotate(current.epoch + 1, "epoch used up")
        return Grant(current, max_messages - used)

    def _encrypt_broken(self, room: str, log: RoomLog, current: EpochRecord) -> rules.Rule | None:
        return rules.check_encrypt(
            rules.EncryptCtx(
                me=self.me,
                log=log,
                current=current,
                shared=self.store.shared_with(room, current.epoch),
                split=self._splits.was_split(room, current.epoch),
            )
        )

    def rotate_on_refusal(self, room: str, refused: int) -> bool:
        """A send under epoch `refused` was refused `stale_epoch`, and the
        room was refreshed since: make a new epoch? Not when we hold a newer
        one (someone rotated: the send goes again under it). Otherwise yes
        when our own log calls for one (the E rules), and when it does not,
        once per state of the room's log: a node that wants a rotation for an
        op we are about to learn gets it, and one that keeps refusing gets one
        rotation per change of the log, not one per send (security.md 4.10)."""
        held = self.held(room)
        if not held or max(held) != refused:
            return False
        log = self.log(room)
        if self._encrypt_broken(room, log, held[refused]) is not None:
            return True
        if self._rotated_on_refusal.get(room) == log.index:
            return False
        self._rotated_on_refusal[room] = log.index
        return True

    def new_epoch(self, room: str, epoch: int) -> tuple[EpochKey, list[m.KeyPacket]]:
        """A fresh key for `epoch` of `room`, based on the log's head, boxed for
        exactly the current members under their logged (and pinned) keys.
        An attempt again at the same epoch and head reuses the key: a server
        that kept an earlier attempt's packets has no second key to hand out."""
        index, pending = self.log(room).index, self._pending.get(room)
        if pending is None or (pending.epoch, pending.after_op) != (epoch, index):
            pending = self._pending[room] = new_epoch_key(room, epoch, index)
        return pending, self.wrap_for(pending, self.member_keys(room))

    def wrap_for(self, key: EpochKey, recipients: dict[str, bytes]) -> list[m.KeyPacket]:
        return [
            wrap_epoch_key(self.identity, key, user, pub)
            for user, pub in sorted(recipients.items())
        ]

    def own_epoch(self, key: EpochKey) -> None:
        """An epoch key we made, once the server took it."""
        self.store.put_epoch_key(key.room, key.epoch, key.after_op, key.key, self.me)
        if self._pending.get(key.room) == key:
            del self._pending[key.room]

    def history_for(self, room: str, user: str, user_key: bytes) -> list[m.KeyPacket]:
        """Every epoch key we hold for `room`, boxed for a member we add.
        Recorded before the packets leave: should the add then fail, the
        server may still hand them to `user`, and E4 retires the epoch."""
        held = self.held(room)
        self.store.record_shared(room, sorted(held), user)
        return [
            wrap_epoch_key(
                self.identity,
                EpochKey(room=room, epoch=r.epoch, after_op=r.after_op, key=r.key),
                user,
                user_key,
            )
            for r in sorted(held.values(), key=lambda r: r.epoch)
        ]

    # --- messages ----------------------------------------------------------------------
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
        top = max(held, default=-1)
        if len(results) != len(jobs):
            raise ValueError("the crypt function returned a result count other than asked")
        for i, job, res in zip(where, jobs, results, strict=True):
            sender = job.envelope.sender
            if isinstance(res, CryptoError):
                giver = held[job.envelope.epoch].sender
                failed = self._splits.not_opened(
                    room, job.envelope, res, giver, me=self.me, current=job.envelope.epoch == top
                )
                out[i] = Opened(sender, None, None, failed, "M5")
            else:
                out[i] = Opened(sender, res.text, res.ts, None)
        return out

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

    # --- pins ------------------------------------------------------------------------------
    def member_keys(self, room: str) -> dict[str, bytes]:
        """The current members' logged keys, each checked against its pin."""
        keys = {}
        for user, member in self.log(room).state.members.items():
            self.check_pin(user, member.key)
            keys[user] = member.key
        return keys

    def key_change_in(self, room: str) -> str | None:
        return self.pins.changed_among(self.log(room).state.members)

    def refuse_if_key_changed(self, room: str) -> None:
        self.pins.refuse_if_changed_among(self.log(room).state.members)
