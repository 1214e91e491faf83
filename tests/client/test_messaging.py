"""The engine against a real server process with CURVE: the guarantees of
core messaging, end to end."""

from __future__ import annotations

import sqlite3

from curvechat.client import events as ev
from curvechat.client.errors import ServerRefused
from curvechat.client.state import ConnState
from curvechat.crypto.envelope import open_message
from curvechat.crypto.errors import CryptoError
from curvechat.protocol import decode_envelope
from curvechat.protocol import messages as m

from support.clients import ClientFactory
from support.servers import ServerProcess


def texts(client, room):  # type: ignore[no-untyped-def]
    return [msg.text for msg in client.cache.messages(room, limit=10_000)]


async def test_group_room_both_ways(server: ServerProcess, clients: ClientFactory) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("general", ["bob"])
    ack = await alice.send("general", "hello bob")
    assert isinstance(ack, m.SendAck) and ack.seq == 1
    await bob_events.until(lambda: texts(bob, "general") == ["hello bob"])
    await bob.send("general", "hi alice")
    assert [(x.sender, x.text, x.seq) for x in bob.cache.messages("general")] == [
        ("alice", "hello bob", 1),
        ("bob", "hi alice", 2),
    ]
    assert sorted(bob.members("general")) == ["alice", "bob"]
    assert bob.members("general") == {"alice": True, "bob": False}


async def test_direct_messages(server: ServerProcess, clients: ClientFactory) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    room = await alice.open_dm("bob")
    assert room == "@alice:bob"
    await alice.send(room, "psst")
    await bob_events.until(lambda: texts(bob, room) == ["psst"])
    assert await bob.open_dm("alice") == room
    await bob.send(room, "hey")
    assert texts(bob, room) == ["psst", "hey"]
    carol, _ = await clients.make("carol", server.connect)
    try:
        await alice.invite(room, "carol")
    except Exception as exc:
        assert "carol" in str(exc) or "forbidden" in str(exc).lower()
    else:
        raise AssertionError("a third member was added to a DM")
    assert "carol" not in alice.members(room)
    assert carol.cache.room(room) is None


async def test_late_joiner_reads_all_history(server: ServerProcess, clients: ClientFactory) -> None:
    alice, _ = await clients.make("alice", server.connect)
    await clients.make("bob", server.connect)
    await alice.create_room("proj", ["bob"])
    sent = [f"early {i}" for i in range(30)]
    for text in sent[:15]:
        await alice.send("proj", text)
    await alice.remove("proj", "bob")  # a rotation: history now spans two epochs
    for text in sent[15:]:
        await alice.send("proj", text)
    carol, _ = await clients.make("carol", server.connect)
    await alice.invite("proj", "carol")
    await carol.wait_ready(10)
    await carol.history("proj", limit=100)
    rows = carol.cache.messages("proj", limit=100)
    assert [r.text for r in rows] == sent
    assert all(r.error is None for r in rows)


