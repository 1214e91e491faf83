"""Every error code a client can cause, caused against a real server process.

Each test sends requests built with the crypto package over a bare CURVE
DEALER whose CURVE keypair is the identity's transport key, checks the code
of the `Error` reply (and that it answers the right request id), and checks
that the connection still serves a Ping afterwards. Where it is cheap, it
also checks that the refused request changed nothing.

Not caused here (see SKIPPED): `rate_limited` needs more than 256 requests
queued on one connection before the server drains any, `store_unavailable`
needs a failing store, `store_full` a nearly full disk
(`test_disk_reserve.py`), and `internal` needs a server bug.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import msgspec
import pytest
import zmq
import zmq.utils.z85

from curvechat.crypto import (
    DOMAIN_OP,
    GENESIS_PREV,
    EpochKey,
    Identity,
    MemberState,
    Plaintext,
    new_epoch_key,
    seal_message,
    sign_op,
    transport_statement,
    wrap_epoch_key,
)
from curvechat.protocol import ErrorCode, decode_server_frame, encode, encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect
from curvechat.protocol.limits import MAX_FRAME_BYTES, PROTOCOL_VERSION
from curvechat.protocol.messages import OpKind

from support.servers import ServerProcess

COVERED: set[ErrorCode] = set()
SKIPPED = {
    # More than SESSION_QUEUE_MAX (256) requests must be waiting on one
    # connection while its worker is busy: a race against the server.
    ErrorCode.RATE_LIMITED,
    # Needs the store to fail a commit (disk full, locked database).
    ErrorCode.STORE_UNAVAILABLE,
    # Needs a nearly full disk: tests/server/test_disk_reserve.py mounts one.
    ErrorCode.STORE_FULL,
    # Only a server bug answers this; a test that expects it cannot be right.
    ErrorCode.INTERNAL,
}

F = TypeVar("F", bound=Callable[..., Any])


def covers(code: ErrorCode) -> Callable[[F], F]:
    """Mark a test as causing `code` (see test_every_client_code_is_covered)."""

    def mark(fn: F) -> F:
        COVERED.add(code)
        return fn

    return mark


def now_ms() -> int:
    return int(time.time() * 1000)


_txns = itertools.count()


def new_txn() -> str:
    return f"txn-{next(_txns):08d}"


# --- a raw client -------------------------------------------------------------

R = TypeVar("R", bound=m.Reply)


class Peer:
    """A bare CURVE DEALER whose CURVE keypair is `identity`'s transport key.

    It sends exactly the requests (or bytes) it is given and returns the
    reply to them, skipping pushes.
    """

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], connect: str, identity: Identity):
        addr = parse_connect(connect)[0]
        self.identity = identity
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.curve_serverkey = addr.server_key.encode()
        self.sock.curve_publickey = zmq.utils.z85.encode(identity.transport_pub)
        self.sock.curve_secretkey = zmq.utils.z85.encode(identity.transport_secret)
        self.sock.linger = 0
        self.sock.rcvtimeo = 10_000
        self.sock.connect(addr.endpoint)
        self._rids = itertools.count(1)
        self.last_rid = 0

    @property
    def user(self) -> str:
        return self.identity.user

    def _next(self) -> m.ServerFrame:
        while True:
            frame = decode_server_frame(self.sock.recv())
            if not isinstance(frame.msg, m.MessagePush | m.RoomPush | m.Move):
                return frame

    def raw(self, *parts: bytes) -> m.ServerFrame:
        """Send these frames as one message; the server's answer."""
        self.sock.send_multipart(list(parts))
        return self._next()

    def request(self, req: m.Request) -> m.Reply:
        self.last_rid = next(self._rids)
        self.sock.send(encode_request(self.last_rid, req))  # type: ignore[arg-type]
        frame = self._next()
        assert frame.rid == self.last_rid, f"reply to request {frame.rid}, not {self.last_rid}"
        return frame.msg

    def ok(self, req: m.Request, kind: type[R]) -> R:
        reply = self.request(req)
        assert isinstance(reply, kind), reply
        return reply

    def refused_raw(self, body: dict[str, object], code: ErrorCode) -> m.Error:
        """Send a request body that the typed constructors would refuse to
        build; expect an Error with `code`, then check the connection."""
        rid = next(self._rids)
        reply = self.raw(encode({"v": PROTOCOL_VERSION, "rid": rid, "req": body}))
        assert isinstance(reply.msg, m.Error) and reply.rid == rid, reply
        assert reply.msg.code == code, reply.msg
        self.assert_alive()
        return reply.msg

    def refused(self, req: m.Request, code: ErrorCode) -> m.Error:
        """Send `req`, expect an Error with `code`, then check the connection."""
        reply = self.request(req)
        assert isinstance(reply, m.Error), f"expected {code}, got {reply!r}"
        assert reply.code == code, f"expected {code}, got {reply.code}: {reply.message}"
        assert reply.message
        self.assert_alive()
        return reply

    def assert_alive(self) -> None:
        t = now_ms()
        pong = self.ok(m.Ping(t=t), m.Pong)
        assert pong.t == t

    def register_request(self) -> m.Register:
        ident = self.identity
        return m.Register(
            user=ident.user, sign_pub=ident.sign_pub, transport_sig=ident.transport_sig()
        )

    def register(self) -> Peer:
        reply = self.ok(self.register_request(), m.Registered)
        assert reply.user == self.user
        return self

    # --- reading a room back ----------------------------------------------------
    def log(self, room: str) -> list[m.SignedOp]:
        return self.ok(m.Members(room=room), m.MemberLog).ops

    def history(self, room: str) -> list[m.StoredMessage]:
        return self.ok(m.History(room=room, after=0), m.Messages).items

    def epoch(self, room: str) -> int:
        rooms = self.ok(m.ListRooms(), m.RoomList).rooms
        (info,) = [r for r in rooms if r.room == room]
        return info.epoch


