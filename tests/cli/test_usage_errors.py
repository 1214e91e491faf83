"""Usage errors are one line with a code, as every other error of the
command (README: "Every command prints errors as one line with a code"),
exit 2, and name the help that says more: the subcommand's when there is
one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from curvechat.cli.main import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["send"], "the following arguments are required: room, text (see curvechat send --help)"),
        (
            ["send", "--bogus", "r", "hi"],
            "unrecognized arguments: --bogus (see curvechat send --help)",
        ),
        (
            ["members", "r", "--json"],
            "unrecognized arguments: --json (see curvechat members --help)",
        ),
        (["history", "r", "--limit", "x"], "invalid int value: 'x' (see curvechat history --help)"),
        (["sendx"], "invalid choice: 'sendx'"),
        ([], "the following arguments are required: command (see curvechat --help)"),
        (["drain", "--timeout", "-1"], "--timeout must be positive"),
        # a client option before a command that takes none
        (["--home", "h", "serve"], "--home before the command is an option of the client"),
        # drain's --timeout is its own
        (["--timeout", "5", "drain"], "(chat, contacts, create, dm, "),
        (["--home", "h", "romos"], "not of 'romos'"),
        (["--home"], "the following arguments are required: command"),
        (
            ["--home", "h", "--timeout", "x", "rooms"],
            "argument --timeout: not a number: x (see curvechat rooms --help)",
        ),
    ],
)
def test_a_usage_error_is_one_line_with_a_code(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("curvechat: error [bad_argument]: "), lines
    assert expected in lines[0]
    assert captured.out == ""


@pytest.mark.parametrize(
    "before",
    [
        ["--home", "{home}"],
        ["--home={home}", "--timeout", "2"],
        ["-v", "--connect-timeout", "1", "--home", "{home}"],
        ["--home", "{home}", "--"],
    ],
)
def test_the_client_options_go_before_the_command_too(
    before: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`curvechat --home H rooms` is `curvechat rooms --home H`, as people
    write it (`git -C`, `docker --host`): the home is the one given."""
    home = str(tmp_path / "home")
    with pytest.raises(SystemExit) as exit_:
        main([*(arg.format(home=home) for arg in before), "rooms"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("curvechat: error [no_identity]: no identity in "), err
    assert home in err


def test_the_terminal_client_without_a_terminal_says_so_at_once(tmp_path: Path) -> None:
    """`chat` with stdin and stdout not a terminal (a script, a pipe, a
    service): one line with a code and exit 2, not a client that waits
    forever for keys while it renders into a pipe."""
    got = subprocess.run(
        [sys.executable, "-m", "curvechat", "chat", "--home", str(tmp_path / "home")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 2, (got.returncode, got.stderr[-600:])
    assert got.stderr.startswith("curvechat: error [not_a_terminal]: "), got.stderr
    assert got.stdout == ""
