"""Connections per address on the client port (server/addresses.py): what
an address is, the count, and a node that closes what one address opens
past its limit, on real connections."""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m
from curvechat.server.addresses import PerAddress, address_key
from curvechat.server.ratelimit import RegistrationPace

from support.clients import ClientFactory
from support.raw import RawClient
from support.servers import ServerProcess, free_port, running, serve_refuses


@pytest.mark.parametrize(
    ("peer", "loopback", "key"),
    [
        (("203.0.113.7", 5555), False, "203.0.113.7"),
        (("::ffff:203.0.113.7", 5555, 0, 0), False, "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 5555, 0, 0), False, "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 5555, 0, 0), False, "2001:db8:1:2::/64"),
        (("fe80::1%eth0", 5555, 0, 2), False, "fe80::1"),
        (("fe80::2", 5555, 0, 2), False, "fe80::2"),
        (("127.0.0.1", 5555), False, None),
        (("127.0.0.9", 5555), True, "127.0.0.0/8"),
        (("127.1.2.3", 5555), True, "127.0.0.0/8"),
        (("::1", 5555, 0, 0), False, None),
        (("::1", 5555, 0, 0), True, "::1"),
        ("/run/sock", False, None),
        (None, False, None),
        (("not an address", 1), False, None),
    ],
)
def test_what_an_address_is(peer: object, loopback: bool, key: str | None) -> None:
    assert address_key(peer, loopback) == key


def test_registrations_count_an_ipv6_site_as_one() -> None:
    """A /48 (a site; a tunnel broker's free allocation) is 65,536 /64s."""
    a = ("2001:db8:1:2::1", 5555, 0, 0)
    b = ("2001:db8:1:ffff::1", 5555, 0, 0)
    assert address_key(a, False) != address_key(b, False)
    assert address_key(a, False, 48) == address_key(b, False, 48) == "2001:db8:1::/48"
    assert address_key(("203.0.113.7", 1), False, 48) == "203.0.113.7"


def test_an_address_holds_at_most_its_limit_and_gets_back_what_closes() -> None:
    count = PerAddress(3)
    peer = ("203.0.113.7", 1)
    assert [count.accepted(fd, peer) for fd in (10, 11, 12)] == [None] * 3
    assert count.accepted(13, peer) == "203.0.113.7"  # refused, and not counted
    assert count.accepted(14, ("203.0.113.8", 1)) is None  # another address
    assert count.accepted(15, ("127.0.0.1", 1)) is None  # loopback: not counted
    assert len(count) == 4
    count.closed(13)  # (a refused one closing changes nothing)
    assert count.count("203.0.113.7") == 3
    count.closed(10)
    assert count.accepted(16, peer) is None
    # an fd reused before its close was seen: counted for the new peer only
    assert count.accepted(11, ("203.0.113.8", 1)) is None
    assert count.count("203.0.113.7") == 2 and count.count("203.0.113.8") == 2
    for fd in (11, 12, 14, 16):
        count.closed(fd)
    assert len(count) == 0 and count.count("203.0.113.7") == 0
    with pytest.raises(ValueError):
        PerAddress(0)


LIMIT = 20


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    args = ("--max-connections-per-address", str(LIMIT), "--count-loopback")
    with running(tmp_path / "node", *args) as proc:
        yield proc


