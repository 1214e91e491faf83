"""Key packets the trust core refused: told once, and not opened nor
fetched again for nothing.

The server keeps the first packet for each epoch and recipient, and a
client fetches again every epoch above the newest key it holds whenever a
message it cannot open comes in. So a packet refused once (a member boxed
us garbage, or another member's key) comes back at every such fetch; told
each time, a member who started a few hundred such epochs made a victim's
client tell tens of thousands of problems, and its screen redraw for each.

Here each refused packet is told once for each rule it breaks, and the
packets one fetch refuses for the same sender and rule are told together,
in one line that names their epochs.

A packet that did not open (K4) is remembered with the key it was tried
under, and the fetches of a connection start past the epochs right above
the newest key held whose packet did not open.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Final

from curvechat.client import events as ev
from curvechat.client.trust import rules
from curvechat.protocol import messages as m
from curvechat.protocol.codec import encode

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
        self._unopenable: set[bytes] = set()
        """Digests of the packets that did not open (K4), with the key they
        were tried under: the same packet under the same key never opens."""
        self._refused_epochs: dict[str, dict[int, tuple[str, bytes | None]]] = {}
        """Per room, the epochs whose packet for us did not open this round,
        with its sender and the key it was tried under."""
        self._refused_count = 0

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

    def known_unopenable(self, packet: m.KeyPacket, sender_key: bytes | None) -> bool:
        """Whether `packet` did not open (K4) before under `sender_key`: then
        it does not now either, and was told."""
        return bool(self._unopenable) and _tried(packet, sender_key) in self._unopenable

    def unopenable(self, room: str, packet: m.KeyPacket, sender_key: bytes | None) -> None:
        """`packet` did not open under `sender_key` (K4)."""
        if len(self._unopenable) >= MAX_REMEMBERED:
            self._unopenable.clear()
        self._unopenable.add(_tried(packet, sender_key))
        if self._refused_count >= MAX_REMEMBERED:  # in all rooms: fetched again, then
            self.new_round()
        refused = self._refused_epochs.setdefault(room, {})
        if packet.epoch not in refused:
            self._refused_count += 1
        refused[packet.epoch] = (packet.sender, sender_key)

    def fetch_from(self, room: str, newest_held: int, logged: Mapping[str, bytes]) -> int:
        """The first epoch to fetch key packets from: past the newest held
        and every epoch right above it whose packet did not open this round
        under its sender's key as `logged` now (the node keeps the first
        packet for each epoch and member, so it would serve the same one)."""
        epoch, refused = newest_held + 1, self._refused_epochs.get(room, {})
        while epoch in refused and logged.get(refused[epoch][0]) == refused[epoch][1]:
            epoch += 1
        return epoch

    def new_round(self) -> None:
        """A new connection: ask again for the epochs whose packet did not
        open (another node may serve the genuine one)."""
        self._refused_epochs.clear()
        self._refused_count = 0


def _tried(packet: m.KeyPacket, sender_key: bytes | None) -> bytes:
    fields = (packet.room, packet.epoch, packet.recipient, packet.sender, packet.box, sender_key)
    return hashlib.blake2b(encode(fields), digest_size=16).digest()


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
