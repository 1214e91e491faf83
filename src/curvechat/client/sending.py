"""What a message to send may be, and what the answer to a send means: the
outbox's decisions, without I/O.

It must never touch a socket, the cache or a clock: text and errors in,
verdicts out.
"""

from __future__ import annotations

import enum

from curvechat.client.errors import NotConnected, NotReady, RequestTimeout, ServerRefused
from curvechat.protocol import ErrorCode, LocalProtocolError
from curvechat.protocol.limits import MAX_TEXT_CHARS, TEXT_LIMIT

RETRY_LATER = {ErrorCode.STORE_UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL}
STALE = {ErrorCode.STALE_EPOCH, ErrorCode.CONFLICT}


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
