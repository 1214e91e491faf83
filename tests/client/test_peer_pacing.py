"""The peer pacing (N10) without sockets: buckets per key, and the memory
they take bounded by letting go of the ones that refilled."""

from __future__ import annotations

from curvechat.client.peer.pacing import KEY_ASKS_PER_S, MAX_BUCKETS, Pacing


def test_buckets_that_refilled_are_let_go_when_there_are_many() -> None:
    pacing = Pacing()
    for i in range(MAX_BUCKETS):
        assert pacing.connection(i.to_bytes(32, "big"), 0.0)
    busy = (0).to_bytes(32, "big")
    for _ in range(int(2 * KEY_ASKS_PER_S) - 1):  # key 0 spends its whole burst
        assert pacing.connection(busy, 0.0)
    assert not pacing.connection(busy, 0.0)
    # a moment later every other bucket has refilled; key 0 has not
    later = 1.0 / KEY_ASKS_PER_S
    assert pacing.connection(b"\xff" * 32, later)  # one more key: the full ones go
    assert set(pacing._keys) == {busy, b"\xff" * 32}
    assert pacing.connection(busy, later)  # one token back, not a fresh burst
    assert not pacing.connection(busy, later)
