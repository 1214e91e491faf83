"""`curvechat unlock`: the identity unsealed once and kept by an agent
behind a private Unix socket for a while, so a script of many commands
pays Argon2id once; `curvechat lock` ends it (issue 16, item 5)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from curvechat.cli import agent
from curvechat.crypto.keyfile import load_identity


def _is_agent(pid: int) -> bool:
    """Whether `pid` is (still) a live agent process, not a zombie or a
    process that took over its pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return b"curvechat.cli.agent" in cmdline and state != "Z"


def _wait_gone(pid: int, path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_agent(pid) and not path.exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"agent {pid} still there (socket exists: {path.exists()})")


def _agent_pid(out: str) -> int:
    (line,) = [ln for ln in out.splitlines() if ln.startswith("agent: pid ")]
    return int(line.split()[2].rstrip(","))


@pytest.fixture
def unlocked(cli: Callable[[str], Any]) -> Iterator[Callable[..., tuple[Any, int]]]:
    """`unlocked(name, *unlock_args)`: a user with an identity and an agent;
    every agent started is stopped at the end (by its pid)."""
    pids: list[int] = []

    def make(name: str, *args: str) -> tuple[Any, int]:
        user = cli(name)
        user.run("init", "--user", name)
        out = user.run("unlock", *args).stdout
        pids.append(_agent_pid(out))
        return user, pids[-1]

    yield make
    for pid in pids:
        if _is_agent(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)


def test_ten_commands_after_one_unlock_need_no_passphrase(
    unlocked: Callable[..., tuple[Any, int]],
) -> None:
    alice, pid = unlocked("alice", "--lifetime", "5m")
    sock = alice.home / "agent.sock"
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()

    env = alice.without_passphrase()  # and stdin is not a terminal: nothing to ask
    alice.run("create", "general", env=env)
    for n in range(8):
        alice.run("send", "general", f"message {n}", env=env)
    assert "message 7" in alice.run("history", "general", env=env).stdout

    locked = alice.run("lock").stdout
    assert f"pid {pid}" in locked and "stopped" in locked
    _wait_gone(pid, sock)
    refused = alice.run("rooms", env=env, ok=False)
    assert refused.returncode == 1 and "[no_passphrase]" in refused.stderr
    assert "no agent was running" in alice.run("lock").stdout


def test_the_secrets_stay_in_memory(unlocked: Callable[..., tuple[Any, int]]) -> None:
    alice, pid = unlocked("alice")
    identity = load_identity(alice.home / "identity.key", b"correct horse alice")
    for path in alice.home.parent.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert identity.sign_seed not in data and identity.transport_secret not in data
    # nor in its environment (and a non-root user cannot read that at all:
    # the agent is not dumpable)
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except PermissionError:
        assert os.getuid() != 0
    else:
        assert b"CURVECHAT_PASSPHRASE" not in environ and b"CURVECHAT_HOME" in environ


def test_the_agent_ends_with_its_lifetime(unlocked: Callable[..., tuple[Any, int]]) -> None:
    alice, pid = unlocked("alice", "--lifetime", "2s")
    _wait_gone(pid, alice.home / "agent.sock", timeout=15)
    refused = alice.run("rooms", env=alice.without_passphrase(), ok=False)
    assert "[no_passphrase]" in refused.stderr


def test_the_agent_ends_when_its_socket_goes(unlocked: Callable[..., tuple[Any, int]]) -> None:
    alice, pid = unlocked("alice")
    (alice.home / "agent.sock").unlink()
    _wait_gone(pid, alice.home / "agent.sock")


def test_an_agent_for_another_identity_is_not_used(
    unlocked: Callable[..., tuple[Any, int]], cli: Callable[[str], Any]
) -> None:
    alice, _pid = unlocked("alice")
    bob = cli("bob")
    bob.run("init", "--user", "bob")
    env = {**bob.without_passphrase(), "CURVECHAT_AGENT": str(alice.home / "agent.sock")}
    refused = bob.run("rooms", env=env, ok=False)
    assert "[no_passphrase]" in refused.stderr  # not alice's identity in bob's home
    env["CURVECHAT_PASSPHRASE"] = "correct horse bob"
    assert bob.run("rooms", env=env).returncode == 0
    # CURVECHAT_AGENT=off: no agent, even the home's own
    off = {**alice.without_passphrase(), "CURVECHAT_AGENT": "off"}
    assert "[no_passphrase]" in alice.run("rooms", env=off, ok=False).stderr


