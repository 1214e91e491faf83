"""A server that answers one process of a home otherwise than another (two
processes, the terminal client and a `tail`, share one cache): each still
shows every message the cache gets, in its place.

* A seq withheld from one process, which another then fetched and stored,
  is shown by the first too once the other stored it (the first's told
  mark had passed over it with the cursor, and never told it).
* One row a server put at a seq far ahead (10^9) in a page counted every
  row below it as told in every process started after it: each process
  then showed only what it stored itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from curvechat.client import events as ev
from curvechat.client.cache import Cache, cache_key
from curvechat.client.engine import ChatClient
from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect

from support.clients import FAST, Recorder
from support.servers import ServerProcess

Items = list[m.StoredMessage]


class Tamper:
    """An engine's connection whose answers `fn(items)` edits (the room's
    messages in a sync reply or a page), while it is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fn: Callable[[Items], Items] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def request(self, req: Any, timeout: float | None = None) -> Any:
        reply = await self.inner.request(req, timeout)
        fn = self.fn
        if fn is None:
            return reply
        if isinstance(reply, m.SyncReply):
            rooms = [msgspec.structs.replace(r, items=fn(r.items)) for r in reply.rooms]
            return msgspec.structs.replace(reply, rooms=rooms)
        if isinstance(reply, m.Messages):
            return msgspec.structs.replace(reply, items=fn(reply.items))
        return reply


class Home:
    """alice's home and bob's, whose processes (engines) share its cache."""

    def __init__(self, root: Path, connect: str) -> None:
        self.root, self.connect = root, connect
        self.engines: list[ChatClient] = []
        self.alice, self.bob = Identity.generate("alice"), Identity.generate("bob")

    async def engine(
        self, ident: Identity, start: bool = True
    ) -> tuple[ChatClient, Recorder, Tamper]:
        home = self.root / ident.user
        home.mkdir(parents=True, exist_ok=True)
        rec = Recorder()
        cache = Cache(home / "cache.db", cache_key(ident.sign_seed))
        client = ChatClient(ident, cache, parse_connect(self.connect), on_event=rec, **FAST)
        tamper = Tamper(client.conn)
        client.conn = tamper
        self.engines.append(client)
        if start:
            await client.start()
            assert await client.wait_ready(20)
        return client, rec, tamper

    async def stop(self, client: ChatClient) -> None:
        self.engines.remove(client)
        await client.close()
        client.cache.close()

    async def close(self) -> None:
        for client in list(self.engines):
            await self.stop(client)


@pytest.fixture
async def homes(server: ServerProcess, tmp_path: Path) -> AsyncIterator[Home]:
    made = Home(tmp_path, server.connect)
    try:
        yield made
    finally:
        await made.close()


def texts(rec: Recorder, room: str) -> list[str | None]:
    return [e.message.text for e in rec.of(ev.MessageReceived) if e.message.room == room]


async def test_a_seq_withheld_here_and_stored_by_another_process_is_shown_here(
    homes: Home,
) -> None:
    alice, _, _ = await homes.engine(homes.alice)
    bob, rec, _ = await homes.engine(homes.bob)
    await alice.create_room("r", ["bob"])
    await rec.until(lambda: bob.cache.room("r") is not None)
    await homes.stop(bob)
    for text in ("m1", "m2", "m3"):
        await alice.send("r", text)
    tail, rec_tail, tamper = await homes.engine(homes.bob, start=False)
    tamper.fn = lambda items: [i for i in items if i.seq != 2]  # withheld from the tail
    await tail.start()
    assert await tail.wait_ready(20)
    _tui, rec_tui, _ = await homes.engine(homes.bob)  # served honestly: stores m2
    await rec_tui.until(lambda: "m2" in texts(rec_tui, "r"))
    tamper.fn = None
    await alice.send("r", "m4")
    await rec_tail.until(lambda: "m4" in texts(rec_tail, "r"))
    await rec_tail.until(lambda: "m2" in texts(rec_tail, "r"))
    assert sorted(t or "" for t in texts(rec_tail, "r")) == ["m1", "m2", "m3", "m4"]


async def test_a_row_put_far_ahead_does_not_blind_later_processes(
    homes: Home,
) -> None:
    alice, _, _ = await homes.engine(homes.alice)
    bob, rec, tamper = await homes.engine(homes.bob)
    await alice.create_room("r", ["bob"])
    await alice.send("r", "first")
    await rec.until(lambda: "first" in texts(rec, "r"))
    tamper.fn = lambda items: [
        *items,
        *(msgspec.structs.replace(i, seq=10**9) for i in items[:1]),
    ]
    await bob.sync.older("r", 2, 10)  # a page before seq 2: nothing at or past 2 stored
    assert not bob.cache.messages_at("r", [10**9])
    await bob.sync.older("r", None, 10)  # the newest page, with a copy at 10^9
    assert bob.cache.messages_at("r", [10**9])
    await homes.stop(bob)
    _tui, rec_tui, _ = await homes.engine(homes.bob)
    _tail, rec_tail, _ = await homes.engine(homes.bob)
    sent = [f"n{i}" for i in range(12)]
    for text in sent:
        await alice.send("r", text)
    for got in (rec_tui, rec_tail):
        await got.until(lambda got=got: all(t in texts(got, "r") for t in sent))  # type: ignore[misc]
    await asyncio.sleep(0.2)
    assert [t for t in texts(rec_tui, "r") if t in sent] == sent
    assert [t for t in texts(rec_tail, "r") if t in sent] == sent
