"""A key change (P2) is told to the front end of every process of the home
(the terminal client's warning and dialog), not only by the process that
records it first: the row in `key_changes` is shared, what each process
told its own user is not. Before, when a `tail` or `send` met the
substituted key first, the terminal client's own check found the change
recorded and said nothing, and its sends into the room waited without a
word."""

from __future__ import annotations

import nacl.signing

from curvechat.client import events as ev

from .conftest import EvilServer
from .test_malicious_server import resync
from support.clients import ClientFactory


async def test_every_process_of_the_home_tells_its_user_of_a_key_change(
    evil: EvilServer, clients: ClientFactory
) -> None:
    chat, chat_ev = await clients.make("alice", evil.connect)
    tail, tail_ev = await clients.make("alice", evil.connect)
    await clients.make("bob", evil.connect)
    await chat.create_room("r", ["bob"])

    fake = nacl.signing.SigningKey.generate().verify_key.encode()
    evil.attack(substitute_key={"user": "bob", "key": fake.hex()})
    await resync(tail, tail_ev)  # the `tail` syncs first and records the change
    assert [e.user for e in tail_ev.of(ev.KeyChangeDetected)] == ["bob"]
    await resync(chat, chat_ev)  # the terminal client's own audit meets it too
    assert chat.key_changes() == ["bob"]
    assert [e.user for e in chat_ev.of(ev.KeyChangeDetected)] == ["bob"]
