"""The nodes a client tries, in order (sans-IO): those it was given, then
those a welcome named in cluster mode (Freelance pattern)."""

from __future__ import annotations

import logging

from curvechat.protocol.connect import ConnectStringError, ServerAddress, parse_connect
from curvechat.protocol.limits import MAX_PEERS

log = logging.getLogger("curvechat.client")


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
