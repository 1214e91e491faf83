"""The client's trust rules, as tables.

Every decision to accept a key packet, to encrypt under an epoch key, or to
show a message is made by checking one of the tables below in order; the
first rule that fails decides, and its id and text are what the user and the
logs see. `docs/security.md` cites the same ids, and the tests read these
tables to make sure every rule is exercised both ways.

Theory
------
A server (or whoever controls it) chooses every reply, so it may hand a
client anything it has ever stored: a packet boxed for another room or
another epoch, a key made by someone who left, an old head, a claim about
the current epoch. The rules accept only what the verified membership log
(`RoomLog`) and the cryptography vouch for:

- a key is filed under the room and epoch sealed inside its packet, only if
  those are the room and epoch asked for, and only from someone the log says
  could have held it (a member at the op the epoch is based on, or whoever
  added us after it, who re-wraps the history for us);
- a client encrypts only under an epoch key that, by its own log, no one
  outside the current members can hold: no member departed since the epoch
  began, whoever gave us the key is still a member, and everyone we boxed
  it for when adding them became one (a refused add may still have handed
  the server our packets for them);
- a message is shown only if it verifies under the key its sender had when
  the log says they were a member.

This module must never do I/O: predicates read the context they are given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NamedTuple, TypeVar

from curvechat.client.trust.log import RoomLog
from curvechat.crypto.errors import CryptoError
from curvechat.crypto.identity import Identity
from curvechat.crypto.roomkeys import EpochKey, unwrap_key_packet
from curvechat.protocol import messages as m


class Rule(NamedTuple):
    id: str
    says: str
    """What must hold, in words (completes "refused: requires that …")."""


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """An epoch key a client holds, and who gave it to us (None: unknown,
    from a cache written before senders were recorded)."""

    epoch: int
    after_op: int
    key: bytes
    sender: str | None


# --- key packets -------------------------------------------------------------


@dataclass
class PacketCtx:
    identity: Identity
    room: str
    """The room the packet was fetched for."""
    packet: m.KeyPacket
    log: RoomLog
    held: Mapping[int, EpochRecord]
    opened: EpochKey | None = None


def _opens(c: PacketCtx) -> bool:
    try:
        c.opened = unwrap_key_packet(c.identity, c.packet, c.log.logged_keys[c.packet.sender])
    except CryptoError:
        return False
    return True


def _entitled(c: PacketCtx) -> bool:
    assert c.opened is not None
    sender, after_op = c.packet.sender, c.opened.after_op
    if c.log.was_member_at(sender, after_op):
        return True  # made the epoch, or received it as a member of its base
    # Whoever adds us re-wraps the epochs that began before the add.
    return any(index > after_op for index in c.log.added(sender, c.identity.user))


def _not_overwriting(c: PacketCtx) -> bool:
    assert c.opened is not None
    held = c.held.get(c.opened.epoch)
    return held is None or held.key == c.opened.key


PACKET_RULES: Final = (
    Rule("K1", "the packet names the room it was fetched for"),
    Rule("K2", "the packet is addressed to us"),
    Rule("K3", "the packet's sender is in the room's verified log"),
    Rule("K4", "the packet opens with the sender's logged key, and the room, epoch and "
         "recipient sealed inside it are the ones outside"),
    Rule("K5", "the op the epoch is based on is in our verified log"),
    Rule("K6", "the sender was a member at the op the epoch is based on, or added us "
         "after it"),
    Rule("K7", "we hold no other key for that epoch"),
)  # fmt: skip

_PACKET_CHECKS: Final[Mapping[str, Callable[[PacketCtx], bool]]] = MappingProxyType(
    {
        "K1": lambda c: c.packet.room == c.room,
        "K2": lambda c: c.packet.recipient == c.identity.user,
        "K3": lambda c: c.packet.sender in c.log.logged_keys,
        "K4": _opens,
        "K5": lambda c: c.opened is not None and c.opened.after_op <= c.log.index,
        "K6": _entitled,
        "K7": _not_overwriting,
    }
)


def check_packet(ctx: PacketCtx) -> Rule | None:
    """The first packet rule `ctx` breaks, or None (then `ctx.opened` is the key)."""
    return _first_broken(PACKET_RULES, _PACKET_CHECKS, ctx)


# --- encrypting ----------------------------------------------------------------


@dataclass
class EncryptCtx:
    me: str
    log: RoomLog
    current: EpochRecord
    shared: frozenset[str] = frozenset()
    """Whom we boxed the current epoch's key for when adding them."""
    split: bool = False
    """A member's message showed the current epoch's keys split (`KeyMismatch`)."""


