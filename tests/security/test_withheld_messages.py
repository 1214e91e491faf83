"""A server that withholds some of a room's messages for good and serves
the ones after them (or a node that cannot read them from its store): the
client is ready, shows the rest, says what was left out, and takes the
messages in their place once they are handed out."""

from __future__ import annotations

import sqlite3
import urllib.request

from curvechat.client import events as ev
from curvechat.client.engine import ChatClient

from .conftest import EvilServer
from support.clients import ClientFactory, Recorder
from support.servers import ServerProcess


def seqs(client: ChatClient, room: str) -> list[int]:
    return [r.seq for r in client.cache.messages(room, limit=10_000) if r.error is None]


def told(events: Recorder) -> list[str]:
    return [e.message for e in events.of(ev.Problem) if e.room == "r"]


async def sent_while_bob_is_away(
    evil: EvilServer, clients: ClientFactory, count: int
) -> ChatClient:
    """alice and bob in room "r"; alice sends `count` messages (acked) while
    bob's client is closed. Returns alice's client."""
    alice, alice_ev = await clients.make("alice", evil.connect)
    bob, _ = await clients.make("bob", evil.connect)
    await alice.create_room("r", ["bob"])
    await bob.history("r")
    await clients.close(bob)
    txns = alice.queue_many("r", [f"m{i}" for i in range(count)])
    await alice_ev.until(lambda: len(alice_ev.of(ev.SendAcked)) == len(txns), timeout=60)
    return alice


async def both_read_one(
    evil: EvilServer, clients: ClientFactory
) -> tuple[ChatClient, ChatClient, Recorder]:
    """alice and bob in room "r", bob's client open and holding alice's
    first message: (alice, bob, bob's events)."""
    alice, _ = await clients.make("alice", evil.connect)
    bob, bob_ev = await clients.make("bob", evil.connect)
    await alice.create_room("r", ["bob"])
    await bob.history("r")
    await alice.send("r", "one")
    await bob_ev.until(lambda: seqs(bob, "r") == [1])
    return alice, bob, bob_ev


async def test_a_sync_past_withheld_messages_is_ready_and_takes_them_later(
    evil: EvilServer, clients: ClientFactory
) -> None:
    # More than a sync page (500) past the hole: the sync used to ask for
    # the same page forever.
    await sent_while_bob_is_away(evil, clients, 1200)
    evil.attack(hole={"room": "r", "seqs": [3, 700, 701]})
    bob, bob_ev = await clients.make("bob", evil.connect)  # ready, or it fails here
    room = bob.cache.room("r")
    assert room is not None and room.cursor == room.head == 1200
    assert seqs(bob, "r") == [s for s in range(1, 1201) if s not in (3, 700, 701)]
    assert told(bob_ev) == [
        "the server did not hand out messages of this room (seq 3, 700-701) when asked:"
        " a server that hides messages, or one that cannot read them;"
        " asked for again at each connection"
    ]
    assert bob.cache.withheld("r", 10) == [(3, 3), (700, 701)]

    # Asked for again at the next connection; handed out, each is taken in
    # its place (verified as any other) and nothing is told.
    evil.attack()
    before = len(bob_ev.of(ev.CaughtUp))
    bob.conn.drop("test: reconnect")
    await bob_ev.until(lambda: len(bob_ev.of(ev.CaughtUp)) > before)
    assert seqs(bob, "r") == list(range(1, 1201))
    came = [e.message for e in bob_ev.of(ev.MessageReceived) if e.message.seq in (3, 700, 701)]
    assert [(c.seq, c.text) for c in came] == [(3, "m2"), (700, "m699"), (701, "m700")]
    assert bob.cache.withheld("r", 10) == []
    assert len(told(bob_ev)) == 1


