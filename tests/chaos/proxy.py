"""A fault-injecting TCP proxy: what the chaos suite puts between clients and
each chat node, and between each chat node and each etcd member.

All proxies run in one process of their own (`proxyd.py`, a bare epoll
loop), so that the faults they inject and the bytes they carry neither wait
for nor slow down the workload's process; `ProxyHub` starts it and every
`Proxy` is a handle on one of them. Each has a mode, changed from any
thread:

* ``pass``       forward both ways (after `latency` seconds, order kept;
                 with `loss`, that share of chunks is held back a
                 retransmission timeout first, 0.2-1 s, and everything behind
                 it waits: what a lost segment does to a TCP stream. This
                 kernel has no netem, so loss is emulated here);
* ``blackhole``  a silent partition: connections stay open (and new ones are
                 accepted) but no byte goes through in either direction; a
                 connection that lost bytes so is reset once bytes flow again
                 (its stream is corrupt, as after a partition long enough for
                 the peers' keep-alives to give up);
* ``refuse``     every existing connection is reset and new ones are closed
                 at once (a link that is down and says so).

`cut()` resets every current connection once and lets the peers reconnect
(the reconnect storm). Nothing here knows what it carries.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal

Mode = Literal["pass", "blackhole", "refuse"]
PROXYD = Path(__file__).with_name("proxyd.py")


class ProxyHub:
    """The proxies' process, driven from any thread."""

    def __init__(self) -> None:
        self.proxies: list[Proxy] = []
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, str(PROXYD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    @property
    def pid(self) -> int:
        """The proxies' process."""
        return self._proc.pid

    def request(self, **cmd: Any) -> dict[str, Any]:
        """One command to the proxies' process, and its answer."""
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(json.dumps(cmd).encode() + b"\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the proxies' process ended")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"proxies: {reply['error']}")
        return reply

    def add(self, name: str, target_port: int) -> Proxy:
        return self.start(Proxy(self, name, target_port))

    def start(self, proxy: Proxy) -> Proxy:
        """Listen with `proxy` (made on this hub) and keep it with the others."""
        reply = self.request(
            op="add", name=proxy.name, target=proxy.target_port, member=proxy.member
        )
        proxy.id, proxy.port = reply["id"], reply["port"]
        self.proxies.append(proxy)
        return proxy

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.request(op="close")
        with contextlib.suppress(Exception):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class Proxy:
    member: str | None = None  # the etcd member a peer proxy stands in front of

    def __init__(self, hub: ProxyHub, name: str, target_port: int) -> None:
        self.hub = hub
        self.name = name
        self.target_port = target_port
        self.id = 0
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stalls(self) -> int:
        """Chunks held back a retransmission timeout (`loss`) so far."""
        return int(self.hub.request(op="stalls", id=self.id)["n"])

    def set(
        self, mode: Mode | None = None, latency: float | None = None, loss: float | None = None
    ) -> None:
        self.hub.request(op="set", id=self.id, mode=mode, latency=latency, loss=loss)

    def cut(self) -> int:
        """Reset every current connection once; returns how many were cut."""
        return int(self.hub.request(op="cut", id=self.id)["n"])

    def heal(self) -> None:
        self.set(mode="pass", latency=0.0, loss=0.0)
