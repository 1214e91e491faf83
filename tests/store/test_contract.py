"""The `Store` contract (curvechat.store.base), run against every backend.

Each test states one promise of base.py's docstrings. Backend-specific
behaviour (files, PRAGMAs, group-commit counters) lives in test_<backend>.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from curvechat.store import (
    Committed,
    Conflict,
    ContactsRecord,
    EpochRecord,
    KeyTaken,
    MemberChange,
    NameTaken,
    NewMessage,
    NoSuchRoom,
    OpRecord,
    PacketRecord,
    RoomExists,
    RoomRecord,
    Store,
    StoredRow,
    StoreUnavailable,
    UserRecord,
)

StoreFactory = Callable[[], Store]


# --- helpers -----------------------------------------------------------------
def op(index: int) -> OpRecord:
    return OpRecord(index=index, op=b"op-%d" % index, sig=b"sig-%d" % index)


def packet(room: str, epoch: int, recipient: str, sender: str = "alice") -> PacketRecord:
    box = b"box:%s:%d:%s:%s" % (room.encode(), epoch, recipient.encode(), sender.encode())
    return PacketRecord(room=room, epoch=epoch, recipient=recipient, sender=sender, box=box)


def add(user: str, admin: bool = False) -> MemberChange:
    return MemberChange(user=user, present=True, admin=admin)


def remove(user: str) -> MemberChange:
    return MemberChange(user=user, present=False)


def msg(room: str, sender: str, txn: str) -> NewMessage:
    return NewMessage(room=room, sender=sender, txn=txn, envelope=f"env:{room}:{txn}".encode())


async def make_room(
    store: Store, room: str, members: Sequence[str] = ("alice",), admins: Sequence[str] = ("alice",)
) -> RoomRecord:
    """Op 0 adds `members`; epoch 0 after op 0, with one packet per member."""
    return await store.create_room(
        room,
        [op(0)],
        [add(u, admin=u in admins) for u in members],
        EpochRecord(epoch=0, after_op=0, creator=members[0]),
        [packet(room, 0, u, members[0]) for u in members],
    )


async def snapshot(store: Store, room: str, users: Sequence[str]) -> tuple[object, ...]:
    """Everything observable about a room, to check that a failed call changed nothing."""
    return (
        await store.room(room),
        await store.ops(room),
        await store.members(room),
        [await store.key_packets(room, u) for u in users],
        await store.messages(room, limit=10_000),
        [await store.rooms_of(u) for u in users],
    )


# --- lifecycle ---------------------------------------------------------------
async def test_ping_on_open_store(store: Store) -> None:
    await store.ping()


async def test_closed_store_is_unavailable(store_factory: StoreFactory) -> None:
    s = store_factory()
    await s.open()
    await s.close()
    with pytest.raises(StoreUnavailable):
        await s.ping()
    with pytest.raises(StoreUnavailable):
        await s.append_messages([msg("r", "alice", "t")])
    await s.close()  # closing twice is harmless


# --- users -------------------------------------------------------------------
async def test_register_and_look_up(store: Store) -> None:
    await store.register("alice", b"A-sign", b"A-tr1")
    assert await store.user_for_transport(b"A-tr1") == "alice"
    assert await store.user_for_transport(b"unknown") is None
    found = await store.users(["alice", "nobody"])
    assert list(found) == ["alice"]
    record = found["alice"]
    assert isinstance(record, UserRecord)
    assert (record.user, record.sign_pub) == ("alice", b"A-sign")
    assert record.registered_ms > 0
    assert await store.users([]) == {}
    assert await store.users(["nobody"]) == {}


async def test_register_is_idempotent(store: Store) -> None:
    await store.register("alice", b"A-sign", b"A-tr1")
    before = await store.users(["alice"])
    await store.register("alice", b"A-sign", b"A-tr1")
    assert await store.users(["alice"]) == before  # registered_ms is the first one
    assert await store.user_for_transport(b"A-tr1") == "alice"


async def test_second_transport_key_is_added(store: Store) -> None:
    await store.register("alice", b"A-sign", b"A-tr1")
    await store.register("alice", b"A-sign", b"A-tr2")
    assert await store.user_for_transport(b"A-tr1") == "alice"
    assert await store.user_for_transport(b"A-tr2") == "alice"


async def test_name_taken(store: Store) -> None:
    await store.register("alice", b"A-sign", b"A-tr1")
    with pytest.raises(NameTaken):
        await store.register("alice", b"other-sign", b"new-tr")
    # Nothing changed: the new transport key was not bound.
    assert await store.user_for_transport(b"new-tr") is None
    assert (await store.users(["alice"]))["alice"].sign_pub == b"A-sign"


async def test_key_taken(store: Store) -> None:
    await store.register("alice", b"A-sign", b"A-tr1")
    with pytest.raises(KeyTaken):
        await store.register("bob", b"B-sign", b"A-tr1")
    # Nothing changed: bob was not registered, the key is still alice's.
    assert await store.users(["bob"]) == {}
    assert await store.user_for_transport(b"A-tr1") == "alice"
    await store.register("bob", b"B-sign", b"B-tr")  # bob can still register
    assert await store.user_for_transport(b"B-tr") == "bob"


async def test_many_users_lookup(store: Store) -> None:
    names = [f"user{i:04d}" for i in range(1200)]
    for i, name in enumerate(names[:600]):
        await store.register(name, b"sign-%d" % i, b"tr-%d" % i)
    found = await store.users([*names, *names[:10]])  # duplicates are harmless
    assert sorted(found) == names[:600]


# --- contacts ----------------------------------------------------------------
async def test_no_contacts_until_set(store: Store) -> None:
    await store.register("alice", b"A-sign", b"A-tr1")
    assert await store.contacts(["alice", "nobody"]) == {}
    assert await store.contacts([]) == {}


async def test_put_contacts_and_read_them_back(store: Store) -> None:
    alice = ContactsRecord(only=True, users=("bob", "carol"))
    bob = ContactsRecord(users=("alice",))
    await store.put_contacts("alice", alice, None)
    await store.put_contacts("bob", bob, None)
    found = await store.contacts(["bob", "nobody", "alice", "bob"])
    assert found == {"alice": alice, "bob": bob}
    assert await store.contacts(["alice"]) == {"alice": alice}
    empty = ContactsRecord()  # set, then emptied: still there
    await store.put_contacts("carol", empty, None)
    assert await store.contacts(["carol"]) == {"carol": empty}


async def test_put_contacts_replaces_what_it_expects(store: Store) -> None:
    first = ContactsRecord(users=("bob",))
    second = ContactsRecord(only=True, users=("bob", "dave"))
    await store.put_contacts("alice", first, None)
    await store.put_contacts("alice", second, first)
    assert await store.contacts(["alice"]) == {"alice": second}


@pytest.mark.parametrize(
    "expect",
    [
        None,
        ContactsRecord(users=("bob",)),  # what was there before the last put
        ContactsRecord(users=("bob", "dave")),  # only differs in `only`
        ContactsRecord(only=True, users=("dave",)),
    ],
)
async def test_put_contacts_with_a_wrong_expect_conflicts(
    store: Store, expect: ContactsRecord | None
) -> None:
    now = ContactsRecord(only=True, users=("bob", "dave"))
    await store.put_contacts("alice", ContactsRecord(users=("bob",)), None)
    await store.put_contacts("alice", now, ContactsRecord(users=("bob",)))
    with pytest.raises(Conflict):
        await store.put_contacts("alice", ContactsRecord(users=("eve",)), expect)
    assert await store.contacts(["alice"]) == {"alice": now}


async def test_put_contacts_expecting_some_when_none_were_set_conflicts(store: Store) -> None:
    with pytest.raises(Conflict):
        await store.put_contacts("alice", ContactsRecord(users=("eve",)), ContactsRecord())
    assert await store.contacts(["alice"]) == {}
    await store.put_contacts("alice", ContactsRecord(users=("bob",)), None)  # None still works


async def test_a_long_contacts_list_round_trips(store: Store) -> None:
    users = tuple(sorted(f"{i:05d}".ljust(32, "x") for i in range(5_000)))
    record = ContactsRecord(only=True, users=users)
    await store.put_contacts("alice", record, None)
    assert await store.contacts(["alice"]) == {"alice": record}
    shorter = ContactsRecord(users=users[:10])
    await store.put_contacts("alice", shorter, record)
    assert await store.contacts(["alice"]) == {"alice": shorter}


async def test_contacts_survive_reopen(store_factory: StoreFactory) -> None:
    record = ContactsRecord(only=True, users=("bob", "carol"))
    s = store_factory()
    await s.open()
    await s.put_contacts("alice", record, None)
    await s.close()
    reopened = store_factory()
    await reopened.open()
    try:
        assert await reopened.contacts(["alice", "bob"]) == {"alice": record}
        with pytest.raises(Conflict):
            await reopened.put_contacts("alice", ContactsRecord(), None)
        await reopened.put_contacts("alice", ContactsRecord(), record)
        assert await reopened.contacts(["alice"]) == {"alice": ContactsRecord()}
    finally:
        await reopened.close()


async def test_contacts_of_many_users(store: Store) -> None:
    names = [f"user{i:04d}" for i in range(1200)]
    for i, name in enumerate(names[:600]):
        await store.put_contacts(name, ContactsRecord(users=(f"friend{i}",)), None)
    found = await store.contacts([*names, *names[:10]])
    assert sorted(found) == names[:600]
    assert found["user0007"] == ContactsRecord(users=("friend7",))


# --- rooms -------------------------------------------------------------------
async def test_create_room(store: Store) -> None:
    created = await store.create_room(
        "r1",
        [op(0), op(1)],
        [add("alice", admin=True), add("bob")],
        EpochRecord(epoch=0, after_op=1, creator="alice"),
        [packet("r1", 0, "alice"), packet("r1", 0, "bob")],
    )
    assert (created.room, created.head, created.epoch) == ("r1", 0, 0)
    assert (created.epoch_after_op, created.op_head) == (1, 1)
    assert created.created_ms > 0
    assert await store.room("r1") == created
    assert await store.ops("r1") == [op(0), op(1)]
    assert await store.members("r1") == {"alice": True, "bob": False}
    assert await store.key_packets("r1", "bob") == [packet("r1", 0, "bob")]
    assert await store.messages("r1") == []


async def test_unknown_room(store: Store) -> None:
    assert await store.room("nope") is None
    assert await store.rooms_of("nobody") == []
    with pytest.raises(NoSuchRoom):
        await store.ops("nope")
    with pytest.raises(NoSuchRoom):
        await store.members("nope")
    with pytest.raises(NoSuchRoom):
        await store.key_packets("nope", "alice")
    with pytest.raises(NoSuchRoom):
        await store.messages("nope")


async def test_room_exists(store: Store) -> None:
    await make_room(store, "r1", ["alice", "bob"])
    before = await snapshot(store, "r1", ["alice", "bob", "carol"])
    with pytest.raises(RoomExists):
        await store.create_room(
            "r1",
            [OpRecord(0, b"other", b"other-sig")],
            [add("carol", admin=True)],
            EpochRecord(epoch=0, after_op=0, creator="carol"),
            [packet("r1", 0, "carol", "carol")],
        )
    assert await snapshot(store, "r1", ["alice", "bob", "carol"]) == before


# --- membership ops ----------------------------------------------------------
async def test_append_op(store: Store) -> None:
    created = await make_room(store, "r1")
    record = await store.append_op("r1", op(1), [add("bob")])
    assert record.op_head == 1
    assert (record.epoch, record.epoch_after_op) == (0, 0)
    assert (record.head, record.created_ms) == (created.head, created.created_ms)
    assert await store.room("r1") == record
    assert await store.ops("r1") == [op(0), op(1)]
    assert await store.members("r1") == {"alice": True, "bob": False}


@pytest.mark.parametrize("index", [0, 1, 3, -1])
async def test_append_op_wrong_index_conflicts(store: Store, index: int) -> None:
    await make_room(store, "r1")
    await store.append_op("r1", op(1), [add("bob")])
    before = await snapshot(store, "r1", ["alice", "bob", "carol"])
    with pytest.raises(Conflict):
        await store.append_op("r1", OpRecord(index, b"x", b"y"), [add("carol")])
    with pytest.raises(Conflict):  # with an epoch as well
        await store.append_op(
            "r1",
            OpRecord(index, b"x", b"y"),
            [add("carol")],
            EpochRecord(epoch=1, after_op=index, creator="alice"),
            [packet("r1", 1, "carol")],
        )
    assert await snapshot(store, "r1", ["alice", "bob", "carol"]) == before


async def test_append_op_with_epoch(store: Store) -> None:
    await make_room(store, "r1", ["alice", "bob"])
    record = await store.append_op(
        "r1",
        op(1),
        [remove("bob")],
        EpochRecord(epoch=1, after_op=1, creator="alice"),
        [packet("r1", 1, "alice")],
    )
    assert (record.op_head, record.epoch, record.epoch_after_op) == (1, 1, 1)
    assert await store.room("r1") == record
    assert await store.members("r1") == {"alice": True}
    assert await store.key_packets("r1", "alice") == [
        packet("r1", 0, "alice"),
        packet("r1", 1, "alice"),
    ]


async def test_append_op_packets_without_epoch(store: Store) -> None:
    await make_room(store, "r1")
    record = await store.append_op("r1", op(1), [add("bob")], None, [packet("r1", 0, "bob")])
    assert record.epoch == 0
    assert await store.key_packets("r1", "bob") == [packet("r1", 0, "bob")]


@pytest.mark.parametrize("epoch", [0, 2, 5])
async def test_append_op_wrong_epoch_conflicts(store: Store, epoch: int) -> None:
    await make_room(store, "r1")
    before = await snapshot(store, "r1", ["alice", "bob"])
    with pytest.raises(Conflict):
        await store.append_op(
            "r1",
            op(1),  # a correct index: the epoch alone must fail it, atomically
            [add("bob")],
            EpochRecord(epoch=epoch, after_op=1, creator="alice"),
            [packet("r1", epoch, "bob")],
        )
    assert await snapshot(store, "r1", ["alice", "bob"]) == before


async def test_append_op_no_such_room(store: Store) -> None:
    with pytest.raises(NoSuchRoom):
        await store.append_op("nope", op(0), [add("bob")])
    assert await store.room("nope") is None
    assert await store.rooms_of("bob") == []


async def test_ops_after(store: Store) -> None:
    await make_room(store, "r1")
    for i in range(1, 6):
        await store.append_op("r1", op(i), [])
    assert await store.ops("r1") == [op(i) for i in range(6)]
    assert await store.ops("r1", after=-1) == [op(i) for i in range(6)]
    assert await store.ops("r1", after=2) == [op(3), op(4), op(5)]
    assert await store.ops("r1", after=5) == []
    assert await store.ops("r1", after=99) == []
    # a page of them: the node read a room's whole log to answer 500 ops
    assert await store.ops("r1", after=1, limit=2) == [op(2), op(3)]
    assert await store.ops("r1", limit=0) == []
    with pytest.raises(NoSuchRoom):
        await store.ops("nope", limit=0)


# --- epochs --------------------------------------------------------------------
async def test_add_epoch(store: Store) -> None:
    created = await make_room(store, "r1", ["alice", "bob"])
    await store.append_op("r1", op(1), [])
    record = await store.add_epoch(
        "r1",
        EpochRecord(epoch=1, after_op=1, creator="bob"),
        [packet("r1", 1, "alice", "bob"), packet("r1", 1, "bob", "bob")],
    )
    assert (record.epoch, record.epoch_after_op, record.op_head) == (1, 1, 1)
    assert (record.head, record.created_ms) == (created.head, created.created_ms)
    assert await store.room("r1") == record
    assert await store.key_packets("r1", "alice", min_epoch=1) == [packet("r1", 1, "alice", "bob")]
    assert await store.key_packets("r1", "alice", limit=1) == [packet("r1", 0, "alice")]
    assert await store.key_packets("r1", "alice", limit=0) == []


@pytest.mark.parametrize("epoch", [0, 2])
async def test_add_epoch_conflict(store: Store, epoch: int) -> None:
    await make_room(store, "r1", ["alice", "bob"])
    before = await snapshot(store, "r1", ["alice", "bob"])
    with pytest.raises(Conflict):
        await store.add_epoch(
            "r1", EpochRecord(epoch=epoch, after_op=0, creator="bob"), [packet("r1", epoch, "bob")]
        )
    assert await snapshot(store, "r1", ["alice", "bob"]) == before


async def test_add_epoch_no_such_room(store: Store) -> None:
    with pytest.raises(NoSuchRoom):
        await store.add_epoch("nope", EpochRecord(epoch=1, after_op=0, creator="a"), [])


async def test_message_expecting_an_old_membership_is_stale(store: Store) -> None:
    """A send checked against (epoch, op_head) is stored only if the room is
    still there when it commits: a removal in between refuses it, unstored."""
    await make_room(store, "r", ["alice", "bob"])
    (ok,) = await store.append_messages([expecting(msg("r", "alice", "t1"), (0, 0))])
    assert (ok.seq, ok.stale) == (1, False)
    await store.append_op("r", op(1), [remove("bob")], EpochRecord(1, 1, "alice"))
    late, dup = await store.append_messages(
        [expecting(msg("r", "alice", "t2"), (0, 0)), expecting(msg("r", "alice", "t1"), (0, 0))]
    )
    assert (late.stale, late.seq, late.duplicate) == (True, 0, False)
    assert (dup.stale, dup.seq, dup.duplicate) == (False, 1, True)  # stored before: its ack
    assert [m.txn for m in await store.messages("r")] == ["t1"]
    room = await store.room("r")
    assert room is not None and room.head == 1
    (fresh,) = await store.append_messages([expecting(msg("r", "alice", "t2"), (1, 1))])
    assert (fresh.seq, fresh.stale) == (2, False)


def following(m: NewMessage, after: str) -> NewMessage:
    return NewMessage(m.room, m.sender, m.txn, m.envelope, after=after)


async def test_message_after_one_not_stored_is_behind(store: Store) -> None:
    """A message naming the sender's earlier message (`after`) is stored only
    when that one is stored already or earlier in the same group: so one
    sender's messages are never stored out of the order sent."""
    await make_room(store, "r", ["alice", "bob"])
    (lone,) = await store.append_messages([following(msg("r", "alice", "t2"), "t1")])
    assert (lone.behind, lone.seq, lone.duplicate, lone.stale) == (True, 0, False, False)
    assert await store.messages("r") == []
    first, second = await store.append_messages(
        [msg("r", "alice", "t1"), following(msg("r", "alice", "t2"), "t1")]
    )
    assert (first.seq, second.seq, second.behind) == (1, 2, False)
    (third,) = await store.append_messages([following(msg("r", "alice", "t3"), "t2")])
    assert (third.seq, third.behind) == (3, False)
    # Whose message, and in which room, counts: bob's t1 and alice's t1 in r2 do not.
    await make_room(store, "r2", ["alice", "bob"])
    (bobs,) = await store.append_messages([following(msg("r", "bob", "b2"), "t1")])
    (other_room,) = await store.append_messages([following(msg("r2", "alice", "u2"), "t1")])
    assert bobs.behind and other_room.behind
    # A predecessor refused in the same group (stale) leaves its follower behind.
    late, follower = await store.append_messages(
        [expecting(msg("r", "alice", "t4"), (9, 9)), following(msg("r", "alice", "t5"), "t4")]
    )
    assert late.stale and follower.behind
    # A resend of a stored message is its duplicate ack, whatever it names.
    (dup,) = await store.append_messages([following(msg("r", "alice", "t3"), "gone")])
    assert (dup.duplicate, dup.seq, dup.behind) == (True, 3, False)
    assert [m.txn for m in await store.messages("r")] == ["t1", "t2", "t3"]


