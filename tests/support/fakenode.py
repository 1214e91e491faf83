"""A stand-in for a ChatNode as `Homing` and `MoveAsker` use it: its
sessions, its flags, its live nodes, and a send that records the frames."""

from __future__ import annotations

from types import SimpleNamespace

from curvechat.protocol import decode_server_frame


class FakeNode(SimpleNamespace):
    def send(self, routing_id: bytes, frame: bytes) -> bool:
        self.sent.append((routing_id, decode_server_frame(frame).msg))
        return True


def fake_node(peers: list[str], name: str = "a") -> FakeNode:
    """A node named `name`, up and serving, that knows `peers` as live."""
    return FakeNode(
        node_name=name,
        sessions={},
        gone_sessions=0,
        draining=False,
        store_cut_off=False,
        store_slow=False,
        peers=list(peers),
        sent=[],
    )
