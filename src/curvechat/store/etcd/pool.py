"""The etcd members a store talks to: one gRPC channel each, calls spread
over them in turn, a deadline on every call, and a penalty for a member
whose call failed (2 s, doubling to 30 s while it keeps failing), so that
a hung member costs one deadline, not every third call.

What it must never do: retry a call itself (a write that timed out may
have committed; the caller decides), or wait on a member the node's probe
(health.py) has found not serving.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store.base import StoreUnavailable
from curvechat.store.etcd import conn


def _grpc_target(endpoint: str) -> str:
    """The gRPC target of one member: ``ipv4:a:p`` (its name resolved now)."""
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    return f"ipv4:{infos[0][4][0]}:{port}"


_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Notice a member that went silent (kill -9, partition) in seconds;
    # etcd refuses pings more often than every 5 s by default.
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
]
PENALTY_MIN_S = 2.0
_HAS_LEADER = (("hasleader", "true"),)
PENALTY_MAX_S = 30.0


@dataclass
class Member:
    """One etcd member: its own channel and stubs, and how long to avoid it.

    One channel per member (not one round-robin channel over all of them):
    a member that hangs without closing its connections (SIGSTOP, a
    blackholing partition) keeps a round-robin subchannel "ready", and every
    third call would wait out its deadline. Here a member whose call failed
    is skipped for a penalty that doubles while it keeps failing."""

    endpoint: str
    channel: Any
    kv: Any
    watch: Any
    lease: Any
    avoid_until: float = 0.0
    penalty: float = 0.0

    def failed(self) -> None:
        self.penalty = min(PENALTY_MAX_S, max(PENALTY_MIN_S, self.penalty * 2))
        self.avoid_until = time.monotonic() + self.penalty

    def worked(self) -> None:
        self.penalty = 0.0
        self.avoid_until = 0.0


class MemberPool:
    """The members of one store (see the module docstring)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str,
        timeout: float,
        security: conn.EtcdSecurity | None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.prefix = prefix  # for the hints in error messages
        self.timeout = timeout
        self.security = security
        #: the etcd token, when the node logs in with a user and password
        self.login = conn.Login(security) if security and security.user else None
        #: the node's `health.EtcdProbe` once it runs one: calls on a member
        #: it finds not serving give up at once
        self.probe: Any = None
        self.members: list[Member] = []
        self._next = 0  # where the rotation over the members goes on
        self._stream_member: Member | None = None  # serving the cluster's streams
        self._contacted = False  # a call succeeded since open (for error hints)

    def require_open(self) -> None:
        if not self.members:
            raise StoreUnavailable("the store is not open")

    def connect(self) -> None:
        """A channel and stubs per member (nothing is sent yet)."""
        try:
            targets = [(ep, _grpc_target(ep)) for ep in self.endpoints]
        except OSError as exc:
            raise StoreUnavailable(f"cannot resolve etcd endpoints: {exc}") from exc
        for endpoint, target in targets:
            channel = conn.channel(endpoint, target, self.security, _CHANNEL_OPTIONS)
            self.members.append(
                Member(
                    endpoint,
                    channel,
                    conn.authed(rpc.KVStub(channel), self.login, channel),
                    conn.authed(rpc.WatchStub(channel), self.login, channel),
                    conn.authed(rpc.LeaseStub(channel), self.login, channel),
                )
            )

    async def close(self) -> None:
        members, self.members = self.members, []
        self._stream_member = None
        self._contacted = False
        for member in members:
            await member.channel.close()

    def pick(self) -> Member:
        """The next member in rotation that is not being avoided (or, if all
        are, the one whose penalty ends first)."""
        self.require_open()
        now = time.monotonic()
        n = len(self.members)
        for i in range(n):
            member = self.members[(self._next + i) % n]
            if member.avoid_until <= now:
                self._next = (self._next + i + 1) % n
                return member
        return min(self.members, key=lambda mb: mb.avoid_until)

    async def call(self, method: str, request: Any) -> Any:
        member = self.pick()
        try:
            # hasleader: a member cut off from the others says so at once
            # instead of holding the call for its whole deadline.
            call = getattr(member.kv, method)(request, timeout=self.timeout, metadata=_HAS_LEADER)
            resp = await (call if self.probe is None else self.probe.guard(member.endpoint, call))
        except rpc.AioRpcError as exc:
            member.failed()
            raise conn.failure(
                member.endpoint, exc, self.security, self.prefix, opening=not self._contacted
            ) from exc
        except StoreUnavailable:  # the probe gave up on it
            member.failed()
            raise
        member.worked()
        self._contacted = True
        return resp

    @property
    def stubs(self) -> tuple[Any, Any]:
        """(WatchStub, LeaseStub) of a member to open a stream on: the one
        used last unless it failed (`stream_failed`). Raises StoreUnavailable."""
        member = self._stream_member
        if member is None or member.avoid_until > time.monotonic():
            member = self._stream_member = self.pick()
        return member.watch, member.lease

    def stream_failed(self) -> None:
        """A watch or keep-alive stream broke: avoid its member for a while."""
        if self._stream_member is not None:
            self._stream_member.failed()
            self._stream_member = None

    def channels(self) -> list[tuple[str, Any]]:
        """(endpoint, gRPC channel) of every member, for status.py."""
        return [(mb.endpoint, mb.channel) for mb in self.members]