async def test_message_after_one_stored_long_ago(store: Store) -> None:
    """The predecessor is found in the store, not only among recent keys."""
    await make_room(store, "r", ["alice"])
    await store.append_messages([msg("r", "alice", "old")])
    await store.append_messages([msg("r", "alice", f"x{i}") for i in range(300)])
    (late,) = await store.append_messages([following(msg("r", "alice", "new"), "old")])
    assert (late.seq, late.behind) == (302, False)


def expecting(m: NewMessage, expect: tuple[int, int]) -> NewMessage:
    return NewMessage(m.room, m.sender, m.txn, m.envelope, expect=expect)


# --- members and rooms_of ------------------------------------------------------
async def test_members_add_remove_promote(store: Store) -> None:
    await make_room(store, "r1")
    await store.append_op("r1", op(1), [add("bob"), add("carol")])
    assert await store.members("r1") == {"alice": True, "bob": False, "carol": False}
    await store.append_op("r1", op(2), [add("bob", admin=True)])  # promote
    assert await store.members("r1") == {"alice": True, "bob": True, "carol": False}
    await store.append_op("r1", op(3), [add("alice", admin=False)])  # demote
    await store.append_op("r1", op(4), [remove("carol")])
    assert await store.members("r1") == {"alice": False, "bob": True}
    await store.append_op("r1", op(5), [remove("nobody")])  # removing a non-member: no-op
    assert await store.members("r1") == {"alice": False, "bob": True}
    await store.append_op("r1", op(6), [remove("alice"), remove("bob")])
    assert await store.members("r1") == {}


