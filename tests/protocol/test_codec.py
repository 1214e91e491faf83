"""The codec: every request and reply round-trips; every constraint of
messages.py is refused on decode with BAD_FRAME; versions and sizes are
checked; and no input whatsoever makes a decoder raise anything but
RemoteProtocolError."""

from __future__ import annotations

import copy
import os
import struct
import typing
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from curvechat.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    decode_envelope,
    decode_member_op,
    decode_request,
    decode_server_frame,
    encode,
    encode_batch,
    encode_item,
    encode_reply,
    encode_request,
    is_message_push,
    message_push,
    peek_request_id,
)
from curvechat.protocol import messages as m
from curvechat.protocol.limits import (
    BATCH_BUDGET_BYTES,
    MAX_BATCH,
    MAX_BATCH_ITEMS,
    MAX_BOX_BYTES,
    MAX_CIPHERTEXT_BYTES,
    MAX_CLIENT_ID_LEN,
    MAX_FRAME_BYTES,
    MAX_OP_BYTES,
    MAX_PAGE,
    MAX_REPLY_BYTES,
)

K32 = bytes(range(32))
SIG = bytes(range(64))
NONCE = bytes(range(24))
TXN = "txn-00000001"

OP = m.MemberOp(
    room="general",
    index=1,
    prev=K32,
    kind="add",
    actor="alice",
    target="bob",
    target_key=K32,
    ts=1_700_000_000_000,
)
ENVELOPE = m.Envelope(
    room="general", epoch=3, sender="alice", txn=TXN, nonce=NONCE, ct=b"c" * 48, sig=SIG
)
PACKET = m.KeyPacket(room="general", epoch=1, recipient="bob", sender="alice", box=b"b" * 72)
SIGNED = m.SignedOp(op=encode(OP), sig=SIG)
UPLOAD = m.EpochUpload(epoch=1, after_op=1, packets=[PACKET])
INFO = m.RoomInfo(room="general", head=10, epoch=1, op_head=2, members=3)
STORED = m.StoredMessage(seq=1, ts=5, envelope=ENVELOPE)
MESSAGES = m.Messages(room="general", items=[STORED], head=1)

HELLO = m.Hello(client="curvechat/0.1")
REGISTER = m.Register(user="alice", sign_pub=K32, transport_sig=SIG)
LOOKUP = m.Lookup(users=["alice", "bob"])
CREATE = m.CreateRoom(room="general", ops=[SIGNED], epoch=UPLOAD)
ADD = m.AddMember(room="general", op=SIGNED, packets=[PACKET])
SHARE_KEYS = m.ShareKeys(room="general", recipient="bob", packets=[PACKET])
REMOVE = m.RemoveMember(room="general", op=SIGNED, epoch=UPLOAD)
NEW_EPOCH = m.NewEpoch(room="general", epoch=UPLOAD)
MEMBERS = m.Members(room="general", after=3)
SEND = m.Send(envelope=ENVELOPE)
HISTORY = m.History(room="general", before=10, limit=MAX_PAGE)
SYNC = m.Sync(cursors={"general": 3, "@alice:bob": 0}, limit=1)
FETCH_KEYS = m.FetchKeys(room="general", min_epoch=2)
PING = m.Ping(t=2**53)

REQUESTS: list[m.Request] = [
    HELLO,
    m.Hello(),
    m.Hello(client="x", batch=True),
    m.Hello(client="x", batch=True, sends=True),
    REGISTER,
    LOOKUP,
    CREATE,
    m.CreateRoom(room="@alice:bob", ops=[SIGNED, SIGNED], epoch=UPLOAD),
    ADD,
    m.AddMember(room="general", op=SIGNED, packets=[]),
    SHARE_KEYS,
    REMOVE,
    m.Leave(room="general", op=SIGNED),
    m.Promote(room="general", op=SIGNED),
    NEW_EPOCH,
    m.ListRooms(),
    MEMBERS,
    m.Members(room="general"),
    SEND,
    m.Sends(items=[m.SendItem(rid=1, send=SEND), m.SendItem(rid=2, send=m.Send(ENVELOPE, TXN))]),
    HISTORY,
    m.History(room="general", after=0, limit=1),
    m.History(room="general"),
    SYNC,
    m.Sync(cursors={}),
    FETCH_KEYS,
    PING,
    m.Ping(t=0),
    m.Ping(t=1, rtt_ms=0.5, reconnects=2, outbox=3, read_mark=4, prev_node="node-1"),
    m.Contacts(),
    m.SetContacts(only=True, add=["alice"], remove=["bob"]),
    m.Bye(),
    m.Announce(record=m.SignedRecord(record=b"\x94", sig=SIG)),
]

WELCOME = m.Welcome(node="node-1", boot="abc123", user="alice", time=1, version=PROTOCOL_VERSION)
DIRECTORY = m.Directory(users=[m.UserKeys(user="alice", sign_pub=K32)])
ROOM_CHANGED = m.RoomChanged(info=INFO)
SEND_ACK = m.SendAck(room="general", txn=TXN, seq=1, ts=2, duplicate=True)
PONG = m.Pong(t=1, time=2, node="node-1", boot="abc123")
ERROR = m.Error(code="bad_frame", message="no")
ROOM_PUSH = m.RoomPush(room="general", reason="members")

