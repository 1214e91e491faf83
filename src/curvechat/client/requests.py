"""The requests half of `Connection` (connection.py): what is sent on the
node's socket, and how long its reply is waited for.

`request`, `submit` and `submit_sends` are the engine's: they go out only
while the connection is live (else they fail at once with `NotConnected`,
nothing sent), within `request_timeout` unless told otherwise, and sends
go several to a frame where the node's welcome said it takes that
(`sends`). `_raw` is the connection's own, for the hello, the pings and
the goodbye: on the socket whatever the state.

This module must never open, close or choose a socket (the connection
does), nor interpret a reply (the engine does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from curvechat.client.errors import NotConnected
from curvechat.client.nodesocket import NodeSocket
from curvechat.client.state import ConnStatus
from curvechat.protocol import messages as m


class Requests:
    """The requests half of `Connection`, on the socket the connection holds."""

    status: ConnStatus
    request_timeout: float
    _live: asyncio.Event
    _sock: NodeSocket | None
    _takes_sends: bool

    async def request(self, req: m.AnyRequest, timeout: float | None = None) -> m.AnyReply:
        """Send a request on the live connection and wait for its reply.

        Raises NotConnected (nothing sent), RequestTimeout (outcome unknown),
        ServerRefused (an Error reply).
        """
        if not self._live.is_set():
            raise NotConnected(f"not connected ({self.status.state})")
        return await self._raw(req, timeout or self.request_timeout)

    def submit(self, req: m.AnyRequest, timeout: float | None = None) -> asyncio.Future[m.AnyReply]:
        """Send a request on the live connection now; the future of its reply
        fails as `request` raises."""
        if not self._live.is_set() or self._sock is None:
            return self._not_connected()
        return self._sock.submit(req, timeout or self.request_timeout)

    def submit_sends(
        self, reqs: Sequence[m.Send], timeout: float | None = None
    ) -> list[asyncio.Future[m.AnyReply]]:
        """As `submit` for each of `reqs`, in order, several to a frame where
        the node takes that (its welcome said `sends`)."""
        if not self._live.is_set() or self._sock is None:
            return [self._not_connected() for _ in reqs]
        timeout = timeout or self.request_timeout
        if self._takes_sends and len(reqs) > 1:
            return self._sock.submit_sends(reqs, timeout)
        return [self._sock.submit(r, timeout) for r in reqs]

    def _not_connected(self) -> asyncio.Future[m.AnyReply]:
        fut: asyncio.Future[m.AnyReply] = asyncio.get_running_loop().create_future()
        fut.set_exception(NotConnected(f"not connected ({self.status.state})"))
        return fut

    async def _raw(self, req: m.AnyRequest, timeout: float) -> m.AnyReply:
        if self._sock is None:
            raise NotConnected("no socket")
        return await self._sock.ask(req, timeout)