async def test_rooms_of(store: Store) -> None:
    await make_room(store, "r2", ["alice", "bob"])
    await make_room(store, "r1", ["alice"])
    await make_room(store, "r3", ["bob"])
    assert [r.room for r in await store.rooms_of("alice")] == ["r1", "r2"]
    assert [r.room for r in await store.rooms_of("bob")] == ["r2", "r3"]
    assert await store.rooms_of("carol") == []

    await store.append_op("r1", op(1), [add("carol")])
    await store.append_op("r2", op(1), [remove("alice"), add("carol", admin=True)])
    assert [r.room for r in await store.rooms_of("alice")] == ["r1"]
    assert [r.room for r in await store.rooms_of("carol")] == ["r1", "r2"]

    # The records are the rooms' current ones.
    await store.append_messages([msg("r1", "alice", "t1"), msg("r1", "alice", "t2")])
    rooms = await store.rooms_of("carol")
    assert rooms == [await store.room("r1"), await store.room("r2")]
    assert rooms[0].head == 2


# --- key packets -----------------------------------------------------------------
async def test_key_packets_filtering(store: Store) -> None:
    await make_room(store, "r1", ["alice", "bob"])
    await make_room(store, "r2", ["alice", "bob"])
    for epoch in (1, 2, 3):
        members = ["alice", "bob"] if epoch != 2 else ["alice"]
        await store.add_epoch(
            "r1",
            EpochRecord(epoch=epoch, after_op=0, creator="alice"),
            [packet("r1", epoch, u) for u in members],
        )
    assert await store.key_packets("r1", "bob") == [
        packet("r1", 0, "bob"),
        packet("r1", 1, "bob"),
        packet("r1", 3, "bob"),
    ]
    assert await store.key_packets("r1", "bob", min_epoch=1) == [
        packet("r1", 1, "bob"),
        packet("r1", 3, "bob"),
    ]
    assert await store.key_packets("r1", "alice", min_epoch=2) == [
        packet("r1", 2, "alice"),
        packet("r1", 3, "alice"),
    ]
    assert await store.key_packets("r1", "alice", min_epoch=4) == []
    assert await store.key_packets("r1", "carol") == []
    assert await store.key_packets("r2", "bob") == [packet("r2", 0, "bob")]


