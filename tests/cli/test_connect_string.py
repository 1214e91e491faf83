"""The connect string `serve` prints can be pasted as it is: unquoted into
a shell (and a URL or a chat message), and the fingerprint printed with it
is the one `init` shows the user, to compare by voice (issue 16, item 4)."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curvechat.protocol.connect import parse_connect

from support.servers import ServerProcess, running


def test_serve_prints_a_pasteable_string_and_its_fingerprint(server: ServerProcess) -> None:
    connect = server.connect
    assert connect.startswith("curvechat://127.0.0.1:")
    assert shlex.quote(connect) == connect  # nothing a shell expands or splits
    assert (server.data / "connect").read_text() == connect + "\n"
    (addr,) = parse_connect(connect)
    key = (server.data / "server.pub").read_text().strip()
    assert addr.server_key == key
    fpr = addr.fingerprint
    assert f"server fingerprint: {fpr}\n" in server.stdout
    assert len(fpr.split()) == 6


def test_pasted_unquoted_into_a_shell_it_works(
    server: ServerProcess, cli: Callable[[str], Any]
) -> None:
    alice = cli("alice")
    # what a user does: paste the printed string after --server, no quotes
    script = f"{shlex.join(alice.argv('init', '--user', 'alice', server=False))} --server "
    proc = subprocess.run(
        ["sh", "-c", script + server.connect],
        env=alice.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "registered as alice" in proc.stdout
    # init shows the fingerprint `serve` printed, for the user to compare
    (addr,) = parse_connect(server.connect)
    assert f"server fingerprint: {addr.fingerprint}" in proc.stdout
    assert f"server fingerprint: {addr.fingerprint}\n" in server.stdout
    # the string in the older form still works, and names the same server
    assert alice.run("rooms", "--server", addr.legacy, server=False).returncode == 0
    assert alice.run("rooms", "--server", str(addr), server=False).returncode == 0


def test_another_server_than_the_home_used_last_is_said(
    server: ServerProcess, tmp_path: Path, cli: Callable[[str], Any]
) -> None:
    """A home is a user's on one server. Given another server's string (a
    slip of the paste, another deployment), the command says so, and that
    the server registered the user unasked; the same server again says
    nothing (a node of the same cluster neither: tests/cluster)."""
    alice = cli("alice")
    alice.run("init", "--user", "alice")
    quiet = alice.run("rooms")
    assert "is not the server this home used last" not in quiet.stderr
    with running(tmp_path / "other") as other:
        moved = alice.run("rooms", "--server", other.connect, server=False)
        (addr,) = parse_connect(other.connect)
        said = f"(fingerprint {addr.fingerprint}) is not the server this home used last"
        assert said in moved.stderr, moved.stderr
        assert "alice was registered there if that server did not know them" in moved.stderr
        again = alice.run("rooms", server=False)  # the home's server is that one now
        assert "is not the server this home used last" not in again.stderr
