"""What the client says in `hello` to each node.

It asks for the newest fields first: a node older than a field refuses it
(`bad_frame`), and is greeted without it from then on, for the life of the
connection object (protocol.md, section 14). It must never open a socket or
decide when to connect: it only chooses the words.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from curvechat.client.errors import ServerRefused
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m


class Greeting:
    def __init__(self, client_id: str) -> None:
        self._hellos = (
            m.Hello(client=client_id, batch=True, sends=True),
            m.Hello(client=client_id, batch=True),
            m.Hello(client=client_id),
        )
        self._older: dict[str, int] = {}  # endpoint -> hellos its node refused

    async def greet(
        self, endpoint: str, ask: Callable[[m.Hello], Awaitable[m.AnyReply]]
    ) -> m.AnyReply:
        """The node's answer to the newest hello it takes (`ask` sends one)."""
        while True:
            level = self._older.get(endpoint, 0)
            try:
                return await ask(self._hellos[level])
            except ServerRefused as exc:
                if exc.code != ErrorCode.BAD_FRAME or level == len(self._hellos) - 1:
                    raise
            self._older[endpoint] = level + 1