async def test_put_packets_first_wins_without_changing_the_room(store: Store) -> None:
    before = await make_room(store, "r1", ["alice", "carol"])
    # More packets than one etcd transaction carries (max_txn_ops 128).
    wanted = [packet("r1", epoch, "bob") for epoch in range(300)]
    given = [
        *wanted[:150],
        packet("r1", 7, "bob", "mallory"),  # the same key twice in one call: the first wins
        packet("r1", 0, "alice", "mallory"),  # stored by create_room: kept
        *wanted[150:],
    ]
    assert await store.put_packets("r1", given) == 300  # how many were stored
    assert await store.key_packets("r1", "bob") == wanted
    assert await store.key_packets("r1", "alice") == [packet("r1", 0, "alice")]
    # Later calls add only what has no packet yet.
    new = [packet("r1", 3, "bob", "mallory"), packet("r1", 300, "bob", "carol")]
    assert await store.put_packets("r1", new) == 1
    assert await store.key_packets("r1", "bob", min_epoch=299) == [
        packet("r1", 299, "bob"),
        packet("r1", 300, "bob", "carol"),
    ]
    assert (await store.key_packets("r1", "bob"))[3] == packet("r1", 3, "bob")
    assert await store.put_packets("r1", []) == 0
    assert await store.put_packets("r1", wanted[:5]) == 0  # all held: nothing stored
    assert await store.room("r1") == before  # no op, no epoch, no head moved
    assert await store.ops("r1") == [op(0)]