async def test_removed_member_cannot_read_later_messages(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await clients.make("carol", server.connect)
    await alice.create_room("team", ["bob", "carol"])
    await alice.send("team", "before removal")
    await bob_events.until(lambda: texts(bob, "team") == ["before removal"])
    await alice.remove("team", "bob")
    after = [f"secret {i}" for i in range(20)]
    for text in after:
        await alice.send("team", text)
    # bob can no longer fetch anything...
    try:
        await bob.conn.request(m.History(room="team", after=0))
    except ServerRefused as exc:
        assert exc.code == "not_member"
    else:
        raise AssertionError("a removed member could read the room")
    # ...and even with the server's whole store, none of his keys opens them.
    db = sqlite3.connect(server.data / "curvechat.db")
    rows = db.execute(
        "SELECT seq, envelope FROM messages WHERE room='team' ORDER BY seq"
    ).fetchall()
    db.close()
    bob_keys = [k for _, k in bob.cache.epoch_keys("team").values()]
    assert bob_keys, "bob held the room's first key"
    later = [decode_envelope(env) for seq, env in rows if seq > 1]
    assert len(later) == len(after)
    opened = 0
    for env in later:
        for key in bob_keys:
            try:
                open_message(env, key=key, sender_sign_pub=alice.identity.sign_pub)
                opened += 1
            except CryptoError:
                pass
    assert opened == 0
    assert bob.cache.room("team") is not None and bob.cache.room("team").left  # type: ignore[union-attr]


async def test_resend_is_stored_once(server: ServerProcess, clients: ClientFactory) -> None:
    from curvechat.crypto.envelope import Plaintext, seal_message

    alice, _ = await clients.make("alice", server.connect)
    await alice.create_room("dup", [])
    current = await alice.outbox.current_epoch("dup")
    epoch, key = current.epoch, current.key
    env = seal_message(
        alice.identity,
        room="dup",
        epoch=epoch,
        key=key,
        txn="txn-resend-0001",
        plaintext=Plaintext(text="once", ts=1),
    )
    first = await alice.conn.request(m.Send(envelope=env))
    second = await alice.conn.request(m.Send(envelope=env))
    assert isinstance(first, m.SendAck) and isinstance(second, m.SendAck)
    assert (second.seq, second.ts, second.duplicate) == (first.seq, first.ts, True)
    reply = await alice.conn.request(m.History(room="dup", after=0))
    assert isinstance(reply, m.Messages) and [i.seq for i in reply.items] == [first.seq]


async def test_offline_client_catches_up_exactly(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("flood", ["bob"])
    await alice.send("flood", "before")
    await bob_events.until(lambda: texts(bob, "flood") == ["before"])
    await clients.close(bob)
    sent = [f"m{i:03d}" for i in range(500)]
    txns = [await alice.send("flood", t, wait=False) for t in sent]
    for txn in txns:
        await alice.wait_ack(str(txn), 30)
    bob, events = await clients.make("bob", server.connect)
    rows = bob.cache.messages("flood", limit=1000)
    assert [r.text for r in rows] == ["before", *sent]
    assert [r.seq for r in rows] == list(range(1, 502))
    caught = events.of(ev.CaughtUp)
    assert caught and caught[0].messages == 500


async def test_outbox_survives_a_server_outage(tmp_path, clients: ClientFactory) -> None:  # type: ignore[no-untyped-def]
    server = ServerProcess(tmp_path / "node").start()
    try:
        alice, events = await clients.make("alice", server.connect)
        await alice.create_room("out", [])
        server.kill()
        await events.until(lambda: alice.status.state is ConnState.RECONNECTING)
        txn = await alice.send("out", "written while offline", wait=False)
        assert [i.text for i in alice.pending()] == ["written while offline"]
        server.start()
        ack = await alice.wait_ack(str(txn), 30)
        assert ack.seq == 1
        assert alice.pending() == []
        assert any(
            isinstance(e, ev.StatusChanged) and e.status.state is ConnState.LIVE
            for e in events.events[1:]
        )
        assert alice.conn.reconnects >= 1
    finally:
        server.kill()


async def test_gap_in_pushes_is_filled(server: ServerProcess, clients: ClientFactory) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("gaps", ["bob"])
    await alice.send("gaps", "one")
    await bob_events.until(lambda: texts(bob, "gaps") == ["one"])
    # Pushes 2 and 3 never reach bob (as if dropped): only 4 arrives.
    real = bob._on_push
    bob.conn._on_push = lambda msg: None
    await alice.send("gaps", "two")
    await alice.send("gaps", "three")
    bob.conn._on_push = real
    await alice.send("gaps", "four")
    await bob_events.until(lambda: texts(bob, "gaps") == ["one", "two", "three", "four"])


async def test_membership_rules_enforced_by_server(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await clients.make("carol", server.connect)
    await alice.create_room("ruled", ["bob"])
    await bob_events.until(lambda: "bob" in bob.members("ruled"))
    try:
        await bob.invite("ruled", "carol")
    except ServerRefused as exc:
        assert exc.code == "forbidden"
    except Exception as exc:  # the client refuses before the server does
        assert "admin" in str(exc).lower() or "forbidden" in str(exc).lower()
    else:
        raise AssertionError("a non-admin added a member")
    await alice.promote("ruled", "bob")
    await bob.invite("ruled", "carol")
    assert sorted(bob.members("ruled")) == ["alice", "bob", "carol"]
    try:
        await alice.create_room("ruled", [])
    except ServerRefused as exc:
        assert exc.code == "room_exists"
    else:
        raise AssertionError("created a room twice")


async def test_member_added_by_someone_removed_later_reads_old_epochs(
    server: ServerProcess, clients: ClientFactory
) -> None:
    """Bob (promoted after he joined) adds carol and wraps the epochs from
    before his time for her; then bob is removed. Carol on a new device must
    still accept bob's packets: he added her, so he was the one to send them."""
    alice, _ = await clients.make("alice", server.connect)
    bob, bob_events = await clients.make("bob", server.connect)
    await clients.make("carol", server.connect)
    await alice.create_room("hist", [])
    await alice.send("hist", "before bob")
    await alice.invite("hist", "bob")
    await alice.promote("hist", "bob")
    await bob_events.until(lambda: texts(bob, "hist") == ["before bob"])
    await bob_events.until(lambda: bob.members("hist").get("bob") is True)
    await bob.invite("hist", "carol")
    await alice.remove("hist", "bob")
    await alice.send("hist", "after bob")
    carol2, events = await clients.make("carol", server.connect, home_name="carol-2")
    await events.until(lambda: texts(carol2, "hist") == ["before bob", "after bob"])
    assert not [p for p in events.of(ev.Problem) if "could not have made it" in p.message]


async def test_catch_up_larger_than_one_frame(
    server: ServerProcess, clients: ClientFactory
) -> None:
    """300 messages of 2,000 characters are ~700 KB of envelopes: more than a
    frame may carry, so sync must page by size and the client must follow."""
    alice, _ = await clients.make("alice", server.connect)
    bob, _ = await clients.make("bob", server.connect)
    await alice.create_room("long", ["bob"])
    await bob.history("long")
    await clients.close(bob)
    sent = [f"{i:04d}" + "x" * 1996 for i in range(300)]
    txns = [await alice.send("long", t, wait=False) for t in sent]
    for txn in txns:
        await alice.wait_ack(str(txn), 60)
    bob, events = await clients.make("bob", server.connect)
    assert [r.text for r in bob.cache.messages("long", limit=1000)] == sent
    assert events.of(ev.CaughtUp)[0].messages == 300


async def test_sync_across_more_rooms_than_one_request_names(
    server: ServerProcess, clients: ClientFactory
) -> None:
    from curvechat.protocol.limits import MAX_BATCH

    alice, _ = await clients.make("alice", server.connect)
    bob, _ = await clients.make("bob", server.connect)
    rooms = [f"r{i:04d}" for i in range(MAX_BATCH + 20)]
    for room in rooms:
        await alice.create_room(room, ["bob"])
    await clients.close(bob)
    for room in (rooms[0], rooms[MAX_BATCH - 1], rooms[-1]):
        await alice.send(room, f"hello {room}")
    bob, events = await clients.make("bob", server.connect)
    assert len(bob.rooms()) == len(rooms)
    assert events.of(ev.CaughtUp)[0].messages == 3
    assert texts(bob, rooms[-1]) == [f"hello {rooms[-1]}"]


async def test_text_that_is_not_unicode_is_refused_before_the_outbox(
    server: ServerProcess, clients: ClientFactory
) -> None:
    from curvechat.protocol.errors import LocalProtocolError

    alice, _ = await clients.make("alice", server.connect)
    await alice.create_room("u", [])
    try:
        await alice.send("u", "half a pair \ud800")
    except LocalProtocolError as exc:
        assert exc.code == "bad_frame"
    else:
        raise AssertionError("a lone surrogate was accepted")
    assert alice.pending() == []
    assert (await alice.send("u", "fine")).seq == 1  # type: ignore[union-attr]