class Peers:
    def __init__(self, connect: str) -> None:
        self.connect = connect
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.peers: list[Peer] = []

    def new(self, identity: Identity | str) -> Peer:
        if isinstance(identity, str):
            identity = Identity.generate(identity)
        peer = Peer(self.ctx, self.connect, identity)
        self.peers.append(peer)
        return peer

    def registered(self, name: str) -> Peer:
        return self.new(name).register()

    def close(self) -> None:
        for peer in self.peers:
            peer.sock.close()
        self.ctx.term()


@pytest.fixture
def peers(server: ServerProcess) -> Iterator[Peers]:
    factory = Peers(server.connect)
    try:
        yield factory
    finally:
        factory.close()
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    assert "Traceback" not in server.log()


# --- building requests ----------------------------------------------------------


class Room:
    """A room as the test knows it: the membership state and the epoch keys."""

    def __init__(self, state: MemberState, key: EpochKey) -> None:
        self.state = state
        self.keys = {key.epoch: key}

    @property
    def name(self) -> str:
        return self.state.room

    @property
    def key(self) -> EpochKey:
        return self.keys[max(self.keys)]

    def op(
        self,
        kind: OpKind,
        actor: Identity,
        target: Identity | str,
        target_key: bytes | None = None,
    ) -> m.SignedOp:
        """`actor`'s signed op of `kind` on `target`, extending the current state."""
        name = target if isinstance(target, str) else target.user
        if target_key is None:
            assert isinstance(target, Identity)
            target_key = target.sign_pub
        return sign_op(actor, self.state.next_op(kind, actor.user, name, target_key, now_ms()))

    def applied(self, signed: m.SignedOp) -> None:
        self.state, _ = self.state.apply(signed)

    def upload(
        self,
        sender: Identity,
        epoch: int,
        recipients: dict[str, bytes] | None = None,
        after_op: int | None = None,
    ) -> tuple[m.EpochUpload, EpochKey]:
        """A new epoch after the current state, boxed for every member (or `recipients`)."""
        after = self.state.index if after_op is None else after_op
        key = new_epoch_key(self.name, epoch, after)
        if recipients is None:
            recipients = {u: member.key for u, member in self.state.members.items()}
        packets = [wrap_epoch_key(sender, key, u, pub) for u, pub in recipients.items()]
        return m.EpochUpload(epoch=epoch, after_op=after, packets=packets), key

    def envelope(self, sender: Identity, epoch: int | None = None, text: str = "hi") -> m.Envelope:
        key = self.key if epoch is None else self.keys[epoch]
        return seal_message(
            sender,
            room=self.name,
            epoch=key.epoch,
            key=key.key,
            txn=new_txn(),
            plaintext=Plaintext(text=text, ts=now_ms()),
        )


def genesis(
    creator: Identity, room: str, members: Sequence[Identity] = ()
) -> tuple[list[m.SignedOp], MemberState]:
    """The ops creating `room` with `creator` as admin and `members` added."""
    state = MemberState.empty(room)
    ops = []
    signed = sign_op(
        creator, state.next_op("create", creator.user, creator.user, creator.sign_pub, now_ms())
    )
    state, _ = state.apply(signed)
    ops.append(signed)
    for who in members:
        signed = sign_op(
            creator, state.next_op("add", creator.user, who.user, who.sign_pub, now_ms())
        )
        state, _ = state.apply(signed)
        ops.append(signed)
    return ops, state


def create_request(
    creator: Identity, room: str, members: Sequence[Identity] = ()
) -> tuple[m.CreateRoom, Room]:
    ops, state = genesis(creator, room, members)
    upload, key = Room(state, new_epoch_key(room, 0, state.index)).upload(creator, 0)
    return m.CreateRoom(room=room, ops=ops, epoch=upload), Room(state, key)


def create_room(creator: Peer, name: str, members: Sequence[Peer] = ()) -> Room:
    req, room = create_request(creator.identity, name, [p.identity for p in members])
    info = creator.ok(req, m.RoomChanged).info
    assert (info.room, info.epoch, info.members) == (name, 0, len(members) + 1)
    return room


def add_member(admin: Peer, room: Room, who: Peer) -> None:
    signed = room.op("add", admin.identity, who.identity)
    packets = [
        wrap_epoch_key(admin.identity, key, who.user, who.identity.sign_pub)
        for key in room.keys.values()
    ]
    admin.ok(m.AddMember(room=room.name, op=signed, packets=packets), m.RoomChanged)
    room.applied(signed)


# --- the codes ---------------------------------------------------------------------


def test_every_client_code_is_covered() -> None:
    assert not COVERED & SKIPPED
    assert set(ErrorCode) == COVERED | SKIPPED, set(ErrorCode) - COVERED - SKIPPED


# bad_frame


def _frame(v: Any = 1, rid: Any = 1, req: Any = None) -> bytes:
    return msgspec.msgpack.encode({"v": v, "rid": rid, "req": req})


@covers(ErrorCode.BAD_FRAME)
@pytest.mark.parametrize(
    ("data", "rid"),
    [
        pytest.param(b"\xc1", 0, id="not-msgpack"),
        pytest.param(b"", 0, id="empty"),
        pytest.param(encode([1, 2, 3]), 0, id="not-a-map"),
        pytest.param(_frame(rid=77, req={"type": "ping", "t": -1}), 77, id="field-out-of-range"),
        pytest.param(_frame(rid=78, req={"type": "nope"}), 78, id="unknown-type"),
        pytest.param(_frame(rid=79, req={"type": "ping", "t": 1, "x": 0}), 79, id="unknown-field"),
        pytest.param(_frame(rid=80, req={"type": "ping"}), 80, id="missing-field"),
        pytest.param(_frame(rid=0, req={"type": "ping", "t": 1}), 0, id="rid-zero"),
    ],
)
def test_bad_frame(peers: Peers, data: bytes, rid: int) -> None:
    peer = peers.registered("alice")
    reply = peer.raw(data)
    assert isinstance(reply.msg, m.Error)
    assert (reply.msg.code, reply.rid) == (ErrorCode.BAD_FRAME, rid), reply
    peer.assert_alive()


