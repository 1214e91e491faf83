"""What a user can type or leave lying around, refused with one line and a
code before anything is asked or started: room ids, bytes that are not
UTF-8, numbers that are not finite or out of range, HOST:PORT, connect
strings, passphrase and server files that are not small regular UTF-8
files, a closed stdin."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import zmq

from curvechat.cli.main import main
from curvechat.crypto.identity import Identity
from curvechat.crypto.keyfile import seal_identity
from curvechat.protocol.connect import (
    ConnectStringError,
    ServerAddress,
    format_connect,
    parse_connect,
)

from support.servers import ServerProcess

KEY = zmq.curve_keypair()[0].decode()


def connect_string(hostport: str) -> str:
    return format_connect([ServerAddress(f"tcp://{hostport}", KEY)])


def an_identity(home: Path) -> None:
    home.mkdir(exist_ok=True)
    identity = Identity.generate("alice")
    seal_identity(identity, b"a long passphrase", home / "identity.key", opslimit=2, memlimit=2**26)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return int(exit_.value.code or 0), err


@pytest.mark.parametrize(
    "argv",
    [
        ("leave", "A"),
        ("leave", "ok", "B!"),  # each of several rooms
        ("invite", "Bad Room", "bob"),
        ("history", "@"),
        ("history", "@a:b:c"),
        ("members", "x" * 65),
        ("create", "@alice:bob"),
        ("create", "@bob"),
    ],
)
def test_a_room_id_that_names_no_room(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...]
) -> None:
    code, err = run(capsys, *argv, "--home", str(tmp_path))
    assert code == 1 and "[bad_room]" in err
    assert not (tmp_path / "identity.key").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ("history", "gen\udcffal"),
        ("send", "general", "hi \udcff"),
        ("send", "general", "hi", "--timeout", "nan"),
        ("send", "general", "hi", "--connect-timeout", "inf"),
        ("history", "general", "--limit", "9223372036854775808"),
        ("tail", "general", "--last", "99999999999999999999"),
        ("tail", "general", "--last", "-5"),
        ("serve", "--http", "nonsense"),
        ("serve", "--http", "127.0.0.1:99999"),
        ("serve", "--http", "127.0.0.1:4\uff17700"),
        ("serve", "--rate-conn", "nan"),
        ("monitor", "--http", "127.0.0.1:99999"),
        ("monitor", "--history", "nan"),
        ("monitor", "--interval", "nan"),
    ],
)
def test_a_value_no_command_takes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...]
) -> None:
    code, err = run(
        capsys, *argv, *(() if argv[0] in ("serve", "monitor") else ("--home", str(tmp_path)))
    )
    assert code == 2 and "[bad_argument]" in err


@pytest.mark.parametrize("hostport", ["127.0.0.1:4\uff17700", "-:7700", ".:7700", "a..b:1", "a-:1"])
def test_a_connect_string_whose_address_is_not_host_port(hostport: str) -> None:
    with pytest.raises(ConnectStringError):
        parse_connect(connect_string(hostport))


def test_host_names_as_they_are_written_still_parse() -> None:
    for hostport in ("chat.example.com:7700", "my-node-2:7700", "[::1]:7700", "10.0.0.1:1"):
        assert parse_connect(connect_string(hostport))[0].endpoint == f"tcp://{hostport}"


def _files(tmp_path: Path) -> dict[str, Path]:
    not_utf8 = tmp_path / "not-utf8"
    not_utf8.write_bytes(b"\xff\xfe")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    directory = tmp_path / "dir"
    directory.mkdir()
    return {"not UTF-8": not_utf8, "a FIFO": fifo, "a directory": directory}


def test_a_passphrase_file_that_is_not_a_small_utf8_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CURVECHAT_PASSPHRASE", raising=False)
    an_identity(tmp_path)
    for what, path in _files(tmp_path).items():
        code, err = run(capsys, "rooms", "--home", str(tmp_path), "--passphrase-file", str(path))
        assert code == 1 and "[passphrase_file]" in err, what
    code, err = run(capsys, "rooms", "--home", str(tmp_path), "--passphrase-file", "")
    assert code == 2 and "[passphrase_file]" in err


def test_a_passphrase_that_is_not_utf8(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    an_identity(tmp_path)
    monkeypatch.setenv("CURVECHAT_PASSPHRASE", "a long \udcff")
    code, err = run(capsys, "rooms", "--home", str(tmp_path))
    assert code == 1 and "[bad_passphrase]" in err


def test_a_saved_server_file_that_is_not_a_small_utf8_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CURVECHAT_PASSPHRASE", "a long passphrase")
    monkeypatch.delenv("CURVECHAT_SERVER", raising=False)
    monkeypatch.setenv("CURVECHAT_AGENT", "off")
    home = tmp_path / "home"
    an_identity(home)
    for what, path in _files(tmp_path).items():
        target = home / "server"
        if path.is_dir():
            target.mkdir()
        elif what == "a FIFO":
            os.mkfifo(target)
        else:
            target.write_bytes(path.read_bytes())
        code, err = run(capsys, "rooms", "--home", str(home))
        assert code == 1 and "[bad_config]" in err and "saved server" in err, what
        target.rmdir() if target.is_dir() else target.unlink()


def test_send_from_a_closed_stdin(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    code, err = run(capsys, "send", "general", "-", "--home", str(tmp_path))
    assert code == 2 and "[no_input]" in err


def test_an_identity_file_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    from curvechat.crypto.errors import KeyFileError
    from curvechat.crypto.keyfile import load_identity

    os.mkfifo(tmp_path / "identity.key")
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_identity(tmp_path / "identity.key", b"a long passphrase")


def test_history_sharing_of_a_room_one_is_not_in(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: ServerProcess,
) -> None:
    monkeypatch.setenv("CURVECHAT_PASSPHRASE", "a long passphrase")
    monkeypatch.setenv("CURVECHAT_AGENT", "off")
    home = ("--home", str(tmp_path / "alice"), "--server", server.connect)
    assert main(["init", "--user", "alice", *home]) == 0
    capsys.readouterr()
    code, err = run(capsys, "history-sharing", "nosuch", "all", *home)
    assert code == 1 and "[no_such_room]" in err
