"""Registering a new identity before it is kept, for `curvechat init` and
the terminal client's first run: a bare connection (no cache), a wait for
a node's welcome that ends as soon as the failures tell (nothing listens,
or the server key is not the node's), then `register`.

The caller stages the sealed identity (`crypto.keyfile.Staging`) before
registering, and `keep` links it in place only once this says the name is
its own (or that the outcome is unknown). It must never write anything
else, nor remove a staged file: after a registration the staged file holds
the key the name is bound to.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import zmq.utils.z85

from curvechat.client import servers as sv
from curvechat.client.connection import Connection
from curvechat.client.errors import (
    ClientError,
    KeyMismatch,
    NotConnected,
    RequestTimeout,
    ServerRefused,
)
from curvechat.crypto.identity import Identity
from curvechat.crypto.keyfile import link_new
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol.connect import ServerAddress

__all__ = [
    "IdentityExists",
    "Progress",
    "Unreachable",
    "WriteFailed",
    "keep",
    "keep_sent",
    "key_refused",
    "mismatch",
    "reach_node",
    "register",
]

MIN_NODE_TIMEOUT = 1.0
"""The shortest wait for one node's welcome when the connect timeout is
shared among several nodes."""


REFUSED_FOR_GOOD = frozenset(
    {ErrorCode.NAME_TAKEN, ErrorCode.KEY_TAKEN, ErrorCode.BAD_SIGNATURE, ErrorCode.BAD_FRAME}
)
"""Refusals of `register` that mean this identity cannot have this name
(nothing was stored). Any other (store_unavailable, internal, rate_limited…)
leaves the outcome to a later try: the registration counts as unconfirmed."""


class IdentityExists(ClientError):
    code = "identity_exists"


class WriteFailed(ClientError):
    code = "write_failed"


class Unreachable(ClientError):
    """No node welcomed us: nothing was sent."""

    code = "unreachable"


class Progress:
    """How far a `register` got, readable after it raised or was cancelled
    (a Ctrl-C): `sent` from the moment the registration may have reached a
    node. From then on the staged identity may hold the key the name is
    bound to, and must not be removed. `refused`: the code of a refusal
    that may pass (`store_full`, `rate_limited`…), if that was the answer.
    `nodes`: once registered, the nodes given and those the welcome named."""

    def __init__(self) -> None:
        self.sent = False
        self.refused: str | None = None
        self.nodes: list[ServerAddress] = []


def node_timeout(timeout: float, nodes: int) -> float:
    """How long one node's welcome is awaited: the connect timeout shared
    among the nodes of one round, and never below MIN_NODE_TIMEOUT."""
    return max(MIN_NODE_TIMEOUT, timeout / max(1, nodes))


async def reach_node(conn: Connection, timeout: float, changed: asyncio.Event) -> str | None:
    """Wait until `conn` is live (None), or no node can answer: then why.
    `changed` is set by the caller whenever the connection's status changes.
    Raises KeyMismatch the moment the failures say a server key is wrong."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not conn.live:
        wrong_key = key_refused(conn)
        if wrong_key is not None:
            raise KeyMismatch(wrong_key)
        endpoints = [a.endpoint for a in conn.addresses]
        kind = sv.verdict(endpoints, conn.failures)
        if kind is not None:
            return _why(endpoints, conn.status.detail, kind, timeout)
        left = deadline - loop.time()
        if left <= 0:
            return f"no server answered within {timeout:g} s"
        changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left):
                await changed.wait()
    return None


def _why(endpoints: list[str], detail: str, kind: str, timeout: float) -> str:
    if kind == sv.REFUSED:
        where = ", ".join(e.removeprefix("tcp://") for e in endpoints)
        return f"no server is listening at {where}"
    if kind == sv.DRAINING:
        return "every server is draining (before a restart) or down: try again shortly"
    # Every node failed before the time was up (a reset, a closed connection).
    return "no server answered" + (f": {detail}" if detail else "")