async def test_a_withheld_push_is_filled_once_then_passed_over(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    bob, bob_ev = await clients.make("bob", evil.connect)
    await alice.create_room("r", ["bob"])
    await bob.history("r")
    await alice.send("r", "one")
    evil.attack(hole={"room": "r", "seqs": [2]})
    for text in ("two", "three", "four"):
        await alice.send("r", text)
    await bob_ev.until(lambda: seqs(bob, "r") == [1, 3, 4])
    room = bob.cache.room("r")
    assert room is not None and room.cursor == 4
    assert len(told(bob_ev)) == 1 and "(seq 2)" in told(bob_ev)[0]
    assert bob.cache.withheld("r", 10) == [(2, 2)]


async def test_a_push_at_a_made_up_seq_neither_floods_the_server_nor_moves_the_cursor(
    evil: EvilServer, clients: ClientFactory
) -> None:
    """A push far ahead of the room: the gap fill asks once (a short page
    says the server will not give the rest), records nothing that wide, and
    the messages that come after it in their true places are taken."""
    alice, bob, bob_ev = await both_read_one(evil, clients)
    evil.attack(shift={"room": "r", "from": 2, "by": 10**9})
    await alice.send("r", "two")
    await bob_ev.until(lambda: 10**9 + 2 in seqs(bob, "r"))
    evil.attack()
    await alice.send("r", "three")
    await bob_ev.until(lambda: 3 in seqs(bob, "r"))  # the gap fill brought 2, then 3
    room = bob.cache.room("r")
    assert room is not None and room.cursor == 3
    assert bob.cache.withheld("r", 10) == []
    assert told(bob_ev) == ["message 1000000002 was a replay of 2"]  # nothing withheld
    texts = {r.seq: r.text for r in bob.cache.messages("r", limit=100)}
    assert [texts[s] for s in (1, 2, 3)] == ["one", "two", "three"]


async def test_a_sync_past_a_gap_too_wide_to_record_is_ready(
    evil: EvilServer, clients: ClientFactory
) -> None:
    """Pages that jump far ahead (more than a page past the jump): the sync
    asks once more from where it is, then stops, ready, its cursor below the
    gap; it asked for the same page forever before."""
    await sent_while_bob_is_away(evil, clients, 700)
    evil.attack(shift={"room": "r", "from": 3, "by": 10**6})
    bob, bob_ev = await clients.make("bob", evil.connect)  # ready, or it fails here
    room = bob.cache.room("r")
    assert room is not None and room.cursor == 2
    assert bob.cache.withheld("r", 10) == [] and told(bob_ev) == []


async def test_a_message_the_node_cannot_read_from_its_store_is_left_out_not_every_page(
    server: ServerProcess, clients: ClientFactory
) -> None:
    """A damaged envelope in the node's store failed every page holding it,
    so the room's history stopped there for everyone who had not read it."""
    alice, _ = await clients.make("alice", server.connect)
    bob, _ = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await bob.history("r")
    await clients.close(bob)
    for i in range(5):
        await alice.send("r", f"m{i}")
    db = sqlite3.connect(server.data / "curvechat.db")
    with db:
        db.execute("UPDATE messages SET envelope = x'c1' WHERE room = 'r' AND seq = 3")
    db.close()
    bob, bob_ev = await clients.make("bob", server.connect)
    assert seqs(bob, "r") == [1, 2, 4, 5]
    assert len(told(bob_ev)) == 1 and "(seq 3)" in told(bob_ev)[0]
    url = f"http://127.0.0.1:{server.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        metrics = r.read().decode()
    counted = [ln for ln in metrics.splitlines() if ln.startswith("curvechat_stored_undecodable")]
    assert counted and float(counted[-1].split()[-1]) >= 1
    assert "message 3 of 'r' in the store cannot be read" in server.log_path.read_text()


async def reconnect(client: ChatClient, events: Recorder) -> None:
    before = len(events.of(ev.CaughtUp))
    client.conn.drop("test: reconnect")
    await events.until(lambda: len(events.of(ev.CaughtUp)) > before, timeout=30)


def texts_of(client: ChatClient, room: str) -> set[str | None]:
    return {r.text for r in client.cache.messages(room, limit=100_000) if r.error is None}


async def test_pages_that_jump_far_ahead_move_the_cursor_a_bounded_way(
    evil: EvilServer, clients: ClientFactory
) -> None:
    """One sync reply whose 70 genuine messages are named 10,001 seqs apart:
    one gap of the room's budget (10,000 seqs) is recorded, not 70, and once
    the server is honest everything comes: the messages asked again at the
    next connection, the next one as it is pushed (at a seq below the
    cursor, in the recorded gap). Recording every gap moved the cursor
    700,070 past the room's head, and every later message was dropped."""
    alice = await sent_while_bob_is_away(evil, clients, 70)
    evil.attack(spread={"room": "r", "from": 2, "gap": 10_001})
    bob, bob_ev = await clients.make("bob", evil.connect)
    room = bob.cache.room("r")
    assert room is not None and room.cursor == 10_002
    assert bob.cache.withheld_count("r") == 10_000
    evil.attack()
    await reconnect(bob, bob_ev)
    await alice.send("r", "after the attack")
    await bob_ev.until(lambda: "after the attack" in texts_of(bob, "r"))
    assert {f"m{i}" for i in range(70)} <= texts_of(bob, "r")


async def test_a_push_far_ahead_does_not_make_the_next_pushes_pass_unseen(
    evil: EvilServer, clients: ClientFactory
) -> None:
    """One push 10,000 seqs ahead of the room: the gap is recorded and the
    cursor moves past it; the messages pushed next, at seqs in that gap,
    are taken at once, not dropped as already stored."""
    alice, bob, bob_ev = await both_read_one(evil, clients)
    evil.attack(spread={"room": "r", "from": 2, "gap": 10_001})
    await alice.send("r", "two")
    await bob_ev.until(lambda: 10_002 in seqs(bob, "r"))
    evil.attack()
    for i in range(5):
        await alice.send("r", f"live {i}")
    await bob_ev.until(lambda: {f"live {i}" for i in range(5)} <= texts_of(bob, "r"))
    assert seqs(bob, "r") == [1, 3, 4, 5, 6, 7, 10_002]
    assert bob.cache.withheld("r", 10) == [(2, 2), (8, 10_001)]


async def test_the_seqs_asked_again_take_every_room_in_turn(
    server: ServerProcess, clients: ClientFactory
) -> None:
    """A node that cannot read 64 single messages of "alpha" and one of
    "beta" (a damaged store), then can read beta's again: asked for again
    64 ranges a connection, all rooms' in turn, beta's comes at the second
    connection. With the ranges taken in room order from the first each
    time, it never did."""
    alice, alice_ev = await clients.make("alice", server.connect)
    bob, _ = await clients.make("bob", server.connect)
    await alice.create_room("alpha", ["bob"])
    await alice.create_room("beta", ["bob"])
    await bob.history("alpha")
    await bob.history("beta")
    await clients.close(bob)
    acked = len(alice_ev.of(ev.SendAcked))
    alice.queue_many("alpha", [f"a{i}" for i in range(130)])
    alice.queue_many("beta", [f"b{i}" for i in range(3)])
    await alice_ev.until(lambda: len(alice_ev.of(ev.SendAcked)) >= acked + 133, timeout=30)
    db = sqlite3.connect(server.data / "curvechat.db")
    (saved,) = db.execute("SELECT envelope FROM messages WHERE room='beta' AND seq=2").fetchone()
    with db:
        for s in range(2, 130, 2):  # 64 single-seq holes
            db.execute("UPDATE messages SET envelope=x'c1' WHERE room='alpha' AND seq=?", (s,))
        db.execute("UPDATE messages SET envelope=x'c1' WHERE room='beta' AND seq=2")
    bob, bob_ev = await clients.make("bob", server.connect)
    assert len(bob.cache.withheld("alpha", 1000)) == 64
    assert bob.cache.withheld("beta", 10) == [(2, 2)]
    with db:  # beta's message can be read again
        db.execute("UPDATE messages SET envelope=? WHERE room='beta' AND seq=2", (saved,))
    db.close()
    for _ in range(2):
        await reconnect(bob, bob_ev)
    assert "b1" in texts_of(bob, "beta") and bob.cache.withheld("beta", 10) == []
