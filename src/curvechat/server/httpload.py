"""What the HTTP side may cost the process that serves it.

The node's HTTP side shares the chat's event loop, so whoever can reach the
port must not be able to take that loop, or the process's file descriptors,
away from the chat:

* **Connections**: at most `MAX_CONNECTIONS` open at once, and
  `MAX_PER_HOST` from one address (a browser's page uses a handful); one
  more from an address at its bound is closed as it comes, before a
  request of it is served. At `MAX_CONNECTIONS`, a connection from an
  address that holds fewer than the most any address holds makes room:
  the oldest connection of an address holding the most is closed, so
  however many addresses fill the cap, an orchestrator's probe from one
  with none still gets in. A connection that has sent
  no complete request for `IDLE_S` seconds (one that never sends, or
  trickles a request in) is closed.
* **Loop time**: every answer but `/healthz` and `/readyz` (which cost next
  to nothing, and which an orchestrator must always get) is paid for from a
  budget of the loop's time: `BUDGET_SHARE` of each second, up to
  `BUDGET_BURST` seconds saved up. An answer is started only while the
  budget is not spent, and what it took is charged after it; meanwhile the
  answer is 503 with `Retry-After: 1`. So however many ask, the HTTP side
  takes about a twentieth of the loop in the long run, plus one answer. An
  answer is charged its time in the handler, at most `MAX_CHARGE_S`; one
  that waits on another node (`/api/peers/…`, whose time is mostly that
  node's) is charged `PEER_CHARGE_S`, so a node that is down does not use
  up the budget of the page that shows it. Each answer is also charged
  `PER_ANSWER_S`, about what aiohttp's own work on a request costs.
* **Requests per address**: at most `HOST_RATE` a second from one address,
  `HOST_BURST` at once (health checks too). One over that is held back
  until its turn (its connection waits; nothing is refused), unless its
  turn is more than `MAX_WAIT_S` away: then it is 503 at once. So one
  address cannot make the loop parse requests as fast as it can send them.

* **The log**: aiohttp logs each request its parser refuses (a bad target,
  two `Host` headers, ...) at ERROR with a traceback, before any of the
  above; `server_logger` says such a refusal once a minute at most, as one
  line, and how many it left out (a flood wrote 110 MiB in 5 s before).

What it must never do: refuse `/healthz` or `/readyz` for the budget, or
serve a request of a connection over the cap.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("curvechat.http")

MAX_CONNECTIONS = 256
MAX_PER_HOST = 32
IDLE_S = 15.0
BUDGET_SHARE = 0.05  # of the loop's time, in the long run
BUDGET_BURST = 0.25  # seconds of the loop's time saved up
FREE_PATHS = frozenset({"/healthz", "/readyz"})
PEER_PREFIX = "/api/peers/"
MAX_CHARGE_S = 0.1
PEER_CHARGE_S = 0.002
PER_ANSWER_S = 0.0003
HOST_RATE = 50.0
HOST_BURST = 100.0
MAX_WAIT_S = 5.0
HOSTS_KEPT = 1024
TOLD_EVERY_S = 60.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _ParserRefusals(logging.Filter):
    """aiohttp's records of requests its parser refused: one line (no
    traceback) every `TOLD_EVERY_S` at most, saying how many were left out."""

    def __init__(self) -> None:
        super().__init__()
        self._at = -TOLD_EVERY_S
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        now = time.monotonic()
        if now - self._at < TOLD_EVERY_S:
            self._left_out += 1
            return False
        self._at, left_out, self._left_out = now, self._left_out, 0
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        record.msg = "refused a malformed HTTP request (%s); %d more since the last said"
        record.args = (why, left_out)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


server_logger = logging.getLogger("curvechat.http.server")
"""The logger aiohttp's request handlers are given (`start_http`)."""
server_logger.addFilter(_ParserRefusals())


class Seldom:
    """A warning said at most once every `TOLD_EVERY_S` (an attack would
    otherwise write one line per connection or request)."""

    def __init__(self) -> None:
        self._at = -TOLD_EVERY_S

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._at >= TOLD_EVERY_S:
            self._at = now
            log.warning(message, *args)


