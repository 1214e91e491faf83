"""`curvechat serve` on an address another process holds: one line with a
code, exit 1, nothing left open, no traceback (an address in use is the
most likely mistake of someone who starts a second node by accident)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.servers import ServerProcess, free_port

SERVE = (sys.executable, "-m", "curvechat", "serve")


def serve(data: Path, bind: str, http: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, "--data", str(data), "--bind", bind, "--http", http],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_client_port_in_use_is_bind_failed_with_the_address(
    server: ServerProcess, tmp_path: Path
) -> None:
    got = serve(tmp_path / "second", server.endpoint, f"127.0.0.1:{free_port()}")
    assert got.returncode == 1
    line = f"curvechat: error [bind_failed]: cannot listen on {server.endpoint}: "
    assert got.stderr.strip().splitlines()[-1].startswith(line), got.stderr
    assert "Traceback" not in got.stderr + got.stdout


def test_an_http_port_in_use_is_bind_failed_and_leaves_nothing_open(
    server: ServerProcess, tmp_path: Path
) -> None:
    got = serve(
        tmp_path / "second", f"tcp://127.0.0.1:{free_port()}", f"127.0.0.1:{server.http_port}"
    )
    assert got.returncode == 1
    assert got.stderr.strip().splitlines()[-1].startswith("curvechat: error [bind_failed]")
    for marker in ("Traceback", "Unclosed", "never retrieved"):
        assert marker not in got.stderr + got.stdout, got.stderr
    assert "node_up" not in got.stderr and "listening on" not in got.stderr  # it never was up


def test_a_data_directory_that_cannot_be_made_is_data_dir_not_bind_failed(
    tmp_path: Path,
) -> None:
    (tmp_path / "afile").write_text("")
    got = serve(
        tmp_path / "afile" / "data", f"tcp://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    )
    assert got.returncode == 1
    last = got.stderr.strip().splitlines()[-1]
    assert last.startswith("curvechat: error [data_dir]: cannot use the data directory "), last
    assert "Not a directory" in last
    assert "Traceback" not in got.stderr + got.stdout


def test_an_http_host_that_does_not_resolve_is_bind_failed_naming_it(tmp_path: Path) -> None:
    got = serve(tmp_path / "d", f"tcp://127.0.0.1:{free_port()}", "no-such-host.invalid:7780")
    assert got.returncode == 1
    last = got.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "curvechat: error [bind_failed]: cannot listen on http://no-such-host.invalid:7780: "
    ), last
    for marker in ("Traceback", "Unclosed", "never retrieved"):
        assert marker not in got.stderr + got.stdout, got.stderr


def test_a_token_file_that_cannot_be_made_is_http_token_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    got = subprocess.run(
        [
            *SERVE,
            "--data",
            str(tmp_path / "d"),
            "--bind",
            f"tcp://127.0.0.1:{free_port()}",
            "--http",
            f"127.0.0.1:{free_port()}",
            "--http-token-file",
            str(tmp_path / "afile" / "tok"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 1
    last = got.stderr.strip().splitlines()[-1]
    token = tmp_path / "afile" / "tok"
    assert last.startswith(f"curvechat: error [http_token]: cannot use the token file {token}"), (
        last
    )
    assert "Traceback" not in got.stderr + got.stdout


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (("--bind", "tcp://127.0.0.1:99999"), "--bind"),
        (("--bind", "tcp://127.0.0.1"), "--bind"),
        (("--bind", "127.0.0.1:7700"), "--bind"),
        (("--bind", f"tcp://{'a' * 300}:7700"), "--bind"),
        (("--advertise", "garbage"), "--advertise"),
        (("--advertise", "tcp://10.0.0.11"), "--advertise"),
        (("--advertise", "tcp://10.0.0.11:0"), "--advertise"),
        (("--advertise", "tcp://10.0.0.11:70000"), "--advertise"),
        (("--advertise", "tcp://0.0.0.0:7700"), "--advertise"),
        (("--store", "etcd://h:2379", "--link-bind", "tcp://h:99999"), "--link-bind"),
    ],
)
def test_an_endpoint_that_cannot_be_used_is_refused_before_anything_starts(
    tmp_path: Path, argv: tuple[str, ...], flag: str
) -> None:
    """A port over 65535 would be taken modulo 65536, an --advertise with
    no port written into every connect string: both are usage errors. (The
    data directory cannot be made: a start that got past the options would
    end there, with another code.)"""
    (tmp_path / "afile").write_text("")
    bind = () if argv[0] == "--bind" else ("--bind", f"tcp://127.0.0.1:{free_port()}")
    got = subprocess.run(
        [*SERVE, "--data", str(tmp_path / "afile" / "d"), "--http", "", *bind, *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 2, got.stderr
    line = got.stderr.strip()
    assert line.startswith(f"curvechat: error [bad_argument]: {flag} "), line
    assert "tcp://HOST:PORT" in line and len(line) < 300 and "\n" not in line, line
