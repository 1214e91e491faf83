"""Two engines on one home (one cache file), as a terminal client and a
`tail` are: each tells its front end every message the cache holds, in seq
order, whichever of them stored it (client/told.py, `Parts.tell_stored`).
The second engine's pushes can be held back, as a busy worker's are."""

from __future__ import annotations

from typing import Any

from curvechat.client import events as ev
from curvechat.client.cache import Cache, cache_key
from curvechat.client.engine import ChatClient
from curvechat.client.pushqueue import PushQueue
from curvechat.client.told import UNREADABLE_KEPT, Told
from curvechat.protocol.connect import parse_connect

from support.clients import FAST, ClientFactory, Recorder
from support.servers import ServerProcess


class HeldQueue(PushQueue):
    """The engine's push queue, which holds what comes while `held`."""

    def __init__(self) -> None:
        super().__init__()
        self.held = True
        self.buf: list[Any] = []

    def put_nowait(self, push: Any) -> bool:
        if self.held:
            self.buf.append(push)
            return True
        return super().put_nowait(push)

    def release(self) -> None:
        self.held = False
        for item in self.buf:
            super().put_nowait(item)
        self.buf.clear()


def second(clients: ClientFactory, user: str, connect: str, *, hold: bool = False) -> Any:
    ident = clients.identities[user]
    cache = Cache(clients.root / user / "cache.db", cache_key(ident.sign_seed))
    rec = Recorder()
    client = ChatClient(ident, cache, parse_connect(connect), on_event=rec, **FAST)
    if hold:
        client.pushes.jobs = HeldQueue()
    return client, rec


def told(rec: Recorder, room: str) -> list[str | None]:
    return [e.message.text for e in rec.of(ev.MessageReceived) if e.message.room == room]


async def stop(*engines: ChatClient) -> None:
    for engine in engines:
        await engine.close()
        engine.cache.close()


def test_told_keeps_a_contiguous_mark_and_what_was_told_above_it() -> None:
    t = Told({"r": 3})
    assert t.told("r", 3) and not t.told("r", 4)
    t.noted("r", 6)  # own send acked past a row another process stored
    assert t.upto("r") == 3 and t.told("r", 6) and not t.told("r", 5)
    t.noted("r", 4)
    t.noted("r", 5)
    assert t.upto("r") == 6
    t.passed("r", 9)
    assert t.upto("r") == 9 and t.upto("new") == 0


def test_told_keeps_the_newest_rows_told_as_unreadable_until_told_readable() -> None:
    t = Told({})
    for seq in range(1, UNREADABLE_KEPT + 3):
        t.shown("r", seq, readable=False)
    assert t.unreadable("r") == list(range(3, UNREADABLE_KEPT + 3))  # the newest kept
    t.shown("r", 7, readable=True)
    assert 7 not in t.unreadable("r") and t.told("r", 7) and t.unreadable("s") == []
    t.read_unreadable("s", [40, 41])  # read from the cache by the front end: not told
    assert t.unreadable("s") == [40, 41] and not t.told("s", 40)


async def test_an_engine_that_connects_after_another_synced_tells_what_it_stored(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob1, rec1 = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await alice.send("r", "m0")
    await rec1.until(lambda: "m0" in told(rec1, "r"))
    bob2, rec2 = second(clients, "bob", server.connect)  # made now, connected later
    for i in (1, 2, 3):
        await alice.send("r", f"m{i}")
    await rec1.until(lambda: "m3" in told(rec1, "r"))
    await clients.close(bob1)
    await alice.send("r", "m4")  # stored by no engine of bob's home yet
    await bob2.start()
    try:
        assert await bob2.wait_ready(20)
        await rec2.until(lambda: "m4" in told(rec2, "r"))
        assert told(rec2, "r") == ["m1", "m2", "m3", "m4"]
    finally:
        await stop(bob2)


async def test_an_own_send_acked_past_a_row_another_engine_stored_tells_that_row_first(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    bob0, rec0 = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await rec0.until(lambda: bob0.cache.room("r") is not None)
    await clients.close(bob0)
    bob1, rec1 = second(clients, "bob", server.connect, hold=True)
    bob2, rec2 = second(clients, "bob", server.connect, hold=True)
    await bob1.start()
    await bob2.start()
    try:
        assert await bob1.wait_ready(20) and await bob2.wait_ready(20)
        bob1.pushes.jobs.release()
        await alice.send("r", "from alice")  # bob2's worker is busy: held
        await rec1.until(lambda: "from alice" in told(rec1, "r"))
        await bob2.send("r", "mine")  # acked; stored by bob2's outbox or bob1's push
        await rec2.until(lambda: "mine" in told(rec2, "r"))
        assert told(rec2, "r") == ["from alice", "mine"]
        bob2.pushes.jobs.release()  # the held push of "from alice" tells nothing again
        await bob2.send("r", "again")
        await rec2.until(lambda: "again" in told(rec2, "r"))
        assert told(rec2, "r") == ["from alice", "mine", "again"]
    finally:
        await stop(bob1, bob2)


async def test_a_room_joined_while_another_engine_caught_up_is_told_whole(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    _bob1, rec1 = await clients.make("bob", server.connect)
    bob2, rec2 = second(clients, "bob", server.connect, hold=True)
    await bob2.start()
    try:
        assert await bob2.wait_ready(20)
        await alice.create_room("r2", [])
        for i in range(3):
            await alice.send("r2", f"n{i}")
        await alice.invite("r2", "bob")
        await rec1.until(lambda: "n2" in told(rec1, "r2"))
        bob2.pushes.jobs.release()  # its join comes after bob1 caught the room up
        await rec2.until(lambda: "n2" in told(rec2, "r2"))
        await alice.send("r2", "after")
        await rec2.until(lambda: "after" in told(rec2, "r2"))
        assert told(rec2, "r2") == ["n0", "n1", "n2", "after"]
    finally:
        await stop(bob2)


async def test_a_key_another_engine_stored_first_opens_messages_here(
    server: ServerProcess, clients: ClientFactory
) -> None:
    """bob1 learns a new epoch's key first and stores it in the shared cache;
    bob2, which had read the room's keys before, still opens what comes
    under that epoch."""
    alice, _ = await clients.make("alice", server.connect, rotate_after_messages=2)
    bob1, rec1 = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    await alice.send("r", "m0")
    await rec1.until(lambda: "m0" in told(rec1, "r"))
    bob2, rec2 = second(clients, "bob", server.connect, hold=True)
    await bob2.start()
    try:
        assert await bob2.wait_ready(20)
        assert bob2.core.held("r")  # its process has read the room's keys
        for text in ("m1", "m2", "m3"):  # a new epoch from the third on
            await alice.send("r", text)
        await rec1.until(lambda: "m3" in told(rec1, "r"))
        await clients.close(bob1)
        await alice.send("r", "m4")  # under the new epoch; no other engine stores it
        bob2.pushes.jobs.release()  # its pushes come after bob1 stored the new key
        await rec2.until(lambda: "m4" in told(rec2, "r"), 10)
        assert told(rec2, "r") == ["m1", "m2", "m3", "m4"]
    finally:
        await stop(bob2)
