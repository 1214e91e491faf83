"""Peer records found by mDNS/DNS-SD on loopback (zeroconf bound to
127.0.0.1): two members who never learn each other's record from the
server's directory find each other on the "local network" and talk after
the server is killed. Plus the TXT encoding of a record."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from zeroconf import ServiceStateChange

from curvechat.client import events as ev
from curvechat.client.peer.core import PeerCore
from curvechat.client.peer.mdns import (
    MAX_READS,
    MAX_WAITING,
    SERVICE,
    MdnsPeers,
    from_txt,
    service_tag,
    to_txt,
)
from curvechat.client.peer.shell import PeerOptions
from curvechat.client.state import ConnState
from curvechat.client.trust import TrustCore
from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.protocol import peer as p

from support.clients import ClientFactory
from support.servers import ServerProcess

LOOPBACK_MDNS = PeerOptions(
    bind="tcp://127.0.0.1:*",
    interval=0.2,
    timeout=1.0,
    mdns=True,
    mdns_interfaces=("127.0.0.1",),
    directory=False,
)


def test_a_record_survives_txt_and_garbage_does_not() -> None:
    signed = m.SignedRecord(record=bytes(range(256)) * 2, sig=bytes(64))
    txt = to_txt(signed)
    assert all(len(k) + len(v) < 255 for k, v in txt.items())
    assert from_txt(dict(txt)) == signed
    assert from_txt({}) is None
    assert from_txt({b"r0": b"x", b"s": b"short"}) is None
    assert from_txt({b"s": bytes(64)}) is None


async def test_a_flood_of_services_is_read_a_few_at_a_time() -> None:
    """Anyone on the network can announce services by the thousand: at most
    MAX_READS are read at once (each read can wait 3 s), one read per
    service at a time, up to MAX_WAITING wait their turn in order (zeroconf
    tells of a service once), and the rest are counted and left out."""
    mdns = MdnsPeers("alice", lambda signed: None)
    mdns._zc = object()  # type: ignore[assignment]  # started, as far as the reads go
    release = asyncio.Event()
    started: list[str] = []

    async def read(service_type: str, name: str) -> None:
        started.append(name)
        await release.wait()

    mdns._read = read  # type: ignore[method-assign]
    added, updated = ServiceStateChange.Added, ServiceStateChange.Updated
    flood = MAX_READS + MAX_WAITING + 100
    for i in range(flood):
        mdns._changed(None, SERVICE, f"s{i}.{SERVICE}", added)  # type: ignore[arg-type]
    mdns._changed(None, SERVICE, f"s0.{SERVICE}", updated)  # type: ignore[arg-type]
    mdns._changed(None, SERVICE, f"s20.{SERVICE}", updated)  # type: ignore[arg-type]
    # s0 changed while being read: it is read once more, s20 (waiting) is not
    await asyncio.sleep(0)
    assert len(started) == MAX_READS and mdns.dropped == 100
    release.set()
    for _ in range(10_000):
        if not mdns._reads:
            break
        await asyncio.sleep(0)
    # every waiting service was read in its turn, once (s0 twice); none of the 100 over
    assert sorted(started) == sorted(
        [f"s{i}.{SERVICE}" for i in range(MAX_READS + MAX_WAITING)] + [f"s0.{SERVICE}"]
    )
    # s0's second read waits its turn behind those that waited before it
    assert started[: MAX_READS + 1] == [f"s{i}.{SERVICE}" for i in range(MAX_READS + 1)]
    assert started[-1] == f"s0.{SERVICE}"


async def test_services_that_change_at_every_read_do_not_starve_one_waiting() -> None:
    """A stranger's MAX_READS services change while each is read, again and
    again: each is read again behind the services that waited before it, so
    a genuine one waiting is read in its turn (it once waited for ever)."""
    mdns = MdnsPeers("alice", lambda signed: None)
    mdns._zc = object()  # type: ignore[assignment]
    started: list[str] = []

    async def read(service_type: str, name: str) -> None:
        started.append(name)
        await asyncio.sleep(0)
        if name != f"genuine.{SERVICE}":  # it changes while it is read
            mdns._changed(None, SERVICE, name, ServiceStateChange.Updated)  # type: ignore[arg-type]
        await asyncio.sleep(0)

    mdns._read = read  # type: ignore[method-assign]
    for i in range(MAX_READS):
        mdns._changed(None, SERVICE, f"s{i}.{SERVICE}", ServiceStateChange.Added)  # type: ignore[arg-type]
    mdns._changed(None, SERVICE, f"genuine.{SERVICE}", ServiceStateChange.Added)  # type: ignore[arg-type]
    for _ in range(200):
        await asyncio.sleep(0)
    assert f"genuine.{SERVICE}" in started, started[:40]
    assert started.index(f"genuine.{SERVICE}") <= MAX_READS
    for task in list(mdns._reads.values()):
        task.cancel()
    mdns._zc = None  # type: ignore[assignment]
    await asyncio.sleep(0)
    mdns._zc = None
    await mdns.close()


async def test_a_service_that_goes_away_is_told_with_the_record_read_from_it() -> None:
    """A client that closes unregisters its service: the record last read
    from it is handed on, so that its listener is no longer dialed; a read
    under way of a service that went away is called off."""
    removed: list[m.SignedRecord] = []
    mdns = MdnsPeers("alice", lambda signed: None, on_removed=removed.append)
    mdns._zc = object()  # type: ignore[assignment]
    release = asyncio.Event()

    async def read(service_type: str, name: str) -> None:
        await release.wait()
        mdns._took(name, m.SignedRecord(record=name.encode(), sig=bytes(64)))

    mdns._read = read  # type: ignore[method-assign]
    added, gone = ServiceStateChange.Added, ServiceStateChange.Removed
    for name in ("a", "b", "c"):
        mdns._changed(None, SERVICE, f"{name}.{SERVICE}", added)  # type: ignore[arg-type]
    mdns._changed(None, SERVICE, f"c.{SERVICE}", gone)  # type: ignore[arg-type]
    release.set()
    for _ in range(100):
        await asyncio.sleep(0)
    assert mdns.seen == 2 and not mdns._reads  # c's read was called off
    mdns._changed(None, SERVICE, f"b.{SERVICE}", gone)  # type: ignore[arg-type]
    mdns._changed(None, SERVICE, f"b.{SERVICE}", gone)  # type: ignore[arg-type]  # told once
    mdns._changed(None, SERVICE, f"never.{SERVICE}", gone)  # type: ignore[arg-type]
    assert [r.record for r in removed] == [f"b.{SERVICE}".encode()]
    mdns._zc = None
    await mdns.close()


def test_each_listener_of_a_user_has_a_service_name_of_its_own() -> None:
    """Two clients of one home (one key) on one host differ by their port:
    each gets a service of its own (one name for both made the second one's
    registration fail)."""
    key = bytes(range(32))
    tags = {
        service_tag(p.PeerRecord(user="xavier", transport_pub=key, endpoints=[e], ts=1))
        for e in ("tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001")
    }
    assert len(tags) == 2


async def test_a_failure_of_mdns_that_says_nothing_is_told_by_its_name(
    server: ServerProcess, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zeroconf import NonUniqueNameException

    async def refuse(self: MdnsPeers, own: m.SignedRecord | None) -> None:
        raise NonUniqueNameException

    monkeypatch.setattr(MdnsPeers, "start", refuse)
    _, events = await clients.make("alice", server.connect, peers=LOOPBACK_MDNS)
    problems = [e.message for e in events.of(ev.Problem)]
    assert any(t.endswith("(mDNS): NonUniqueNameException") for t in problems if "mDNS" in t), (
        problems
    )


# Alone: on two workers it failed twice in a day (the two never saw each
# other's records within 30 s), never on its own, loaded or not. The suspect
# is another mDNS user beside it (`tail --peers` in tests/cli): two
# responders of one host share port 5353, and an answer sent there by
# unicast reaches one of them only.
@pytest.mark.alone
async def test_members_find_each_other_by_mdns(tmp_path: Path, clients: ClientFactory) -> None:
    server = ServerProcess(tmp_path / "node").start()
    try:
        alice, a_events = await clients.make("alice", server.connect, peers=LOOPBACK_MDNS)
        bob, b_events = await clients.make("bob", server.connect, peers=LOOPBACK_MDNS)
        await alice.create_room("lan", ["bob"])
        await b_events.until(lambda: bool(bob.core.held("lan")))
        for client, events, other in ((alice, a_events, "bob"), (bob, b_events, "alice")):
            assert client.peer is not None
            await events.until(
                lambda c=client, o=other: [r.user for r in c.peer.core.peers()] == [o],  # type: ignore[union-attr]
                timeout=30,
            )
        server.kill()
        await a_events.until(lambda: alice.status.state is not ConnState.LIVE)
        await alice.send("lan", "found you on the LAN", wait=False)
        await b_events.until(
            lambda: [e.text for e in b_events.of(ev.PeerMessage)] == ["found you on the LAN"],
            timeout=30,
        )
    finally:
        server.kill()


def test_a_wildcard_listener_announces_this_hosts_addresses() -> None:
    from curvechat.client.peer.shell import announced

    assert announced("tcp://127.0.0.1:7000") == ["tcp://127.0.0.1:7000"]
    out = announced("tcp://0.0.0.0:7001")
    assert out[-1] == "tcp://127.0.0.1:7001" and 1 <= len(out) <= 4
    assert all(e.endswith(":7001") and "0.0.0.0" not in e for e in out)


async def test_a_listener_that_cannot_bind_does_not_stop_the_client(
    server: ServerProcess, clients: ClientFactory
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = PeerOptions(bind=f"tcp://127.0.0.1:{port}")
        alice, events = await clients.make("alice", server.connect, peers=busy)
        assert alice.peer is not None and alice.peer.listener is None
        problems = [e.message for e in events.of(ev.Problem)]
        assert any("not listening for peers" in p for p in problems), problems
        await alice.create_room("still-works", [])


@pytest.mark.alone
async def test_two_clients_of_one_home_are_both_announced_and_one_that_closes_goes() -> None:
    """Two listeners of xavier's, one key (one home), on loopback mDNS: both
    register (one service name for both made the second fail with an empty
    message), yves hears both, and hears the one that closes go."""
    xavier = Identity.generate("xavier")
    records = [
        PeerCore(TrustCore(xavier, _Pins(), lambda e: None)).make_record(
            [f"tcp://127.0.0.1:{port}"], 1
        )
        for port in (28401, 28402)
    ]
    heard: list[m.SignedRecord] = []
    removed: list[m.SignedRecord] = []
    yves = MdnsPeers("yves", heard.append, on_removed=removed.append, interfaces=["127.0.0.1"])
    first, second = (MdnsPeers("xavier", lambda s: None, interfaces=["127.0.0.1"]) for _ in "12")
    try:
        await yves.start(None)
        await first.start(records[0])
        await second.start(records[1])
        for _ in range(300):
            if set(records) <= set(heard):
                break
            await asyncio.sleep(0.1)
        assert set(records) <= set(heard)
        await second.close()
        for _ in range(300):
            if removed:
                break
            await asyncio.sleep(0.1)
        assert removed == [records[1]]
    finally:
        for mdns in (first, second, yves):
            await mdns.close()


class _Pins:
    """Just enough of a trust store for a peer that only makes its record."""

    def pin(self, user: str) -> bytes | None:
        return None

    def set_pin(self, *a: object, **k: object) -> None:
        pass

    def key_changes(self) -> dict[str, bytes]:
        return {}

    def rooms(self, *, include_left: bool = False) -> list[object]:
        return []