@covers(ErrorCode.BAD_FRAME)
def test_bad_frame_for_a_message_of_two_parts(peers: Peers) -> None:
    peer = peers.new("alice")
    reply = peer.raw(encode_request(1, m.Ping(t=1)), encode_request(2, m.Ping(t=2)))
    assert isinstance(reply.msg, m.Error) and reply.msg.code == ErrorCode.BAD_FRAME
    peer.assert_alive()


@covers(ErrorCode.BAD_FRAME)
def test_bad_frame_for_history_with_before_and_after(peers: Peers) -> None:
    alice = peers.registered("alice")
    room = create_room(alice, "general")
    alice.refused(m.History(room=room.name, before=5, after=1), ErrorCode.BAD_FRAME)


@covers(ErrorCode.BAD_FRAME)
def test_bad_frame_for_creating_a_non_canonical_dm_room(peers: Peers) -> None:
    # "@bob:alice" is not a room id (a DM id has its names sorted); the
    # server must refuse it as a bad frame, not fail on it.
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    ops, state = genesis(alice.identity, "@alice:bob", [bob.identity])
    upload, _ = Room(state, new_epoch_key("@alice:bob", 0, 1)).upload(alice.identity, 0)
    good = m.CreateRoom(room="@alice:bob", ops=ops, epoch=upload)
    alice.refused_raw(tampered(good, room="@bob:alice"), ErrorCode.BAD_FRAME)


@covers(ErrorCode.BAD_FRAME)
def test_bad_frame_for_registering_a_name_with_a_newline(peers: Peers) -> None:
    # "alice\n" is not a user name; it must not become a look-alike of alice.
    mallory = peers.new("mallory")
    ident = mallory.identity
    req = m.Register(
        user="alice",
        sign_pub=ident.sign_pub,
        transport_sig=ident.sign(transport_statement("alice\n", ident.transport_pub)),
    )
    mallory.refused_raw(tampered(req, user="alice\n"), ErrorCode.BAD_FRAME)
    mallory.refused(m.ListRooms(), ErrorCode.NOT_REGISTERED)


@covers(ErrorCode.BAD_FRAME)
def test_bad_frame_for_creating_a_room_with_a_newline(peers: Peers) -> None:
    alice = peers.registered("alice")
    req, _ = create_request(alice.identity, "general")
    alice.refused_raw(tampered(req, room="general\n"), ErrorCode.BAD_FRAME)


def tampered(req: m.Request, **fields: object) -> dict[str, object]:
    """The wire form of `req` with some fields replaced."""
    body = msgspec.to_builtins(req, builtin_types=(bytes,))
    assert isinstance(body, dict)
    return {**body, **fields}


# bad_version


@covers(ErrorCode.BAD_VERSION)
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_frame(v=2, rid=5, req={"type": "ping", "t": 1}), id="v2"),
        pytest.param(_frame(v=0, rid=5, req={"type": "ping", "t": 1}), id="v0"),
        pytest.param(_frame(v=2, rid=5, req={"type": "from-the-future", "z": 1}), id="v2-unknown"),
    ],
)
def test_bad_version(peers: Peers, data: bytes) -> None:
    peer = peers.new("alice")
    reply = peer.raw(data)
    assert isinstance(reply.msg, m.Error)
    assert (reply.msg.code, reply.rid) == (ErrorCode.BAD_VERSION, 5), reply
    peer.assert_alive()


# too_large


def _padded(size: int) -> bytes:
    data = encode_request(5, m.Ping(t=1))
    return data + b"\0" * (size - len(data))


@covers(ErrorCode.TOO_LARGE)
def test_too_large(peers: Peers) -> None:
    peer = peers.new("alice")
    reply = peer.raw(_padded(MAX_FRAME_BYTES + 1))
    assert isinstance(reply.msg, m.Error) and reply.msg.code == ErrorCode.TOO_LARGE, reply
    peer.assert_alive()
    # the limit itself is allowed in size (this one is refused for its trailing bytes)
    reply = peer.raw(_padded(MAX_FRAME_BYTES))
    assert isinstance(reply.msg, m.Error) and reply.msg.code == ErrorCode.BAD_FRAME, reply
    peer.assert_alive()


# not_registered


@covers(ErrorCode.NOT_REGISTERED)
@pytest.mark.parametrize(
    "req",
    [
        m.ListRooms(),
        m.Lookup(users=["alice"]),
        m.History(room="general"),
        m.Members(room="general"),
        m.FetchKeys(room="general"),
        m.Sync(cursors={}),
    ],
    ids=lambda r: type(r).__struct_config__.tag,
)
def test_not_registered(peers: Peers, req: m.Request) -> None:
    peer = peers.new("alice")
    peer.refused(req, ErrorCode.NOT_REGISTERED)
    # hello, ping and register need no registration
    assert peer.ok(m.Hello(client="test"), m.Welcome).user is None
    peer.register()
    reply = peer.request(req)
    assert not (isinstance(reply, m.Error) and reply.code == ErrorCode.NOT_REGISTERED), reply


@covers(ErrorCode.NOT_REGISTERED)
def test_not_registered_send(peers: Peers) -> None:
    alice = peers.registered("alice")
    room = create_room(alice, "general")
    stranger = peers.new("bob")
    stranger.refused(m.Send(envelope=room.envelope(stranger.identity)), ErrorCode.NOT_REGISTERED)
    assert alice.history("general") == []


# too_many_connections


@covers(ErrorCode.TOO_MANY_CONNECTIONS)
def test_too_many_connections(peers: Peers) -> None:
    alice = peers.registered("alice")
    more = [peers.new(alice.identity) for _ in range(16)]
    for peer in more[:15]:
        peer.ok(m.Hello(client="test"), m.Welcome)
    reply = more[15].request(m.Hello(client="test"))
    assert isinstance(reply, m.Error) and reply.code == ErrorCode.TOO_MANY_CONNECTIONS, reply
    alice.ok(m.Ping(t=1), m.Pong)  # the others are served as before


