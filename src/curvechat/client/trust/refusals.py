"""Key packets the trust core refused, and epochs whose keys were split,
told once.

The server keeps the first packet for each epoch and recipient, and a
client fetches again every epoch above the newest key it holds whenever a
message it cannot open comes in. So a packet refused once (a member boxed
us garbage, or another member's key) comes back at every such fetch; told
each time, a member who started a few hundred such epochs made a victim's
client tell tens of thousands of problems, and its screen redraw for each.

Here each refused packet is told once for each rule it breaks, and the
packets one fetch refuses for the same sender and rule are told together,
in one line that names their epochs.

An epoch's keys are split when a message's signed key commitment names
another key than the one we were given for its epoch: the sender and the
member who boxed us the key hold different keys, and one of them lied.
Every message of the epoch sealed by a holder of the other key fails the
same way, so the split is told once for each epoch and sender.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from typing import Final

from curvechat.client import events as ev
from curvechat.client.trust import rules
from curvechat.crypto.errors import CryptoError, KeyMismatch, Uncommitted
from curvechat.protocol import messages as m

MAX_REMEMBERED: Final = 50_000
"""Refused packets remembered in all (about 100 bytes each); past it, only
the room just told keeps its own (none, if it has that many alone), and a
packet forgotten is told again if refused again."""

_Told = tuple[int, str, str, bytes]
"""(epoch, sender, rule, digest of the box)."""


class Refusals:
    def __init__(self, emit: Callable[[ev.Event], None]) -> None:
        self._emit = emit
        self._told: dict[str, set[_Told]] = {}
        self._splits: set[tuple[str, int, str]] = set()
        self._split_epochs: set[tuple[str, int]] = set()

    def tell(self, room: str, refused: list[tuple[m.KeyPacket, rules.Rule]]) -> None:
        """Tell the user of the packets of `room` refused in one fetch that
        were not told before, as one Problem for each sender and rule."""
        told = self._told.setdefault(room, set())
        fresh: dict[tuple[str, rules.Rule], list[m.KeyPacket]] = defaultdict(list)
        for packet, rule in refused:
            mark = (packet.epoch, packet.sender, rule.id, _digest(packet))
            if mark not in told:
                told.add(mark)
                fresh[(packet.sender, rule)].append(packet)
        for (sender, rule), packets in fresh.items():
            self._emit(ev.Problem(room, _sentence(sender, rule, packets)))
        if sum(len(s) for s in self._told.values()) > MAX_REMEMBERED:
            # The other rooms' refusals may be told again; and this room's, if
            # it alone holds that many (a server sending page after page).
            self._told = {room: told} if len(told) <= MAX_REMEMBERED else {}

    def not_opened(self, room: str, env: m.Envelope, error: CryptoError, giver: str | None) -> str:
        """The row's words for a message of `room` that did not verify or
        decrypt (M5; `giver` boxed us its epoch's key); a split told once."""
        failed = f"failed to verify or decrypt: {type(error).__name__}"
        if isinstance(error, KeyMismatch):
            return f"{failed} {self.split(room, env.epoch, env.sender, giver)}"
        if isinstance(error, Uncommitted):
            return f"{failed} (the first message format, which this version refuses)"
        return failed

    def split(self, room: str, epoch: int, sender: str, giver: str | None) -> str:
        """A message of `sender` in `room` was sealed under another key for
        `epoch` than the one `giver` boxed for us: tell it once for each
        epoch and sender, and return the words for the message's row."""
        if giver is None:
            held = f"under another key for epoch {epoch} than the one you were given"
            blame = f"the epoch's keys were split, by {sender} or by whoever gave you yours"
        else:
            held = f"under another key for epoch {epoch} than the one {giver} gave you"
            if sender == giver:
                blame = f"{sender} split the epoch's keys"
            else:
                blame = f"the epoch's keys were split, by {sender} or by {giver}"
        mark = (room, epoch, sender)
        if mark not in self._splits:
            if len(self._splits) >= MAX_REMEMBERED:
                self._splits.clear()
                self._split_epochs.clear()
            self._splits.add(mark)
            self._split_epochs.add((room, epoch))
            self._emit(ev.Problem(room, f"{sender} sealed a message {held}: {blame}"))
        return f"({sender} sealed it {held}: {blame})"

    def was_split(self, room: str, epoch: int) -> bool:
        """Whether a message showed `epoch` of `room` split (E5: our next
        message then starts a new epoch, with one key for every member)."""
        return (room, epoch) in self._split_epochs


def _digest(packet: m.KeyPacket) -> bytes:
    return hashlib.blake2b(packet.box, digest_size=16).digest()


def _sentence(sender: str, rule: rules.Rule, packets: list[m.KeyPacket]) -> str:
    epochs = sorted({p.epoch for p in packets})
    first = packets[0]
    if len(packets) == 1:
        what = f"key packet for {first.room} epoch {first.epoch}"
    else:
        shown = ", ".join(str(e) for e in epochs[:5])
        more = f" and {len(epochs) - 5:,} more" if len(epochs) > 5 else ""
        what = f"{len(packets):,} key packets for {first.room} (epochs {shown}{more})"
    return f"{what} from {sender} refused: {rules.explain(rule)}"