async def test_put_packets_checks_the_room(store: Store) -> None:
    await make_room(store, "r1")
    with pytest.raises(NoSuchRoom):
        await store.put_packets("nope", [packet("nope", 0, "bob")])
    with pytest.raises(ValueError):
        await store.put_packets("r1", [packet("r2", 0, "bob")])
    assert await store.key_packets("r1", "bob") == []


# --- messages ------------------------------------------------------------------
async def test_append_messages_basic(store: Store) -> None:
    await make_room(store, "r1")
    await make_room(store, "r2")
    assert await store.append_messages([]) == []
    batch = [msg("r1", "alice", "a"), msg("r2", "alice", "b"), msg("r1", "alice", "c")]
    acks = await store.append_messages(batch)
    assert [(a.room, a.txn, a.seq, a.duplicate) for a in acks] == [
        ("r1", "a", 1, False),
        ("r2", "b", 1, False),
        ("r1", "c", 2, False),
    ]
    assert all(isinstance(a, Committed) and a.ts_ms > 0 for a in acks)
    assert acks[0].ts_ms <= acks[2].ts_ms
    more = await store.append_messages([msg("r1", "bob", "a")])  # same txn, other sender
    assert (more[0].seq, more[0].duplicate) == (3, False)
    assert more[0].ts_ms >= acks[2].ts_ms
    room1 = await store.room("r1")
    assert room1 is not None and room1.head == 3
    rows = await store.messages("r1")
    assert rows == [
        StoredRow("r1", 1, acks[0].ts_ms, "alice", "a", b"env:r1:a"),
        StoredRow("r1", 2, acks[2].ts_ms, "alice", "c", b"env:r1:c"),
        StoredRow("r1", 3, more[0].ts_ms, "bob", "a", b"env:r1:a"),
    ]


