"""A link to one peer's listener: a DEALER with CURVE that authenticates the
listener by the transport key of its signed record, and asks one request at
a time.

A reply that does not decode, does not come in time, or answers another
request, fails the request (`PeerUnreachable`, `RemoteProtocolError`) and
the socket is made anew, so a late reply never answers the next request.
The socket takes every frame in (a bounded queue let a listener abort the
whole client: curvechat/heartbeats.py), so between requests the link
watches it: a frame then answers nothing, and the socket is closed at
once, and what the listener sent with it dropped.
This module must never decide what to ask or what to believe: the shell
asks, the core judges.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import zmq
import zmq.asyncio
import zmq.utils.z85

from curvechat.client.errors import PeerUnreachable
from curvechat.crypto.identity import Identity
from curvechat.protocol import peer as p


class PeerLink:
    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        identity: Identity,
        record: p.PeerRecord,
        *,
        timeout: float = 2.0,
    ) -> None:
        self.ctx = ctx
        self.identity = identity
        self.record = record
        self.timeout = timeout
        self._rids = itertools.count(1)
        self._sock: zmq.asyncio.Socket | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def user(self) -> str:
        return self.record.user

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.immediate = True  # queue only to a listener whose handshake completed
            sock.ipv6 = True  # a record may name an IPv6 address
            sock.maxmsgsize = p.MAX_PEER_FRAME
            sock.rcvhwm = 0  # every frame taken in: the watch bounds what is held
            sock.curve_serverkey = zmq.utils.z85.encode(self.record.transport_pub)
            sock.curve_publickey = zmq.utils.z85.encode(self.identity.transport_pub)
            sock.curve_secretkey = zmq.utils.z85.encode(self.identity.transport_secret)
            try:
                for endpoint in self.record.endpoints:
                    sock.connect(endpoint)
            except zmq.ZMQError as exc:  # closed here: never left to the collector
                sock.close(0)
                raise PeerUnreachable(f"{self.user}: cannot dial its record: {exc}") from exc
            self._sock = sock
        return self._sock

    def reset(self) -> None:
        self._stop_watch()
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    async def ask(self, req: p.AnyPeerRequest) -> p.AnyPeerReply:
        self._stop_watch()
        if self._sock is not None and int(self._sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self.reset()  # sent since the last answer, before the watch saw it
        sock = self._socket()
        rid = next(self._rids)
        deadline = time.monotonic() + self.timeout
        # `immediate`: writable only once a CURVE handshake completed (the
        # listener let us in); until the deadline, wait for one.
        if not await sock.poll(int(self.timeout * 1000) + 1, zmq.POLLOUT):  # type: ignore[call-arg]
            self.reset()
            raise PeerUnreachable(f"{self.user}: no link in {self.timeout:g} s")
        try:
            await sock.send(
                p.encode_peer(
                    p.PeerAsk(v=p.PEER_VERSION, rid=rid, req=req, user=self.identity.user)
                ),
                flags=zmq.NOBLOCK,
            )
        except zmq.Again:
            self.reset()
            raise PeerUnreachable(f"{self.user}: no link") from None
        left = deadline - time.monotonic()
        if left <= 0 or not await sock.poll(int(left * 1000) + 1):
            self.reset()
            raise PeerUnreachable(f"{self.user}: no reply in {self.timeout:g} s")
        try:
            answer = p.decode_answer(await sock.recv())
        except Exception:
            self.reset()
            raise
        if answer.rid != rid:
            # One request at a time, and a socket made anew after every
            # failure: an answer to anything else is never honest, and
            # reading on would let a listener keep us decoding its
            # answers until the deadline.
            self.reset()
            raise PeerUnreachable(f"{self.user}: answered a request it was not asked")
        if answer.user != self.user:
            # another member's record announced this listener's key
            self.reset()
            raise PeerUnreachable(f"{self.user}: {answer.user} answered there")
        self._watch = asyncio.create_task(self._unasked(sock), name=f"peer-link-{self.user}")
        return answer.msg

    async def _unasked(self, sock: zmq.asyncio.Socket) -> None:
        """Between requests: a frame that comes answers nothing."""
        await sock.poll(flags=zmq.POLLIN)  # type: ignore[call-arg]
        if self._sock is sock:
            self._watch = None  # (this task: not cancelled by the reset)
            self.reset()

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