def test_unlock_refuses_a_socket_directory_others_can_write(
    cli: Callable[[str], Any], tmp_path: Path
) -> None:
    alice = cli("alice")
    alice.run("init", "--user", "alice")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    env = {**alice.env, "CURVECHAT_AGENT": str(shared / "a.sock")}
    proc = alice.run("unlock", env=env, ok=False)
    assert proc.returncode == 1 and "[agent_failed]" in proc.stderr
    assert "writable by others" in proc.stderr
    assert list(shared.iterdir()) == []
    bad = alice.run("unlock", "--lifetime", "25h", ok=False)
    assert bad.returncode == 2 and "[bad_argument]" in bad.stderr


def test_unlock_makes_the_sockets_directory_but_none_above_it(
    cli: Callable[[str], Any], tmp_path: Path
) -> None:
    alice = cli("alice")
    alice.run("init", "--user", "alice")
    typo = tmp_path / "no" / "such"
    env = {**alice.env, "CURVECHAT_AGENT": str(typo / "a.sock")}
    proc = alice.run("unlock", env=env, ok=False)
    assert proc.returncode == 1 and "[agent_failed]" in proc.stderr
    assert f"{tmp_path / 'no'} does not exist" in proc.stderr
    assert not (tmp_path / "no").exists()


def _secrets() -> agent.Unsealed:
    return agent.Unsealed(
        user="alice", sign_seed=b"s" * 32, transport_secret=b"t" * 32, key_file="ab" * 32
    )


def _serving(a: agent.Agent) -> threading.Thread:
    a.bind()
    thread = threading.Thread(target=a.serve, daemon=True)
    thread.start()
    return thread


def test_the_agent_answers_only_its_own_uid(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    path = home / "agent.sock"
    stranger = agent.Agent(path, _secrets(), 60, uid=os.getuid() + 1)
    thread = _serving(stranger)
    try:
        assert agent.ask(path, "identity") is None
        assert stranger.refused == 1
    finally:
        path.unlink()  # the agent notices its socket is gone and ends
        thread.join(10)
        stranger.close()
    assert not thread.is_alive()

    mine = agent.Agent(path, _secrets(), 60)
    thread = _serving(mine)
    try:
        reply = agent.ask(path, "identity")
        assert reply is not None and reply.sign_seed == b"s" * 32 and reply.user == "alice"
        assert "s" * 8 not in repr(reply)
        status = agent.ask(path, "status")
        assert status is not None and status.sign_seed == b"" and 0 < status.expires_in <= 60
        assert agent.ask(path, "stop") is not None
        thread.join(10)
        assert not thread.is_alive()
    finally:
        mine.close()
    assert not path.exists()


def test_a_client_does_not_talk_to_a_socket_of_another_uid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    path = home / "agent.sock"
    a = agent.Agent(path, _secrets(), 60)
    thread = _serving(a)
    try:
        uid = os.getuid()
        monkeypatch.setattr(agent.os, "getuid", lambda: uid + 1)
        assert agent.ask(path, "identity") is None
        monkeypatch.undo()
        assert agent.ask(path, "stop") is not None
        thread.join(10)
    finally:
        a.close()


def test_an_end_on_another_day_is_said_with_its_date(cli: Callable[[str], Any]) -> None:
    """`--lifetime 24h` ends tomorrow: "until 21:40:04" at 21:40 read as
    already over."""
    alice = cli("alice")
    alice.run("init", "--user", "alice")
    out = alice.run("unlock", "--lifetime", "24h").stdout
    try:
        end = (dt.datetime.now() + dt.timedelta(hours=24)).date().isoformat()
        assert f"(until {end} " in out, out
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(_agent_pid(out), 15)
