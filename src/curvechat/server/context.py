"""What the request handlers may use of the node they run in.

`Handlers` is written against `NodeContext`, not `ChatNode`: the node's
sessions, sockets, reactor and tasks stay out of their reach, and
handlers.py does not import node.py (node.py imports handlers.py to make
them). `ChatNode` is a `NodeContext` by its shape; tests may hand the
handlers anything else of that shape.

What this module must never do: grow a member that lets a handler reach
the transport (send frames itself, drop or make sessions).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from curvechat.protocol import messages as m
    from curvechat.server.liveness import Liveness
    from curvechat.server.metrics import NodeMetrics
    from curvechat.server.ratelimit import RateLimits
    from curvechat.server.rooms import RoomCache
    from curvechat.server.session import Session
    from curvechat.store import Committed, NewMessage, Store


class NodeContext(Protocol):
    node_name: str
    boot: str
    draining: bool  # no new connections (server/drain.py)
    store_cut_off: bool  # no etcd member answers (server/storeguard.py)
    store: Store
    limits: RateLimits
    rooms: RoomCache
    metrics: NodeMetrics
    liveness: Liveness
    #: where sends are committed (the store, or the rooms' owners in a cluster)
    append_messages: Callable[[Sequence[NewMessage]], Awaitable[list[Committed]]]

    def push(self, users: list[str], msg: m.AnyReply, *, skip: bytes | None = None) -> int:
        """Push `msg` to the online sessions of `users`; returns how many got it."""
        ...

    def bind_user(self, sess: Session, user: str) -> None: ...

    def welcome(self, sess: Session, hello: m.Hello) -> m.Welcome: ...

    def note_bye(self, sess: Session) -> None: ...
