"""The node link's frames and the names both of its sides use
(server/nodelink.py serves the link, server/forwarder.py forwards over it).

A `Forward` carries a batch of messages as the store takes them and the
forwarding node's boot id; a `Forwarded` answers it with one ack per
message, or the store error's kind. A `Forward` with no message and a
negative id is the link's heartbeat (a ping, every PING_S): the owner
answers it at once, with no result, or with the error ``CutOff`` while it
reaches no etcd member (an error of its own: ``StoreUnavailable`` answers
a commit that failed), or ``Slow`` while its round trips to etcd are slow
(it commits what it is sent all the same, but would rather not own rooms:
server/ownership.py); a link that answers no ping for SILENT_S is
unreachable. Both frames are
msgpack, checked on decode (unknown fields, sizes).

What this module must never do: hold state or do I/O of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec

from curvechat.store import Committed, NewMessage, StoreError

Submit = Callable[[Sequence[NewMessage]], "asyncio.Future[list[Committed]]"]

LINK_DOMAIN = "curvechat-nodes"
FORWARD_TIMEOUT_S = 2.0
PING_S = 0.2
SILENT_S = 0.8  # a link that answers no ping for this long is unreachable
CUT_OFF = "CutOff"  # the owner's answer while it reaches no etcd member
SLOW = "Slow"  # its answer to a ping while its round trips to etcd are slow
MAX_FORWARD = 4096  # messages in one Forward frame
MAX_LINK_FRAME = 64 * 1024 * 1024


class Forward(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: int
    origin: Annotated[str, msgspec.Meta(max_length=64)]
    messages: Annotated[list[NewMessage], msgspec.Meta(max_length=MAX_FORWARD)]


#: `Forwarded.error` for a frame with a message whose envelope is not a valid
#: `Envelope` of that room, sender and txn (nothing of the frame is committed).
BAD_ENVELOPE = "BadEnvelope"


class Forwarded(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: int
    results: list[Committed] = []
    error: str = ""  # the store error's kind when nothing was committed
    message: str = ""


class FrameId(msgspec.Struct):
    id: int


id_dec = msgspec.msgpack.Decoder(FrameId)
forward_dec = msgspec.msgpack.Decoder(Forward)
forwarded_dec = msgspec.msgpack.Decoder(Forwarded)
enc = msgspec.msgpack.Encoder()


def sent(done: Any) -> BaseException | None:
    """The error of a NOBLOCK send on an asyncio socket (None if it was sent).
    Such a send is finished when it returns; it goes through the asyncio
    socket, not a plain one, because a send may consume the edge of the
    socket's FD and only the asyncio socket then wakes its waiting reader."""
    return done.exception() if done.done() else None


class LinkRefused(StoreError):
    """The owner did not commit a forwarded batch (the message says why)."""

    code = "link_refused"

    def __init__(self, message: str, *, owner_failed: bool = True) -> None:
        super().__init__(message)
        # True: the owner cannot commit (do not ask it again for a while);
        # False: the link is not up (falling back costs nothing) or a room of
        # the batch is not there (the local commit says so to the caller).
        self.owner_failed = owner_failed
        # Set when the heartbeat gave up on the forward: its messages were
        # queued on the local store then (server/forwarder.py `_give_up`).
        self.local: asyncio.Future[list[Committed]] | None = None
