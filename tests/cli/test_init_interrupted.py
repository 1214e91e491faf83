"""A Ctrl-C during `init` never loses the name: once the registration may
have reached the server, the identity is kept (the server may have bound
the name to its key) and the next command registers it; before anything
was sent, nothing is kept and the name stays free. Either way the one line
says which."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from curvechat.crypto.keyfile import load_identity

# `curvechat init` with one Ctrl-C (a real SIGINT, as the terminal sends)
# at a chosen point of the registration: while it waits for a node's
# welcome (nothing sent), as the request goes out (before its reply), or
# right after the server answered.
SCRIPT = textwrap.dedent(
    """
    import asyncio
    import os
    import signal
    import sys

    from curvechat.client import enroll
    from curvechat.client.connection import Connection
    from curvechat.protocol import messages as m

    # Ctrl-C as in a terminal, whatever this process inherited (a job started
    # in the background by a non-interactive shell ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    when = sys.argv[1]

    def ctrl_c():
        os.kill(os.getpid(), signal.SIGINT)

    if when == "welcome":
        async def reach_node(conn, timeout, changed):
            ctrl_c()
            await asyncio.sleep(30)

        enroll.reach_node = reach_node
    else:
        request = Connection.request

        async def request_then_ctrl_c(self, req, timeout=None):
            if not isinstance(req, m.Register):
                return await request(self, req, timeout=timeout)
            if when == "sent":
                ctrl_c()
            reply = await request(self, req, timeout=timeout)
            ctrl_c()
            await asyncio.sleep(30)
            return reply

        Connection.request = request_then_ctrl_c

    from curvechat.cli.main import main

    sys.exit(main(sys.argv[2:]))
    """
)


def init_with_ctrl_c(user: Any, when: str) -> subprocess.CompletedProcess[str]:
    argv = ["init", "--user", user.name, "--server", user.server.connect]
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, when, *argv],
        env=user.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("when", ["sent", "answered"])
def test_a_ctrl_c_once_the_registration_was_sent_keeps_the_identity(
    cli: Callable[[str], Any], when: str
) -> None:
    alice, mallory = cli("alice"), cli("mallory")
    done = init_with_ctrl_c(alice, when)
    assert done.returncode == 130, done.stderr
    assert (alice.home / "identity.key").exists(), done.stderr
    key = load_identity(alice.home / "identity.key", b"correct horse alice")
    assert key.user == "alice"
    assert [p.name for p in alice.home.iterdir() if p.name.startswith(".")] == []
    [line] = done.stderr.splitlines()
    assert line.startswith("curvechat: error [interrupted]: stopped (Ctrl-C) after the"), line
    assert f"kept in {alice.home / 'identity.key'};" in line, line
    assert "the next command that connects" in line, line
    # The next command registers it, with the server init remembered.
    assert alice.run("rooms", server=False).returncode == 0
    # The name is this identity's: nobody else gets it, and init says the
    # identity is there rather than making another.
    taken = mallory.run("init", "--user", "alice", ok=False)
    assert "[name_taken]" in taken.stderr, taken.stderr
    again = alice.run("init", "--user", "alice", ok=False)
    assert "[identity_exists]" in again.stderr, again.stderr
    still = load_identity(alice.home / "identity.key", b"correct horse alice")
    assert still.sign_pub == key.sign_pub


def test_a_ctrl_c_before_anything_was_sent_keeps_nothing(cli: Callable[[str], Any]) -> None:
    alice, mallory = cli("alice"), cli("mallory")
    done = init_with_ctrl_c(alice, "welcome")
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == [
        "curvechat: error [interrupted]: stopped (Ctrl-C) before the registration was"
        f" sent; nothing was kept in {alice.home}"
    ]
    assert not alice.home.exists()
    # The name is still free, for anyone.
    assert "registered as alice" in mallory.run("init", "--user", "alice").stdout
