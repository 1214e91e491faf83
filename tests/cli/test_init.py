"""`init` keeps an identity only once the server took its name, and a
failed `init` leaves nothing behind but what was there before (issue 16,
item 5)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from curvechat.crypto.keyfile import load_identity

from support.servers import free_port


def test_a_taken_name_is_refused_before_anything_is_kept(cli: Callable[[str], Any]) -> None:
    alice, mallory = cli("alice"), cli("mallory")
    alice.run("init", "--user", "alice")
    taken = mallory.run("init", "--user", "alice", ok=False)
    assert taken.returncode == 1 and "[name_taken]" in taken.stderr
    assert "created" not in taken.stdout and "fingerprint" not in taken.stdout
    assert not mallory.home.exists()
    # another name in the same home just works: no identity_exists
    out = mallory.run("init", "--user", "mallory").stdout
    assert "registered as mallory" in out
    assert load_identity(mallory.home / "identity.key", b"correct horse mallory").user == "mallory"
    assert mallory.run("rooms").returncode == 0


def test_a_home_that_was_there_keeps_what_it_had(cli: Callable[[str], Any]) -> None:
    alice, mallory = cli("alice"), cli("mallory")
    alice.run("init", "--user", "alice")
    mallory.home.mkdir(mode=0o755)
    (mallory.home / "notes.txt").write_text("mine\n")
    taken = mallory.run("init", "--user", "alice", ok=False)
    assert "[name_taken]" in taken.stderr
    assert sorted(os.listdir(mallory.home)) == ["notes.txt"]  # no key, nothing staged
    assert (mallory.home.stat().st_mode & 0o777) == 0o755


def test_no_server_answering_leaves_no_home(cli: Callable[[str], Any], tmp_path: Path) -> None:
    alice = cli("alice")
    alice.home = tmp_path / "deep" / "er" / "alice"
    alice.env["CURVECHAT_HOME"] = str(alice.home)
    dead = alice.server.connect.replace(f":{alice.server.port}/", f":{free_port()}/")
    proc = alice.run(
        "init", "--user", "alice", "--server", dead, "--timeout", "2", ok=False, server=False
    )
    assert proc.returncode == 3 and "[unreachable]" in proc.stderr
    assert "nothing was kept" in proc.stderr
    assert not (tmp_path / "deep").exists()
    # and the name is still free, for this user or anyone
    assert "registered as alice" in alice.run("init", "--user", "alice").stdout


def test_a_registration_sent_but_not_confirmed_keeps_the_identity(
    cli: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server may have bound the name: deleting the key could lose it
    for good, so init keeps it, says so, and exits 75 (as a queued send)."""
    from curvechat.cli.main import main
    from curvechat.client.connection import Connection
    from curvechat.client.errors import RequestTimeout

    async def unanswered(self: Connection, req: object, timeout: float | None = None) -> object:
        raise RequestTimeout("no reply to Register")

    alice = cli("alice")
    monkeypatch.setattr(Connection, "request", unanswered)
    monkeypatch.setenv("CURVECHAT_HOME", str(alice.home))
    monkeypatch.setenv("CURVECHAT_PASSPHRASE", "correct horse alice")
    code = main(["init", "--user", "alice", "--server", alice.server.connect, "--timeout", "2"])
    out, err = capsys.readouterr()
    assert "registered" not in out
    assert code == 75
    assert "did not confirm the registration" in err
    assert (alice.home / "identity.key").exists()
    assert [p.name for p in alice.home.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    # the next command registers it (registration is idempotent)
    assert alice.run("rooms").returncode == 0


def test_a_wrong_server_key_is_key_mismatch_and_leaves_no_home(cli: Callable[[str], Any]) -> None:
    alice = cli("alice")
    base, _, key = alice.server.connect.rpartition("/")
    wrong = f"{base}/{key[:-6]}{'aaaaaa' if not key.endswith('aaaaaa') else 'bbbbbb'}"
    proc = alice.run("init", "--user", "alice", "--server", wrong, ok=False, server=False)
    assert proc.returncode == 1 and "[key_mismatch]" in proc.stderr, proc.stderr
    assert "nothing was kept" in proc.stderr
    assert not alice.home.exists()


def test_init_waits_the_connect_timeout_for_a_server_that_never_answers(
    cli: Callable[[str], Any],
) -> None:
    import socket

    alice = cli("alice")
    with socket.socket() as silent:  # accepts connections, never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        mute = alice.server.connect.replace(f":{alice.server.port}/", f":{port}/")
        proc = alice.run(
            "init",
            "--user",
            "alice",
            "--server",
            mute,
            "--connect-timeout",
            "1",
            ok=False,
            server=False,
        )
    assert proc.returncode == 3 and "[unreachable]" in proc.stderr
    assert "no server answered within 1 s" in proc.stderr, proc.stderr
    assert not alice.home.exists()


def test_a_refusal_that_may_pass_keeps_the_identity_unconfirmed(
    cli: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a refusal of the name itself (name_taken, key_taken, a bad
    signature or frame) throws the identity away: after store_unavailable
    the registration may have been stored, so it is kept, unconfirmed."""
    from curvechat.cli.main import main
    from curvechat.client.connection import Connection
    from curvechat.client.errors import ServerRefused

    async def busy(self: Connection, req: object, timeout: float | None = None) -> object:
        raise ServerRefused("store_unavailable", "the store is unavailable")

    alice = cli("alice")
    monkeypatch.setattr(Connection, "request", busy)
    monkeypatch.setenv("CURVECHAT_HOME", str(alice.home))
    monkeypatch.setenv("CURVECHAT_PASSPHRASE", "correct horse alice")
    code = main(["init", "--user", "alice", "--server", alice.server.connect])
    assert code == 75
    assert "did not confirm the registration" in capsys.readouterr().err
    assert (alice.home / "identity.key").exists()
    monkeypatch.undo()
    assert alice.run("rooms").returncode == 0  # registered on the next connection


def test_a_link_that_fails_after_the_registration_keeps_the_staged_identity(
    cli: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once the server bound the name, the staged file holds the only copy
    of its key: a link that fails then leaves it, and says where it is."""
    import errno

    from curvechat.cli.main import main
    from curvechat.client import enroll

    def no_links(tmp: Path, target: Path) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    alice = cli("alice")
    monkeypatch.setattr(enroll, "link_new", no_links)
    monkeypatch.setenv("CURVECHAT_HOME", str(alice.home))
    monkeypatch.setenv("CURVECHAT_PASSPHRASE", "correct horse alice")
    with pytest.raises(SystemExit) as done:
        main(["init", "--user", "alice", "--server", alice.server.connect])
    err = capsys.readouterr().err
    assert done.value.code == 1 and "[write_failed]" in err and "nothing was kept" not in err
    (staged,) = [p for p in alice.home.iterdir() if p.name.startswith(".identity.key.")]
    assert str(staged) in err
    monkeypatch.undo()
    staged.rename(alice.home / "identity.key")  # as the message says
    assert alice.run("rooms").returncode == 0  # the name is this identity's