# name_taken


@covers(ErrorCode.NAME_TAKEN)
def test_name_taken(peers: Peers) -> None:
    alice = peers.registered("alice")
    impostor = peers.new("alice")  # same name, another identity key
    impostor.refused(impostor.register_request(), ErrorCode.NAME_TAKEN)
    impostor.refused(m.ListRooms(), ErrorCode.NOT_REGISTERED)
    directory = alice.ok(m.Lookup(users=["alice"]), m.Directory)
    assert directory.users == [m.UserKeys(user="alice", sign_pub=alice.identity.sign_pub)]


# key_taken


def _same_transport(identity: Identity, user: str) -> Identity:
    """Another identity (name and signing key) on `identity`'s CURVE key."""
    other = Identity.generate(user)
    return Identity.from_secrets(user, other.sign_seed, identity.transport_secret)


def _register(identity: Identity) -> m.Register:
    return m.Register(
        user=identity.user, sign_pub=identity.sign_pub, transport_sig=identity.transport_sig()
    )


@covers(ErrorCode.KEY_TAKEN)
def test_key_taken_on_the_same_connection(peers: Peers) -> None:
    alice = peers.registered("alice")
    alice.refused(_register(_same_transport(alice.identity, "bob")), ErrorCode.KEY_TAKEN)
    assert alice.ok(m.Lookup(users=["bob"]), m.Directory).users == []


