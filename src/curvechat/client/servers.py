"""The nodes a client tries, in order (sans-IO): those it was given, then
those a welcome named in cluster mode (Freelance pattern); and what the
failed attempts on them say, taken together.

The node that answered last (remembered by `client.recall`) goes first, so
a cluster whose first node is dead costs nothing on the next run. Within
one round over the nodes the next one is tried at once; the back-off comes
between rounds. This module never opens a socket or reads a clock.
"""

from __future__ import annotations

import logging

from curvechat.protocol.connect import ConnectStringError, ServerAddress, parse_connect
from curvechat.protocol.limits import MAX_PEERS

log = logging.getLogger("curvechat.client")


REFUSED = "refused"
"""Nothing listens there: the TCP connection was refused."""
KEY_MISMATCH = "key_mismatch"
"""The node closed the connection during the CURVE handshake."""
AUTH = "auth"
"""The node's authentication (ZAP) turned this client's key away."""
TIMEOUT = "timeout"
"""No welcome within the connect timeout (a host that does not answer)."""
LOST = "lost"
"""Anything else that ended an attempt."""


def prefer(given: list[ServerAddress], first: ServerAddress | None) -> list[ServerAddress]:
    """`given` with `first` (the node that answered last) moved to the front,
    or put there if a welcome named it; the others keep their order."""
    if first is None:
        return list(given)
    return [first, *(a for a in given if a != first)]


def next_attempt_now(attempt: int, nodes: int) -> bool:
    """After `attempt` failed attempts in a row over `nodes` nodes: try the
    next node at once (still in the first rounds over the list) or wait the
    back-off (a whole round failed)."""
    return nodes > 1 and attempt % nodes != 0


def verdict(endpoints: list[str], failures: dict[str, str]) -> str | None:
    """What the latest failed attempts on every node say together: None
    while some node has not failed yet (it may still answer);
    KEY_MISMATCH if any node failed its handshake (the connect string is
    wrong: waiting cannot help), else AUTH if any node turned our key away;
    REFUSED if nothing listens on any of them (the service is down); else
    TIMEOUT."""
    kinds = [failures.get(e) for e in endpoints]
    if not kinds or None in kinds:
        return None
    for decisive in (KEY_MISMATCH, AUTH):
        if decisive in kinds:
            return decisive
    if all(k == REFUSED for k in kinds):
        return REFUSED
    return TIMEOUT


class ServerList:
    def __init__(self, given: list[ServerAddress]) -> None:
        if not given:
            raise ValueError("no server addresses")
        self.given = list(given)
        self.learned: list[ServerAddress] = []

    @property
    def all(self) -> list[ServerAddress]:
        return self.given + self.learned

    def learn(self, peers: list[str]) -> None:
        """Add the live nodes a welcome names (the ones given stay, first and
        in order); a peer that does not parse is ignored."""
        found: list[ServerAddress] = []
        for text in peers:
            try:
                found.extend(parse_connect(text))
            except ConnectStringError as exc:
                log.warning("ignoring a peer the server named: %s", exc)
        fresh = [a for a in found if a not in self.given][:MAX_PEERS]
        if fresh != self.learned:
            self.learned = fresh
            log.info("cluster nodes known: %s", ", ".join(a.endpoint for a in self.all))
