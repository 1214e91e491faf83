"""The reaper (server/liveness.py) without sockets: which sessions it drops,
and that a pass over many sessions lets the event loop run between slices."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from curvechat.server import liveness as liveness_mod
from curvechat.server.flow import Flow
from curvechat.server.liveness import REAP_SLICE, Liveness
from curvechat.server.ratelimit import RateLimits
from curvechat.server.session import Session


class FakeNode:
    """What the reaper asks of the node."""

    def __init__(self) -> None:
        self.sessions: dict[bytes, Session] = {}
        self.by_fd: dict[int, Session] = {}
        self.endpoint = None
        self.gone_sessions = 0
        self.dropped: list[bytes] = []
        self.events_said: list[str] = []
        noop = SimpleNamespace(inc=lambda *a: None)
        self.metrics = SimpleNamespace(client_disconnects=SimpleNamespace(labels=lambda *a: noop))
        self.events = SimpleNamespace(add=lambda kind, *a, **k: self.events_said.append(kind))
        self.limits = RateLimits()

    def add(self, name: str, **fields: Any) -> Session:
        sess = Session(name.encode(), "key", user=name, resolved=True, flow=Flow(), **fields)
        self.sessions[sess.routing_id] = sess
        return sess

    def drop_session(self, routing_id: bytes) -> None:
        if self.sessions.pop(routing_id, None) is not None:
            self.dropped.append(routing_id)


async def test_gone_and_silent_sessions_are_dropped_unless_something_is_in_flight() -> None:
    node: Any = FakeNode()
    now = time.monotonic()
    node.add("live")
    node.add("gone", gone="disconnected")
    node.add("silent", last_seen=now - 1000)
    busy = node.add("gone-but-serving", gone="disconnected")
    busy.worker = asyncio.get_running_loop().create_future()  # a request being served
    sending = node.add("gone-but-sending", gone="disconnected")
    sending.sends.add(asyncio.get_running_loop().create_future())
    finished = node.add("gone-worker-done", gone="disconnected")
    finished.worker = asyncio.get_running_loop().create_future()
    finished.worker.set_result(None)

    dropped = await Liveness(node).reap(cutoff=now - 10)

    assert dropped == 3
    assert sorted(node.dropped) == [b"gone", b"gone-worker-done", b"silent"]
    assert sorted(node.sessions) == [b"gone-but-sending", b"gone-but-serving", b"live"]
    assert node.events_said == ["client_timeout"]  # the silent one, found out now


async def test_a_pass_lets_the_event_loop_run_between_slices() -> None:
    node: Any = FakeNode()
    n = 2 * REAP_SLICE + 10
    for i in range(n):
        node.add(f"u{i}", gone="disconnected")
    turns: list[int] = []

    async def beside() -> None:  # what the node does meanwhile: counts the sessions left
        while True:
            turns.append(len(node.sessions))
            await asyncio.sleep(0)

    task = asyncio.create_task(beside())
    await asyncio.sleep(0)
    dropped = await Liveness(node).reap(cutoff=time.monotonic() - 10)
    task.cancel()
    assert dropped == n and not node.sessions
    # The loop ran after the first slice and after the second, not only at the end.
    assert REAP_SLICE + 10 in turns and 10 in turns


async def test_a_session_replaced_between_slices_is_judged_as_it_is_now(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(liveness_mod, "REAP_SLICE", 1)
    node: Any = FakeNode()
    node.add("a", gone="disconnected")
    node.add("b", gone="disconnected")

    async def reconnect() -> None:  # runs at the pass's first turn: b is back
        node.add("b")

    task = asyncio.create_task(reconnect())
    dropped = await Liveness(node).reap(cutoff=time.monotonic() - 10)
    await task
    assert dropped == 1 and list(node.sessions) == [b"b"]


def test_a_peer_a_send_cannot_reach_is_told_as_a_disconnect() -> None:
    """A push can find a connection closed before the socket monitor reports
    it: the client is then gone for the table and the events, not silently
    forgotten (its row said "lost", with no event, on the dashboard)."""
    node: Any = FakeNode()
    carol = node.add("carol")
    node.add("erin", gone=liveness_mod.CLEAN_EXIT)  # said goodbye first
    watch = Liveness(node)

    watch.unreachable(b"carol")
    watch.unreachable(b"erin")
    watch.unreachable(b"nobody")

    assert node.dropped == [b"carol", b"erin"]
    assert carol.gone == "disconnected"
    assert node.events_said == ["client_disconnected"]  # carol's; erin left
