"""A room the server stops serving is told to the front end of every
process of the home (`RoomUpdated(room, "removed")`: the terminal client's
"you were removed", and its leaving the room's view), not only by the one
that handled the push first: the cache's `left` flag is shared, what each
process told its own user is not. A process's own leave is not told again
as a removal, nor in another process of the home: the server says `left`
to the leaver's other connections, and they tell "you left" (a leave made
in the shell used to show "you were removed" in the terminal client)."""

from __future__ import annotations

import asyncio

from curvechat.client import events as ev
from curvechat.client.engine import ChatClient

from support.clients import ClientFactory, Recorder
from support.servers import ServerProcess


def _gone(events: Recorder, room: str) -> list[str]:
    return [e.reason for e in events.of(ev.RoomUpdated) if e.room == room and e.reason != "members"]


async def _alice_twice_in_r(
    server: ServerProcess, clients: ClientFactory
) -> tuple[ChatClient, tuple[ChatClient, Recorder], tuple[ChatClient, Recorder]]:
    """carol, and two processes of alice's home (each with its events),
    both members of carol's room r."""
    carol, _ = await clients.make("carol", server.connect)
    one = await clients.make("alice", server.connect)
    two = await clients.make("alice", server.connect)
    await carol.create_room("r", ["alice"])
    for client, _events in (one, two):
        await client.history("r")
    return carol, one, two


async def test_both_processes_of_the_home_are_told_of_a_removal(
    server: ServerProcess, clients: ClientFactory
) -> None:
    carol, (chat, chat_ev), (_tail, tail_ev) = await _alice_twice_in_r(server, clients)

    await carol.remove("r", "alice")
    await chat_ev.until(lambda: bool(_gone(chat_ev, "r") or _gone(tail_ev, "r")), 10)
    await asyncio.sleep(1.0)  # both got the push by now
    assert chat.cache.room("r") is not None and chat.cache.room("r").left
    assert (_gone(chat_ev, "r"), _gone(tail_ev, "r")) == (["removed"], ["removed"])


async def test_a_leave_is_not_told_as_a_removal_as_well(
    server: ServerProcess, clients: ClientFactory
) -> None:
    carol, _ = await clients.make("carol", server.connect)
    alice, events = await clients.make("alice", server.connect)
    await carol.create_room("r", ["alice"])
    await alice.history("r")
    await alice.leave("r")
    await asyncio.sleep(1.0)  # the server's push, and any listing after it
    alice.retry_now()
    assert _gone(events, "r") == ["left"]


async def test_a_leave_in_one_process_is_told_as_a_leave_in_the_other(
    server: ServerProcess, clients: ClientFactory
) -> None:
    _carol, (chat, chat_ev), (shell, shell_ev) = await _alice_twice_in_r(server, clients)
    await shell.leave("r")
    await chat_ev.until(lambda: bool(_gone(chat_ev, "r")), 10)
    await asyncio.sleep(0.5)  # anything told after the push
    assert (_gone(chat_ev, "r"), _gone(shell_ev, "r")) == (["left"], ["left"])
    assert chat.cache.room("r") is not None and chat.cache.room("r").left