REPLIES: list[m.Reply] = [
    WELCOME,
    m.Welcome(node="", boot="", user=None, time=0, version=7),
    m.Welcome(node="n", boot="b", user="bob", time=0, version=7, peers=["p"], sends=True),
    m.Registered(user="alice"),
    DIRECTORY,
    m.Directory(users=[]),
    m.Directory(
        users=[m.UserKeys(user="bob", sign_pub=K32, peer=m.SignedRecord(record=b"r", sig=SIG))]
    ),
    m.Announced(),
    ROOM_CHANGED,
    m.RoomList(rooms=[INFO, INFO]),
    m.MemberLog(room="general", ops=[SIGNED]),
    SEND_ACK,
    m.SendAck(room="@alice:bob", txn=TXN, seq=2**53, ts=0),
    MESSAGES,
    m.SyncReply(rooms=[MESSAGES, m.Messages(room="x", items=[], head=0)], more=True),
    m.KeyPackets(room="general", packets=[PACKET]),
    PONG,
    m.ContactList(only=False, users=["alice", "bob"]),
    m.ByeAck(),
    ERROR,
    m.MessagePush(room="general", message=STORED),
    m.Batch(
        items=[
            m.BatchItem(rid=7, msg=SEND_ACK),
            m.BatchItem(rid=0, msg=m.MessagePush(room="general", message=STORED)),
        ]
    ),
    *(
        m.RoomPush(room="general", reason=r)
        for r in ("members", "epoch", "keys", "removed", "left")
    ),
    m.Mark(mark=1),
    m.Mark(mark=2**53),
    m.Resync(reason="pushes withheld"),
    m.Move(reason="draining"),
]


def _tag(obj: object) -> str:
    return str(type(obj).__struct_config__.tag)  # type: ignore[attr-defined]


# --- round trips ---------------------------------------------------------------


def test_samples_cover_every_request_and_reply_type() -> None:
    assert {type(r) for r in REQUESTS} == set(typing.get_args(m.AnyRequest))
    assert {type(r) for r in REPLIES} == set(typing.get_args(m.AnyReply))


@pytest.mark.parametrize("req", REQUESTS, ids=_tag)
@pytest.mark.parametrize("rid", [1, 12345, 2**53])
def test_request_round_trip(req: m.Request, rid: int) -> None:
    frame = decode_request(encode_request(rid, req))  # type: ignore[arg-type]
    assert frame == m.ClientFrame(v=PROTOCOL_VERSION, rid=rid, req=req)  # type: ignore[arg-type]
    assert type(frame.req) is type(req)


@pytest.mark.parametrize("msg", REPLIES, ids=_tag)
@pytest.mark.parametrize("rid", [0, 1, 2**53])
def test_reply_round_trip(msg: m.Reply, rid: int) -> None:
    frame = decode_server_frame(encode_reply(rid, msg))  # type: ignore[arg-type]
    assert frame == m.ServerFrame(v=PROTOCOL_VERSION, rid=rid, msg=msg)  # type: ignore[arg-type]
    assert type(frame.msg) is type(msg)


