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

from collections.abc import Callable, Iterable
from typing import Literal

from curvechat.client import events as ev
from curvechat.client.errors import KeyChanged, NotReady, UntrustedLog
from curvechat.client.trust import rules
from curvechat.client.trust.api import Grant, ListingPlan, Rotate, TrustStore
from curvechat.client.trust.log import RoomLog
from curvechat.client.trust.logbook import LogBook
from curvechat.client.trust.opening import Opening
from curvechat.client.trust.pins import Pins
from curvechat.client.trust.position import Position
from curvechat.client.trust.refusals import Refusals
from curvechat.client.trust.rules import EpochRecord
from curvechat.client.trust.splits import Splits
from curvechat.crypto.errors import MembershipError
from curvechat.crypto.identity import Identity
from curvechat.crypto.roomkeys import EpochKey, new_epoch_key, wrap_epoch_key
from curvechat.protocol import messages as m

EventSink = Callable[[ev.Event], None]


class TrustCore(Opening):
    def __init__(self, identity: Identity, store: TrustStore, on_event: EventSink) -> None:
        self.identity = identity
        self.me = identity.user
        self.store = store
        self._emit = on_event
        self._book = LogBook(store, on_event)
        self._refusals = Refusals(on_event)
        self._splits = Splits(on_event)
        self.position = Position()
        """Which epoch of each room is current (`position.py`)."""
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
            current, top = self.position.current(room, held), self.position.top(room, held)
            self.position.reported(room, info.epoch)
            if info.epoch > top and current is not None:
                # Epochs began since: their packets, also for numbers we
                # hold a key for (another key is kept, `feed_packets`).
                plan.fetch_keys[room] = current + 1
            elif info.epoch not in held:
                plan.fetch_keys[room] = self.keys_from(room)
        return plan

    # --- epoch keys ----------------------------------------------------------------
    def held(self, room: str) -> dict[int, EpochRecord]:
        return self.store.epoch_records(room)

    def current(self, room: str) -> int | None:
        """The epoch of `room` to encrypt under (`position.py`); None: no key."""
        return self.position.current(room, self.held(room))

    def next_epoch(self, room: str) -> int:
        """The number of the next epoch of `room` (`position.py`)."""
        return self.position.next_epoch(room, self.held(room))

    def feed_packets(
        self, room: str, packets: Iterable[m.KeyPacket], *, new_only: bool = False
    ) -> int:
        """Key packets fetched for `room`: each is filed only if every packet
        rule (K1-K7) holds; a refused one is told as a Problem, once
        (`Refusals`). One that breaks K7 alone (another key for an epoch we
        hold, from a member entitled to give one) is kept beside the held
        key, to open what was sealed under it: a server and a member could
        otherwise take an epoch's number first and make us refuse the key
        the room then uses (`_alternate`). With `new_only`, one for an
        epoch we hold is passed over unopened (a fetch of late history walks
        over held epochs). Returns how many were filed."""
        filed: list[int] = []
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
            if broken is not None and broken.id == "K7" and ctx.opened is not None:
                if self._alternate(room, ctx.opened, packet.sender, held[ctx.opened.epoch]):
                    filed.append(ctx.opened.epoch)
                continue
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
                filed.append(key.epoch)
        self._refusals.tell(room, refused)
        self.position.filed(room, filed, held)
        return len(filed)

    def _alternate(self, room: str, key: EpochKey, giver: str, held: EpochRecord) -> bool:
        """Keep `key`, which `giver` gave us for an epoch we hold under
        another key; whether it was new (told once). The epoch is split
        (E5, once for each giver, as a message showing it is: a member and
        a server cannot make every message of ours a rotation)."""
        if not self.store.put_alternate(room, key.epoch, key.after_op, key.key, giver):
            return False
        self._splits.second_key(room, key.epoch, giver)
        first = "you made" if held.sender == self.me else f"{held.sender or 'someone'} gave you"
        self._emit(
            ev.Problem(
                room,
                f"{giver} gave you another key for epoch {key.epoch} than the one {first}: "
                "messages sealed under either open, and your next message starts a new epoch",
            )
        )
        return True

    def keys_from(self, room: str) -> int:
        """The first epoch to fetch key packets from (`Refusals.fetch_from`):
        above the current one (keys held above the room's top are no reason
        to stop asking below them)."""
        current = self.current(room)
        newest = -1 if current is None else current
        return self._refusals.fetch_from(room, newest, self.log(room).logged_keys)

    def new_round(self) -> None:
        """A new connection (epochs refused this round, or whose messages
        opened under no key held, are asked for again)."""
        self._refusals.new_round()
        self._splits.new_round()

    def keys_to_ask_again(self, room: str) -> list[int]:
        """Epochs of `room` with messages that opened under no key we hold:
        their packets are to be fetched again, once a round (`Splits`)."""
        return self._splits.to_ask(room)

    def ask_keys_later(self, room: str, epochs: list[int]) -> None:
        """Asking for the packets of `epochs` again failed (the connection
        ended): they are still to be asked for (`keys_to_ask_again`)."""
        self._splits.later(room, epochs)

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
        epoch = self.position.current(room, held)
        if epoch is None:
            raise NotReady(f"no key for room {room} yet", "no_key")
        current, following = held[epoch], self.position.next_epoch(room, held)
        broken = self._encrypt_broken(room, log, current)
        if broken is not None:
            return Rotate(following, rules.explain(broken))
        used, since_ms = self.store.epoch_usage(room, current.epoch)
        if used >= max_messages or now_ms - since_ms >= max_age_ms:
            # Epoch hygiene (as Megolm): a leaked epoch key exposes at most
            # this many messages, or this much time.
            return Rotate(following, "epoch used up")
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
        if self.position.current(room, held) != refused:
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
        """An epoch key we made, once the server took it: the epoch's key,
        also if another was filed for its number before (a key planted for
        an epoch not made yet), which is kept beside it (`_alternate`)."""
        held = self.held(key.room).get(key.epoch)
        replace = held is not None and held.key != key.key
        self.store.put_epoch_key(
            key.room, key.epoch, key.after_op, key.key, self.me, replace=replace
        )
        if replace and held is not None and held.sender is not None:
            other = EpochKey(room=key.room, epoch=held.epoch, after_op=held.after_op, key=held.key)
            ours = EpochRecord(key.epoch, key.after_op, key.key, self.me)
            self._alternate(key.room, other, held.sender, ours)
        self.position.made(key.room, key.epoch)
        if self._pending.get(key.room) == key:
            del self._pending[key.room]

    def history_for(self, room: str, user: str, user_key: bytes) -> list[m.KeyPacket]:
        """Every epoch key we hold for `room` up to its top (`position.py`),
        boxed for a member we add. Recorded before the packets leave: should
        the add then fail, the server may still hand them to `user`, and E4
        retires the epoch."""
        held = self.held(room)
        top = self.position.top(room, held)
        held = {epoch: record for epoch, record in held.items() if epoch <= top}
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