def closed_for_address(node: ServerProcess) -> float:
    url = f"http://127.0.0.1:{node.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    found = re.search(r'curvechat_auth_failures_total\{reason="address_limit"\} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def test_a_node_closes_what_one_address_opens_past_its_limit(node: ServerProcess) -> None:
    # from other loopback addresses than the client's: one host all the same
    held = [
        socket.create_connection(("127.0.0.1", node.port), source_address=(f"127.0.0.{2 + i}", 0))
        for i in range(LIMIT)
    ]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        time.sleep(0.5)  # the node has counted them
        late = RawClient(ctx, node.connect, Identity.generate("late"))
        with pytest.raises(TimeoutError):
            late.request(m.Ping(t=1), timeout=2.0)  # closed as it comes, again and again
        assert closed_for_address(node) >= 1
        assert "event address_limit: 127.0.0.0/8 holds 20 connections" in node.log()
        for sock in held[: LIMIT // 2]:
            sock.close()
        reply = late.recv(timeout=10.0)  # its next try is let in, and answered
        assert isinstance(reply, m.Pong), reply
        late.close()
    finally:
        for sock in held:
            sock.close()
        ctx.term()


@pytest.mark.parametrize(
    ("flag", "bad"),
    [
        ("--max-connections-per-address", "-1"),
        ("--max-connections-per-address", "1000001"),
        ("--registrations-per-address", "-1"),
        ("--registrations-per-address", "1e7"),
    ],
)
def test_serve_refuses_a_bad_limit(
    flag: str, bad: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    serve_refuses([flag, bad], f"{flag} must be 0 … 1000000", capsys, tmp_path)


def test_registrations_from_one_address_are_paced(tmp_path: Path) -> None:
    """Accounts are free, and each brings limits of its own: one address
    registers at most N an hour (after N at once); a user already known
    signing in again, a registration refused (a name someone else holds),
    or another address, is not held back."""
    args = ("--registrations-per-address", "3", "--count-loopback")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    with running(tmp_path / "node", *args) as node:
        try:
            raws = [RawClient(ctx, node.connect, Identity.generate(f"u{i}")) for i in range(4)]
            for raw in raws[:2]:
                raw.register()
            # a name someone else holds is refused, and costs the address nothing
            thief = RawClient(ctx, node.connect, Identity.generate("u0"))
            taken = thief.request(
                m.Register(
                    user="u0",
                    sign_pub=thief.identity.sign_pub,
                    transport_sig=thief.identity.transport_sig(),
                )
            )
            assert isinstance(taken, m.Error) and taken.code == "name_taken", taken
            thief.close()
            raws[2].register()
            reply = raws[3].request(
                m.Register(
                    user="u3",
                    sign_pub=raws[3].identity.sign_pub,
                    transport_sig=raws[3].identity.transport_sig(),
                )
            )
            assert isinstance(reply, m.Error) and reply.code == "rate_limited", reply
            assert "more than 3 registrations an hour from 127.0.0.0/8" in reply.message
            again = RawClient(ctx, node.connect, raws[0].identity)
            again.register()  # known: signs in, costs nothing
            assert isinstance(again.request(m.Ping(t=1)), m.Pong)
            for raw in [*raws, again]:
                raw.close()
        finally:
            ctx.destroy(linger=0)  # (a failed check leaves sockets open)


def test_the_pace_is_per_address_and_refills() -> None:
    pace = RegistrationPace(2)
    host = ("203.0.113.7", 4000)
    assert [pace.refusal(host, 0.0) for _ in range(2)] == [None, None]
    assert "more than 2 registrations an hour from 203.0.113.7" in (pace.refusal(host, 0.0) or "")
    assert pace.refusal(("203.0.113.8", 4000), 0.0) is None
    assert pace.refusal(("127.0.0.1", 4000), 0.0) is None  # loopback: not counted
    assert pace.refusal(None, 0.0) is None  # no socket known
    assert pace.refusal(host, 1800.0) is None  # half an hour: one more
    assert RegistrationPace(0).refusal(host, 0.0) is None
    refunded = RegistrationPace(1)  # a registration refused by the store gives its token back
    assert refunded.refusal(host, 0.0) is None
    refunded.refund(host)
    refunded.refund(host)  # (never past the burst)
    assert refunded.refusal(host, 0.0) is None
    assert refunded.refusal(host, 0.0) is not None
    refunded.refund(("203.0.113.9", 1))  # an address never seen: nothing to give back
    site = RegistrationPace(1)  # one IPv6 site, whichever /64 of it
    assert site.refusal(("2001:db8:1:2::1", 1, 0, 0), 0.0) is None
    assert site.refusal(("2001:db8:1:ffff::1", 1, 0, 0), 0.0) is not None


def test_a_node_on_ipv6_serves_and_counts_its_peers(tmp_path: Path) -> None:
    """A node bound to an IPv6 address (tcp://[::1]:PORT) serves clients
    there, and counts ::1 as one address (with --count-loopback)."""
    port = free_port()
    args = ("--bind", f"tcp://[::1]:{port}", "--max-connections-per-address", "3")
    node = ServerProcess(tmp_path / "node", port=port, extra_args=(*args, "--count-loopback"))
    node.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    held: list[socket.socket] = []
    raws: list[RawClient] = []
    try:
        assert node.connect.startswith(f"curvechat://[::1]:{port}/")
        raws.append(RawClient(ctx, node.connect, Identity.generate("v6")))
        assert isinstance(raws[0].request(m.Ping(t=1)), m.Pong)
        held += [socket.create_connection(("::1", port)) for _ in range(2)]
        time.sleep(0.5)
        raws.append(RawClient(ctx, node.connect, Identity.generate("late")))
        with pytest.raises(TimeoutError):
            raws[1].request(m.Ping(t=1), timeout=2.0)
        assert "event address_limit: ::1 holds 3 connections" in node.log(), node.log()[-2000:]
    finally:
        for sock in held:
            sock.close()
        for raw in raws:
            raw.close()
        ctx.term()
        assert node.stop() == 0
    assert "Traceback" not in node.log()


async def test_the_client_engine_reaches_a_node_on_ipv6(
    tmp_path: Path, clients: ClientFactory
) -> None:
    port = free_port()
    args = ("--bind", f"tcp://[::1]:{port}")
    node = ServerProcess(tmp_path / "node", port=port, extra_args=args).start()
    try:
        alice, _ = await clients.make("alice", node.connect)
        await clients.make("bob", node.connect)
        await alice.create_room("v6", ["bob"])
        ack = await alice.wait_ack(alice.queue("v6", "over IPv6"), 20)
        assert ack.seq == 1
    finally:
        await clients.close_all()
        assert node.stop() == 0
