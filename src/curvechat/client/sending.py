"""What a message to send may be, and what the answer to a send means: the
outbox's decisions, without I/O.

It must never touch a socket, the cache or a clock: text and errors in,
verdicts out.
"""

from __future__ import annotations

import enum
import itertools
import secrets
from collections.abc import Collection, Mapping, Sequence

from curvechat.client.errors import NotConnected, NotReady, RequestTimeout, ServerRefused
from curvechat.protocol import ErrorCode, LocalProtocolError
from curvechat.protocol.limits import MAX_TEXT_CHARS, TEXT_LIMIT

RETRY_LATER = {
    ErrorCode.STORE_UNAVAILABLE,
    ErrorCode.STORE_FULL,
    ErrorCode.RATE_LIMITED,
    ErrorCode.INTERNAL,
}
STALE = {ErrorCode.STALE_EPOCH, ErrorCode.CONFLICT}


class TxnIds:
    """A sender's transaction ids in one room: 16 random bytes (URL-safe
    base64, 22 characters) drawn once, then a 12-digit counter. Random where
    it matters, so that no two senders' (or two processes') collide; in
    order after that, so that the indexes they key (the cache's and the
    node's, by room, sender and txn) grow at one end rather than
    everywhere: a random id dirties a page of each index per message. One
    per room: the ids a room's members see count nothing sent elsewhere."""

    def __init__(self) -> None:
        self._prefix = secrets.token_urlsafe(16)
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):012d}"


class Verdict(enum.Enum):
    """What the answer to a send (or the failure to seal it) means."""

    FAIL = "fail"  # for good: out of the outbox, told as SendFailed
    AGAIN = "again"  # sent ahead of one not stored (out_of_order): resend in the next pass
    STALE = "stale"  # someone rotated: bring the room up to date, then send again
    LATER = "later"  # outcome unknown or the node is busy: resend in a second
    LOST = "lost"  # no connection: resend after the next sync


RANK = {Verdict.FAIL: 0, Verdict.AGAIN: 1, Verdict.STALE: 2, Verdict.LATER: 3, Verdict.LOST: 4}
"""When several sends of a pass are not acked, the gravest reason decides."""


def classify(exc: BaseException, *, after: str | None = None) -> Verdict:
    """What a send's failure means; `after` is what the send named as its
    predecessor (an out_of_order refusal of a send that named none is the
    server's confusion: retried later, not at once)."""
    if isinstance(exc, NotConnected):
        return Verdict.LOST
    if isinstance(exc, RequestTimeout):
        return Verdict.LATER  # the outcome is unknown; resending the same txn is safe
    if isinstance(exc, ServerRefused):
        if exc.code in RETRY_LATER:
            return Verdict.LATER
        if exc.code in STALE:
            return Verdict.STALE
        if exc.code == ErrorCode.OUT_OF_ORDER:
            return Verdict.LATER if after is None else Verdict.AGAIN
    return Verdict.FAIL


def check_text(text: str) -> None:
    """Refuse, with a code, a text that cannot be a message: before it is
    queued, so before anything is sealed. A text that passes also seals
    (`MAX_TEXT_CHARS` is the whole limit)."""
    if not text.strip():
        raise NotReady("empty message", "empty")
    if len(text) > MAX_TEXT_CHARS:
        raise LocalProtocolError(
            ErrorCode.TOO_LARGE, f"message of {len(text):,} characters; the limit is {TEXT_LIMIT}"
        )
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates (e.g. undecodable input bytes)
        raise LocalProtocolError(ErrorCode.BAD_FRAME, "text is not valid Unicode") from None


class Placed(enum.Enum):
    """Where an acknowledged send goes (`place_acks`)."""

    STORE = "store"  # into the room's messages at its ack's seq, and shown
    KNOWN = "known"  # a push or a sync brought it in already: not stored or shown again
    BAD = "bad"  # the ack cannot be true: the send fails and nothing is stored
    WAIT = "wait"  # its seq holds a row that did not open but says it is this send:
    # left in the outbox and sent again later (the server keeps it once), judged anew


BAD_ACK = "bad_ack"
"""The code a send fails with when the server's ack for it cannot be true."""


def place_acks(
    me: str,
    room: str,
    acks: Sequence[tuple[str, str, str, int]],
    *,
    taken: Mapping[int, tuple[str, str, str]],
    stored: Collection[str],
) -> list[tuple[Placed, str]]:
    """Judge the acks of `room`'s sends, in the order sent, each as (the
    send's txn, the ack's room, txn and seq), against what the cache holds:
    `taken` maps the acks' seqs that hold a row to the (sender, txn) it
    names and how it holds the seq (`messagerows.Held`: "opened", or not
    yet, "waits", or "never": a row that did not open only claims them),
    `stored` holds the txns of our messages already stored in the room.
    Returns where each goes and, if BAD, why.

    An ack is not taken on trust: one that names another message, a seq
    that holds another message, or a seq an earlier send of the same
    answers was given, fails its send rather than hide, replace or double a
    message; one for a send a push or a sync already brought in changes
    nothing. A seq whose row did not open but may yet, and claims to be
    this very send (ours, sealed under a key this process does not hold
    yet: another process of this home made it), waits: neither stored nor
    failed."""
    out: list[tuple[Placed, str]] = []
    held = dict(taken)  # and the seqs given to the sends judged so far
    for txn, ack_room, ack_txn, seq in acks:
        if (ack_room, ack_txn) != (room, txn):
            out.append((Placed.BAD, "the server's answer names another message"))
            continue
        holder = held.get(seq)
        if txn in stored:  # A2: a push or a sync brought it in (here or at its own seq)
            held.setdefault(seq, (me, txn, "opened"))
            out.append((Placed.KNOWN, ""))
            continue
        if holder == (me, txn, "waits"):
            out.append((Placed.WAIT, ""))
            continue
        if holder is not None and holder != (me, txn, "opened"):
            out.append((Placed.BAD, f"the server acknowledged it as message {seq}, another one"))
            continue
        held[seq] = (me, txn, "opened")
        out.append((Placed.KNOWN if holder is not None else Placed.STORE, ""))
    return out


class StaleRefusals:
    """How many stale refusals each send counts, and whether one taught us
    something: a refusal after which the epoch to seal under is newer than
    any refused for the send (another member rotated) counts nothing; any
    other counts one, also when the server's epoch is below ours, so a
    server that reports one epoch and then another cannot keep a send going
    round. A send fails after `limit` counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sends: dict[str, tuple[int, int]] = {}  # txn -> (counted, newest epoch refused)

    def refused(self, txn: str, refused: int, now: int | None) -> tuple[bool, bool]:
        """A refusal of `txn` under epoch `refused` (the epoch held before,
        for a rotation refused), after which `now` is the epoch to seal
        under: (whether it taught us a newer epoch, whether the send is to
        fail)."""
        counted, newest = self._sends.get(txn, (0, -1))
        newest = max(refused, newest)
        learned = now is not None and now > newest
        if not learned:
            counted += 1
        self._sends[txn] = (counted, newest)
        return learned, counted > self.limit

    def done(self, txn: str) -> None:
        self._sends.pop(txn, None)
