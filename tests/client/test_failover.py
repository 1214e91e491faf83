"""The connection manager: failover along the endpoint list, RTT, and the
persistent outbox across a client restart."""

from __future__ import annotations

from pathlib import Path

from curvechat.client import events as ev
from curvechat.client.state import ConnState
from curvechat.protocol.connect import ServerAddress, format_connect, parse_connect

from support.clients import ClientFactory, Recorder
from support.servers import ServerProcess, free_port


async def test_fails_over_past_a_dead_endpoint(
    server: ServerProcess, clients: ClientFactory
) -> None:
    live = parse_connect(server.connect)[0]
    dead = ServerAddress(f"tcp://127.0.0.1:{free_port()}", live.server_key)
    alice, events = await clients.make("alice", format_connect([dead, live]))
    assert alice.status.state is ConnState.LIVE
    assert alice.status.endpoint == live.endpoint
    tried = [e.status.endpoint for e in events.of(ev.StatusChanged)]
    assert tried[0] == dead.endpoint
    failures = [
        e.status for e in events.of(ev.StatusChanged) if e.status.state is ConnState.RECONNECTING
    ]
    assert failures and failures[0].detail.startswith(dead.endpoint)
    assert failures[0].next_retry_at is not None


async def test_wrong_server_key_is_refused(server: ServerProcess, clients: ClientFactory) -> None:
    import zmq

    live = parse_connect(server.connect)[0]
    impostor = ServerAddress(live.endpoint, zmq.curve_keypair()[0].decode())
    alice, events = await clients.make("alice", str(impostor), ready=False)
    await events.until(
        lambda: any(e.status.state is ConnState.RECONNECTING for e in events.of(ev.StatusChanged))
    )
    assert not await alice.wait_ready(1.0)
    assert alice.status.state is not ConnState.LIVE


async def test_rtt_is_measured(server: ServerProcess, clients: ClientFactory) -> None:
    alice, events = await clients.make("alice", server.connect)
    await events.until(lambda: alice.status.rtt_ms is not None)
    assert 0 < (alice.status.rtt_ms or 0) < 1000


async def test_outbox_survives_client_restart(tmp_path: Path, clients: ClientFactory) -> None:
    server = ServerProcess(tmp_path / "node").start()
    try:
        alice, events = await clients.make("alice", server.connect)
        bob, bob_events = await clients.make("bob", server.connect)
        await alice.create_room("later", ["bob"])
        server.kill()
        await events.until(lambda: alice.status.state is ConnState.RECONNECTING)
        texts = [f"queued {i}" for i in range(5)]
        for text in texts:
            await alice.send("later", text, wait=False)
        await clients.close(alice)  # the process "quits" with 5 messages queued
        server.start()
        alice, events = await clients.make("alice", server.connect)
        await events.until(lambda: alice.pending() == [])
        await bob_events.until(lambda: [m.text for m in bob.cache.messages("later")] == texts)
        rows = alice.cache.messages("later")
        assert [r.text for r in rows] == texts
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
        assert len(events.of(ev.SendAcked)) == 5
    finally:
        server.kill()


async def test_status_events_tell_the_story_of_an_outage(
    tmp_path: Path, clients: ClientFactory
) -> None:
    server = ServerProcess(tmp_path / "node").start()
    try:
        alice, events = await clients.make("alice", server.connect)
        await alice.create_room("x", [])
        server.kill()
        await events.until(lambda: alice.status.state is ConnState.RECONNECTING)
        lost = alice.status
        assert lost.detail  # says why
        server.start()
        await events.until(lambda: alice.status.state is ConnState.LIVE)
        states = [e.status.state for e in events.of(ev.StatusChanged)]
        live_again = len(states) - 1 - states[::-1].index(ConnState.LIVE)
        assert ConnState.RECONNECTING in states[:live_again]
        assert alice.conn.reconnects == 1
        await events.until(lambda: len(events.of(ev.CaughtUp)) == 2)
    finally:
        server.kill()


_ = Recorder


async def test_a_refusal_that_persists_backs_off(tmp_path: Path, clients: ClientFactory) -> None:
    """A node whose per-user rate (0.5 requests/s, a burst of one) can never
    let a sync through: the client must back off further with every refused
    sync, not reconnect at the first back-off step forever."""
    from curvechat.client.state import Backoff

    server = ServerProcess(tmp_path / "slow", extra_args=("--rate-user", "0.5")).start()
    try:
        alice, events = await clients.make(
            "alice", server.connect, ready=False, backoff=Backoff(base=0.05, cap=2.0)
        )

        def refused() -> list[int]:
            return [
                e.status.attempt
                for e in events.of(ev.StatusChanged)
                if e.status.state is ConnState.RECONNECTING
                and e.status.detail.startswith("sync refused")
            ]

        await events.until(lambda: len(refused()) >= 3)
        # each refused sync counts as one more attempt: the back-off grows
        assert refused()[:3] == [1, 2, 3], refused()
        assert alice.fatal is None
    finally:
        assert server.stop() == 0
