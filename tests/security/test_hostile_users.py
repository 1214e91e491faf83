"""Hostile users with ordinary accounts against a real node: refusals that
cost the node nothing much, whatever the length of a room's log."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from curvechat.crypto.identity import Identity
from curvechat.crypto.membership import MemberState, sign_op
from curvechat.protocol import messages as m
from curvechat.store import SQLiteStore
from curvechat.store.base import EpochRecord, MemberChange, OpRecord

from support.raw import RawClient
from support.servers import ServerProcess

LOG_OPS = 5_001  # create, then bob added and removed 2,500 times
HOSTILE = 16
RATE = 20.0  # requests/s per hostile connection


async def _long_room(path: Path, alice: Identity, bob: Identity) -> None:
    """Room "big" with a 5,001-op log, written straight into the node's store."""
    state = MemberState.empty("big")
    ops = []
    for i in range(LOG_OPS):
        kind, target = ("create", alice) if i == 0 else (("add", "remove")[i % 2 == 0], bob)
        op = state.next_op(kind, "alice", target.user, target.sign_pub, i)  # type: ignore[arg-type]
        signed = sign_op(alice, op)
        state, _ = state.apply(signed)
        ops.append(OpRecord(i, signed.op, signed.sig))
    store = SQLiteStore(path)
    await store.open()
    try:
        for who in (alice, bob):
            await store.register(who.user, who.sign_pub, who.transport_pub)
        changes = [MemberChange("alice", True, True), MemberChange("bob", True)]
        await store.create_room("big", ops, changes, EpochRecord(0, LOG_OPS - 1, "alice"), [])
    finally:
        await store.close()


@pytest.fixture
def long_log_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Identity, Identity]]:
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    asyncio.run(_long_room(data / "curvechat.db", alice, bob))
    server = ServerProcess(data).start()
    try:
        yield server, alice, bob
    finally:
        server.stop()


def _bogus_send(epoch: int, n: int) -> m.Send:
    """A send by bob under an epoch above the room's: refused as stale."""
    env = m.Envelope(room="big", epoch=epoch, sender="bob", txn=f"hostile-{n:012d}",
                     nonce=bytes(24), ct=bytes(272), sig=bytes(64))  # fmt: skip
    return m.Send(envelope=env)


def test_refusals_stay_cheap_with_a_long_log(
    long_log_server: tuple[ServerProcess, Identity, Identity],
) -> None:
    """12 non-members ask for the members of a 5,001-op room and 4 connections
    of a member send under a higher epoch, 20 times a second each: an honest
    member's ping round trip stays under 50 ms at the 99th percentile."""
    server, alice, bob = long_log_server
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    honest = RawClient(ctx, server.connect, alice)
    assert isinstance(honest.request(m.Members(room="big", after=LOG_OPS - 2)), m.MemberLog)
    hostile: list[tuple[RawClient, bool]] = []
    for i in range(HOSTILE):
        if i < 4:
            hostile.append((RawClient(ctx, server.connect, bob), True))
        else:
            raw = RawClient(ctx, server.connect, Identity.generate(f"mallory{i}"))
            raw.register()
            hostile.append((raw, False))
    stop = threading.Event()
    refused: list[int] = []

    def attack() -> None:
        n = 0
        while not stop.is_set():
            t0 = time.monotonic()
            for raw, member in hostile:
                n += 1
                raw.send(_bogus_send(7, n) if member else m.Members(room="big", after=-1))
                refused.append(raw.drain())
            time.sleep(max(0.0, 1 / RATE - (time.monotonic() - t0)))

    thread = threading.Thread(target=attack, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        rtts = []
        for _ in range(150):
            t0 = time.perf_counter()
            reply = honest.request(m.Ping(t=0), timeout=5)
            rtts.append((time.perf_counter() - t0) * 1000)
            assert isinstance(reply, m.Pong)
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    p99 = statistics.quantiles(rtts, n=100)[98]
    print(f"honest ping p99 {p99:.1f} ms, median {statistics.median(rtts):.1f} ms; "
          f"{sum(refused)} refusals read")  # fmt: skip
    assert sum(refused) > HOSTILE * 20  # the attack ran, and was answered
    assert p99 < 50.0
    for raw, _ in hostile:
        raw.close()
    honest.close()
    ctx.term()
