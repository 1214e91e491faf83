"""The peer-to-peer protocol: what two clients say to each other directly,
over a CURVE link, while no server is reachable (docs/protocol.md, "Peer
protocol").

A client announces where it listens in a `PeerRecord` signed by its identity
key (`SignedRecord`); the record travels through the server's directory and
by mDNS, and whoever reads it checks the signature against the key it pinned.
Over a link the dialing side sends `PeerFrame`s holding a `PeerRequest`; the
listening side answers each with a `PeerReply` of the same `rid`.

Anti-entropy by transaction id: `Digest` lists the (sender, txn) of the
provisional messages the dialer holds for one room; the reply carries the
envelopes the dialer lacks and the refs the listener wants; `Offer` delivers
those. Every list is bounded below, so an exchange is bounded too.

`SignedRecord` itself is in `messages`, since the directory carries it.

This module must never do I/O, verify signatures or hold secrets: it only
says what a well-formed frame is, and decodes bytes into one or a
`RemoteProtocolError`.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from curvechat.protocol import limits as L
from curvechat.protocol.errors import (
    UNDECODABLE,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
)
from curvechat.protocol.wire import Envelope, Key32, Millis, Room, Txn, User, Wire

MAX_ENDPOINTS: Final = 4
"""Endpoints one record may announce."""
MAX_DIGEST: Final = 256
"""Refs one `Digest` may list: a room's pool, or one part of it."""
MAX_WANT: Final = 64
"""Refs one reply may ask for."""
MAX_RELAY: Final = 64
"""Envelopes one reply or offer may carry (and at most `RELAY_BYTES` of them)."""
RELAY_BYTES: Final = 512 * 1024
MAX_PEER_FRAME: Final = L.MAX_REPLY_BYTES
MAX_RECORD_BYTES: Final = 512
"""As `SignedRecord.record` allows."""
DOMAIN_RECORD: Final = b"curvechat/peer-record/v1\x00"
PEER_VERSION: Final = 2
"""2: requests name the dialer (`PeerAsk.user`), answers the listener."""


class PeerCode(enum.StrEnum):
    """The codes of a `PeerError` or `Refused` beyond the frame-level ones
    of `ErrorCode` (bad_frame, too_large, bad_version, bad_signature,
    internal), with the peer rule (docs/security.md) each stands for."""

    NOT_SHARED = "not_shared"
    """N1/N3: the key or the room is not one both sides share."""
    BAD_ENVELOPE = "bad_envelope"
    """N4/N5: a relayed envelope is for another room, or fails M1-M5."""
    STALE_RECORD = "stale_record"
    """N2: a record no newer than the one held, or dated too far ahead of
    the receiver's clock."""
    POOL_FULL = "pool_full"
    """N7: the room's provisional pool is full."""


Endpoint = Annotated[str, Meta(pattern=r"^tcp://[0-9A-Za-z.:\[\]-]{1,200}:[0-9]{1,5}\Z")]


def endpoint_problem(endpoint: str) -> str | None:
    """Why a record's endpoint may not be dialled, or None. Only an IP
    address and a port 1-65535: a host name would make every member who
    dials it ask a resolver (a beacon of when they are offline), and an
    unspecified, multicast or broadcast address is no peer."""
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"port {port!r} is not 1-65535"
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return f"{host!r} is not an IP address"
    if (ip.version == 6) != bracketed:
        return f"{host!r}: an IPv6 address is written in brackets, an IPv4 one is not"
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return f"{host!r} is not the address of one host"
    return None


class PeerRecord(Wire, frozen=True):
    """Where `user` listens, and the CURVE key its listener proves."""

    user: User
    transport_pub: Key32
    endpoints: Annotated[list[Endpoint], Meta(max_length=MAX_ENDPOINTS)]
    ts: Millis
    """The announcer's clock: a newer record replaces an older one."""

    def __post_init__(self) -> None:
        for endpoint in self.endpoints:
            problem = endpoint_problem(endpoint)
            if problem is not None:
                raise ValueError(f"endpoint {endpoint}: {problem}")


class TxnRef(Wire, array_like=True, frozen=True):
    sender: User
    txn: Txn


class PeerRequest(Wire, tag_field="type", frozen=True):
    pass


class At(Wire, array_like=True, frozen=True):
    """A place in the provisional order: the sender's clock, sender, txn."""

    ts: Millis
    sender: User
    txn: Txn


