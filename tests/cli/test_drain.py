"""`curvechat drain` against a real node: its arguments are checked with a
code, the token is required, a draining node refuses `hello` with
`draining` and asks the clients it has to move, and `--cancel` takes it
back. The cluster case (clients moving to other nodes while they send) is
`tests/cluster/test_spread_drain.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import zmq

from curvechat.client import events as ev
from curvechat.client.state import ConnState
from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m

from support.clients import ClientFactory
from support.raw import RawClient
from support.servers import ServerProcess, free_port


def drain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "curvechat", "drain", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_arguments_and_a_missing_token_are_refused_with_a_code(tmp_path: Path) -> None:
    for args, code, exit_code in (
        (("--http", "no port here", "--data", str(tmp_path)), "bad_argument", 2),
        (("--http", "127.0.0.1:99999", "--data", str(tmp_path)), "bad_argument", 2),
        (("--timeout", "0", "--data", str(tmp_path)), "bad_argument", 2),
        (("--data", str(tmp_path / "nowhere")), "http_token", 1),
    ):
        done = drain(*args)
        assert done.returncode == exit_code, (args, done.stderr)
        assert f"[{code}]" in done.stderr, (args, done.stderr)
    token = tmp_path / "http.token"
    token.write_text("x" * 40 + "\n")
    token.chmod(0o644)
    done = drain("--data", str(tmp_path))
    assert done.returncode == 1 and "[http_token]" in done.stderr  # readable by others
    token.chmod(0o600)
    done = drain("--http", f"127.0.0.1:{free_port()}", "--data", str(tmp_path))
    assert done.returncode == 3 and "[unreachable]" in done.stderr


async def test_drain_a_single_node_and_take_it_back(
    server: ServerProcess, clients: ClientFactory, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("y" * 40 + "\n")
    wrong.chmod(0o600)
    http = ("--http", f"127.0.0.1:{server.http_port}")
    done = drain(*http, "--http-token-file", str(wrong))
    assert done.returncode == 1 and "[unauthorized]" in done.stderr
    alice, events = await clients.make("alice", server.connect)
    done = drain(*http, "--data", str(server.data), "--no-wait")
    assert done.returncode == 0, done.stderr
    assert "draining, 1 client(s) asked to move" in done.stdout
    # Alice is asked to move; with no other node she comes back to this one,
    # which refuses her hello as draining.
    await events.until(lambda: alice.conn.failures.get(server.endpoint) == "draining")
    said = [e.status for e in events.of(ev.StatusChanged)]
    assert any(s.moving and "is draining: moving to another node" in s.detail for s in said)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        raw = RawClient(ctx, server.connect, Identity.generate("bob"))
        raw.send(m.Hello(client="test"))
        reply = raw.recv()
        assert isinstance(reply, m.Error) and reply.code == "draining"
        status = drain(*http, "--data", str(server.data), "--status")
        assert status.returncode == 0 and "draining" in status.stdout
        done = drain(*http, "--data", str(server.data), "--cancel")
        assert done.returncode == 0 and "taking clients" in done.stdout
        raw.send(m.Hello(client="test"))
        assert isinstance(raw.recv(), m.Welcome)
    finally:
        ctx.destroy(linger=0)
    await events.until(lambda: alice.status.state is ConnState.LIVE, timeout=30)


def test_a_data_directory_of_another_node_drains_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Nodes of a cluster share one token: the node that answers at --http
    must be the one whose data directory was given."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "node.id").write_text("some-other-node\n")
    token = other / "http.token"
    token.write_text((server.data / "http.token").read_text())
    token.chmod(0o600)
    http = ("--http", f"127.0.0.1:{server.http_port}")
    done = drain(*http, "--data", str(other), "--no-wait")
    assert done.returncode == 1 and "[wrong_node]" in done.stderr, done.stderr
    assert "not some-other-node" in done.stderr
    status = drain(*http, "--data", str(server.data), "--status")
    assert status.returncode == 0 and "taking clients" in status.stdout  # not drained


def test_the_status_line_says_the_client_is_moving_not_lost() -> None:
    from curvechat.cli.follow import ConnectionNotes
    from curvechat.client.state import ConnStatus
    from curvechat.tui.widgets.status import banner_text

    why = "node n1 is draining: moving to another node"
    moving = ConnStatus(ConnState.RECONNECTING, "tcp://h:1", detail=why, moving=True)
    lost = ConnStatus(ConnState.RECONNECTING, "tcp://h:1", detail="no reply for 6.0 s")
    assert banner_text(moving, 0.0) == f"↪ moving to another node ({why}) · attempt 1"
    assert (banner_text(lost, 0.0) or "").startswith("⚠ connection lost")
    connecting = ConnStatus(ConnState.CONNECTING, "tcp://h:2", moving=True)
    assert banner_text(connecting, 0.0) == "moving to tcp://h:2…"
    notes = ConnectionNotes(ConnStatus(ConnState.LIVE, "tcp://h:1"))
    assert notes.line(moving) == f"-- moving to another node ({why})"
