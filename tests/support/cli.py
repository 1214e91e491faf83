"""The real `curvechat` command as a user runs it: one home per user, the
passphrase in the environment, a running `tail` read line by line (the CLI
tests, and the security tests that watch what a user sees)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from support.servers import ServerProcess


def in_a_room(server: ServerProcess, root: Path, room: str, *names: str) -> list[CliUser]:
    """Users `names`, each with a home under `root` and registered on
    `server`; the first made `room` with the others in it."""
    users = [CliUser(name, root / name, server) for name in names]
    for user in users:
        user.run("init", "--user", user.name)
    users[0].run("create", room, "--members", ",".join(names[1:]))
    return users


class CliUser:
    def __init__(self, name: str, home: Path, server: ServerProcess) -> None:
        self.name = name
        self.home = home
        self.server = server
        self.env = {
            **os.environ,
            "CURVECHAT_HOME": str(home),
            "CURVECHAT_PASSPHRASE": f"correct horse {name}",
        }
        self.env.pop("CURVECHAT_AGENT", None)
        self.env.pop("CURVECHAT_SERVER", None)

    def argv(self, *args: str, server: bool = True) -> list[str]:
        extra = ["--server", self.server.connect] if server else []
        return [sys.executable, "-m", "curvechat", args[0], *extra, *args[1:]]

    def run(
        self,
        *args: str,
        ok: bool = True,
        stdin: str | None = None,
        server: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args, server=server),
            env=env or self.env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
        )
        if ok:
            assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
        return proc

    def without_passphrase(self) -> dict[str, str]:
        env = dict(self.env)
        del env["CURVECHAT_PASSPHRASE"]
        return env


class Lines:
    """The lines of a child's stream, read by a thread, so that a line that
    never comes fails a test instead of hanging it."""

    def __init__(self, stream: IO[str]) -> None:
        self._q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._q.put(line.rstrip("\n"))

    def until(self, marker: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{marker!r} not seen; got {self.seen!r}") from None
            self.seen.append(line)
            if marker in line:
                return line

    def drain(self, wait: float = 0.0) -> list[str]:
        """The lines that came so far (waiting `wait` seconds for more)."""
        got: list[str] = []
        try:
            while True:
                got.append(self._q.get(timeout=wait) if wait else self._q.get_nowait())
        except queue.Empty:
            pass
        self.seen += got
        return got


class Tail:
    def __init__(self, user: CliUser, room: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            user.argv("tail", room, *extra),
            env=user.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT, as Ctrl-C
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return int(self.proc.returncode)
