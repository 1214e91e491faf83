"""Inputs too long to use, or to repeat: a home whose path the system
refuses is one `data_dir` line naming it, shortened, before anything is
made; an error that echoes a name, a path or a value cuts it at 80
characters; and `$CURVECHAT_CONNECT_TIMEOUT` is held to what
`--connect-timeout` takes (a finite positive number)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from curvechat.cli.main import main

HUGE = "a" * 100_000
SHORT = 300
"""Longer than any of these error lines needs to be: 80 characters of the
input, the code and the words around it."""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err[:SHORT]
    return int(exit_.value.code or 0), err


def long_home(tmp_path: Path) -> Path:
    """A home under a directory that does not exist yet, with a name over
    the 255 bytes a file system takes."""
    return tmp_path / "missing" / ("y" * 300)


@pytest.mark.parametrize(
    "argv",
    [("rooms",), ("init", "--user", "zed"), ("send", "r", "hi"), ("history", "r"), ("keys",)],
)
def test_a_home_path_too_long_is_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
) -> None:
    monkeypatch.setenv("CURVECHAT_PASSPHRASE", "a long passphrase")
    monkeypatch.setenv("CURVECHAT_AGENT", "off")
    home = long_home(tmp_path)
    code, err = run(capsys, *argv, "--home", str(home))
    assert code == 1 and err.startswith("curvechat: error [data_dir]: cannot use the home ")
    assert "file name too long" in err and len(err) < SHORT, err[:SHORT]
    assert not (tmp_path / "missing").exists()  # nothing was made on the way


def test_a_home_path_too_long_from_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "there").mkdir()
    monkeypatch.setenv("CURVECHAT_HOME", str(tmp_path / "there" / ("y" * 300)))
    code, err = run(capsys, "rooms")
    assert code == 1 and "[data_dir]" in err and len(err) < SHORT, err[:SHORT]


def test_a_huge_user_name_is_not_echoed_whole(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "init", "--user", HUGE)
    assert code == 2 and "[bad_name]" in err and "a" * 80 + "…" in err
    assert len(err) < SHORT


def test_a_huge_passphrase_file_path_is_said_once_and_short(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curvechat.crypto.identity import Identity
    from curvechat.crypto.keyfile import seal_identity

    monkeypatch.setenv("CURVECHAT_AGENT", "off")
    identity = Identity.generate("alice")
    seal_identity(
        identity, b"a long passphrase", tmp_path / "identity.key", opslimit=2, memlimit=2**26
    )
    huge = str(tmp_path / HUGE)
    code, err = run(capsys, "rooms", "--home", str(tmp_path), "--passphrase-file", huge)
    assert code == 1 and "[passphrase_file]" in err and len(err) < SHORT, err[:SHORT]
    assert err.count(str(tmp_path)) == 1


@pytest.mark.parametrize(
    "argv",
    [("unlock", "--lifetime", HUGE), ("serve", "--http", HUGE)],
)
def test_a_huge_value_is_not_echoed_whole(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
) -> None:
    monkeypatch.delenv("CURVECHAT_AGENT", raising=False)
    home = () if argv[0] == "serve" else ("--home", str(tmp_path))
    code, err = run(capsys, *argv, *home)
    assert code == 2 and "[bad_argument]" in err and len(err) < SHORT, err[:SHORT]


def test_huge_user_names_given_to_the_server_are_not_echoed_whole(
    cli: Callable[[str], Any],
) -> None:
    alice = cli("alice")
    alice.run("init", "--user", "alice")
    for argv in (
        ("create", "r", "--members", f"bob,{HUGE}"),
        ("dm", HUGE, "hi"),
        ("keys", "--verify", HUGE),
    ):
        got = alice.run(*argv, ok=False)
        assert got.returncode == 1 and "a" * 80 + "…" in got.stderr, got.stderr[:SHORT]
        assert len(got.stderr) < SHORT and got.stderr.count("\n") == 1, got.stderr[:SHORT]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_the_connect_timeout_from_the_environment_is_finite(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    """As `--connect-timeout inf` is refused, not a wait for ever."""
    monkeypatch.setenv("CURVECHAT_CONNECT_TIMEOUT", value)
    code, err = run(capsys, "rooms", "--home", str(tmp_path))
    assert code == 2 and "[bad_argument]" in err
    assert f"$CURVECHAT_CONNECT_TIMEOUT='{value}' is not a finite number" in err


def test_a_huge_connect_timeout_from_the_environment_is_not_echoed_whole(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CURVECHAT_CONNECT_TIMEOUT", HUGE)
    code, err = run(capsys, "rooms", "--home", str(tmp_path))
    assert code == 2 and "is not a number" in err and len(err) < SHORT, err[:SHORT]


def test_a_home_init_fails_to_make_leaves_no_directory_behind(tmp_path: Path) -> None:
    """The directories `init` made on the way to a home it then could not
    make are removed again (here the last name is too long: `Home.check`
    says so first, but a file system can refuse a name for other reasons)."""
    from curvechat.crypto.keyfile import Staging

    made = Staging()
    with pytest.raises(OSError):
        made.mkdir(long_home(tmp_path))
    made.undo()
    assert not (tmp_path / "missing").exists()
