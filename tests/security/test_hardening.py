"""Keys at rest on the server, refusing unsafe libzmq builds, rate limits,
the socket's size limit, and epoch hygiene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from curvechat.client.connection import Connection
from curvechat.protocol import decode_server_frame, encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect
from curvechat.protocol.limits import MAX_FRAME_BYTES
from curvechat.server import node as node_mod

from support.clients import ClientFactory
from support.servers import ServerProcess


def test_server_secret_key_and_data_dir_are_private(server: ServerProcess) -> None:
    assert (server.data / "server.key").stat().st_mode & 0o777 == 0o600
    assert server.data.stat().st_mode & 0o777 == 0o700
    db = server.data / "curvechat.db"
    assert db.stat().st_mode & 0o077 == 0


def test_world_readable_server_key_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "node"
    ServerProcess(data).start().stop()
    (data / "server.key").chmod(0o644)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "curvechat",
            "serve",
            "--data",
            str(data),
            "--bind",
            "tcp://127.0.0.1:0",
            "--http",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "[server_key]" in proc.stderr and "chmod 600" in proc.stderr


def test_leftover_key_tmp_from_a_crashed_first_start(tmp_path: Path) -> None:
    """A first start that died between writing server.key.tmp and renaming it
    must not keep the next start from creating the key."""
    from curvechat.server.keys import load_or_create_keypair

    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    (data / "server.key.tmp").write_bytes(b"half a key")
    public, secret = load_or_create_keypair(data)
    assert zmq.curve_public(secret) == public
    assert (data / "server.key").read_bytes().strip() == secret
    assert (data / "server.key").stat().st_mode & 0o777 == 0o600
    assert not (data / "server.key.tmp").exists()


@pytest.mark.parametrize(
    ("has_curve", "version", "words"),
    [(False, (4, 3, 5), "without CURVE"), (True, (4, 3, 1), "older than 4.3.2")],
)
def test_unsafe_libzmq_is_refused(
    monkeypatch: pytest.MonkeyPatch, has_curve: bool, version: tuple[int, int, int], words: str
) -> None:
    monkeypatch.setattr(node_mod.zmq, "has", lambda what: has_curve if what == "curve" else True)
    monkeypatch.setattr(node_mod.zmq, "zmq_version_info", lambda: version)
    with pytest.raises(RuntimeError, match=words):
        node_mod.check_libzmq()
    # The client refuses the same libzmq before it opens anything.
    public, secret = zmq.curve_keypair()
    addresses = parse_connect(f"tcp://127.0.0.1:1/{public.decode()}")
    with pytest.raises(RuntimeError, match=f"{words}.*refusing to connect"):
        Connection(addresses, public_key=public, secret_key=secret, on_push=lambda msg: None)


def raw_dealer(connect: str) -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes]]:
    addr = parse_connect(connect)[0]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    pub, sec = zmq.curve_keypair()
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (
        addr.server_key.encode(),
        pub,
        sec,
    )
    sock.linger = 0
    sock.rcvtimeo = 5000
    sock.connect(addr.endpoint)
    return ctx, sock


def test_rate_limit_per_connection(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "node", extra_args=("--rate-conn", "20")).start()
    ctx, sock = raw_dealer(server.connect)
    try:
        burst = 200
        for rid in range(1, burst + 1):
            sock.send(encode_request(rid, m.Ping(t=rid)))
        replies = [decode_server_frame(sock.recv()) for _ in range(burst)]
        limited = [r for r in replies if isinstance(r.msg, m.Error)]
        served = [r for r in replies if isinstance(r.msg, m.Pong)]
        assert {r.msg.code for r in limited} == {"rate_limited"}  # type: ignore[union-attr]
        assert 30 <= len(served) <= 60, len(served)  # the burst: 2 s at 20/s, plus refill
        assert "retry in" in limited[0].msg.message  # type: ignore[union-attr]
        # the bucket refills: within a few seconds pings are served again
        for rid in range(1000, 1100):
            sock.send(encode_request(rid, m.Ping(t=rid)))
            if isinstance(decode_server_frame(sock.recv()).msg, m.Pong):
                break
            sock.poll(100)  # idle the connection a little between tries
        else:
            raise AssertionError("never served again")
    finally:
        sock.close()
        ctx.term()
        assert server.stop() == 0


def test_frame_over_the_socket_limit_drops_the_peer_not_the_server(server: ServerProcess) -> None:
    ctx, sock = raw_dealer(server.connect)
    try:
        sock.send(b"\0" * (MAX_FRAME_BYTES + 64 * 1024))
        sock.rcvtimeo = 1500
        with pytest.raises(zmq.Again):
            sock.recv()  # no answer: libzmq cut the connection at MAXMSGSIZE
    finally:
        sock.close()
        ctx.term()
    ctx, sock = raw_dealer(server.connect)
    try:
        sock.send(encode_request(1, m.Ping(t=1)))
        assert isinstance(decode_server_frame(sock.recv()).msg, m.Pong)
    finally:
        sock.close()
        ctx.term()


async def test_epochs_rotate_by_message_count(
    server: ServerProcess, clients: ClientFactory
) -> None:
    alice, alice_events = await clients.make("alice", server.connect, rotate_after_messages=10)
    bob, bob_events = await clients.make("bob", server.connect, rotate_after_messages=10)
    await alice.create_room("r", ["bob"])
    await bob.history("r")
    sent = [f"m{i}" for i in range(35)]
    for i, text in enumerate(sent):
        await (alice if i % 2 else bob).send("r", text)
    await bob_events.until(lambda: len(bob.cache.messages("r", limit=100)) == 35)
    await alice_events.until(lambda: len(alice.cache.messages("r", limit=100)) == 35)
    assert sorted(alice.cache.epoch_keys("r")) == [0, 1, 2, 3]
    for client in (alice, bob):
        rows = client.cache.messages("r", limit=100)
        assert [r.text for r in rows] == sent and all(r.error is None for r in rows)


async def test_epochs_rotate_by_age(server: ServerProcess, clients: ClientFactory) -> None:
    alice, _ = await clients.make("alice", server.connect, rotate_after_seconds=1e-6)
    bob, bob_events = await clients.make("bob", server.connect)
    await alice.create_room("r", ["bob"])
    for text in ("a", "b", "c"):
        await alice.send("r", text)
    assert sorted(alice.cache.epoch_keys("r")) == [0, 1, 2, 3]
    await bob_events.until(lambda: len(bob.cache.messages("r")) == 3)
    assert [r.text for r in bob.cache.messages("r")] == ["a", "b", "c"]


def test_no_secret_in_env_or_argv_of_server(server: ServerProcess) -> None:
    assert server.proc is not None
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
    secret = (server.data / "server.key").read_bytes().strip()
    assert secret not in cmdline
    assert secret not in Path(f"/proc/{server.proc.pid}/environ").read_bytes()