def cap_connections(
    server: web.Server, total: int = MAX_CONNECTIONS, per_host: int = MAX_PER_HOST
) -> None:
    """Connections to `server` beyond `per_host` from one address are closed
    as they come; at `total` open at once, the newcomer, or the oldest of
    an address that holds more (module docstring)."""
    made, lost = server.connection_made, server.connection_lost
    hosts: collections.Counter[str] = collections.Counter()  # not counting `closing`
    open_from: dict[RequestHandler, str] = {}  # oldest first
    closing: set[RequestHandler] = set()
    seldom = Seldom()

    def room_for(host: str) -> RequestHandler | None:
        """The connection to close for one more from `host`: the oldest of an
        address holding the most, if `host` holds fewer."""
        most = max(hosts.values(), default=0)
        if hosts[host] >= most:
            return None
        return next(h for h, at in open_from.items() if h not in closing and hosts[at] == most)

    def close(handler: RequestHandler) -> None:
        # Closed once aiohttp has set the connection up (closed before, its
        # task would find it torn down and log a traceback each time).
        closing.add(handler)
        hosts[open_from[handler]] -= 1
        asyncio.get_running_loop().call_soon(handler.force_close)

    def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        over = hosts[host] >= per_host
        instead = None
        if not over and len(open_from) - len(closing) >= total:
            instead = room_for(host)
            over = instead is None
        hosts[host] += 1
        open_from[handler] = host
        made(handler, transport)
        if instead is not None:
            close(instead)
        if over:
            close(handler)
            seldom.warn(
                "HTTP: %d connections open (%d from %s): closing new ones",
                len(open_from) - len(closing),
                hosts[host],
                ascii(host),
            )

    def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
        host = open_from.pop(handler, None)
        if host is not None:
            if handler in closing:
                closing.discard(handler)
            else:
                hosts[host] -= 1
            if hosts[host] <= 0:
                del hosts[host]
        lost(handler, exc)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]


class HostPacer:
    """Requests from one address: `rate` a second, `burst` at once."""

    def __init__(
        self,
        rate: float = HOST_RATE,
        burst: float = HOST_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._hosts: dict[str, tuple[float, float]] = {}  # host -> (tokens, at)

    def wait(self, host: str, most: float = MAX_WAIT_S) -> float | None:
        """How long a request from `host` waits for its turn (taken now),
        or None if that would be over `most` (nothing taken)."""
        now = self._clock()
        tokens, at = self._hosts.pop(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate) - 1
        wait = max(0.0, -tokens / self.rate)
        if wait > most:
            tokens += 1
        if len(self._hosts) >= HOSTS_KEPT:  # the one least recently heard from
            del self._hosts[next(iter(self._hosts))]
        self._hosts[host] = (tokens, now)
        return None if wait > most else wait


class LoopBudget:
    """The loop time the HTTP side may spend (see the module docstring)."""

    def __init__(
        self,
        share: float = BUDGET_SHARE,
        burst: float = BUDGET_BURST,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.share = share
        self.burst = burst
        self._clock = clock
        self._left = burst
        self._at = clock()
        self.refused = 0
        self._seldom = Seldom()

    def _refill(self) -> None:
        now = self._clock()
        self._left = min(self.burst, self._left + (now - self._at) * self.share)
        self._at = now

    def may_start(self) -> bool:
        self._refill()
        return self._left > 0

    def charge(self, seconds: float) -> None:
        self._refill()
        self._left -= seconds

    def busy(self, why: str) -> web.Response:
        self.refused += 1
        self._seldom.warn("HTTP: %s (%d answers refused so far); answering 503", why, self.refused)
        return web.json_response(
            {"error": "busy", "detail": f"the node's HTTP side is busy: {why}; try again later"},
            status=503,
            headers={"Retry-After": "1", "Cache-Control": "no-store"},
        )

    async def check(
        self, request: web.Request, handler: Handler, pacer: HostPacer
    ) -> web.StreamResponse:
        wait = pacer.wait(request.remote or "")
        if wait is None:
            return self.busy("too many requests from one address")
        if wait:
            await asyncio.sleep(wait)
        if request.path in FREE_PATHS:
            return await handler(request)
        if not self.may_start():
            return self.busy("over its share of the event loop")
        t0 = self._clock()
        try:
            return await handler(request)
        finally:
            if request.path.startswith(PEER_PREFIX):
                self.charge(PEER_CHARGE_S + PER_ANSWER_S)
            else:
                self.charge(min(MAX_CHARGE_S, self._clock() - t0) + PER_ANSWER_S)

    def install(self, app: web.Application, pacer: HostPacer | None = None) -> None:
        paced = pacer or HostPacer()

        @web.middleware
        async def budget(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self.check(request, handler, paced)

        app.middlewares.append(budget)
