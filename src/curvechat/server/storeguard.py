"""A node cut off from etcd sends its clients to the other nodes.

What it is for: a node that reaches no etcd member can neither commit nor
learn what the other nodes commit. Its clients that send notice (their sends
are refused), but a client that only reads would stay, connected and seeing
nothing new, until the cut heals. So once the node's probe
(`store/etcd/health.py`) has gone CUT_OFF_ROUNDS rounds in a row without an
answer from any member (about 1 s when the links refuse, 2 s when they
are silent: a silent round is the probe's 1 s deadline; two rounds, not
one, so that one slow round of all members under load is not a cut):

* `hello` is refused with `store_unavailable` ("cannot reach etcd: use
  another node"), so a client tries its next node at once;
* every connection is sent `push_move` (reason ``store_unreachable``), again
  every TELL_EVERY_S while it stays: the client moves to its next node (and
  tries this one last for a while), and its outbox resends what was not
  acknowledged, with the same txn ids;
* an event says so, and another when a member answers again, after which
  the node takes clients again.

It is not a quorum loss: there the members answer (without a leader), every
node is in the same boat, and moving clients would help nobody.

It never closes a connection itself: a client that does not know
`push_move` stays, and its sends are refused as before.

It also says when the node's etcd is slow (`node.store_slow`): the probe's
quickest member took over the probe's `slow_rtt` (150 ms, or
`--etcd-slow-ms`) in SLOW_ROUNDS rounds in a row (a
lossy or distant link to every member; rounds in which the node's own
event loop was late are not counted). Then the node stops owning rooms
(server/ownership.py): it answers pings saying so, the other nodes commit
its rooms' sends, and it forwards its own clients' sends to them, instead
of committing through links where each round trip takes that long. And
while another node is quick (`quick_elsewhere`), it asks its clients to
move (`push_move`, reason ``store_slow``) once it has been slow for
MOVE_AFTER_S: what the other nodes commit reaches this node's clients only
through its watch, over the same slow links, seconds late. It still takes
clients, and does not ask those that connected during the spell to move
(a client that reaches no other node is better served late than not at
all). It owns rooms again
after QUICK_ROUNDS quick rounds in a row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from curvechat.server.moving import MoveAsker
from curvechat.server.node import ChatNode
from curvechat.store.etcd.health import EtcdProbe
from curvechat.tasks import cancel_and_wait

log = logging.getLogger("curvechat.server")

CUT_OFF_ROUNDS = 2
SLOW_ROUNDS = 2
QUICK_ROUNDS = 4
TELL_EVERY_S = 2.0
LOOP_S = 0.25
MOVE_REASON = "store_unreachable"
SLOW_MOVE_REASON = "store_slow"
# A node that is slow asks its clients to move only once it has been slow
# this long: when etcd itself is slow every node finds it within a round or
# two of the others, and none should send its clients to one that is
# about to find it too.
MOVE_AFTER_S = 1.0


class StoreGuard:
    def __init__(self, node: ChatNode, probe: EtcdProbe, *, rounds: int = CUT_OFF_ROUNDS) -> None:
        self.node = node
        self.probe = probe
        self.rounds = rounds
        self.cut_offs = 0  # how many times the node found itself cut off
        self.slow_spells = 0  # how many times it found its etcd slow
        self.slow_since = 0.0  # monotonic time the current slow spell began
        self._slow_since_ms = 0  # the same, wall clock (sessions' connected_ms)
        self.since = 0.0
        self._mover = MoveAsker(node, MOVE_REASON, TELL_EVERY_S)
        self._slow_mover = MoveAsker(node, SLOW_MOVE_REASON, TELL_EVERY_S)
        #: whether another live node is quick (Cluster sets it from the node link)
        self.quick_elsewhere: Callable[[], bool] = lambda: False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="store-guard")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(LOOP_S)

    def check(self) -> None:
        cut = self.probe.silent_rounds >= self.rounds
        if cut and not self.node.store_cut_off:
            self.node.store_cut_off = True
            self.cut_offs += 1
            self.since = time.monotonic()
            self._mover.reset()
            log.warning("no etcd member answers: asking the clients to move to other nodes")
            self.node.events.add(
                "store_cut_off",
                f"node {self.node.node_name} reaches no etcd member: it takes no new client"
                " and asks its clients to move to other nodes",
                level="warning",
            )
        elif not cut and self.node.store_cut_off:
            self.node.store_cut_off = False
            took = time.monotonic() - self.since
            log.info("etcd answers again after %.1f s: taking clients again", took)
            self.node.events.add(
                "store_reached",
                f"node {self.node.node_name} reaches etcd again after {took:.1f} s"
                " and takes clients again",
            )
        if self.node.store_cut_off:
            self._mover.ask()
        self._check_slow()

    def _check_slow(self) -> None:
        node, probe = self.node, self.probe
        if not node.store_slow and probe.slow_rounds >= SLOW_ROUNDS:
            node.store_slow = True
            self.slow_spells += 1
            self.slow_since = time.monotonic()
            self._slow_since_ms = int(time.time() * 1000)
            self._slow_mover.reset()
            rtt = (probe.fastest_s or 0.0) * 1000
            log.warning(
                "etcd round trips take %.0f ms (over %.0f ms): handing this node's rooms"
                " to the other nodes",
                rtt,
                probe.slow_rtt * 1000,
            )
            node.events.add(
                "store_slow",
                f"node {node.node_name}'s round trips to etcd take {rtt:.0f} ms: the other"
                " nodes commit its rooms' sends, and its clients are asked to move to a"
                " quick node if there is one",
                level="warning",
            )
        elif node.store_slow and probe.quick_rounds >= QUICK_ROUNDS:
            node.store_slow = False
            log.info("etcd round trips are quick again: owning rooms again")
            node.events.add(
                "store_quick",
                f"node {node.node_name}'s round trips to etcd are quick again: it owns rooms again",
            )
        if (
            node.store_slow
            and not node.store_cut_off
            and time.monotonic() - self.slow_since >= MOVE_AFTER_S
            and self.quick_elsewhere()
        ):
            # Not the connections made since the spell began: a client that
            # reaches no other node comes back, and is served here, late.
            self._slow_mover.ask(connected_before_ms=self._slow_since_ms)
