"""Hostile text through the real `curvechat` command: mallory sends the
corpus (escape sequences, OSC 52 and OSC 8, CR, bidi, zero-width characters,
a forged line); bob's `history` and `tail` print no control character or
escape sequence, and no text starts a line of its own; `--json` keeps every
text exactly. Errors that echo what the user typed, or what a server said,
are made safe too."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from support.hostile_text import BENIGN, CORPUS, FORGED_CLI, SENTINEL, Sender, unsafe
from support.servers import ServerProcess

CONTINUATION = "  │ "
TEXTS = [*CORPUS.values(), SENTINEL]


class Bob:
    def __init__(self, root: Path, server: ServerProcess) -> None:
        self.server = server
        self.env = {
            **os.environ,
            "CURVECHAT_HOME": str(root / "bob"),
            "CURVECHAT_PASSPHRASE": "correct horse bob",
            "TZ": "UTC",
        }

    def argv(self, *args: str) -> list[str]:
        command, *rest = args
        return [sys.executable, "-m", "curvechat", command, "--server", self.server.connect, *rest]

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(self.argv(*args), env=self.env, capture_output=True, timeout=60)
        if ok:
            assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc


def lines_until(stream: IO[bytes], marker: bytes, timeout: float = 30.0) -> list[bytes]:
    """Lines read from `stream` up to the one holding `marker` (a reader
    thread, so a missing line fails the test instead of hanging it)."""
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in stream], daemon=True).start()
    got: list[bytes] = []
    while not got or marker not in got[-1]:
        try:
            got.append(lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"{marker!r} not seen; got {got!r}") from None
    return got


def check_lines(out: bytes) -> str:
    """The output of `history` or `tail` (one message per corpus text, then
    the sentinel) is printable, and a line starts with `[` only where a
    message starts: every other line is a continuation."""
    text = out.decode("utf-8")  # strict: no byte that is not text
    assert unsafe(text) == [], sorted(set(unsafe(text)))
    rows = text.splitlines()
    heads = [r for r in rows if not r.startswith(CONTINUATION)]
    assert len(heads) == len(TEXTS), heads
    assert all(r.startswith("[") and "] #" in r and " mallory: " in r for r in heads), heads
    assert heads[-1].endswith(f"mallory: {SENTINEL}")
    assert FORGED_CLI not in heads and not any(r.startswith(FORGED_CLI) for r in rows)
    assert rows.count(CONTINUATION + FORGED_CLI) == 2  # after \n and after \r\n: shown, marked
    assert "\\x1b[2J" in text and "\\u202e" in text and "\\x9b" in text and "\\x00" in text
    return text


def test_history_tail_and_json_of_hostile_text(tmp_path: Path, server: ServerProcess) -> None:
    bob = Bob(tmp_path, server)
    bob.run("init", "--user", "bob")
    mallory = Sender("mallory", server.connect, tmp_path / "mallory")
    mallory.create("den", ["bob"])

    tail = subprocess.Popen(
        bob.argv("tail", "den"), env=bob.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert tail.stdout is not None and tail.stderr is not None
        lines_until(tail.stderr, b"following den")
        mallory.send("den", TEXTS)
        followed = b"".join(lines_until(tail.stdout, SENTINEL.encode()))
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(20) == 0
        for stream in (tail.stdout, tail.stderr):
            if stream is not None:
                stream.close()
    check_lines(followed)

    history = bob.run("history", "den", "--limit", "100")
    assert check_lines(history.stdout) == followed.decode()
    assert unsafe(history.stderr.decode()) == []

    as_json = bob.run("history", "den", "--limit", "100", "--json").stdout.decode("utf-8")
    assert unsafe(as_json.replace("\n", "")) == [], sorted(set(unsafe(as_json)))
    assert [json.loads(line)["text"] for line in as_json.splitlines()] == TEXTS


def test_an_error_echoing_what_the_user_typed(tmp_path: Path, server: ServerProcess) -> None:
    bob = Bob(tmp_path, server)
    bob.run("init", "--user", "bob")
    typed = "den" + CORPUS["clear_screen"] + CORPUS["forged_cli_line"]
    proc = bob.run("tail", typed, ok=False)
    assert proc.returncode == 1
    err = proc.stderr.decode("utf-8")
    assert "[bad_room]" in err and "\\x1b[2J" in err  # not a room id: refused before asking
    assert unsafe(err.rstrip("\n")) == [] and err.count("\n") == 1, err


def test_a_server_error_message_is_one_safe_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from curvechat.cli import main as cli
    from curvechat.cli import parser
    from curvechat.client.errors import ServerRefused

    def refused(args: object) -> int:
        raise ServerRefused("evil\x1b[2J", CORPUS["osc52_clipboard"] + CORPUS["forged_cli_line"])

    monkeypatch.setattr(parser, "cmd_rooms", refused)  # the name build_parser looks up
    with pytest.raises(SystemExit) as exit_:
        cli.main(["rooms"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("curvechat: error [evil\\x1b[2J]: \\x1b]52;c;")
    assert unsafe(err.rstrip("\n")) == [] and err.count("\n") == 1, err


def test_json_lines_keep_the_exact_text_and_nothing_unsafe() -> None:
    from curvechat.cli.output import json_line

    texts = [*CORPUS.values(), *BENIGN.values(), "lone \ud800 surrogate"]
    for text in texts:
        line = json_line({"text": text})
        assert json.loads(line) == {"text": text}
        assert unsafe(line) == [] and "\n" not in line, ascii(line)
    assert json_line({"text": "héllo 你好"}) == '{"text": "héllo 你好"}'  # readable


def test_log_lines_cannot_drive_the_terminal() -> None:
    from curvechat.cli.output import LOG_FORMAT, VisibleFormatter

    hostile = CORPUS["clear_screen"] + CORPUS["forged_cli_line"]
    try:
        raise ValueError(hostile)
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "curvechat.client", logging.WARNING, __file__, 1, "server said %s", (hostile,), exc_info
    )
    text = VisibleFormatter(LOG_FORMAT).format(record)
    first, *traceback = text.split("\n")
    assert first.endswith("server said \\x1b[2J\\x1b[Hclearedsee below\\n" + FORGED_CLI)
    assert traceback[0] == CONTINUATION + "Traceback (most recent call last):"
    assert traceback[-2:] == [
        CONTINUATION + "ValueError: \\x1b[2J\\x1b[Hclearedsee below",
        CONTINUATION + FORGED_CLI,
    ]
    assert all(line.startswith(CONTINUATION) for line in traceback)
    assert unsafe(text.replace("\n", "")) == []
