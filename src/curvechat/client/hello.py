"""What the client says in `hello` to each node.

It asks for the newest fields first: a node older than a field refuses it
(`bad_frame`), and is greeted without it from then on, until RETRY_NEWER_S
have passed: then the newest hello is tried again (the node behind that
endpoint may have been upgraded meanwhile, in a rolling upgrade) (protocol.md,
section 14). It must never open a socket, read a clock or decide when to
connect: it only chooses the words.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from curvechat.client.errors import ServerRefused
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m

RETRY_NEWER_S = 600.0
"""How long a node that refused a newer hello is greeted the older way."""


class Greeting:
    def __init__(self, client_id: str) -> None:
        self._hellos = (
            m.Hello(client=client_id, batch=True, sends=True),
            m.Hello(client=client_id, batch=True),
            m.Hello(client=client_id),
        )
        # endpoint -> (hellos its node refused, since when: monotonic seconds)
        self._older: dict[str, tuple[int, float]] = {}

    async def greet(
        self, endpoint: str, ask: Callable[[m.Hello], Awaitable[m.AnyReply]], now: float
    ) -> m.AnyReply:
        """The node's answer to the newest hello it takes (`ask` sends one);
        `now` in monotonic seconds."""
        level, since = self._older.get(endpoint, (0, now))
        if now - since >= RETRY_NEWER_S:
            level, since = 0, now
        while True:
            try:
                reply = await ask(self._hellos[level])
            except ServerRefused as exc:
                if exc.code != ErrorCode.BAD_FRAME or level == len(self._hellos) - 1:
                    raise
            else:
                if level == 0:
                    self._older.pop(endpoint, None)
                return reply
            level += 1
            self._older[endpoint] = (level, since)
