"""`curvechat monitor` in a child process on a free loopback port, always
stopped; and headless Chromium, from tests/dashboard (its `browser` fixture,
re-exported here, not copied)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dashboard.conftest import browser  # noqa: F401 - the fixture, shared

from support.servers import free_port


class MonitorProcess:
    """The monitor in a child process; `link` is the address it prints
    (with `#token=…` when it asks for its token). stderr (its log) goes to
    a file."""

    def __init__(self, data: Path, nodes: list[str], extra_args: tuple[str, ...] = ()) -> None:
        self.data = data
        self.nodes = nodes
        self.extra_args = extra_args
        self.http_port = free_port()
        self.log_path = data.parent / f"{data.name}-monitor.log"
        self.proc: subprocess.Popen[str] | None = None
        self.link = ""
        self.stdout: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def start(self, timeout: float = 30.0) -> MonitorProcess:
        self._ready.clear()
        log = open(self.log_path, "a")  # noqa: SIM115 - the child keeps it open
        args = [a for url in self.nodes for a in ("--node", url)]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "curvechat",
                "monitor",
                "--data",
                str(self.data),
                "--http",
                f"127.0.0.1:{self.http_port}",
                *args,
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
            self.stop()
            raise RuntimeError(f"the monitor did not start; log:\n{self.log()}")
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.stdout.append(line)
            if line.startswith("monitor: "):
                self.link = line.split(": ", 1)[1].strip()
                self._ready.set()

    def stop(self) -> int:
        """Ctrl-C, as an operator would; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return int(self.proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


MakeMonitor = Callable[..., MonitorProcess]


@pytest.fixture
def monitors(tmp_path: Path) -> Iterator[MakeMonitor]:
    """Makes monitors (not started: `MonitorProcess(data, nodes, extra_args)`);
    each is stopped at the end and must have stopped cleanly, with no
    traceback in its log."""
    made: list[MonitorProcess] = []

    def make(data: Path, nodes: list[str], extra_args: tuple[str, ...] = ()) -> MonitorProcess:
        made.append(MonitorProcess(data, nodes, extra_args))
        return made[-1]

    try:
        yield make
    finally:
        codes = [(m, m.stop()) for m in made]
    for monitor, code in codes:
        log = monitor.log()
        assert code == 0, f"the monitor exited with {code}:\n{log[-3000:]}"
        assert "Traceback" not in log, f"a traceback in the monitor's log:\n{log[-3000:]}"
