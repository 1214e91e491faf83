"""A node whose disk fills up: new content waits (`store_full`), nothing is
lost, the operator is told, and it all goes on once space is freed. On a
real filesystem of a few MiB (a tmpfs mounted for the test: it needs root,
as the suite's machine has)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from curvechat.client import events as ev
from curvechat.client.errors import ServerRefused
from curvechat.client.outbox import STORE_FULL_TEXT
from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.store.reserve import MIB, free_bytes

from support.clients import ClientFactory
from support.raw import RawClient
from support.servers import ServerProcess, running, serve_refuses

RESERVE_MB = 16


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def node(small_disk: Path) -> Iterator[ServerProcess]:
    with running(small_disk / "node", "--disk-reserve-mb", str(RESERVE_MB)) as proc:
        yield proc


def fill(disk: Path, leave: int) -> Path:
    """Leave `leave` bytes free on `disk`."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, free_bytes(disk) - leave)
    return filler


async def until(check: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_a_full_disk_holds_new_messages_back_and_loses_none(
    node: ServerProcess, small_disk: Path, clients: ClientFactory
) -> None:
    alice, alice_events = await clients.make("alice", node.connect)
    bob, bob_events = await clients.make("bob", node.connect)
    await clients.make("carol", node.connect)
    await clients.make("dave", node.connect)
    await alice.create_room("general", ["bob"])
    await alice.create_room("side", ["carol"])
    await alice.wait_ack(alice.queue("general", "before"), 20)

    filler = fill(small_disk, RESERVE_MB * MIB // 2)
    await asyncio.sleep(1.2)  # the node measures again at the next write a second on
    txn = alice.queue("general", "during")
    await alice_events.until(
        lambda: any(p.message == STORE_FULL_TEXT for p in alice_events.of(ev.Problem))
    )
    assert [i.txn for i in alice.pending()] == [txn]  # kept, not failed
    assert not alice_events.of(ev.SendFailed)

    # a new user waits too, with the code; the operator is told
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        carol = Identity.generate("carol")
        raw = RawClient(ctx, node.connect, carol)
        reply = raw.request(
            m.Register(user="carol", sign_pub=carol.sign_pub, transport_sig=carol.transport_sig())
        )
        assert isinstance(reply, m.Error) and reply.code == "store_full", reply
        assert "under the 16 MiB it keeps" in reply.message
        raw.close()
    finally:
        ctx.term()
    await until(lambda: "event store_full" in node.log())

    # what can wait, waits; a member can still remove, and the key rotates
    for change in (alice.invite("side", "dave"), alice.promote("side", "carol")):
        with pytest.raises(ServerRefused) as refused:
            await change
        assert refused.value.code == "store_full"
    before = next(r.epoch for r in alice.rooms() if r.room == "side")
    await alice.remove("side", "carol")
    after = next(r.epoch for r in alice.rooms() if r.room == "side")
    assert before is not None and after == before + 1

    filler.unlink()
    ack = await alice.wait_ack(txn, 30)
    assert ack.seq == 2
    await bob_events.until(
        lambda: [r.text for r in bob.cache.messages("general", limit=10)] == ["before", "during"]
    )
    await until(lambda: "event store_space_ok" in node.log())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--disk-reserve-mb", "-1"], "--disk-reserve-mb must be 0 … 1048576"),
        (["--disk-reserve-mb", "1048577"], "--disk-reserve-mb must be 0 … 1048576"),
        (["--disk-reserve-mb", "1e3"], "invalid int value"),
        (["--store", "etcd://h:2379", "--disk-reserve-mb", "64"], "etcd keeps its own quota"),
    ],
)
def test_serve_refuses_a_bad_reserve(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    serve_refuses(args, expected, capsys, tmp_path)