def test_a_batch_of_pre_encoded_items_decodes_as_a_batch() -> None:
    push = m.MessagePush(room="general", message=STORED)
    items = [encode_item(3, SEND_ACK), encode_item(0, push)] * (MAX_BATCH_ITEMS // 2)
    frame = decode_server_frame(encode_batch(items))
    assert frame.rid == 0
    assert frame.msg == m.Batch(
        items=[m.BatchItem(rid=3, msg=SEND_ACK), m.BatchItem(rid=0, msg=push)]
        * (MAX_BATCH_ITEMS // 2)
    )
    # the largest item a node can make and a full budget fit a reply frame
    big = m.StoredMessage(
        seq=1, ts=1, envelope=msgspec.structs.replace(ENVELOPE, ct=b"c" * MAX_CIPHERTEXT_BYTES)
    )
    assert BATCH_BUDGET_BYTES + len(encode_item(0, m.MessagePush(room="g", message=big))) < (
        MAX_REPLY_BYTES
    )


def test_a_push_of_a_stored_envelope_is_the_same_frame_as_of_the_decoded_one() -> None:
    """The watch and the node link push envelopes as stored, without
    decoding them: the frames must be byte for byte the ones a push of the
    decoded envelope makes, alone and in a batch."""
    stored = encode(ENVELOPE)
    raw = message_push("general", STORED.seq, STORED.ts, stored)
    typed = m.MessagePush(
        room="general", message=m.StoredMessage(seq=STORED.seq, ts=STORED.ts, envelope=ENVELOPE)
    )
    assert encode_item(0, raw) == encode_item(0, typed)
    assert encode_reply(0, raw) == encode_reply(0, typed)
    assert decode_server_frame(encode_batch([encode_item(0, raw)])).msg == m.Batch(
        items=[m.BatchItem(rid=0, msg=typed)]
    )
    assert is_message_push(raw) and is_message_push(typed)
    assert not is_message_push(SEND_ACK)


@pytest.mark.parametrize(
    "items",
    [
        [],
        [m.BatchItem(rid=1, msg=SEND_ACK)] * (MAX_BATCH_ITEMS + 1),
        [{"rid": 0, "msg": {"type": "error", "code": "x", "message": "y"}}],
        [{"rid": 0, "msg": {"type": "batch", "items": [{"rid": 1, "msg": SEND_ACK}]}}],
        [{"rid": -1, "msg": SEND_ACK}],
    ],
    ids=["empty", "too-many", "not-an-ack-or-push", "nested", "negative-rid"],
)
def test_bad_batches_are_refused(items: list[Any]) -> None:
    data = encode({"v": PROTOCOL_VERSION, "rid": 0, "msg": {"type": "batch", "items": items}})
    with pytest.raises(RemoteProtocolError) as err:
        decode_server_frame(data)
    assert err.value.code == ErrorCode.BAD_FRAME


def test_a_stored_message_or_an_ack_at_seq_0_is_refused() -> None:
    """A room's first message is seq 1 (0, as a head or cursor, is "none
    yet"): a server that says a message is at 0 sends a frame that does not
    decode (the client drops such a connection as a failed attempt)."""
    ack = msgspec.structs.asdict(SEND_ACK)
    for seq, ok in ((0, False), (1, True)):
        data = encode_reply(1, {**ack, "type": "send_ack", "seq": seq})  # type: ignore[arg-type]
        if ok:
            assert decode_server_frame(data).msg == msgspec.structs.replace(SEND_ACK, seq=1)
            continue
        with pytest.raises(RemoteProtocolError) as err:
            decode_server_frame(data)
        assert err.value.code == ErrorCode.BAD_FRAME
    stored = encode({"seq": 0, "ts": 1, "envelope": ENVELOPE})
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(stored, type=m.StoredMessage)


def test_member_op_and_envelope_round_trip() -> None:
    assert decode_member_op(encode(OP)) == OP
    assert isinstance(msgspec.msgpack.decode(encode(OP)), list)  # array-like on the wire
    dm = msgspec.structs.replace(OP, room="@alice:bob", kind="create", index=0)
    assert decode_member_op(encode(dm)) == dm
    assert decode_envelope(encode(ENVELOPE)) == ENVELOPE
    big = msgspec.structs.replace(ENVELOPE, ct=b"x" * MAX_CIPHERTEXT_BYTES, room="@a:b")
    assert decode_envelope(encode(big)) == big


def test_limits_themselves_are_accepted() -> None:
    # the largest values every constraint allows
    name = "a" + "b" * 31
    room = "r" * 64
    dm = "@" + "a" * 32 + ":" + "b" * 32
    reqs: list[m.Request] = [
        m.Register(user=name, sign_pub=K32, transport_sig=SIG),
        m.Lookup(users=[name] * MAX_BATCH),
        m.History(room=room, before=2**53, limit=MAX_PAGE),
        m.History(room=dm, after=0, limit=1),
        m.Members(room=room, after=2**31),
        m.Members(room=room, after=-1),
        m.Sync(cursors={f"r{i}": 2**53 for i in range(MAX_BATCH)}, limit=MAX_PAGE),
        m.FetchKeys(room=room, min_epoch=2**31),
        m.Hello(client="c" * MAX_CLIENT_ID_LEN),
        m.AddMember(
            room=room,
            op=m.SignedOp(op=b"o" * MAX_OP_BYTES, sig=SIG),
            packets=[msgspec.structs.replace(PACKET, box=b"x" * MAX_BOX_BYTES)] * 100,
        ),
        m.NewEpoch(
            room="general",
            epoch=m.EpochUpload(epoch=2**31, after_op=2**31, packets=[PACKET] * MAX_BATCH),
        ),
        m.ShareKeys(room=room, recipient=name, packets=[PACKET] * MAX_BATCH),
        m.Send(envelope=msgspec.structs.replace(ENVELOPE, txn="T" * 64, epoch=2**31)),
        m.Send(envelope=msgspec.structs.replace(ENVELOPE, txn="a_b-C9z0", ct=bytes(16))),
        m.Ping(t=2**53),
        m.Ping(t=0, prev_node="n" * 500),
    ]
    for req in reqs:
        assert decode_request(encode_request(1, req)).req == req  # type: ignore[arg-type]
    assert decode_server_frame(encode_reply(0, m.Error(code="x" * 500, message="y" * 500)))


# --- constraints -------------------------------------------------------------------

DELETE = object()


def _builtins(obj: object) -> Any:
    return msgspec.to_builtins(obj, builtin_types=(bytes,))


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    tree = copy.deepcopy(tree)
    node = tree
    for step in path[:-1]:
        node = node[step]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return tree


def _request(sample: m.Request, path: tuple[Any, ...], value: Any) -> bytes:
    return msgspec.msgpack.encode({"v": 1, "rid": 1, "req": _set(_builtins(sample), path, value)})


def _reply(sample: m.Reply, path: tuple[Any, ...], value: Any) -> bytes:
    return msgspec.msgpack.encode({"v": 1, "rid": 1, "msg": _set(_builtins(sample), path, value)})


def _op(path: tuple[Any, ...], value: Any) -> bytes:
    return msgspec.msgpack.encode(_set(_builtins(OP), path, value))


def _envelope(path: tuple[Any, ...], value: Any) -> bytes:
    return msgspec.msgpack.encode(_set(_builtins(ENVELOPE), path, value))


def _refused(decode: Callable[[bytes], object], data: bytes) -> bool:
    """True if `decode` refuses `data` with BAD_FRAME (False if it accepts it)."""
    try:
        decode(data)
    except RemoteProtocolError as exc:
        assert exc.code == ErrorCode.BAD_FRAME, exc
        return True
    return False


# (decoder, builder(value) -> bytes) for each place a field type occurs
Where = tuple[Callable[[bytes], object], Callable[[Any], bytes]]


def _req_at(sample: m.Request, *path: Any) -> Where:
    return decode_request, lambda v: _request(sample, path, v)


def _reply_at(sample: m.Reply, *path: Any) -> Where:
    return decode_server_frame, lambda v: _reply(sample, path, v)


ROOM_PLACES: dict[str, Where] = {
    "history.room": _req_at(HISTORY, "room"),
    "create_room.room": _req_at(CREATE, "room"),
    "members.room": _req_at(MEMBERS, "room"),
    "sync.cursors-key": (decode_request, lambda v: _request(SYNC, ("cursors",), {v: 1})),
    "send.envelope.room": _req_at(SEND, "envelope", "room"),
    "new_epoch.packet.room": _req_at(NEW_EPOCH, "epoch", "packets", 0, "room"),
    "messages.room": _reply_at(MESSAGES, "room"),
    "room_changed.info.room": _reply_at(ROOM_CHANGED, "info", "room"),
    "member_op.room": (decode_member_op, lambda v: _op((0,), v)),
    "envelope.room": (decode_envelope, lambda v: _envelope(("room",), v)),
}
BAD_ROOMS = [
    "",
    "General",
    "-general",
    "_general",
    "gen eral",
    "r" * 65,
    "@alice",
    "@alice:",
    "@alice:bob:carol",
    "@Alice:bob",
    "@1alice:bob",
    "@" + "a" * 33 + ":b",
    "#general",
]
# Match DM_RE, but are not DM ids: only "@a:b" with a < b is (limits.dm_members).
NON_CANONICAL_DMS = ["@bob:alice", "@b:a", "@alice:alice", "@a:a"]


def _accepted(places: dict[str, Where], bad: list[str]) -> dict[str, list[str]]:
    found = {}
    for place, (decode, build) in places.items():
        accepted = [value for value in bad if not _refused(decode, build(value))]
        if accepted:
            found[place] = accepted
    return found


@pytest.mark.parametrize("place", ROOM_PLACES)
def test_bad_room_ids_are_refused(place: str) -> None:
    decode, build = ROOM_PLACES[place]
    assert not _refused(decode, build("general"))
    assert not _refused(decode, build("@alice:bob"))
    assert not _refused(decode, build("r" * 64))
    assert _accepted({place: ROOM_PLACES[place]}, BAD_ROOMS) == {}


def test_non_canonical_dm_room_ids_are_refused_everywhere() -> None:
    # Envelope, MemberOp and KeyPacket check this in __post_init__; a field
    # typed `Room` anywhere else must refuse these too (limits.is_room_id is
    # False for all of them).
    assert _accepted(ROOM_PLACES, NON_CANONICAL_DMS) == {}


USER_PLACES: dict[str, Where] = {
    "register.user": _req_at(REGISTER, "user"),
    "lookup.users": _req_at(LOOKUP, "users", 1),
    "send.envelope.sender": _req_at(SEND, "envelope", "sender"),
    "add_member.packet.recipient": _req_at(ADD, "packets", 0, "recipient"),
    "add_member.packet.sender": _req_at(ADD, "packets", 0, "sender"),
    "welcome.user": _reply_at(WELCOME, "user"),
    "directory.user": _reply_at(DIRECTORY, "users", 0, "user"),
    "member_op.actor": (decode_member_op, lambda v: _op((4,), v)),
    "member_op.target": (decode_member_op, lambda v: _op((5,), v)),
}
BAD_USERS = [
    "",
    "a" * 33,
    "Alice",
    "1alice",
    "_alice",
    ".alice",
    "al ice",
    "alicé",
    "al:ice",
    "@alice",
    "\nalice",
]


@pytest.mark.parametrize("place", USER_PLACES)
def test_bad_user_names_are_refused(place: str) -> None:
    decode, build = USER_PLACES[place]
    assert not _refused(decode, build("a" * 32))
    assert _accepted({place: USER_PLACES[place]}, BAD_USERS) == {}


TXN_PLACES: dict[str, Where] = {
    "send.envelope.txn": _req_at(SEND, "envelope", "txn"),
    "send_ack.txn": _reply_at(SEND_ACK, "txn"),
    "envelope.txn": (decode_envelope, lambda v: _envelope(("txn",), v)),
}
BAD_TXNS = [
    "",
    "short",
    "a" * 7,
    "a" * 65,
    "txn 00000001",
    "txn.00000001",
    "txné0000001",
]


@pytest.mark.parametrize("place", TXN_PLACES)
def test_bad_transaction_ids_are_refused(place: str) -> None:
    decode, build = TXN_PLACES[place]
    assert not _refused(decode, build("a" * 8))
    assert not _refused(decode, build("Z" * 64))
    assert _accepted({place: TXN_PLACES[place]}, BAD_TXNS) == {}


def test_a_trailing_newline_is_refused_everywhere() -> None:
    # USER_PATTERN, ROOM_PATTERN and TXN_PATTERN end in `$`, which also
    # matches just before a final "\n": "alice\n" would be a second "alice".
    found = {
        **_accepted(ROOM_PLACES, ["general\n", "@alice:bob\n"]),
        **_accepted(USER_PLACES, ["alice\n"]),
        **_accepted(TXN_PLACES, [TXN + "\n"]),
    }
    assert found == {}


def q(
    sample: m.Request, path: tuple[Any, ...], value: Any
) -> tuple[Callable[[bytes], object], bytes]:
    return decode_request, _request(sample, path, value)


def r(
    sample: m.Reply, path: tuple[Any, ...], value: Any
) -> tuple[Callable[[bytes], object], bytes]:
    return decode_server_frame, _reply(sample, path, value)


CASES: dict[str, tuple[Callable[[bytes], object], bytes]] = {
    # keys, signatures, nonces, boxes, ciphertexts
    "sign_pub-31": q(REGISTER, ("sign_pub",), bytes(31)),
    "sign_pub-33": q(REGISTER, ("sign_pub",), bytes(33)),
    "sign_pub-as-str": q(REGISTER, ("sign_pub",), "k" * 32),
    "transport_sig-63": q(REGISTER, ("transport_sig",), bytes(63)),
    "transport_sig-65": q(REGISTER, ("transport_sig",), bytes(65)),
    "envelope-nonce-23": q(SEND, ("envelope", "nonce"), bytes(23)),
    "envelope-nonce-25": q(SEND, ("envelope", "nonce"), bytes(25)),
    "envelope-sig-63": q(SEND, ("envelope", "sig"), bytes(63)),
    "envelope-ct-15": q(SEND, ("envelope", "ct"), bytes(15)),
    "envelope-ct-too-long": q(SEND, ("envelope", "ct"), bytes(MAX_CIPHERTEXT_BYTES + 1)),
    "signed-op-too-long": q(ADD, ("op", "op"), bytes(MAX_OP_BYTES + 1)),
    "signed-op-sig-65": q(ADD, ("op", "sig"), bytes(65)),
    "packet-box-39": q(ADD, ("packets", 0, "box"), bytes(39)),
    "packet-box-too-long": q(ADD, ("packets", 0, "box"), bytes(MAX_BOX_BYTES + 1)),
    "user-keys-sign_pub-31": r(DIRECTORY, ("users", 0, "sign_pub"), bytes(31)),
    "member_op-prev-31": (decode_member_op, _op((2,), bytes(31))),
    "member_op-target_key-33": (decode_member_op, _op((6,), bytes(33))),
    "envelope-sig-65": (decode_envelope, _envelope(("sig",), bytes(65))),
    # sequence numbers, epochs, op indexes, times, limits
    "history-before-negative": q(HISTORY, ("before",), -1),
    "history-after-negative": q(HISTORY, ("after",), -1),
    "history-before-over-2**53": q(HISTORY, ("before",), 2**53 + 1),
    "history-limit-0": q(HISTORY, ("limit",), 0),
    "history-limit-over-max-page": q(HISTORY, ("limit",), MAX_PAGE + 1),
    "sync-limit-0": q(SYNC, ("limit",), 0),
    "sync-limit-over-max-page": q(SYNC, ("limit",), MAX_PAGE + 1),
    "sync-cursor-negative": q(SYNC, ("cursors",), {"general": -1}),
    "envelope-epoch-negative": q(SEND, ("envelope", "epoch"), -1),
    "envelope-epoch-over-2**31": q(SEND, ("envelope", "epoch"), 2**31 + 1),
    "fetch_keys-min_epoch-negative": q(FETCH_KEYS, ("min_epoch",), -1),
    "upload-epoch-negative": q(NEW_EPOCH, ("epoch", "epoch"), -1),
    "upload-after_op-negative": q(NEW_EPOCH, ("epoch", "after_op"), -1),
    "upload-after_op-over-2**31": q(NEW_EPOCH, ("epoch", "after_op"), 2**31 + 1),
    "packet-epoch-negative": q(ADD, ("packets", 0, "epoch"), -1),
    "members-after-minus-2": q(MEMBERS, ("after",), -2),
    "members-after-over-2**31": q(MEMBERS, ("after",), 2**31 + 1),
    "ping-t-negative": q(PING, ("t",), -1),
    "ping-t-over-2**53": q(PING, ("t",), 2**53 + 1),
    "ping-t-str": q(PING, ("t",), "1"),
    "ping-t-float": q(PING, ("t",), 1.5),
    "ping-t-bool": q(PING, ("t",), True),
    "ping-t-nil": q(PING, ("t",), None),
    "member_op-index-negative": (decode_member_op, _op((1,), -1)),
    "member_op-ts-negative": (decode_member_op, _op((7,), -1)),
    "messages-head-negative": r(MESSAGES, ("head",), -1),
    "stored-seq-negative": r(MESSAGES, ("items", 0, "seq"), -1),
    "room-info-epoch-negative": r(ROOM_CHANGED, ("info", "epoch"), -1),
    "room-info-op_head-negative": r(ROOM_CHANGED, ("info", "op_head"), -1),
    "send-ack-seq-negative": r(SEND_ACK, ("seq",), -1),
    "pong-t-negative": r(PONG, ("t",), -1),
    "welcome-time-negative": r(WELCOME, ("time",), -1),
    # text
    "hello-client-too-long": q(HELLO, ("client",), "c" * (MAX_CLIENT_ID_LEN + 1)),
    "error-message-too-long": r(ERROR, ("message",), "m" * 501),
    "error-code-too-long": r(ERROR, ("code",), "c" * 501),
    "ping-prev_node-too-long": q(PING, ("prev_node",), "n" * 501),
    "ping-prev_node-int": q(PING, ("prev_node",), 1),
    "bye-unknown-field": q(m.Bye(), ("why",), "x"),
    "pong-node-too-long": r(PONG, ("node",), "n" * 501),
    "welcome-boot-too-long": r(WELCOME, ("boot",), "b" * 501),
    "room-push-reason": r(ROOM_PUSH, ("reason",), "bored"),
    "member_op-kind": (decode_member_op, _op((3,), "delete")),
    # list sizes
    "lookup-empty": q(LOOKUP, ("users",), []),
    "lookup-too-many": q(LOOKUP, ("users",), ["alice"] * (MAX_BATCH + 1)),
    "create-no-ops": q(CREATE, ("ops",), []),
    "create-too-many-ops": q(CREATE, ("ops",), [_builtins(SIGNED)] * (MAX_BATCH + 1)),
    "add-too-many-packets": q(ADD, ("packets",), [_builtins(PACKET)] * (MAX_BATCH + 1)),
    "share-keys-too-many-packets": q(
        SHARE_KEYS, ("packets",), [_builtins(PACKET)] * (MAX_BATCH + 1)
    ),
    "share-keys-no-packets": q(SHARE_KEYS, ("packets",), []),
    "upload-too-many-packets": q(
        NEW_EPOCH, ("epoch", "packets"), [_builtins(PACKET)] * (MAX_BATCH + 1)
    ),
    "sync-too-many-cursors": q(SYNC, ("cursors",), {f"r{i}": 0 for i in range(MAX_BATCH + 1)}),
    # structure
    "unknown-field": q(PING, ("extra",), 1),
    "unknown-field-nested": q(SEND, ("envelope", "extra"), 1),
    "missing-field": q(REGISTER, ("user",), DELETE),
    "missing-nested-field": q(SEND, ("envelope", "sig"), DELETE),
    "unknown-type": q(PING, ("type",), "pong"),
    "missing-type": q(PING, ("type",), DELETE),
    "request-as-reply-type": q(PING, ("type",), "welcome"),
    "req-not-a-map": q(PING, (), [1, 2]),
    "req-nil": q(PING, (), None),
    "reply-unknown-type": r(PONG, ("type",), "ping"),
    "reply-unknown-field": r(PONG, ("extra",), 0),
    "member_op-too-short": (decode_member_op, _op((), _builtins(OP)[:7])),
    "member_op-too-long": (decode_member_op, _op((), [*_builtins(OP), 0])),
    "member_op-as-map": (
        decode_member_op,
        msgspec.msgpack.encode(dict(zip(OP.__struct_fields__, _builtins(OP), strict=True))),
    ),
    "envelope-unknown-field": (decode_envelope, _envelope(("extra",), 0)),
    # the frame
    "rid-0": (decode_request, msgspec.msgpack.encode({"v": 1, "rid": 0, "req": _builtins(PING)})),
    "rid-negative": (
        decode_request,
        msgspec.msgpack.encode({"v": 1, "rid": -1, "req": _builtins(PING)}),
    ),
    "rid-over-2**53": (
        decode_request,
        msgspec.msgpack.encode({"v": 1, "rid": 2**53 + 1, "req": _builtins(PING)}),
    ),
    "rid-str": (
        decode_request,
        msgspec.msgpack.encode({"v": 1, "rid": "1", "req": _builtins(PING)}),
    ),
    "no-version": (decode_request, msgspec.msgpack.encode({"rid": 1, "req": _builtins(PING)})),
    "version-str": (
        decode_request,
        msgspec.msgpack.encode({"v": "1", "rid": 1, "req": _builtins(PING)}),
    ),
    "no-req": (decode_request, msgspec.msgpack.encode({"v": 1, "rid": 1})),
    "frame-extra-field": (
        decode_request,
        msgspec.msgpack.encode({"v": 1, "rid": 1, "req": _builtins(PING), "x": 1}),
    ),
    "frame-array": (decode_request, msgspec.msgpack.encode([1, 1, _builtins(PING)])),
    "frame-nil": (decode_request, msgspec.msgpack.encode(None)),
    "not-msgpack": (decode_request, b"\xc1"),
    "truncated": (decode_request, encode_request(1, SEND)[:-1]),  # type: ignore[arg-type]
    "trailing-bytes": (decode_request, encode_request(1, PING) + b"\x00"),  # type: ignore[arg-type]
    "empty": (decode_request, b""),
    "server-rid-negative": (
        decode_server_frame,
        msgspec.msgpack.encode({"v": 1, "rid": -1, "msg": _builtins(PONG)}),
    ),
    "server-rid-over-2**53": (
        decode_server_frame,
        msgspec.msgpack.encode({"v": 1, "rid": 2**53 + 1, "msg": _builtins(PONG)}),
    ),
    "server-no-msg": (decode_server_frame, msgspec.msgpack.encode({"v": 1, "rid": 1})),
    "server-request-as-msg": (
        decode_server_frame,
        msgspec.msgpack.encode({"v": 1, "rid": 1, "msg": _builtins(PING)}),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_constraint_refused(case: str) -> None:
    decode, data = CASES[case]
    assert len(data) <= MAX_FRAME_BYTES
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    assert info.value.code == ErrorCode.BAD_FRAME, info.value


# --- version and size ------------------------------------------------------------------


def _frame(v: Any, req: Any = None, key: str = "req") -> bytes:
    return msgspec.msgpack.encode({"v": v, "rid": 9, key: _builtins(PING) if req is None else req})


@pytest.mark.parametrize("v", [0, 2, -1, 255, 2**31])
def test_bad_version(v: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_request(_frame(v))
    assert info.value.code == ErrorCode.BAD_VERSION
    with pytest.raises(RemoteProtocolError) as info:
        decode_server_frame(_frame(v, _builtins(PONG), key="msg"))
    assert info.value.code == ErrorCode.BAD_VERSION


@pytest.mark.parametrize("v", [0, 2, 99])
def test_bad_version_wins_over_an_unknown_body(v: int) -> None:
    # a newer client's request we cannot parse: say "version", not "garbage"
    with pytest.raises(RemoteProtocolError) as info:
        decode_request(_frame(v, {"type": "teleport", "to": "mars"}))
    assert info.value.code == ErrorCode.BAD_VERSION
    with pytest.raises(RemoteProtocolError) as info:
        decode_server_frame(_frame(v, {"type": "hologram"}, key="msg"))
    assert info.value.code == ErrorCode.BAD_VERSION
    # ...while the current version with that body is just a bad frame
    with pytest.raises(RemoteProtocolError) as info:
        decode_request(_frame(PROTOCOL_VERSION, {"type": "teleport", "to": "mars"}))
    assert info.value.code == ErrorCode.BAD_FRAME


DECODERS: list[Callable[[bytes], object]] = [
    decode_request,
    decode_server_frame,
    decode_member_op,
    decode_envelope,
]


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
def test_too_large(decode: Callable[[bytes], object]) -> None:
    # a server may send replies up to MAX_REPLY_BYTES; everything else is
    # limited to MAX_FRAME_BYTES
    limit = MAX_REPLY_BYTES if decode is decode_server_frame else MAX_FRAME_BYTES
    for data in (
        bytes(limit + 1),
        encode_request(1, PING) + bytes(limit),  # type: ignore[arg-type]
        b"\xc1" * (10 * limit),
    ):
        with pytest.raises(RemoteProtocolError) as info:
            decode(data)
        assert info.value.code == ErrorCode.TOO_LARGE
    # exactly the limit is not too large (just not a valid frame)
    with pytest.raises(RemoteProtocolError) as info:
        decode(bytes(limit))
    assert info.value.code == ErrorCode.BAD_FRAME


def test_the_largest_envelope_fits_in_a_frame() -> None:
    req = m.Send(envelope=msgspec.structs.replace(ENVELOPE, ct=b"x" * MAX_CIPHERTEXT_BYTES))
    data = encode_request(1, req)
    assert len(data) <= MAX_FRAME_BYTES
    assert decode_request(data).req == req


def test_encode_request_refuses_too_large() -> None:
    big = m.SignedOp(op=bytes(MAX_OP_BYTES), sig=SIG)
    req = m.CreateRoom(
        room="general", ops=[big] * (MAX_FRAME_BYTES // MAX_OP_BYTES + 1), epoch=UPLOAD
    )
    with pytest.raises(LocalProtocolError) as info:
        encode_request(1, req)
    assert info.value.code == ErrorCode.TOO_LARGE


# --- arbitrary input ---------------------------------------------------------------------


def _mp_len(small: int, codes: tuple[int, int, int], n: int, small_max: int) -> bytes:
    if n <= small_max:
        return bytes([small | n])
    if n < 256 and codes[0]:
        return bytes([codes[0], n])
    if n < 65536:
        return bytes([codes[1]]) + struct.pack(">H", n)
    return bytes([codes[2]]) + struct.pack(">I", n)


def mp_str(raw: bytes) -> bytes:
    """A msgpack str holding `raw` as is: it need not be valid UTF-8."""
    return _mp_len(0xA0, (0xD9, 0xDA, 0xDB), len(raw), 31) + raw


def mp_array(items: list[bytes]) -> bytes:
    return _mp_len(0x90, (0, 0xDC, 0xDD), len(items), 15) + b"".join(items)


def mp_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return _mp_len(0x80, (0, 0xDE, 0xDF), len(pairs), 15) + b"".join(k + v for k, v in pairs)


def _all_structs() -> list[type[msgspec.Struct]]:
    return [
        obj
        for obj in vars(m).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == m.__name__
    ]


FIELD_NAMES = sorted(
    {f.encode_name for cls in _all_structs() for f in msgspec.structs.fields(cls)} | {"type"}
)
TAGS = sorted({str(t) for cls in _all_structs() if isinstance(t := cls.__struct_config__.tag, str)})

invalid_utf8 = st.sampled_from(
    [
        b"\xff",
        b"\xc3",
        b"\xed\xa0\x80",
        b"\xe2\x82",
        b"a\x80b",
        b"\xf8\x88\x80\x80\x80",
        b"\xc0\xaf",
    ]
)
raw_text = st.one_of(
    st.text(max_size=12).map(str.encode),
    st.binary(max_size=12),
    invalid_utf8,
    st.sampled_from(FIELD_NAMES + TAGS).map(str.encode),
    st.tuples(st.sampled_from(FIELD_NAMES + TAGS), invalid_utf8).map(
        lambda t: t[0].encode() + t[1]
    ),
)
atoms = st.one_of(
    st.just(b"\xc0"),
    st.booleans().map(lambda b: b"\xc3" if b else b"\xc2"),
    st.integers(-(2**63), 2**64 - 1).map(encode),
    st.sampled_from([-1, 0, 1, 2, 2**31, 2**53, 2**53 + 1]).map(encode),
    st.floats().map(encode),
    raw_text.map(mp_str),
    st.binary(max_size=70).map(encode),
    st.sampled_from([bytes(24), bytes(32), bytes(64)]).map(encode),
)
keys = st.one_of(
    raw_text.map(mp_str), st.sampled_from(FIELD_NAMES).map(lambda s: mp_str(s.encode())), atoms
)
values = st.recursive(
    atoms,
    lambda children: st.one_of(
        st.lists(children, max_size=9).map(mp_array),
        st.lists(st.tuples(keys, children), max_size=6).map(mp_map),
    ),
    max_leaves=25,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A map shaped like a request or reply body: a tag and some known fields."""
    pairs = [(mp_str(b"type"), mp_str(draw(st.sampled_from(TAGS)).encode()))]
    if draw(st.booleans()):
        pairs = [(mp_str(b"type"), draw(values))]
    names = draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=7))
    pairs += [(mp_str(n.encode()), draw(values)) for n in names]
    if draw(st.booleans()):
        pairs.append((draw(keys), draw(values)))
    draw(st.randoms()).shuffle(pairs)
    return mp_map(pairs)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    v = draw(st.one_of(st.just(encode(PROTOCOL_VERSION)), atoms))
    rid = draw(st.one_of(st.integers(-2, 2**53 + 2).map(encode), atoms))
    body_key = draw(st.sampled_from([b"req", b"msg", b"\xffreq", b"v"]))
    pairs = [(mp_str(b"v"), v), (mp_str(b"rid"), rid), (mp_str(body_key), draw(bodies()))]
    if draw(st.booleans()):
        pairs.append((draw(keys), draw(values)))
    return mp_map(pairs)


@st.composite
def op_arrays(draw: st.DrawFn) -> bytes:
    good = [encode(x) for x in _builtins(OP)]
    items = [draw(st.one_of(st.just(g), atoms)) for g in good]
    return mp_array(items[: draw(st.integers(0, 9))])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    samples = [
        encode_request(1, draw(st.sampled_from(REQUESTS))),  # type: ignore[arg-type]
        encode_reply(0, draw(st.sampled_from(REPLIES))),  # type: ignore[arg-type]
        encode(OP),
        encode(ENVELOPE),
    ]
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "utf8"]))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 6))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        elif data:
            data[pos] = draw(st.sampled_from([0x80, 0xBF, 0xC0, 0xFF, 0xED]))
    return bytes(data)


anything = st.one_of(st.binary(max_size=300), values, bodies(), frames(), op_arrays(), mutated())

INVALID_UTF8_EXAMPLES = [
    mp_map([(mp_str(b"\xff"), encode(1))]),
    mp_map([(mp_str(b"v"), encode(1)), (mp_str(b"r\xffid"), encode(1))]),
    mp_map(
        [
            (mp_str(b"v"), encode(1)),
            (mp_str(b"rid"), encode(1)),
            (
                mp_str(b"req"),
                mp_map([(mp_str(b"type"), mp_str(b"ping")), (mp_str(b"\xc3"), encode(1))]),
            ),
        ]
    ),
    mp_map(
        [
            (mp_str(b"v"), encode(1)),
            (mp_str(b"rid"), encode(1)),
            (mp_str(b"req"), mp_map([(mp_str(b"type"), mp_str(b"\xffping"))])),
        ]
    ),
    mp_map(
        [
            (mp_str(b"v"), encode(1)),
            (mp_str(b"rid"), encode(1)),
            (
                mp_str(b"req"),
                mp_map(
                    [
                        (mp_str(b"type"), mp_str(b"sync")),
                        (mp_str(b"cursors"), mp_map([(mp_str(b"gen\xffral"), encode(1))])),
                    ]
                ),
            ),
        ]
    ),
    mp_map(
        [
            (mp_str(b"v"), encode(1)),
            (mp_str(b"rid"), encode(1)),
            (
                mp_str(b"req"),
                mp_map(
                    [
                        (mp_str(b"type"), mp_str(b"register")),
                        (mp_str(b"user"), mp_str(b"al\xedice")),
                    ]
                ),
            ),
        ]
    ),
    mp_array([mp_str(b"gen\xe2\x82"), *(encode(x) for x in _builtins(OP)[1:])]),
    mp_map([(mp_str(b"room"), mp_str(b"\xff")), (mp_str(b"\xfe"), encode(0))]),
]


def _only_protocol_errors(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)
        except RemoteProtocolError as exc:
            assert exc.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_VERSION, ErrorCode.TOO_LARGE)
            assert isinstance(exc.message, str)
    rid = peek_request_id(data)
    assert isinstance(rid, int) and 0 <= rid <= 2**53


@pytest.mark.parametrize("data", INVALID_UTF8_EXAMPLES)
def test_invalid_utf8_is_a_bad_frame(data: bytes) -> None:
    for decode in DECODERS:
        with pytest.raises(RemoteProtocolError) as info:
            decode(data)
        assert info.value.code == ErrorCode.BAD_FRAME
    _only_protocol_errors(data)


@settings(
    # `make fuzz-frames` runs more (CURVECHAT_CODEC_EXAMPLES).
    max_examples=int(os.environ.get("CURVECHAT_CODEC_EXAMPLES", "300")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(anything)
@example(b"")
@example(b"\xc1")
@example(bytes(MAX_FRAME_BYTES + 1))
def test_decoders_raise_nothing_but_protocol_errors(data: bytes) -> None:
    _only_protocol_errors(data)


# --- peek_request_id -------------------------------------------------------------------------


@pytest.mark.parametrize("rid", [1, 42, 2**53])
def test_peek_request_id_of_frames_with_a_rid(rid: int) -> None:
    assert peek_request_id(encode_request(rid, PING)) == rid  # type: ignore[arg-type]
    # also when the rest of the frame is invalid or of another version
    assert peek_request_id(msgspec.msgpack.encode({"v": 1, "rid": rid, "req": 5})) == rid
    assert peek_request_id(msgspec.msgpack.encode({"v": 7, "rid": rid})) == rid
    assert peek_request_id(msgspec.msgpack.encode({"rid": rid, "x": [1, 2]})) == rid
    assert peek_request_id(encode_reply(rid, PONG)) == rid  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        encode(None),
        encode([1, 2, 3]),
        encode({"v": 1}),
        encode({"v": 1, "rid": 0}),
        encode({"v": 1, "rid": -5}),
        encode({"v": 1, "rid": 2**53 + 1}),
        encode({"v": 1, "rid": 2**64 - 1}),
        encode({"v": 1, "rid": "7"}),
        encode({"v": 1, "rid": 7.0}),
        encode({"v": 1, "rid": True}),
        encode({"v": 1, "rid": None}),
        encode({"v": "x", "rid": [7]}),
        encode({"v": 1, "rid": 7})[:-1],
    ],
)
def test_peek_request_id_is_zero_without_a_valid_rid(data: bytes) -> None:
    assert peek_request_id(data) == 0


def test_peek_request_id_with_invalid_utf8_does_not_raise() -> None:
    data = mp_map([(mp_str(b"rid"), encode(7)), (mp_str(b"\xff"), encode(1))])
    assert peek_request_id(data) in (0, 7)


@pytest.mark.parametrize("v", ["1", 1.5, None, [1], -7])
def test_the_request_id_is_read_whatever_the_version_field_holds(v: object) -> None:
    """A frame whose `v` is of the wrong type is still answered under its own
    `rid` (it was answered under 0, which no client waits on)."""
    data = msgspec.msgpack.encode({"v": v, "rid": 7, "req": {"type": "ping", "t": 0}})
    with pytest.raises(RemoteProtocolError):
        decode_request(data)
    assert peek_request_id(data) == 7
    assert peek_request_id(msgspec.msgpack.encode({"v": 1, "rid": 1.5})) == 0
