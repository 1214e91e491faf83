"""Messages a client could not open, against a real (malicious) node: they
keep their envelope and are opened again when the key arrives, a forged
copy is replaced by the genuine one fetched later, and a node that keeps
serving garbage is not asked again without bound (docs/security.md, 6.7)."""

from __future__ import annotations

import asyncio
from typing import Any

import nacl.signing

from curvechat.client import events as ev
from curvechat.protocol import messages as m

from .conftest import EvilServer
from .test_malicious_server import resync, texts
from support.clients import ClientFactory, Recorder


def shown(events: Recorder, room: str) -> list[tuple[int, str]]:
    """The messages of `room` the client told as readable, in order."""
    return [
        (e.message.seq, e.message.text)
        for e in events.of(ev.MessageReceived)
        if e.message.room == room and e.message.text is not None
    ]


async def test_a_message_whose_key_is_held_back_opens_when_the_key_comes(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    bob, bob_ev = await clients.make("bob", evil.connect)
    await clients.make("carol", evil.connect)
    await alice.create_room("r", ["bob", "carol"])
    await bob.history("r")
    evil.attack(withhold_keys="bob")
    await alice.remove("r", "carol")  # a new epoch, whose key the node keeps from bob
    ack = await alice.send("r", "under the new key")
    assert isinstance(ack, m.SendAck)
    await bob_ev.until(lambda: bob.cache.has_message("r", ack.seq))
    (row,) = [r for r in bob.cache.messages("r") if r.seq == ack.seq]
    assert row.text is None and row.error is not None and "(M2)" in row.error

    evil.attack()  # the key packet is served from now on
    later = await alice.send("r", "and one more")
    assert isinstance(later, m.SendAck)
    await bob_ev.until(lambda: texts(bob, "r") == ["under the new key", "and one more"])
    assert [r.seq for r in bob.cache.messages("r")] == [ack.seq, later.seq]  # in its place
    assert shown(bob_ev, "r") == [(ack.seq, "under the new key"), (later.seq, "and one more")]


async def test_messages_refused_under_a_key_change_open_once_the_user_accepts_it(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    bob, _ = await clients.make("bob", evil.connect)
    fake = nacl.signing.SigningKey.generate().verify_key.encode()
    evil.attack(substitute_key={"user": "bob", "key": fake.hex()})
    ann, ann_ev = await clients.make("ann", evil.connect)
    await ann.lookup(["bob"])  # ann pins the key the server made up (first use)
    evil.attack()
    await alice.create_room("r", ["ann", "bob"])  # alice adds ann, then bob
    await resync(ann, ann_ev)  # ann's log stops before bob's add: his key is not her pin
    assert ann.key_changes() == ["bob"] and "bob" not in ann.members("r")
    ack = await bob.send("r", "from the real bob")
    assert isinstance(ack, m.SendAck)
    await ann_ev.until(lambda: ann.cache.has_message("r", ack.seq))
    (row,) = ann.cache.messages("r")
    # The room's key is based on bob's add, which her log does not take: she
    # files it only after that op (K5), so the message waits for both.
    assert row.text is None and row.error is not None and "(M2)" in row.error

    # after comparing the safety number of the key she is shown
    await ann.accept_key("bob", bob.identity.sign_pub)
    assert texts(ann, "r") == ["from the real bob"]
    assert shown(ann_ev, "r") == [(ack.seq, "from the real bob")]


async def test_forged_copies_are_replaced_by_the_genuine_ones_after_a_reconnection(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    bob, bob_ev = await clients.make("bob", evil.connect)
    await alice.create_room("r", ["bob"])
    await alice.send("r", "before")
    await bob_ev.until(lambda: texts(bob, "r") == ["before"])
    evil.attack(flip={"field": "sig", "bit": 3})
    sent = [f"forged in transit {i}" for i in range(5)]
    for text in sent:
        await alice.send("r", text)
    await bob_ev.until(lambda: len(bob.cache.messages("r")) == 6)
    assert texts(bob, "r") == ["before"]  # five rows that did not verify
    seqs = [r.seq for r in bob.cache.messages("r")]

    evil.attack()  # the node stops tampering (or bob reaches an honest node)
    await resync(bob, bob_ev)
    assert texts(bob, "r") == ["before", *sent]
    assert [r.seq for r in bob.cache.messages("r")] == seqs
    assert all(r.error is None for r in bob.cache.messages("r"))
    assert [text for _, text in shown(bob_ev, "r")] == ["before", *sent]  # each once


async def test_a_node_serving_garbage_for_ever_is_asked_again_a_bounded_number_of_times(
    evil: EvilServer, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", evil.connect)
    bob, bob_ev = await clients.make("bob", evil.connect)
    await alice.create_room("r", ["bob"])
    await bob.history("r")
    evil.attack(flip={"field": "ct", "bit": 100})
    count = 70  # more than one pass asks for
    txns = [alice.queue("r", f"m{i}") for i in range(count)]
    await asyncio.gather(*(alice.wait_ack(txn, 30) for txn in txns))
    await bob_ev.until(lambda: len(bob.cache.messages("r", limit=100)) == count)

    asked: list[int] = []
    requests: list[m.History] = []
    ask = bob.parts.ask

    async def counting(req: Any, kind: Any, **kw: Any) -> Any:
        if isinstance(req, m.History):
            requests.append(req)
            asked.extend(range(req.after + 1, req.after + 1 + req.limit))
        return await ask(req, kind, **kw)

    checked: list[int] = []
    verify = bob.core.verify_many

    def checking(room: str, envs: Any, crypt: Any) -> Any:
        checked.append(len(envs))
        return verify(room, envs, crypt)

    bob.parts.ask = counting  # type: ignore[method-assign]
    bob.core.verify_many = checking  # type: ignore[method-assign]
    for _ in range(3):
        await resync(bob, bob_ev)
        # What a node's resync push or a refresh does: nothing new learned,
        # so nothing is asked again on this connection.
        async with bob.lock:
            await bob.sync.full()
            await bob.sync.refresh("r")
    assert len(requests) == 3  # one pass per connection, its seqs in one request
    assert sum(checked) == 3 * 64  # at most 64 seqs each; none opened again (M5)
    assert set(asked) == set(range(1, count + 1))  # taking turns
    assert texts(bob, "r") == []
