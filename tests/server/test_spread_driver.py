"""The real drivers (`Homing.tick`, server/homing.py) of several nodes in
simulated time, without sockets: looks every 5 s at a phase of each node's
own, counts published at keep-alives (every 3.3 s, when they moved by the
node's rule) and reaching the other nodes' listings a little later, clients
leaving at once and arriving up to a few seconds after they were asked.
What the synchronous simulation of test_spread.py cannot show: listings a
keep-alive behind, turns that differ between nodes, the driver's own memory
(who it asked, who is on the way, how long the listings called for a
spread). A node that comes back and an uneven hash must both end within
the band, nobody may move more than twice, and then nobody moves."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable

import pytest

from curvechat.protocol.connect import parse_connect, spread_score, z85_encode
from curvechat.server.homing import Homing, signed_in
from curvechat.server.session import Session
from curvechat.server.spread import BAND, HOME

from support.fakenode import fake_node

T0 = 1_700_000_000_000
LONG_AGO = T0 - 10**7


def run(
    nodes: int, users: int, seed: int, *, back: str | None, minutes: int = 8
) -> tuple[list[int], Counter[str], list[int], list[tuple[int, str]]]:
    """Returns the final loads, the moves per user, the peak load of each
    node, and (time ms, user) of every move."""
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(nodes)]
    keys = {n: hashlib.sha256(f"{seed}-{n}".encode()).digest() for n in names}
    connect = {n: f"tcp://127.0.0.1:{7700 + i}/{z85_encode(keys[n])}" for i, n in enumerate(names)}
    by_key = {parse_connect(connect[n])[0].key: n for n in names}
    fake = {n: fake_node(list(connect.values()), n) for n in names}
    registry: dict[str, tuple[str, str, str, int, int]] = {}
    view: dict[str, list[tuple[str, str, str, int, int]]] = {}
    homing = {n: Homing(fake[n], lambda n=n: view[n], settle_s=30) for n in names}  # type: ignore[arg-type]
    ids = itertools.count()

    def connect_user(user: str, node: str, since_ms: int) -> None:
        rid = f"r{next(ids)}".encode()
        fake[node].sessions[rid] = Session(
            routing_id=rid, transport_key="k", user=user, connected_ms=since_ms
        )

    up_first = [n for n in names if n != back]
    for i in range(users):
        user = f"u{i:05d}"
        connect_user(user, max(up_first, key=lambda n: spread_score(user, keys[n])), LONG_AGO)
    published = {n: signed_in(fake[n]) for n in names}
    for n in names:
        registry[n] = (n, connect[n], "up", T0 if n == back else LONG_AGO, published[n])
    for n in names:
        view[n] = [registry[x] for x in sorted(registry)]

    events: list[tuple[int, int, Callable[[int], None]]] = []
    order = itertools.count()

    def at(t: int, f: Callable[[int], None]) -> None:
        heapq.heappush(events, (t, next(order), f))

    moves: Counter[str] = Counter()
    log: list[tuple[int, str]] = []
    peak = dict(published)

    def look(n: str, t: int) -> None:
        homing[n].tick(T0 + t, now=t / 1000)
        for rid, move in fake[n].sent:
            sess = fake[n].sessions.get(rid)
            if sess is None or sess.user is None:
                continue
            user = sess.user
            named = [by_key[parse_connect(p)[0].key] for p in move.peers]
            to = max(named, key=lambda x: spread_score(user, keys[x]))
            arrive = t + rng.randrange(200, 3000)
            at(t + 100, lambda _t, n=n, rid=rid: fake[n].sessions.pop(rid, None))
            at(arrive, lambda _t, u=user, to=to, a=arrive: connect_user(u, to, T0 + a))
            moves[user] += 1
            log.append((t, user))
        fake[n].sent.clear()
        at(t + 5000 + rng.randrange(30), lambda t, n=n: look(n, t))

    def keepalive(n: str, t: int) -> None:
        count = signed_in(fake[n])
        peak[n] = max(peak[n], count)
        if abs(count - published[n]) >= max(1, published[n] // 100):  # server/cluster.py's rule
            published[n] = count
            registry[n] = (*registry[n][:4], count)
            for m in names:
                at(t + rng.randrange(20, 300), lambda _t, m=m: view.__setitem__(m, sorted_view()))
        at(t + 3333, lambda t, n=n: keepalive(n, t))

    def sorted_view() -> list[tuple[str, str, str, int, int]]:
        return [registry[x] for x in sorted(registry)]

    for n in names:
        at(rng.randrange(5000), lambda t, n=n: look(n, t))
        at(rng.randrange(3333), lambda t, n=n: keepalive(n, t))
    while events:
        t, _, f = heapq.heappop(events)
        if t > minutes * 60_000:
            break
        f(t)
    final = [signed_in(fake[n]) for n in names]
    return final, moves, [peak[n] for n in names], log


@pytest.mark.parametrize(
    ("nodes", "users", "back"), [(3, 100, "n2"), (4, 400, "n3"), (4, 400, None), (5, 300, None)]
)
def test_the_drivers_settle_within_the_band(nodes: int, users: int, back: str | None) -> None:
    for seed in range(6):
        final, moves, peak, log = run(nodes, users, seed, back=back)
        mean = users / nodes
        assert sum(final) == users
        assert max(abs(c - mean) for c in final) <= BAND * mean + 1, (seed, final)
        assert max(moves.values(), default=0) <= 2, (seed, moves.most_common(3))
        assert not [m for m in log if m[0] > 5 * 60_000], (seed, final)  # quiet at the end
        if back is not None:  # it got its clients in parts: never over the home cap
            i = int(back[1:])
            assert peak[i] <= max(int((1 + HOME) * mean), -(-users // nodes)) + 1, (seed, peak)