async def test_append_messages_concurrent_seqs_are_contiguous(store: Store) -> None:
    """20 tasks x 50 messages per room, two rooms: seqs are exactly 1..1000 per room."""
    rooms = ("r1", "r2")
    for room in rooms:
        await make_room(store, room)
    tasks, per_task = 20, 50

    async def writer(w: int) -> list[Committed]:
        acks: list[Committed] = []
        i = 0
        while i < per_task:
            size = 1 + (w + i) % 3  # batches of 1..3 messages per room
            batch = [
                msg(room, f"u{w}", f"{w}-{j}")
                for j in range(i, min(i + size, per_task))
                for room in rooms
            ]
            acks += await store.append_messages(batch)
            i += size
        return acks

    results = await asyncio.gather(*(writer(w) for w in range(tasks)))
    for room in rooms:
        seqs = sorted(a.seq for acks in results for a in acks if a.room == room)
        assert seqs == list(range(1, tasks * per_task + 1))
        rows = await store.messages(room, limit=10_000)
        assert [r.seq for r in rows] == seqs
        timestamps = [r.ts_ms for r in rows]
        assert timestamps == sorted(timestamps)  # non-decreasing in seq order
        record = await store.room(room)
        assert record is not None and record.head == tasks * per_task
        stored = {(r.sender, r.txn): r.seq for r in rows}
        for acks in results:
            mine = [a for a in acks if a.room == room]
            assert not any(a.duplicate for a in mine)
            assert all(stored[(f"u{a.txn.split('-')[0]}", a.txn)] == a.seq for a in mine)
            # One caller's messages keep their order.
            assert [a.seq for a in mine] == sorted(a.seq for a in mine)


