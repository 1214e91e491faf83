"""The store guard's judgement (server/storeguard.py), driven without
sockets: a scripted probe, a node with an event list."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from curvechat.server.storeguard import MOVE_AFTER_S, QUICK_ROUNDS, SLOW_ROUNDS, StoreGuard


class Events:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def add(self, kind: str, text: str, **_kw: Any) -> None:
        self.kinds.append(kind)


def _guard() -> tuple[StoreGuard, Any, Any]:
    sent: list[tuple[bytes, bytes]] = []
    node = SimpleNamespace(
        node_name="n1",
        store_cut_off=False,
        store_slow=False,
        events=Events(),
        sessions={b"alice": SimpleNamespace(gone=None, connected_ms=0)},
        sent=sent,
        send=lambda rid, frame: sent.append((rid, frame)),
    )
    probe = SimpleNamespace(
        silent_rounds=0, slow_rounds=0, quick_rounds=0, fastest_s=None, slow_rtt=0.15
    )
    return StoreGuard(node, probe), node, probe  # type: ignore[arg-type]


def test_slow_after_slow_rounds_and_quick_again_after_quick_rounds() -> None:
    guard, node, probe = _guard()
    probe.slow_rounds, probe.fastest_s = SLOW_ROUNDS - 1, 0.3
    guard.check()
    assert not node.store_slow  # one slow round is not enough
    probe.slow_rounds = SLOW_ROUNDS
    guard.check()
    guard.check()
    assert node.store_slow and node.events.kinds == ["store_slow"] and guard.slow_spells == 1
    probe.slow_rounds, probe.quick_rounds = 0, QUICK_ROUNDS - 1
    guard.check()
    assert node.store_slow  # it stays slow until QUICK_ROUNDS quick rounds in a row
    probe.quick_rounds = QUICK_ROUNDS
    guard.check()
    assert not node.store_slow and node.events.kinds == ["store_slow", "store_quick"]


def test_cut_off_and_slow_are_judged_apart() -> None:
    guard, node, probe = _guard()
    probe.silent_rounds = 5  # no member answers: cut off, which says nothing of speed
    guard.check()
    assert node.store_cut_off and not node.store_slow


def test_a_slow_node_asks_its_clients_to_move_only_if_another_node_is_quick() -> None:
    guard, node, probe = _guard()
    guard.quick_elsewhere = lambda: True
    probe.slow_rounds, probe.fastest_s = SLOW_ROUNDS, 0.3
    guard.check()
    assert node.store_slow and node.sent == []  # not at once: every node may be finding it
    guard.slow_since -= MOVE_AFTER_S
    guard.quick_elsewhere = lambda: False
    guard.check()
    assert node.sent == []  # no quick node elsewhere: they stay
    guard.quick_elsewhere = lambda: True
    node.sessions[b"bob"] = SimpleNamespace(gone=None, connected_ms=int(time.time() * 1000))
    guard.check()
    # alice is asked; bob connected during the spell (he may reach no other node)
    ((rid, frame),) = node.sent
    assert rid == b"alice" and b"push_move" in frame and b"store_slow" in frame
    guard.check()
    assert len(node.sent) == 1  # asked again only after TELL_EVERY_S