def key_refused(conn: Connection) -> str | None:
    """What it means that every node of `conn` failed the CURVE handshake
    (waiting cannot help), or None while some node may still answer."""
    endpoints = [a.endpoint for a in conn.addresses]
    if sv.verdict(endpoints, conn.failures) not in (sv.KEY_MISMATCH, sv.AUTH):
        return None
    return mismatch(endpoints, conn.failures)


def mismatch(endpoints: list[str], failures: dict[str, str]) -> str:
    """What a failed CURVE handshake with the nodes at `endpoints` means."""
    bad = [e for e in endpoints if failures.get(e) in (sv.KEY_MISMATCH, sv.AUTH)]
    where = ", ".join(e.removeprefix("tcp://") for e in bad)
    if any(failures.get(e) == sv.AUTH for e in bad):
        return f"the server at {where} refused this client's key during the CURVE handshake"
    return (
        f"the server at {where} failed the CURVE handshake: the server key in the connect"
        " string is not its key (compare the fingerprint `curvechat serve` printed)"
    )


async def register(
    identity: Identity,
    addresses: list[ServerAddress],
    *,
    wait: float,
    timeout: float,
    client_id: str,
    progress: Progress | None = None,
) -> bool:
    """Register `identity` with the first node that welcomes it within the
    connect timeout `wait` (less when the failures already tell), then
    answers within `timeout`. True: registered; False: a registration was
    sent and not confirmed, or refused for a reason that may pass (the
    outcome is unknown). Raises ServerRefused (one of `REFUSED_FOR_GOOD`),
    KeyMismatch, Unreachable (nothing was sent), or RuntimeError (a libzmq
    without CURVE). `progress.sent` is set before the request goes out."""
    progress = progress or Progress()
    changed = asyncio.Event()
    conn = Connection(
        addresses,
        public_key=zmq.utils.z85.encode(identity.transport_pub),
        secret_key=zmq.utils.z85.encode(identity.transport_secret),
        on_push=lambda _msg: None,
        on_status=lambda _status: changed.set(),
        client_id=client_id,
        connect_timeout=node_timeout(wait, len(addresses)),
    )
    loop = asyncio.get_running_loop()
    await conn.start()
    try:
        why = await reach_node(conn, wait, changed)
        if why is not None:
            raise Unreachable(why)
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            if not await conn.wait_live(left):
                break
            progress.sent = True
            try:
                await conn.request(
                    m.Register(
                        user=identity.user,
                        sign_pub=identity.sign_pub,
                        transport_sig=identity.transport_sig(),
                    ),
                    timeout=max(0.1, min(left, conn.request_timeout)),
                )
                progress.nodes = list(conn.addresses)
                return True
            except ServerRefused as exc:
                if exc.code in REFUSED_FOR_GOOD:
                    raise
                progress.refused = exc.code
                return False  # it may have been stored: unconfirmed, tried again later
            except (NotConnected, RequestTimeout):
                await asyncio.sleep(0.05)  # the connection retries; so do we
        detail = conn.status.detail or conn.status.state
    finally:
        await conn.close()
    if progress.sent:
        return False
    raise Unreachable(f"no server answered within {timeout:g} s ({detail})")


def keep_sent(staged: Path, target: Path) -> Path:
    """After a registration that may have reached a node and was not seen
    through (a Ctrl-C, the app quit): the staged identity becomes `target`
    if it can (it may hold the key the name is bound to); where it is now.
    Never raises for the link: it stays `staged` then."""
    try:
        keep(staged, target)
    except ClientError:
        try:  # it may be in place already: stopped during or just after the link
            moved = target.exists() and (not staged.exists() or target.samefile(staged))
        except OSError:
            moved = False
        if not moved:
            return staged
        staged.unlink(missing_ok=True)
    return target


def keep(staged: Path, target: Path) -> None:
    """The staged identity file becomes `target`, never replacing a file
    already there: IdentityExists if one appeared meanwhile (it stays),
    WriteFailed if the link cannot be made. Either way `staged` is left
    where it is: after a registration it holds the key the name is bound to."""
    try:
        link_new(staged, target)
    except FileExistsError:
        raise IdentityExists(f"{target} appeared meanwhile; leaving it") from None
    except OSError as exc:
        raise WriteFailed(f"cannot make {target}: {exc.strerror or exc}") from None
