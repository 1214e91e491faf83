"""Messages sealed under another key than ours for their epoch
(`KeyMismatch`): what the row says, what the user is told, and when a new
epoch is called for (E5).

An epoch's keys are split when a message's signed key commitment names
another key than the one we were given for its epoch: the sender and the
member who boxed us the key hold different keys (or the sender signed a
commitment to nothing). Every message of the epoch sealed by a holder of
the other key fails the same way, and a member can relay such messages for
every epoch peer to peer, so a split is told once for each sender and
member who gave us a key, whatever the epochs.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from curvechat.client import events as ev
from curvechat.client.trust.refusals import MAX_REMEMBERED
from curvechat.crypto.errors import CryptoError, KeyMismatch, Uncommitted
from curvechat.protocol import messages as m


class Splits:
    def __init__(self, emit: Callable[[ev.Event], None]) -> None:
        self._emit = emit
        self._splits: set[tuple[str, str, str | None]] = set()
        """(room, sender, giver) of the splits told."""
        self._healed: set[tuple[str, str | None]] = set()
        """(room, giver) whose split made an epoch call for a new one (E5)."""
        self._split_epochs: set[tuple[str, int]] = set()
        self._asked: set[tuple[str, int]] = set()
        """(room, epoch) whose packets were asked for again this round."""
        self._to_ask: set[tuple[str, int]] = set()

    def mismatched(self, room: str, epoch: int) -> None:
        """A message of `epoch` opened under no key we hold for it: the
        epoch's packets are to be asked for again (`to_ask`), once a round,
        for another key a member gave us (`TrustCore.feed_packets`)."""
        if (room, epoch) not in self._asked and len(self._asked) < MAX_REMEMBERED:
            self._to_ask.add((room, epoch))

    def to_ask(self, room: str) -> list[int]:
        """The epochs of `room` whose packets to ask for again (forgotten here)."""
        epochs = sorted(e for r, e in self._to_ask if r == room)
        for epoch in epochs:
            self._to_ask.discard((room, epoch))
            self._asked.add((room, epoch))
        return epochs

    def later(self, room: str, epochs: list[int]) -> None:
        """The packets of `epochs` were not asked for after all (the ask
        failed): they are to be asked for again this round."""
        for epoch in epochs:
            self._asked.discard((room, epoch))
            self._to_ask.add((room, epoch))

    def new_round(self) -> None:
        """A new connection: another node may serve another key."""
        self._asked.clear()
        self._to_ask.clear()

    def not_opened(
        self,
        room: str,
        env: m.Envelope,
        error: CryptoError,
        giver: str | None,
        *,
        me: str,
        current: bool,
    ) -> str:
        """The row's words for a message of `room` that did not verify or
        decrypt (M5; `giver` boxed us its epoch's key, `me` is the user,
        `current`: the epoch is the newest we hold)."""
        failed = f"failed to verify or decrypt: {type(error).__name__}"
        if isinstance(error, KeyMismatch):
            words = self.split(room, env.epoch, env.sender, giver, me=me, current=current)
            return f"{failed} ({words})"
        if isinstance(error, Uncommitted):
            return f"{failed} (the first message format, which this version refuses)"
        return failed

    def split(
        self, room: str, epoch: int, sender: str, giver: str | None, *, me: str, current: bool
    ) -> str:
        """A message of `sender` in `room` was sealed under another key for
        `epoch` than the one `giver` boxed for us. Told once for each sender
        and giver; the words for the message's row returned.

        One such message proves only that its sender signed another key's
        commitment: a member can sign one over random bytes. So nobody is
        named for certain but where the evidence says so, and a split calls
        for a new epoch (E5) once for each member who gave us a key, for the
        newest epoch we hold and never for a key we made: what a member can
        make us do with such messages is bounded by the room's members, not
        by her messages."""
        if giver == me:
            held = f"under another key for epoch {epoch} than the one you made"
            why = (
                f"{sender} sent something else than a message, or the server gave "
                f"{sender} a key you made in an attempt it did not take"
            )
        elif giver == sender:
            held = f"under another key for epoch {epoch} than the one {sender} gave you"
            why = (
                f"{sender} signed it under another key (or over nothing), or the server "
                f"handed you a key of an attempt of {sender}'s it did not take"
            )
        elif giver is None:
            held = f"under another key for epoch {epoch} than the one you were given"
            why = f"the epoch's keys were split, by {sender} or by whoever gave you yours"
        else:
            held = f"under another key for epoch {epoch} than the one {giver} gave you"
            why = (
                f"the epoch's keys were split, by {sender}, by {giver}, "
                f"or by whoever {giver} had it from"
            )
        if len(self._splits) >= MAX_REMEMBERED:
            self._splits.clear()
        mark = (room, sender, giver)
        if mark not in self._splits:
            self._splits.add(mark)
            self._emit(ev.Problem(room, f"{sender} sealed a message {held}: {why}"))
        if current and giver != me and (room, giver) not in self._healed:
            self._healed.add((room, giver))
            self._split_epochs.add((room, epoch))
        return f"{sender} sealed it {held}: {why}"

    def second_key(self, room: str, epoch: int, giver: str) -> None:
        """`giver` gave us another key for `epoch` than the one we hold: the
        epoch's keys are split as surely as a message shows it, and a new
        epoch is called for (E5) on the same terms, once for each giver."""
        if (room, giver) not in self._healed:
            self._healed.add((room, giver))
            self._split_epochs.add((room, epoch))

    def was_split(self, room: str, epoch: int) -> bool:
        """Whether a message showed `epoch` of `room` split, and that calls for
        a new epoch (E5: our next message starts one, with one key for every
        member)."""
        return (room, epoch) in self._split_epochs
