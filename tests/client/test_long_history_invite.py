"""An invite into a room with more epochs than one request carries: the add
takes the newest 100 key packets, `share_keys` the rest in pages of 500, and
the new member reads the whole history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from curvechat.client.rooms import ADD_PACKETS, split_history
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_BATCH

from support.clients import ClientFactory
from support.servers import ServerProcess

EPOCHS = 1_060  # more than two pages past the add's 100


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A node that lets one member start epochs as fast as it asks (a busy
    room's thousand rotations, made here in seconds)."""
    proc = ServerProcess(tmp_path / "node", extra_args=("--rate-epochs", "1000000")).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]


def opened(client, room):  # type: ignore[no-untyped-def]
    return [(r.text, r.error) for r in client.cache.messages(room, limit=100)]


async def test_a_new_member_reads_every_epoch_of_a_long_history(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, _ = await clients.make("alice", server.connect)
    await clients.make("bob", server.connect)
    await alice.create_room("busy", ["bob"])
    await alice.send("busy", "from epoch 0")
    async with alice.parts.lock:  # rotations, as a busy room makes them
        for epoch in range(1, EPOCHS):
            await alice.parts.rotate("busy", epoch)
    assert max(alice.parts.core.held("busy")) == EPOCHS - 1
    await alice.send("busy", f"from epoch {EPOCHS - 1}")

    carol, carol_events = await clients.make("carol", server.connect)
    result = await alice.invite("busy", "carol")
    assert result.shared_history and result.epochs_not_shared == 0
    want = [("from epoch 0", None), (f"from epoch {EPOCHS - 1}", None)]
    await carol_events.until(lambda: opened(carol, "busy") == want, timeout=60)
    assert sorted(carol.parts.core.held("busy")) == list(range(EPOCHS))
    assert sorted(alice.members("busy")) == ["alice", "bob", "carol"]


def test_the_add_takes_the_newest_epochs_and_pages_take_the_rest() -> None:
    packets = [
        m.KeyPacket(room="r", epoch=e, recipient="c", sender="a", box=bytes(40))
        for e in range(1_060)
    ]
    first, pages = split_history(packets)
    assert ADD_PACKETS == 100 and [p.epoch for p in first] == list(range(960, 1_060))
    assert [[p.epoch for p in page] for page in pages] == [
        list(range(460, 960)),
        list(range(0, 460)),
    ]
    assert all(len(page) <= MAX_BATCH for page in pages)
    assert split_history(packets[:ADD_PACKETS]) == (packets[:ADD_PACKETS], [])
    assert split_history([]) == ([], [])
