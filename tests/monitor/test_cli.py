"""`curvechat monitor` on the command line: it exists, and refuses what it
cannot use with one line and exit code 2 before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from curvechat.cli.main import main

NO_TOKEN = ("--node-token-file", "/nonexistent/http.token")


def test_the_command_exists(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["monitor", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--node", "--store", "--node-token-file", "--http", "--data", "--history"):
        assert option in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--node", "ftp://h:1"], "--node: 'ftp://h:1' is not an http:// or https:// URL"),
        (["--node", "http://h:1", "--store", "etcd://h:2379"], "--node URLs or --store, not both"),
        (["--etcd-ca", "ca.pem"], "the --etcd-* options need --store"),
        (["--store", "http://h:2379"], "--store: not an etcd:// or etcds:// URL"),
        (["--http", "7790"], "give HOST:PORT"),
        (["--interval", "0"], "--interval must be 0.2 … 3600 s"),
        # polling flat out, or a window SQLite cannot compute (1e18 s in ms);
        # a missing token file stops a monitor that would let them through
        (["--interval", "1e-9", *NO_TOKEN], "--interval must be 0.2 … 3600 s"),
        (["--interval", "1e308", *NO_TOKEN], "--interval must be 0.2 … 3600 s"),
        (["--history", "1e18", *NO_TOKEN], "--history must be 60 … 604800 s"),
        (["--history", "59", *NO_TOKEN], "--history must be 60 … 604800 s"),
        (["--node-token-file", "/nonexistent/http.token"], "no token file at"),
    ],
)
def test_bad_arguments_are_refused(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["monitor", "--data", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert expected in err, err
    assert exit_.value.code in (1, 2)


def test_a_data_dir_it_cannot_use_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["monitor", "--data", str(tmp_path / "file" / "data"), "--http", "127.0.0.1:0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert "[data_dir]: cannot use the data directory" in err, err
    assert "Traceback" not in err


def test_an_http_port_in_use_is_bind_failed_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            main(["monitor", "--data", str(tmp_path), "--http", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert f"[bind_failed]: cannot listen on http://127.0.0.1:{port}: " in err, err
    assert "Traceback" not in err
