"""The peer listener: a ROUTER socket with CURVE, in a ZeroMQ context of its
own, whose ZAP handler lets in only the transport keys the peer core admits
(rule N1), and that answers each request, as the member the core says the
connection is, with what the handler returns.

A frame that does not decode gets a `PeerError` with its code (when its
request id can be read) and the listener goes on; so does a handler that
raises. This module must never decide anything itself: who connects and
what is answered are the core's decisions, passed in as callables, and
what is taken in from a connection is `intake`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec
import zmq
import zmq.asyncio
import zmq.utils.z85
from zmq.auth.asyncio import AsyncioAuthenticator

from curvechat.client.errors import PeerRefused
from curvechat.client.peer.intake import Intake, Take
from curvechat.crypto.identity import Identity
from curvechat.protocol import ErrorCode
from curvechat.protocol import peer as p
from curvechat.protocol.errors import UNDECODABLE, ProtocolError
from curvechat.tcpfd import shut_down, source_fd

log = logging.getLogger("curvechat.peer")

ZAP_DOMAIN = "curvechat-peer"
Handler = Callable[[str, p.AnyPeerRequest], Awaitable[p.AnyPeerReply]]
Admits = Callable[[bytes], bool]
"""Whether a CURVE key may complete the handshake."""
Pace = Callable[[bytes], str | None]
"""Before a request of a connection with this key is read: None to read
it, or the code it is refused with."""
UserFor = Callable[[bytes, str], str | None]
"""The member a request on a connection with this key is served as, given
the member the request names: None refuses it."""


TAKE_MAX = 1024
"""Frames read from the socket at a time, between two answers."""
PEEK_LIMIT = 4096
"""Largest frame whose rid is looked for before it is paced and decoded."""


class _Head(msgspec.Struct):
    rid: int = 0


_head = msgspec.msgpack.Decoder(_Head)


def peek_rid(data: bytes) -> int:
    try:
        rid = _head.decode(data).rid
    except UNDECODABLE:
        return 0
    return rid if isinstance(rid, int) and 0 < rid <= 2**53 else 0


class _Gate:
    """The ZAP credentials provider: asks `admits` about each CURVE key."""

    def __init__(self, admits: Admits) -> None:
        self.admits = admits
        self.refused = 0
        self.admitted = 0

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            ok = self.admits(zmq.utils.z85.decode(key))
        except Exception:  # a bug here must not let anyone in
            log.exception("peer admission failed")
            ok = False
        if ok:
            self.admitted += 1
        else:
            self.refused += 1
        return ok


class PeerListener:
    def __init__(
        self,
        identity: Identity,
        admits: Admits,
        pace: Pace,
        user_for: UserFor,
        handler: Handler,
        *,
        bind: str = "tcp://127.0.0.1:*",
    ) -> None:
        self.identity = identity
        self.pace = pace
        self.user_for = user_for
        self.handler = handler
        self.bind = bind
        self.gate = _Gate(admits)
        self.endpoint = ""
        self.bad_frames = 0
        self.intake = Intake()
        self._ctx = zmq.asyncio.Context()
        self._auth: AsyncioAuthenticator | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Bind and serve; returns the bound endpoint."""
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self.gate)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.curve_server = True
        sock.curve_secretkey = zmq.utils.z85.encode(self.identity.transport_secret)
        sock.curve_publickey = zmq.utils.z85.encode(self.identity.transport_pub)
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.maxmsgsize = p.MAX_PEER_FRAME
        sock.rcvhwm = 0  # every frame taken in: `intake` bounds what is held
        self._sock = sock
        sock.bind(self.bind)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._task = asyncio.create_task(self._serve(sock), name="peer-listener")
        return self.endpoint

    async def close(self) -> None:
        """Stop serving; also after a `start` that failed to bind."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._ctx.term()

    async def _serve(self, sock: zmq.asyncio.Socket) -> None:
        raw: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        port = int(self.endpoint.rsplit(":", 1)[1])
        queue: deque[tuple[bytes, bytes, bytes]] = deque()  # (connection, key, frame)
        while True:
            if not queue:
                await sock.poll(flags=zmq.POLLIN)  # type: ignore[call-arg]
            self._take_in(raw, port, queue)
            if queue:
                conn, key, data = queue.popleft()
                try:
                    reply = await self._answer(key, data)
                finally:
                    self.intake.answered(conn)
                if reply is not None:
                    with contextlib.suppress(zmq.ZMQError):
                        raw.send_multipart([conn, reply], zmq.NOBLOCK)
            # A member whose frames keep coming would otherwise keep the loop
            # (the engine, the screen, the handshakes) for as long as it sends.
            await asyncio.sleep(0)

    def _take_in(
        self, raw: zmq.Socket[bytes], port: int, queue: deque[tuple[bytes, bytes, bytes]]
    ) -> None:
        """Read what the socket holds (up to `TAKE_MAX` frames): each frame
        is paced and taken in, refused unread, or its connection cut
        (`intake`), so that libzmq, which takes every frame in, holds
        little for long."""
        for _ in range(TAKE_MAX):
            try:
                frames = raw.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:  # closing
                log.warning("peer listener: receive failed: %s", exc)
                return
            conn = frames[0].bytes
            if self.intake.was_cut(conn):
                continue  # read after the cut: dropped, not paced
            try:
                key = zmq.utils.z85.decode(str(frames[-1].get("User-Id")))
            except (zmq.ZMQError, ValueError):
                key = b""
            refusal = self.pace(key)  # before the frame is read
            if len(frames) != 2:
                self.bad_frames += 1  # paid for like any request, and not answered
                refusal = refusal or ErrorCode.BAD_FRAME
            take = self.intake.frame(conn, refusal)
            if take is Take.TAKE:
                queue.append((conn, key, frames[1].bytes))
            elif take is Take.CUT:
                if not shut_down(source_fd(frames[-1]), port):
                    log.warning("peer listener: could not cut a connection that floods")
            elif take is Take.REFUSE and len(frames) == 2:
                data = frames[1].bytes if len(frames[1]) <= PEEK_LIMIT else b""
                reply = self._refusal(peek_rid(data), refusal)
                if reply is not None:
                    with contextlib.suppress(zmq.ZMQError):
                        raw.send_multipart([conn, reply], zmq.NOBLOCK)

    async def _answer(self, key: bytes, data: bytes) -> bytes | None:
        """The answer to a frame the pacing let in (None: nothing to answer to)."""
        # The rid of a frame that does not decode is looked for only in a
        # small frame: reading a large one's is the cost the pacing saves
        # (a megabyte of nested arrays: 7 ms).
        rid = peek_rid(data) if len(data) <= PEEK_LIMIT else 0
        try:
            ask = p.decode_ask(data)
            rid = ask.rid
            # Again: membership may have changed since the handshake.
            user = self.user_for(key, ask.user)
            if user is None:
                raise PeerRefused(
                    p.PeerCode.NOT_SHARED,
                    "you share no room with this peer, or your record does not announce your key",
                    "N1",
                )
            msg = await self.handler(user, ask.req)
        except ProtocolError as exc:
            self.bad_frames += 1
            msg = p.PeerError(code=exc.code, message=exc.message[:500])
        except PeerRefused as exc:
            msg = p.PeerError(code=exc.code, message=str(exc)[:500])
        except Exception:
            log.exception("peer request failed")
            msg = p.PeerError(code=ErrorCode.INTERNAL, message="the peer failed to answer")
        return self._reply(rid, msg)

    def _refusal(self, rid: int, refusal: str | None) -> bytes | None:
        """The answer to a frame refused unread: by the pacing (`refusal`),
        or because its connection has `intake.PENDING` frames waiting."""
        if refusal == p.PeerCode.NOT_SHARED:
            exc = PeerRefused(refusal, "no member's record announces your key now", "N1")
        else:
            exc = PeerRefused(refusal or ErrorCode.RATE_LIMITED, "too many requests", "N10")
        return self._reply(rid, p.PeerError(code=exc.code, message=str(exc)[:500]))

    def _reply(self, rid: int, msg: p.AnyPeerReply) -> bytes | None:
        if rid == 0:
            return None  # nothing to answer to
        return p.encode_peer(
            p.PeerAnswer(v=p.PEER_VERSION, rid=rid, msg=msg, user=self.identity.user)
        )
