"""A welcome that names fewer nodes than the client knows (a node whose
view of the registry is stale) must not make it forget the others: when its
node goes silent, it must still have somewhere else to go."""

from __future__ import annotations

import zmq

from curvechat.client import servers as sv
from curvechat.protocol.connect import ServerAddress, parse_connect


def _addresses(n: int) -> list[ServerAddress]:
    text = ",".join(
        f"tcp://127.0.0.1:{7700 + i}/{zmq.curve_keypair()[0].decode()}" for i in range(n)
    )
    return parse_connect(text)


def test_a_welcome_naming_only_its_node_keeps_the_others_known() -> None:
    a, b, c = _addresses(3)
    servers = sv.ServerList([b])
    servers.learn([str(b), str(a), str(c)])
    assert set(servers.all) == {a, b, c}
    servers.learn([str(b)])  # b's view of the registry lost a and c for a while
    assert set(servers.all) == {a, b, c}
    assert servers.after(b, 0.0) != b  # a silent b is not retried alone
    assert servers.live == [b]  # what the welcome named still ranks first
    assert servers.first(0.0) == b