async def test_duplicate_across_calls(store: Store) -> None:
    await make_room(store, "r1")
    first = await store.append_messages([msg("r1", "alice", "t1"), msg("r1", "alice", "t2")])
    again = await store.append_messages(
        [
            NewMessage(room="r1", sender="alice", txn="t1", envelope=b"a different envelope"),
            msg("r1", "alice", "t3"),
        ]
    )
    assert again[0] == Committed("r1", "t1", first[0].seq, first[0].ts_ms, duplicate=True)
    assert (again[1].seq, again[1].duplicate) == (3, False)
    rows = await store.messages("r1")
    assert [(r.seq, r.txn, r.envelope) for r in rows] == [
        (1, "t1", b"env:r1:t1"),  # the original is kept
        (2, "t2", b"env:r1:t2"),
        (3, "t3", b"env:r1:t3"),
    ]


async def test_duplicate_inside_one_batch(store: Store) -> None:
    await make_room(store, "r1")
    acks = await store.append_messages(
        [msg("r1", "alice", "t1"), msg("r1", "alice", "t2"), msg("r1", "alice", "t1")]
    )
    assert [(a.txn, a.seq, a.duplicate) for a in acks] == [
        ("t1", 1, False),
        ("t2", 2, False),
        ("t1", 1, True),
    ]
    assert acks[2].ts_ms == acks[0].ts_ms
    assert [r.seq for r in await store.messages("r1")] == [1, 2]
    record = await store.room("r1")
    assert record is not None and record.head == 2


async def test_duplicates_from_concurrent_callers(store: Store) -> None:
    await make_room(store, "r1")
    results = await asyncio.gather(
        *(store.append_messages([msg("r1", "alice", "same")]) for _ in range(10))
    )
    acks = [a for r in results for a in r]
    assert len({(a.seq, a.ts_ms) for a in acks}) == 1
    assert sum(not a.duplicate for a in acks) == 1
    assert [r.seq for r in await store.messages("r1")] == [1]


async def test_append_messages_no_such_room_stores_nothing(store: Store) -> None:
    await make_room(store, "r1")
    await store.append_messages([msg("r1", "alice", "t0")])
    with pytest.raises(NoSuchRoom):
        await store.append_messages([msg("r1", "alice", "t1"), msg("nope", "alice", "t2")])
    assert [r.txn for r in await store.messages("r1")] == ["t0"]
    record = await store.room("r1")
    assert record is not None and record.head == 1
    # The txn of the failed batch was not consumed.
    acks = await store.append_messages([msg("r1", "alice", "t1")])
    assert (acks[0].seq, acks[0].duplicate) == (2, False)


async def test_no_such_room_leaves_other_callers_intact(store: Store) -> None:
    await make_room(store, "r1")
    good = [[msg("r1", f"u{i}", f"t{j}") for j in range(3)] for i in range(10)]
    bad = [msg("r1", "evil", "x"), msg("nope", "evil", "y")]
    calls = [store.append_messages(b) for b in good[:5]]
    calls.append(store.append_messages(bad))
    calls += [store.append_messages(b) for b in good[5:]]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[5], NoSuchRoom)
    oks = [r for i, r in enumerate(results) if i != 5]
    assert all(isinstance(r, list) and len(r) == 3 for r in oks)
    rows = await store.messages("r1", limit=1000)
    assert [r.seq for r in rows] == list(range(1, 31))
    assert "evil" not in {r.sender for r in rows}


async def test_messages_paging(store: Store) -> None:
    await make_room(store, "r1")
    await make_room(store, "other")
    n = 12
    for i in range(n):
        await store.append_messages([msg("r1", "alice", f"t{i}"), msg("other", "bob", f"o{i}")])
    rows = await store.messages("r1", limit=1000)
    assert [r.seq for r in rows] == list(range(1, n + 1))
    assert {r.room for r in rows} == {"r1"}
    seqs = list(range(1, n + 1))

    def expected(after: int | None, before: int | None, limit: int) -> list[int]:
        if limit <= 0:
            return []
        if after is not None:
            return [s for s in seqs if s > after and (before is None or s < before)][:limit]
        if before is not None:
            return [s for s in seqs if s < before][-limit:]
        return seqs[-limit:]

    bounds: list[int | None] = [None, 0, 1, 5, 11, 12, 13, 20]
    for after in bounds:
        for before in bounds:
            for limit in (1, 3, 12, 100):
                got = await store.messages("r1", after=after, before=before, limit=limit)
                assert [r.seq for r in got] == expected(after, before, limit), (
                    after,
                    before,
                    limit,
                )
    # The default limit is 100.
    await store.append_messages([msg("r1", "alice", f"more{i}") for i in range(150)])
    last = await store.messages("r1")
    assert [r.seq for r in last] == list(range(63, 163))
    first = await store.messages("r1", after=0)
    assert [r.seq for r in first] == list(range(1, 101))


