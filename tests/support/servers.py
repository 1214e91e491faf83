"""Real `curvechat serve` processes on free loopback ports, always stopped."""

from __future__ import annotations

import collections
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from curvechat.cli.main import main

_GIVEN: collections.deque[int] = collections.deque(maxlen=2000)


def _below_ephemeral() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range: no client socket's source
    port is ever taken from them, so a port found free stays free until the
    child binds it (one from the ephemeral range was once taken meanwhile by
    an outgoing connection: `address already in use` in `make test`)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(1024, low - 12000), max(1025, low - 1)


_RANGE = _below_ephemeral()


def free_port() -> int:
    """A free loopback port outside the ephemeral range, at random (the test
    workers are separate processes), and not one of the last ones this
    process handed out: the port is only bound later (by a child), so two
    calls in a row could otherwise return the same port."""
    while True:
        port = random.randint(*_RANGE)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.append(port)
        return port


class ServerProcess:
    """A server node in a child process. Its stdout is read by a thread that
    signals when the connect string is printed; stderr (the log) goes to a file."""

    def __init__(
        self,
        data: Path,
        *,
        port: int | None = None,
        http_port: int | None = None,
        extra_args: tuple[str, ...] = (),
        program: tuple[str, ...] = ("-m", "curvechat", "serve"),
    ) -> None:
        self.data = data
        self.extra_args = extra_args
        self.program = program
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.log_path = data.parent / f"{data.name}-server.log"
        self.proc: subprocess.Popen[str] | None = None
        self.connect = ""
        self._ready = threading.Event()
        self.stdout: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self._ready.clear()
        log = open(self.log_path, "a")  # noqa: SIM115 - the child keeps it open
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *self.program,
                "--data",
                str(self.data),
                "--bind",
                self.endpoint,
                "--http",
                f"127.0.0.1:{self.http_port}",
                *self.extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError(f"server did not start; log:\n{self.log_path.read_text()}")
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.stdout.append(line)
            if line.startswith("connect string: "):
                self.connect = line.split(": ", 1)[1].strip()
                self._ready.set()

    def kill(self) -> None:
        """kill -9: no chance to flush or say goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._reap()

    def freeze(self) -> None:
        """SIGSTOP: hung, while the kernel still accepts its TCP connections."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def _reap(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self._reader.join(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def stop(self) -> int:
        """Ctrl-C, as an operator would; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap()
        return int(self.proc.returncode)

    def restart(self) -> ServerProcess:
        self.kill()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def serve_to_the_end(
    data: Path, *extra: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """`curvechat serve --data data` on free ports, with `extra` arguments,
    for a node that must stop by itself (refused): its exit code and
    output. One still running after `timeout` is killed (exit code -9)."""
    argv = [
        sys.executable,
        *("-m", "curvechat", "serve", "--data", str(data)),
        *("--bind", f"tcp://127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{free_port()}"),
        *extra,
    ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def serve_refuses(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`curvechat serve` with `args` exits 2 with a bad_argument error saying `expected`."""
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--data", str(tmp_path), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "[bad_argument]" in err and expected in err, err


@contextmanager
def running(data: Path, *extra: str) -> Iterator[ServerProcess]:
    """A node with `extra` arguments, stopped after: cleanly, and with no
    traceback in its log."""
    proc = ServerProcess(data, extra_args=extra).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0
        assert "Traceback" not in proc.log()