ENCRYPT_RULES: Final = (
    Rule("E1", "the epoch is based on an op in our verified log"),
    Rule("E2", "no member departed after the op the epoch is based on"),
    Rule("E3", "whoever gave us the epoch key is still a member"),
    Rule("E4", "everyone we boxed the epoch key for when adding them is a member"),
    Rule("E5", "no member's message showed the epoch's keys split (sealed under another key)"),
)

_ENCRYPT_CHECKS: Final[Mapping[str, Callable[[EncryptCtx], bool]]] = MappingProxyType(
    {
        "E1": lambda c: c.current.after_op <= c.log.index,
        "E2": lambda c: not c.log.stale(c.current.after_op),
        "E3": lambda c: (
            c.current.sender is not None
            and (c.current.sender == c.me or c.log.is_member(c.current.sender))
        ),
        "E4": lambda c: all(c.log.is_member(u) for u in c.shared),
        "E5": lambda c: not c.split,
    }
)


def check_encrypt(ctx: EncryptCtx) -> Rule | None:
    """The first rule that forbids encrypting under `ctx.current`: a new epoch
    must be made first. None: the key may be used."""
    return _first_broken(ENCRYPT_RULES, _ENCRYPT_CHECKS, ctx)


# --- messages --------------------------------------------------------------------


@dataclass
class MessageCtx:
    room: str
    envelope: m.Envelope
    log: RoomLog
    held: Mapping[int, EpochRecord]
    extra: dict[str, object] = field(default_factory=dict)


MESSAGE_RULES: Final = (
    Rule("M1", "the envelope names the room it was fetched for"),
    Rule("M2", "we hold the key of the envelope's epoch"),
    Rule("M3", "the sender is in the room's verified log"),
    Rule("M4", "the sender was a member at some op since the epoch began"),
)

_MESSAGE_CHECKS: Final[Mapping[str, Callable[[MessageCtx], bool]]] = MappingProxyType(
    {
        "M1": lambda c: c.envelope.room == c.room,
        "M2": lambda c: c.envelope.epoch in c.held,
        "M3": lambda c: c.envelope.sender in c.log.logged_keys,
        "M4": lambda c: c.log.member_since(c.envelope.sender, c.held[c.envelope.epoch].after_op),
    }
)


def check_message(ctx: MessageCtx) -> Rule | None:
    """The first rule an envelope breaks before its signature is even checked
    (M5, in the core: it must verify and decrypt), or None."""
    return _first_broken(MESSAGE_RULES, _MESSAGE_CHECKS, ctx)


MESSAGE_VERIFIES: Final = Rule(
    "M5", "the envelope verifies under the sender's logged key and decrypts under the epoch key"
)
MESSAGE_NOT_REPLAYED: Final = Rule("M6", "no earlier message carries the same sender and txn id")

# --- room listings and pins (applied by the core; listed here to be cited) ----------

LISTING_RULES: Final = (
    Rule("R1", "a listed room counts as joined only while our verified log makes us a member"),
    Rule("R2", "a room's epoch and op head as the server reports them only decide what to fetch"),
    Rule("R3", "a room the server stops serving is hidden, but its log and keys are kept"),
)

PIN_RULES: Final = (
    Rule("P1", "a key seen for the first time is pinned, and marked unverified"),
    Rule("P2", "a key that differs from the pin is held as a pending change: nothing is "
         "encrypted to that user, nor in a room they are in, until the user accepts it"),
    Rule("P3", "a key is marked verified only when the user says they compared safety numbers"),
)  # fmt: skip


C = TypeVar("C")


def explain(rule: Rule) -> str:
    """How a broken rule reads to a user: "requires that … (K6)"."""
    return f"requires that {rule.says} ({rule.id})"


def _first_broken(
    rules: tuple[Rule, ...], checks: Mapping[str, Callable[[C], bool]], ctx: C
) -> Rule | None:
    for rule in rules:
        if not checks[rule.id](ctx):
            return rule
    return None


ALL_RULES: Final = (
    *PACKET_RULES,
    *ENCRYPT_RULES,
    *MESSAGE_RULES,
    MESSAGE_VERIFIES,
    MESSAGE_NOT_REPLAYED,
    *LISTING_RULES,
    *PIN_RULES,
)