# --- durability --------------------------------------------------------------------
async def test_everything_survives_reopen(store_factory: StoreFactory) -> None:
    s = store_factory()
    await s.open()
    await s.register("alice", b"A-sign", b"A-tr1")
    await s.register("alice", b"A-sign", b"A-tr2")
    await s.register("bob", b"B-sign", b"B-tr")
    await make_room(s, "r1", ["alice", "bob"])
    await make_room(s, "r2", ["bob"], admins=["bob"])
    await s.append_op(
        "r1",
        op(1),
        [remove("bob"), add("carol")],
        EpochRecord(epoch=1, after_op=1, creator="alice"),
        [packet("r1", 1, "alice"), packet("r1", 1, "carol")],
    )
    await s.add_epoch(
        "r2", EpochRecord(epoch=1, after_op=0, creator="bob"), [packet("r2", 1, "bob")]
    )
    acks = await asyncio.gather(
        *(s.append_messages([msg(f"r{1 + i % 2}", "alice", f"t{i}")]) for i in range(40))
    )
    users = ["alice", "bob", "carol"]
    before = (
        await s.users(users),
        [await s.user_for_transport(k) for k in (b"A-tr1", b"A-tr2", b"B-tr")],
        await snapshot(s, "r1", users),
        await snapshot(s, "r2", users),
    )
    await s.close()

    reopened = store_factory()
    await reopened.open()
    try:
        after = (
            await reopened.users(users),
            [await reopened.user_for_transport(k) for k in (b"A-tr1", b"A-tr2", b"B-tr")],
            await snapshot(reopened, "r1", users),
            await snapshot(reopened, "r2", users),
        )
        assert after == before
        rows = await reopened.messages("r1", limit=1000) + await reopened.messages("r2", limit=1000)
        assert {(a.room, a.seq, a.ts_ms) for r in acks for a in r} == {
            (r.room, r.seq, r.ts_ms) for r in rows
        }
        # It keeps going from where it was.
        t0 = next(a for r in acks for a in r if a.txn == "t0")
        more = await reopened.append_messages([msg("r1", "alice", "t0"), msg("r1", "bob", "n")])
        assert [(a.seq, a.ts_ms, a.duplicate) for a in more[:1]] == [(t0.seq, t0.ts_ms, True)]
        assert (more[1].seq, more[1].duplicate) == (21, False)
        with pytest.raises(RoomExists):
            await make_room(reopened, "r1")
        with pytest.raises(NameTaken):
            await reopened.register("alice", b"X", b"X-tr")
    finally:
        await reopened.close()


async def test_a_page_read_stops_past_its_byte_budget(store: Store) -> None:
    """With `max_bytes`, a read stops at the first row that takes the page
    past it (that row included): a node that cuts a page at 512 KiB read
    all 500 rows of up to 64 KiB first, 32 MB for 8 kept."""
    await make_room(store, "r")
    for i in range(40):
        m = NewMessage("r", "alice", f"t{i:03d}", bytes([i]) * 1_000)
        await store.append_messages([m])
    seqs = [r.seq for r in await store.messages("r", after=0, limit=40, max_bytes=5_500)]
    assert seqs == [1, 2, 3, 4, 5, 6]
    seqs = [r.seq for r in await store.messages("r", limit=40, max_bytes=5_500)]
    assert seqs == [35, 36, 37, 38, 39, 40]
    seqs = [r.seq for r in await store.messages("r", before=20, limit=40, max_bytes=2_500)]
    assert seqs == [17, 18, 19]
    seqs = [r.seq for r in await store.messages("r", after=30, before=35, max_bytes=1)]
    assert seqs == [31]
    assert len(await store.messages("r", after=0, limit=40)) == 40


async def test_member_counts(store: Store) -> None:
    await make_room(store, "r1", ["alice", "bob"])
    await make_room(store, "r2")
    assert await store.member_counts(["r1", "r2", "nope"]) == {"r1": 2, "r2": 1}
    assert await store.member_counts([]) == {}


async def test_room_counts(store: Store) -> None:
    await make_room(store, "r1", ["alice", "bob"])
    await make_room(store, "r2")
    assert await store.room_counts(["alice", "bob", "nobody"]) == {"alice": 2, "bob": 1}
    assert await store.room_counts([]) == {}