@covers(ErrorCode.KEY_TAKEN)
def test_key_taken_on_a_new_connection(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.new(_same_transport(alice.identity, "bob"))
    bob.refused(bob.register_request(), ErrorCode.KEY_TAKEN)
    assert alice.ok(m.Lookup(users=["bob"]), m.Directory).users == []


@covers(ErrorCode.KEY_TAKEN)
def test_key_taken_when_the_key_was_registered_meanwhile(peers: Peers) -> None:
    # The first connection learns that its key is unregistered, then another
    # connection with the same CURVE key registers it: the store refuses.
    identity = Identity.generate("alice")
    first = peers.new(_same_transport(identity, "bob"))
    first.assert_alive()
    peers.new(identity).register()
    first.refused(first.register_request(), ErrorCode.KEY_TAKEN)


# bad_signature


@covers(ErrorCode.BAD_SIGNATURE)
@pytest.mark.parametrize("wrong", ["transport-key", "user", "sign-pub"])
def test_bad_signature_on_register(peers: Peers, wrong: str) -> None:
    alice = peers.new("alice")
    other = Identity.generate("alicia")
    ident = alice.identity
    if wrong == "transport-key":  # a signature over another connection's key
        req = m.Register(
            user="alice",
            sign_pub=ident.sign_pub,
            transport_sig=ident.sign(transport_statement("alice", other.transport_pub)),
        )
    elif wrong == "user":  # over this key, but for another name
        req = m.Register(
            user="alice",
            sign_pub=ident.sign_pub,
            transport_sig=ident.sign(transport_statement("alicia", ident.transport_pub)),
        )
    else:  # a valid signature, claimed for someone else's identity key
        req = m.Register(user="alice", sign_pub=other.sign_pub, transport_sig=ident.transport_sig())
    alice.refused(req, ErrorCode.BAD_SIGNATURE)
    alice.refused(m.ListRooms(), ErrorCode.NOT_REGISTERED)
    alice.register()  # the real one still works


def _forged(signed: m.SignedOp) -> m.SignedOp:
    return m.SignedOp(op=signed.op, sig=bytes([signed.sig[0] ^ 1]) + signed.sig[1:])


@covers(ErrorCode.BAD_SIGNATURE)
def test_bad_signature_on_an_op(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general")
    signed = _forged(room.op("add", alice.identity, bob.identity))
    alice.refused(m.AddMember(room="general", op=signed, packets=[]), ErrorCode.BAD_SIGNATURE)
    assert len(alice.log("general")) == 1


@covers(ErrorCode.BAD_SIGNATURE)
def test_bad_signature_on_a_genesis_op(peers: Peers) -> None:
    alice = peers.registered("alice")
    req, _ = create_request(alice.identity, "general")
    req = m.CreateRoom(room=req.room, ops=[_forged(req.ops[0])], epoch=req.epoch)
    alice.refused(req, ErrorCode.BAD_SIGNATURE)
    alice.refused(m.History(room="general"), ErrorCode.NO_SUCH_ROOM)


# no_such_user


@covers(ErrorCode.NO_SUCH_USER)
def test_no_such_user_in_create_room(peers: Peers) -> None:
    alice = peers.registered("alice")
    ghost = Identity.generate("ghost")
    # looking up an unknown user is not an error: it is just not found
    assert alice.ok(m.Lookup(users=["ghost"]), m.Directory).users == []
    req, _ = create_request(alice.identity, "general", [ghost])
    alice.refused(req, ErrorCode.NO_SUCH_USER)
    alice.refused(m.History(room="general"), ErrorCode.NO_SUCH_ROOM)


@covers(ErrorCode.NO_SUCH_USER)
def test_no_such_user_in_add_member(peers: Peers) -> None:
    alice = peers.registered("alice")
    room = create_room(alice, "general")
    ghost = Identity.generate("ghost")
    packet = wrap_epoch_key(alice.identity, room.key, "ghost", ghost.sign_pub)
    req = m.AddMember(room="general", op=room.op("add", alice.identity, ghost), packets=[packet])
    alice.refused(req, ErrorCode.NO_SUCH_USER)
    assert len(alice.log("general")) == 1


@covers(ErrorCode.NO_SUCH_USER)
def test_no_such_user_in_set_contacts(peers: Peers) -> None:
    alice = peers.registered("alice")
    alice.refused(m.SetContacts(add=["ghost"]), ErrorCode.NO_SUCH_USER)
    assert alice.ok(m.Contacts(), m.ContactList).users == []


# contacts_only


@covers(ErrorCode.CONTACTS_ONLY)
def test_contacts_only(peers: Peers) -> None:
    alice, bob = peers.registered("alice"), peers.registered("bob")
    assert bob.ok(m.SetContacts(only=True), m.ContactList).only
    req, _ = create_request(alice.identity, "general", [bob.identity])
    alice.refused(req, ErrorCode.CONTACTS_ONLY)
    alice.refused(m.History(room="general"), ErrorCode.NO_SUCH_ROOM)
    room = create_room(alice, "mine")
    packet = wrap_epoch_key(alice.identity, room.key, "bob", bob.identity.sign_pub)
    req2 = m.AddMember(
        room="mine", op=room.op("add", alice.identity, bob.identity), packets=[packet]
    )
    alice.refused(req2, ErrorCode.CONTACTS_ONLY)
    assert len(alice.log("mine")) == 1


# no_such_room


def _no_room_requests(who: Identity) -> list[m.Request]:
    nowhere = Room(genesis(who, "nowhere")[1], new_epoch_key("nowhere", 0, 0))  # as if it existed
    upload, _ = nowhere.upload(who, 1)
    return [
        m.History(room="nowhere"),
        m.Members(room="nowhere"),
        m.FetchKeys(room="nowhere"),
        m.Send(envelope=nowhere.envelope(who)),
        m.NewEpoch(room="nowhere", epoch=upload),
        m.Leave(room="nowhere", op=nowhere.op("leave", who, who)),
        m.Promote(room="nowhere", op=nowhere.op("promote", who, who)),
        m.AddMember(
            room="nowhere", op=nowhere.op("add", who, Identity.generate("bob")), packets=[]
        ),
        m.RemoveMember(room="nowhere", op=nowhere.op("remove", who, who), epoch=upload),
    ]


@covers(ErrorCode.NO_SUCH_ROOM)
def test_no_such_room(peers: Peers) -> None:
    alice = peers.registered("alice")
    for req in _no_room_requests(alice.identity):
        alice.refused(req, ErrorCode.NO_SUCH_ROOM)
    assert alice.ok(m.ListRooms(), m.RoomList).rooms == []


# room_exists


@covers(ErrorCode.ROOM_EXISTS)
def test_room_exists(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    create_room(alice, "general")
    again, _ = create_request(alice.identity, "general")
    alice.refused(again, ErrorCode.ROOM_EXISTS)
    # someone else's genesis for the same name: refused too, alice keeps the room
    theirs, _ = create_request(bob.identity, "general")
    bob.refused(theirs, ErrorCode.ROOM_EXISTS)
    bob.refused(m.History(room="general"), ErrorCode.NOT_MEMBER)
    assert len(alice.log("general")) == 1


# not_member


@covers(ErrorCode.NOT_MEMBER)
def test_not_member(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    carol = peers.registered("carol")
    room = create_room(alice, "private")
    b = bob.identity
    upload, _ = room.upload(b, 1, {"alice": alice.identity.sign_pub, "bob": b.sign_pub})
    requests: list[m.Request] = [
        m.History(room="private"),
        m.Members(room="private"),
        m.FetchKeys(room="private"),
        m.Send(envelope=room.envelope(b)),
        m.NewEpoch(room="private", epoch=upload),
        m.Leave(room="private", op=room.op("leave", b, b)),
        m.AddMember(room="private", op=room.op("add", b, carol.identity), packets=[]),
    ]
    for req in requests:
        bob.refused(req, ErrorCode.NOT_MEMBER)
    assert len(alice.log("private")) == 1
    assert alice.history("private") == []
    assert alice.epoch("private") == 0
    assert bob.ok(m.ListRooms(), m.RoomList).rooms == []


@covers(ErrorCode.NOT_MEMBER)
def test_not_member_after_leaving(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general", [bob])
    assert len(bob.history("general")) == 0
    leave = room.op("leave", bob.identity, bob.identity)
    bob.ok(m.Leave(room="general", op=leave), m.RoomChanged)
    bob.refused(m.History(room="general", after=0), ErrorCode.NOT_MEMBER)
    bob.refused(m.FetchKeys(room="general"), ErrorCode.NOT_MEMBER)


# forbidden


@covers(ErrorCode.FORBIDDEN)
def test_forbidden_non_admin_add(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    carol = peers.registered("carol")
    room = create_room(alice, "general", [bob])
    signed = room.op("add", bob.identity, carol.identity)
    packet = wrap_epoch_key(bob.identity, room.key, "carol", carol.identity.sign_pub)
    bob.refused(m.AddMember(room="general", op=signed, packets=[packet]), ErrorCode.FORBIDDEN)
    assert len(alice.log("general")) == 2
    carol.refused(m.History(room="general"), ErrorCode.NOT_MEMBER)


@covers(ErrorCode.FORBIDDEN)
def test_forbidden_non_admin_remove_and_promote(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    carol = peers.registered("carol")
    room = create_room(alice, "general", [bob, carol])
    b = bob.identity
    upload, _ = room.upload(b, 1, {"alice": alice.identity.sign_pub, "bob": b.sign_pub})
    remove = room.op("remove", b, carol.identity)
    bob.refused(m.RemoveMember(room="general", op=remove, epoch=upload), ErrorCode.FORBIDDEN)
    bob.refused(m.Promote(room="general", op=room.op("promote", b, b)), ErrorCode.FORBIDDEN)
    assert len(alice.log("general")) == 3
    assert alice.epoch("general") == 0


@covers(ErrorCode.FORBIDDEN)
def test_forbidden_leave_for_someone_else(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general", [bob])
    leave = room.op("leave", bob.identity, alice.identity)
    bob.refused(m.Leave(room="general", op=leave), ErrorCode.FORBIDDEN)
    assert len(alice.log("general")) == 2


@covers(ErrorCode.FORBIDDEN)
@pytest.mark.parametrize("kind", ["add", "remove", "promote", "leave"])
def test_forbidden_op_signed_by_another_member(peers: Peers, kind: OpKind) -> None:
    # A valid op, signed by alice (an admin), sent by bob: the server must only
    # accept ops from their own signer.
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    carol = peers.registered("carol")
    room = create_room(alice, "general", [bob, carol])
    a = alice.identity
    req: m.Request
    if kind == "add":
        dave = peers.registered("dave")
        packet = wrap_epoch_key(bob.identity, room.key, "dave", dave.identity.sign_pub)
        req = m.AddMember(room="general", op=room.op("add", a, dave.identity), packets=[packet])
    elif kind == "remove":
        upload, _ = room.upload(
            bob.identity, 1, {"alice": a.sign_pub, "bob": bob.identity.sign_pub}
        )
        req = m.RemoveMember(room="general", op=room.op("remove", a, carol.identity), epoch=upload)
    elif kind == "promote":
        req = m.Promote(room="general", op=room.op("promote", a, bob.identity))
    else:
        req = m.Leave(room="general", op=room.op("leave", a, a))
    bob.refused(req, ErrorCode.FORBIDDEN)
    assert len(alice.log("general")) == 3
    assert alice.epoch("general") == 0


@covers(ErrorCode.FORBIDDEN)
def test_forbidden_create_with_someone_elses_genesis(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    req, _ = create_request(alice.identity, "general")
    bob.refused(req, ErrorCode.FORBIDDEN)
    alice.refused(m.History(room="general"), ErrorCode.NO_SUCH_ROOM)


@covers(ErrorCode.FORBIDDEN)
def test_forbidden_dm_room_of_others(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    carol = peers.registered("carol")
    # carol opens alice and bob's direct-message room with her own genesis...
    c = carol.identity
    op = m.MemberOp(
        room="@alice:bob",
        index=0,
        prev=GENESIS_PREV,
        kind="create",
        actor="carol",
        target="carol",
        target_key=c.sign_pub,
        ts=now_ms(),
    )
    key = new_epoch_key("@alice:bob", 0, 0)
    upload = m.EpochUpload(
        epoch=0, after_op=0, packets=[wrap_epoch_key(c, key, "carol", c.sign_pub)]
    )
    own = m.CreateRoom(room="@alice:bob", ops=[sign_op(c, op)], epoch=upload)
    carol.refused(own, ErrorCode.FORBIDDEN)
    # ...or with alice's
    req, _ = create_request(alice.identity, "@alice:bob", [bob.identity])
    carol.refused(req, ErrorCode.FORBIDDEN)
    alice.refused(m.History(room="@alice:bob"), ErrorCode.NO_SUCH_ROOM)


@covers(ErrorCode.FORBIDDEN)
def test_forbidden_third_member_in_a_dm(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    carol = peers.registered("carol")
    room = create_room(alice, "@alice:bob", [bob])
    signed = room.op("add", alice.identity, carol.identity)
    packet = wrap_epoch_key(alice.identity, room.key, "carol", carol.identity.sign_pub)
    alice.refused(m.AddMember(room=room.name, op=signed, packets=[packet]), ErrorCode.FORBIDDEN)
    assert len(alice.log(room.name)) == 2


# bad_op


@covers(ErrorCode.BAD_OP)
def test_bad_op_wrong_target_key_in_add(peers: Peers) -> None:
    alice = peers.registered("alice")
    carol = peers.registered("carol")
    mallory = Identity.generate("mallory")
    room = create_room(alice, "general")
    # carol is registered, but the op vouches for mallory's key under her name
    signed = room.op("add", alice.identity, "carol", mallory.sign_pub)
    packet = wrap_epoch_key(alice.identity, room.key, "carol", mallory.sign_pub)
    alice.refused(m.AddMember(room="general", op=signed, packets=[packet]), ErrorCode.BAD_OP)
    assert len(alice.log("general")) == 1
    carol.refused(m.History(room="general"), ErrorCode.NOT_MEMBER)


@covers(ErrorCode.BAD_OP)
def test_bad_op_wrong_target_key_in_create_room(peers: Peers) -> None:
    alice = peers.registered("alice")
    peers.registered("carol")
    impostor = Identity.generate("carol")
    req, _ = create_request(alice.identity, "general", [impostor])
    alice.refused(req, ErrorCode.BAD_OP)
    alice.refused(m.History(room="general"), ErrorCode.NO_SUCH_ROOM)


@covers(ErrorCode.BAD_OP)
def test_bad_op_wrong_creator_key_in_create_room(peers: Peers) -> None:
    # alice's genesis op, made with an identity key that is not her registered one
    alice = peers.registered("alice")
    other = Identity.from_secrets(
        "alice", Identity.generate("alice").sign_seed, alice.identity.transport_secret
    )
    req, _ = create_request(other, "general")
    alice.refused(req, ErrorCode.BAD_OP)
    alice.refused(m.History(room="general"), ErrorCode.NO_SUCH_ROOM)


@covers(ErrorCode.BAD_OP)
@pytest.mark.parametrize("wrong", ["non-member", "sender", "room", "epoch"])
def test_bad_op_key_packet_in_add_member(peers: Peers, wrong: str) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    dave = peers.registered("dave")
    room = create_room(alice, "general")
    a, b = alice.identity, bob.identity
    good = wrap_epoch_key(a, room.key, "bob", b.sign_pub)
    if wrong == "non-member":  # a packet for someone who is not being added
        bad = wrap_epoch_key(a, room.key, "dave", dave.identity.sign_pub)
    elif wrong == "sender":  # a packet claiming to come from someone else
        bad = msgspec.structs.replace(good, sender="dave")
    elif wrong == "room":
        bad = msgspec.structs.replace(good, room="elsewhere")
    else:  # an epoch the room has not reached
        bad = wrap_epoch_key(a, new_epoch_key("general", 1, 1), "bob", b.sign_pub)
    req = m.AddMember(room="general", op=room.op("add", a, b), packets=[good, bad])
    alice.refused(req, ErrorCode.BAD_OP)
    assert len(alice.log("general")) == 1
    bob.refused(m.FetchKeys(room="general"), ErrorCode.NOT_MEMBER)


@covers(ErrorCode.BAD_OP)
def test_bad_op_key_packet_for_a_non_member_in_create_room(peers: Peers) -> None:
    alice = peers.registered("alice")
    dave = peers.registered("dave")
    ops, state = genesis(alice.identity, "general")
    upload, _ = Room(state, new_epoch_key("general", 0, 0)).upload(
        alice.identity, 0, {"alice": alice.identity.sign_pub, "dave": dave.identity.sign_pub}
    )
    alice.refused(m.CreateRoom(room="general", ops=ops, epoch=upload), ErrorCode.BAD_OP)
    alice.refused(m.History(room="general"), ErrorCode.NO_SUCH_ROOM)


@covers(ErrorCode.BAD_OP)
def test_bad_op_key_packet_for_a_non_member_in_new_epoch(peers: Peers) -> None:
    alice = peers.registered("alice")
    dave = peers.registered("dave")
    room = create_room(alice, "general")
    upload, _ = room.upload(
        alice.identity, 1, {"alice": alice.identity.sign_pub, "dave": dave.identity.sign_pub}
    )
    alice.refused(m.NewEpoch(room="general", epoch=upload), ErrorCode.BAD_OP)
    assert alice.epoch("general") == 0
    dave.refused(m.FetchKeys(room="general"), ErrorCode.NOT_MEMBER)


@covers(ErrorCode.BAD_OP)
def test_bad_op_new_epoch_missing_a_member(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general", [bob])
    upload, _ = room.upload(alice.identity, 1, {"alice": alice.identity.sign_pub})
    alice.refused(m.NewEpoch(room="general", epoch=upload), ErrorCode.BAD_OP)
    assert alice.epoch("general") == 0


@covers(ErrorCode.BAD_OP)
def test_bad_op_removed_member_keeps_the_new_key(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general", [bob])
    signed = room.op("remove", alice.identity, bob.identity)
    # the new epoch boxed for bob too, who is being removed
    upload, _ = room.upload(alice.identity, 1, after_op=room.state.index + 1)
    alice.refused(m.RemoveMember(room="general", op=signed, epoch=upload), ErrorCode.BAD_OP)
    assert len(alice.log("general")) == 2
    assert bob.history("general") == []


@covers(ErrorCode.BAD_OP)
def test_bad_op_op_of_the_wrong_kind(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general", [bob])
    promote = room.op("promote", alice.identity, bob.identity)
    alice.refused(m.Leave(room="general", op=promote), ErrorCode.BAD_OP)
    add = room.op("add", alice.identity, peers.registered("carol").identity)
    alice.refused(m.Promote(room="general", op=add), ErrorCode.BAD_OP)
    assert len(alice.log("general")) == 2


@covers(ErrorCode.BAD_OP)
def test_bad_op_room_starting_with_a_leave(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    ops, state = genesis(alice.identity, "general", [bob.identity])
    room = Room(state, new_epoch_key("general", 0, 0))
    leave = room.op("leave", alice.identity, alice.identity)
    room.applied(leave)
    upload, _ = room.upload(alice.identity, 0)
    alice.refused(m.CreateRoom(room="general", ops=[*ops, leave], epoch=upload), ErrorCode.BAD_OP)
    alice.refused(m.History(room="general"), ErrorCode.NO_SUCH_ROOM)


@covers(ErrorCode.BAD_OP)
@pytest.mark.parametrize("wrong", ["other-room", "not-canonical", "not-an-op"])
def test_bad_op_malformed_op(peers: Peers, wrong: str) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general")
    a = alice.identity
    if wrong == "other-room":
        op = msgspec.structs.replace(
            room.state.next_op("add", "alice", "bob", bob.identity.sign_pub, now_ms()),
            room="elsewhere",
        )
        signed = sign_op(a, op)
    elif wrong == "not-canonical":  # the right op with a byte after it
        data = room.op("add", a, bob.identity).op + b"\xc0"
        signed = m.SignedOp(op=data, sig=a.sign(DOMAIN_OP + data))
    else:
        data = encode({"kind": "add"})
        signed = m.SignedOp(op=data, sig=a.sign(DOMAIN_OP + data))
    alice.refused(m.AddMember(room="general", op=signed, packets=[]), ErrorCode.BAD_OP)
    assert len(alice.log("general")) == 1


# conflict


@covers(ErrorCode.CONFLICT)
def test_conflict_op_with_a_stale_index(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    carol = peers.registered("carol")
    room = create_room(alice, "general")
    stale = Room(room.state, room.key)  # what a second client of alice still sees
    add_member(alice, room, bob)
    signed = stale.op("add", alice.identity, carol.identity)
    packet = wrap_epoch_key(alice.identity, room.key, "carol", carol.identity.sign_pub)
    alice.refused(m.AddMember(room="general", op=signed, packets=[packet]), ErrorCode.CONFLICT)
    assert len(alice.log("general")) == 2
    carol.refused(m.History(room="general"), ErrorCode.NOT_MEMBER)


@covers(ErrorCode.CONFLICT)
def test_conflict_op_with_a_wrong_prev(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general")
    op = msgspec.structs.replace(
        room.state.next_op("add", "alice", "bob", bob.identity.sign_pub, now_ms()),
        prev=bytes(32),
    )
    alice.refused(
        m.AddMember(room="general", op=sign_op(alice.identity, op), packets=[]),
        ErrorCode.CONFLICT,
    )
    assert len(alice.log("general")) == 1


@covers(ErrorCode.CONFLICT)
@pytest.mark.parametrize("epoch", [0, 2, 2**31])
def test_conflict_new_epoch_with_the_wrong_epoch(peers: Peers, epoch: int) -> None:
    alice = peers.registered("alice")
    room = create_room(alice, "general")
    upload, _ = room.upload(alice.identity, epoch)
    alice.refused(m.NewEpoch(room="general", epoch=upload), ErrorCode.CONFLICT)
    assert alice.epoch("general") == 0
    upload, _ = room.upload(alice.identity, 1)
    alice.ok(m.NewEpoch(room="general", epoch=upload), m.RoomChanged)
    assert alice.epoch("general") == 1


@covers(ErrorCode.CONFLICT)
def test_conflict_new_epoch_after_a_stale_op(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general")
    add_member(alice, room, bob)
    # boxed for the current members, but claiming to follow the genesis op
    upload, _ = room.upload(alice.identity, 1, after_op=0)
    alice.refused(m.NewEpoch(room="general", epoch=upload), ErrorCode.CONFLICT)
    assert alice.epoch("general") == 0


@covers(ErrorCode.CONFLICT)
def test_conflict_remove_with_the_wrong_epoch(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general", [bob])
    signed = room.op("remove", alice.identity, bob.identity)
    upload, _ = room.upload(
        alice.identity, 2, {"alice": alice.identity.sign_pub}, after_op=room.state.index + 1
    )
    alice.refused(m.RemoveMember(room="general", op=signed, epoch=upload), ErrorCode.CONFLICT)
    assert len(alice.log("general")) == 2
    assert bob.history("general") == []


# stale_epoch


@covers(ErrorCode.STALE_EPOCH)
def test_stale_epoch_after_a_leave_without_rotation(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general", [bob])
    alice.ok(m.Send(envelope=room.envelope(alice.identity)), m.SendAck)
    leave = room.op("leave", bob.identity, bob.identity)
    bob.ok(m.Leave(room="general", op=leave), m.RoomChanged)
    room.applied(leave)
    # bob still holds epoch 0's key: nothing may be sent under it any more
    alice.refused(m.Send(envelope=room.envelope(alice.identity)), ErrorCode.STALE_EPOCH)
    assert len(alice.history("general")) == 1
    upload, key = room.upload(alice.identity, 1)
    alice.ok(m.NewEpoch(room="general", epoch=upload), m.RoomChanged)
    room.keys[1] = key
    alice.ok(m.Send(envelope=room.envelope(alice.identity)), m.SendAck)
    alice.refused(m.Send(envelope=room.envelope(alice.identity, epoch=0)), ErrorCode.STALE_EPOCH)
    assert len(alice.history("general")) == 2


@covers(ErrorCode.STALE_EPOCH)
def test_stale_epoch_after_a_removal(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    carol = peers.registered("carol")
    room = create_room(alice, "general", [bob, carol])
    signed = room.op("remove", alice.identity, bob.identity)
    room.applied(signed)
    upload, key = room.upload(alice.identity, 1)
    alice.ok(m.RemoveMember(room="general", op=signed, epoch=upload), m.RoomChanged)
    room.keys[1] = key
    carol.refused(m.Send(envelope=room.envelope(carol.identity, epoch=0)), ErrorCode.STALE_EPOCH)
    carol.ok(m.Send(envelope=room.envelope(carol.identity, epoch=1)), m.SendAck)
    assert len(alice.history("general")) == 1


@covers(ErrorCode.STALE_EPOCH)
def test_stale_epoch_from_the_future(peers: Peers) -> None:
    alice = peers.registered("alice")
    room = create_room(alice, "general")
    room.keys[3] = new_epoch_key("general", 3, 0)
    alice.refused(m.Send(envelope=room.envelope(alice.identity, epoch=3)), ErrorCode.STALE_EPOCH)
    assert alice.history("general") == []


# out_of_order


@covers(ErrorCode.OUT_OF_ORDER)
def test_out_of_order_when_the_message_before_is_not_stored(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    room = create_room(alice, "general", [bob])
    first = room.envelope(alice.identity, text="one")
    second = room.envelope(alice.identity, text="two")
    alice.refused(m.Send(envelope=second, after=first.txn), ErrorCode.OUT_OF_ORDER)
    assert alice.history("general") == []
    # bob's message of that txn is not alice's
    theirs = room.envelope(bob.identity)
    bob.ok(m.Send(envelope=theirs), m.SendAck)
    alice.refused(m.Send(envelope=second, after=theirs.txn), ErrorCode.OUT_OF_ORDER)
    alice.ok(m.Send(envelope=first), m.SendAck)
    alice.ok(m.Send(envelope=second, after=first.txn), m.SendAck)
    assert [r.envelope.txn for r in alice.history("general")] == [
        theirs.txn,
        first.txn,
        second.txn,
    ]


# bad_envelope


@covers(ErrorCode.BAD_ENVELOPE)
def test_bad_envelope_sender_is_not_the_requester(peers: Peers) -> None:
    alice = peers.registered("alice")
    bob = peers.registered("bob")
    carol = peers.registered("carol")
    room = create_room(alice, "general", [bob])
    forged = room.envelope(alice.identity, text="from alice?")
    bob.refused(m.Send(envelope=forged), ErrorCode.BAD_ENVELOPE)  # a member
    carol.refused(m.Send(envelope=forged), ErrorCode.BAD_ENVELOPE)  # not a member
    assert alice.history("general") == []
    # the same envelope from its real sender is fine
    alice.ok(m.Send(envelope=forged), m.SendAck)


# draining


@covers(ErrorCode.DRAINING)
def test_draining_for_hello_while_the_node_drains(peers: Peers, server: ServerProcess) -> None:
    import urllib.request

    alice = peers.registered("alice")  # connected before the drain: served as before
    token = (server.data / "http.token").read_text().strip()
    post = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/api/drain",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    urllib.request.urlopen(post, timeout=5).close()
    assert "draining" in peers.new("bob").refused(m.Hello(client="t"), ErrorCode.DRAINING).message
    alice.ok(m.ListRooms(), m.RoomList)
