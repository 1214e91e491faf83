"""App-level pings on a live connection: what they report to the node, the
round-trip time they measure, and the echo of the node's flow-control marks.

A ping is rare (tens of seconds): liveness is the ZMTP heartbeats'. Besides
the interval, a ping goes out when the node sends a flow-control mark, to
prove at once that we read up to it; one such ping at a time, a mark that
comes meanwhile goes in the next.

This module must never decide what the connection does next: the pong is
handed to `on_pong`, and a ping that fails is simply not answered.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from curvechat.client.errors import NotConnected, RequestTimeout, ServerRefused
from curvechat.protocol import messages as m

Ask = Callable[[m.AnyRequest, float], Awaitable[m.AnyReply]]
MakePing = Callable[[int], m.Ping | None]
OnPong = Callable[[m.Pong, float], None]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Pinger:
    def __init__(
        self,
        *,
        ask: Ask,
        make: MakePing,
        on_pong: OnPong,
        spawn: Spawn,
        timeout: Callable[[], float],
    ) -> None:
        self._ask = ask
        self._make = make  # the ping to send with this read mark (None: not now)
        self._on_pong = on_pong  # the pong and the round trip in ms
        self._spawn = spawn
        self._timeout = timeout  # how long a ping waits for its pong
        self.read_mark = 0
        self._echoing = False  # a ping that echoes `read_mark` is on its way

    def mark(self, mark: int) -> None:
        """The node's flow-control mark: echo it in a ping at once."""
        self.read_mark = mark
        if not self._echoing:
            self._echoing = True
            self._spawn(self._echo_marks())

    async def _echo_marks(self) -> None:
        try:
            echoed = None
            while echoed != self.read_mark:
                echoed = self.read_mark
                await self.ping()
        finally:
            self._echoing = False

    async def ping(self) -> None:
        ping = self._make(self.read_mark)
        if ping is None:
            return
        t0 = time.perf_counter()
        try:
            reply = await self._ask(ping, self._timeout())
        except (NotConnected, RequestTimeout, ServerRefused):
            return
        if isinstance(reply, m.Pong):
            self._on_pong(reply, (time.perf_counter() - t0) * 1000)
