"""What the chaos cluster reads from its nodes' logs: the times a node took
over a room owner's sends (server/forwarder.py's two warnings)."""

from __future__ import annotations

import datetime

from .cluster import _fallbacks

W = "WARNING curvechat.server node link to"
T = "2026-12-03 13:12"
LOG = "\n".join(
    [
        "2026-12-03 13:12:40,100 INFO curvechat.server node link to n-b answers again: ...",
        f"{T}:41,250 {W} n-b: no answer for 0.8 s; its rooms' sends go to a stand-in",
        f"{T}:42,500 {W} n-c: no answer in 2 s; committing here",
        f"{T}:43,000 {W} n-c: reaches no etcd member; its rooms' sends go to a stand-in",
        f"{T}:44,000 {W} n-c: cannot use 'tcp://x': bad",
        f"{T}:45,000 {W} n-c: its etcd is slow, it says; its rooms go to stand-ins",
    ]
)


def test_both_kinds_of_take_over_are_read_with_their_owner_and_time() -> None:
    got = _fallbacks(LOG, {"n-b": "b", "n-c": "c"})
    assert [owner for _t, owner in got] == ["b", "c", "c"]
    first = datetime.datetime(2026, 12, 3, 13, 12, 41, 250000).timestamp()
    assert abs(got[0][0] - first) < 1e-6
