"""The sans-IO side of reaching a server (issue 15, item 1): which node goes
first, when the next one is tried at once, and what the failed attempts
say together; and what the cache remembers of the node that answered."""

from __future__ import annotations

from pathlib import Path

import zmq

from curvechat.client import servers as sv
from curvechat.client.cache import Cache
from curvechat.client.recall import LAST_NODE, last_sync_ms, remembered_node
from curvechat.protocol.connect import ServerAddress, format_connect, parse_connect


def _addresses(n: int) -> list[ServerAddress]:
    text = ",".join(
        f"tcp://127.0.0.1:{7700 + i}/{zmq.curve_keypair()[0].decode()}" for i in range(n)
    )
    return parse_connect(text)


def test_the_remembered_node_goes_first_and_the_others_keep_their_order() -> None:
    a, b, c = _addresses(3)
    assert sv.prefer([a, b, c], None) == [a, b, c]
    assert sv.prefer([a, b, c], c) == [c, a, b]
    assert sv.prefer([a, b, c], a) == [a, b, c]
    (learned,) = _addresses(1)  # a node a welcome named, not in the connect string
    assert sv.prefer([a, b], learned) == [learned, a, b]


def test_within_a_round_the_next_node_is_tried_at_once() -> None:
    assert not sv.next_attempt_now(1, 1)  # one node: always the back-off
    assert sv.next_attempt_now(1, 3) and sv.next_attempt_now(2, 3)
    assert not sv.next_attempt_now(3, 3)  # a whole round failed: back off
    assert sv.next_attempt_now(4, 3)


def test_the_verdict_of_the_failures() -> None:
    nodes = ["tcp://h:1", "tcp://h:2"]
    assert sv.verdict(nodes, {}) is None
    assert sv.verdict(nodes, {"tcp://h:1": sv.REFUSED}) is None  # h:2 may answer
    assert sv.verdict(nodes, {"tcp://h:1": sv.REFUSED, "tcp://h:2": sv.REFUSED}) == sv.REFUSED
    assert sv.verdict(nodes, {"tcp://h:1": sv.REFUSED, "tcp://h:2": sv.TIMEOUT}) == sv.TIMEOUT
    mixed = {"tcp://h:1": sv.TIMEOUT, "tcp://h:2": sv.KEY_MISMATCH}
    assert sv.verdict(nodes, mixed) == sv.KEY_MISMATCH
    assert sv.verdict(nodes, {"tcp://h:1": sv.AUTH, "tcp://h:2": sv.LOST}) == sv.AUTH
    assert sv.verdict([], {}) is None


def test_the_remembered_node_is_kept_per_connect_string(tmp_path: Path) -> None:
    a, b = _addresses(2)
    cache = Cache(tmp_path / "cache.db", b"k" * 32)
    try:
        assert remembered_node(cache, [a, b]) is None
        assert last_sync_ms(cache) is None
        cache.set_meta(LAST_NODE, f'{{"given": "{format_connect([a, b])}", "node": "{b}"}}')
        assert remembered_node(cache, [a, b]) == b
        assert remembered_node(cache, [b, a]) is None  # another connect string
        assert remembered_node(cache, [a]) is None
        cache.set_meta(LAST_NODE, "not json")
        assert remembered_node(cache, [a, b]) is None
    finally:
        cache.close()