class Digest(PeerRequest, tag="digest", frozen=True):
    """The provisional messages the dialer holds for `room` in the part of
    the provisional order after `after` and up to `until` (each open when
    omitted): `have` lists every one it holds there."""

    room: Room
    have: Annotated[list[TxnRef], Meta(max_length=MAX_DIGEST)]
    after: At | None = None
    until: At | None = None


class Offer(PeerRequest, tag="offer", frozen=True):
    """Envelopes the listener asked for (or that the dialer wrote)."""

    room: Room
    envelopes: Annotated[list[Envelope], Meta(max_length=MAX_RELAY)]


class PeerReply(Wire, tag_field="type", frozen=True):
    pass


class DigestReply(PeerReply, tag="digest_reply", frozen=True):
    room: Room
    envelopes: Annotated[list[Envelope], Meta(max_length=MAX_RELAY)]
    """Provisional messages the dialer did not list."""
    want: Annotated[list[TxnRef], Meta(max_length=MAX_WANT)]
    """Refs the dialer listed that the listener lacks: offer them."""


class Refused(Wire, array_like=True, frozen=True):
    txn: Txn
    code: Annotated[str, Meta(max_length=64)]


class OfferReply(PeerReply, tag="offer_reply", frozen=True):
    room: Room
    accepted: Annotated[int, Meta(ge=0, le=MAX_RELAY)]
    refused: Annotated[list[Refused], Meta(max_length=MAX_RELAY)]


class PeerError(PeerReply, tag="peer_error", frozen=True):
    code: Annotated[str, Meta(max_length=64)]
    message: Annotated[str, Meta(max_length=500)]


AnyPeerRequest = Digest | Offer
AnyPeerReply = DigestReply | OfferReply | PeerError


class PeerAsk(Wire, frozen=True):
    v: int
    rid: Annotated[int, Meta(ge=1, le=2**53)]
    req: AnyPeerRequest
    user: User
    """Who the dialer is: served as this user if that user's record
    announces the link's key (N1)."""


class PeerAnswer(Wire, frozen=True):
    v: int
    rid: Annotated[int, Meta(ge=1, le=2**53)]
    msg: AnyPeerReply
    user: User
    """Who answers: the dialer checks it is the member it meant to reach
    (another member's record may announce this listener's key)."""


_encoder = msgspec.msgpack.Encoder()
_ask = msgspec.msgpack.Decoder(PeerAsk)
_answer = msgspec.msgpack.Decoder(PeerAnswer)
_record = msgspec.msgpack.Decoder(PeerRecord)


def encode_peer(frame: PeerAsk | PeerAnswer) -> bytes:
    data = _encoder.encode(frame)
    if len(data) > MAX_PEER_FRAME:
        raise LocalProtocolError(ErrorCode.TOO_LARGE, f"peer frame of {len(data)} bytes")
    return data


def encode_record(record: PeerRecord) -> bytes:
    data = _encoder.encode(record)
    if len(data) > MAX_RECORD_BYTES:
        raise LocalProtocolError(ErrorCode.TOO_LARGE, f"peer record of {len(data)} bytes")
    return data


def _decode(decoder: msgspec.msgpack.Decoder, data: bytes, what: str) -> object:  # type: ignore[type-arg]
    if len(data) > MAX_PEER_FRAME:
        raise RemoteProtocolError(ErrorCode.TOO_LARGE, f"{what} of {len(data)} bytes")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise RemoteProtocolError(ErrorCode.BAD_FRAME, f"invalid {what}: {exc}") from exc
    except UNDECODABLE as exc:
        raise RemoteProtocolError(ErrorCode.BAD_FRAME, f"malformed {what}: {exc}") from exc


def _version(v: int) -> None:
    if v != PEER_VERSION:
        raise RemoteProtocolError(
            ErrorCode.BAD_VERSION, f"peer protocol version {v} (this side speaks {PEER_VERSION})"
        )


def decode_ask(data: bytes) -> PeerAsk:
    frame = _decode(_ask, data, "peer request")
    assert isinstance(frame, PeerAsk)
    _version(frame.v)
    return frame


def decode_answer(data: bytes) -> PeerAnswer:
    frame = _decode(_answer, data, "peer reply")
    assert isinstance(frame, PeerAnswer)
    _version(frame.v)
    return frame


def decode_record(data: bytes) -> PeerRecord:
    record = _decode(_record, data, "peer record")
    assert isinstance(record, PeerRecord)
    return record


def envelope_size(env: Envelope) -> int:
    """About how many bytes `env` takes in a frame."""
    return len(env.ct) + 200
