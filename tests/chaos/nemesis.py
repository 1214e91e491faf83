"""Nemeses: faults that start and heal on a schedule, and combine freely.

Each `Fault` has `begin()` and `heal()` (blocking calls run in a thread) and
is recorded in the history with its start and end, which the checker uses for
recovery times and, for quorum loss, the window in which no ack may come.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from curvechat.server.cluster import LEASE_TTL_S

from .cluster import ChaosCluster
from .proxy import Mode, Proxy
from .workload import History


class Fault:
    name = "fault"
    # Faults that take etcd members away (kill or partition them) run one at
    # a time (each from its begin to its healed end): two overlapping ones
    # could take a member the other is still waiting for, or all three.
    kills_etcd = False

    def __init__(self, cluster: ChaosCluster) -> None:
        self.cluster = cluster
        self.info: dict[str, Any] = {}

    def begin(self) -> None:
        raise NotImplementedError

    def heal(self) -> None:
        """Undo the fault (for one that has no end, nothing)."""


class NodeFault(Fault):
    """A fault aimed at one chat node."""

    def __init__(self, cluster: ChaosCluster, node: str) -> None:
        super().__init__(cluster)
        self.node = cluster.node(node)
        self.info = {"target": node}


class KillNode(NodeFault):
    """kill -9 of a chat node; healed by starting it again on its data."""

    name = "kill-node"

    def begin(self) -> None:
        self.node.kill()

    def heal(self) -> None:
        self.node.start()


class KillEtcd(Fault):
    """kill -9 of the etcd leader (or of a follower); restarted on heal."""

    kills_etcd = True

    def __init__(self, cluster: ChaosCluster, role: str = "leader") -> None:
        super().__init__(cluster)
        self.role = role
        self.name = f"kill-etcd-{role}"
        self.victim: Any = None

    def begin(self) -> None:
        leader = self.cluster.etcd.leader()
        if self.role == "leader":
            self.victim = leader
        else:
            self.victim = next(
                m for m in self.cluster.etcd.members if m is not leader and m.alive()
            )
        self.info["target"] = self.victim.name
        self.victim.kill()

    def heal(self) -> None:
        self.victim.restart()
        self.cluster.etcd.wait_healthy(60, members=[self.victim])


class LoseQuorum(Fault):
    """kill -9 of two of the three etcd members: nothing can commit, so no
    send may be acknowledged until they are back."""

    name = "lose-quorum"
    kills_etcd = True

    def begin(self) -> None:
        leader = self.cluster.etcd.leader()
        self.victims = [leader, *[m for m in self.cluster.etcd.members if m is not leader][:1]]
        self.info["target"] = ",".join(m.name for m in self.victims)
        for member in self.victims:
            member.kill()

    def heal(self) -> None:
        for member in self.victims:
            member.restart()
        self.cluster.etcd.wait_healthy(60)


class PartitionEtcd(Fault):
    """One etcd member (the leader, or a follower) cut off from the other two
    on the Raft peer links (silently: bytes dropped, connections kept), while
    every chat node still reaches it. The majority elects a leader (or keeps
    its own); the cut-off member has none, so what a node asks of it cannot
    be answered until the heal."""

    kills_etcd = True

    def __init__(self, cluster: ChaosCluster, role: str = "leader") -> None:
        super().__init__(cluster)
        self.role = role
        self.name = f"partition-etcd-{role}"
        self.victim: Any = None

    def begin(self) -> None:
        leader = self.cluster.etcd.leader()
        others = [m for m in self.cluster.etcd.members if m is not leader and m.alive()]
        self.victim = leader if self.role == "leader" else others[0]
        self.info["target"] = self.victim.name
        self.cluster.peer_net.isolate(self.victim.name)

    def heal(self) -> None:
        self.cluster.peer_net.heal()
        self.cluster.etcd.wait_healthy(60, members=[self.victim])


class RollingRestart(Fault):
    """Every chat node restarted, one by one, as for an upgrade: stopped
    (SIGINT, as an operator would), started again on its data, the next one
    once it serves. No heal: it is over when the last node is back."""

    name = "rolling-restart"

    def begin(self) -> None:
        took = []
        for node in self.cluster.nodes:
            if not node.alive():
                continue
            t0 = time.monotonic()
            node.cont()
            node.proc.stop()
            node.start()
            took.append(round(time.monotonic() - t0, 2))
        self.info["target"] = ",".join(n.name for n in self.cluster.nodes)
        self.info["restart_s"] = took


class PauseNode(NodeFault):
    """SIGSTOP of a chat node for longer than its registry lease, then SIGCONT."""

    name = "pause-node"

    def begin(self) -> None:
        self.node.pause()

    def heal(self) -> None:
        self.node.cont()


class CutLinks(NodeFault):
    """Some of one node's proxied links (`links`: "all", "etcd", "clients" or
    "link", the node link other nodes forward to)
    put in `mode` ("blackhole": bytes dropped, connections stay open;
    "refuse": resets), healed by setting them back."""

    links = "all"
    mode: Mode = "blackhole"

    def proxies(self) -> list[Proxy]:
        if self.links == "etcd":
            return self.node.etcd_proxies
        if self.links == "clients":
            return [self.node.client_proxy]
        if self.links == "link":
            return [self.node.link_proxy]
        return self.node.proxies

    def begin(self) -> None:
        for proxy in self.proxies():
            proxy.set(mode=self.mode)

    def heal(self) -> None:
        for proxy in self.proxies():
            proxy.heal()


class IsolateNode(CutLinks):
    """A partition that cuts one node off from everything: its clients, all
    etcd members and the other nodes' forwards to it (silently: bytes are
    dropped, connections stay open). Its own forwards go out through the
    other nodes' link proxies, which stay up; with its clients cut it has
    none to make."""

    name = "isolate-node"


class SplitStore(CutLinks):
    """Minority / majority: one node keeps its clients but is cut off from
    every etcd member, while the other nodes and etcd go on. The minority node
    must acknowledge nothing (its sends time out or are refused as
    store_unavailable) and its clients keep their messages queued or fail
    over; etcd's own peers are not split (their traffic is not proxied), so
    quorum stays with the majority."""

    name = "split-nodes"
    links = "etcd"


class CutNodeLink(CutLinks):
    """The node link into one node cut (silently): the other nodes' forwards
    of sends to the rooms it owns get no answer, so each such send is
    committed by the node that took it after FORWARD_TIMEOUT_S, the head
    compare-and-swap fencing it against the owner; the owner keeps its
    clients and etcd."""

    name = "cut-node-link"
    links = "link"

    def __init__(self, cluster: ChaosCluster, node: str) -> None:
        # A node that owns none of the rooms gets no forwards: cut one that does.
        super().__init__(cluster, cluster.room_owner(node))


class CutClients(CutLinks):
    """Clients of one node cut off (the link is down and says so: resets);
    they fail over to the other nodes."""

    name = "cut-clients"
    links = "clients"
    mode = "refuse"


class CompactPastLagging(CutLinks):
    """A node cut from etcd falls behind; etcd is compacted past its last
    revision just before the cut heals, so its watch must re-list."""

    name = "compact-lagging"
    links = "etcd"

    def heal(self) -> None:
        self.info["compacted_at"] = self.cluster.etcd.compact()
        super().heal()


class Slow(NodeFault):
    """Added latency and (emulated, see proxy.py) packet loss on every link of
    one node: to its clients, to etcd, and the other nodes' forwards to it."""

    name = "latency+loss"

    def __init__(
        self, cluster: ChaosCluster, node: str, delay: float = 0.1, loss: float = 0.05
    ) -> None:
        super().__init__(cluster, node)
        self.info.update(delay_s=delay, loss=loss)
        self.delay = delay
        self.loss = loss

    def begin(self) -> None:
        for proxy in self.node.proxies:
            proxy.set(latency=self.delay, loss=self.loss)

    def heal(self) -> None:
        self.info["stalls"] = sum(p.stalls for p in self.node.proxies)
        for proxy in self.node.proxies:
            proxy.set(latency=0.0, loss=0.0)


@dataclass
class Step:
    at: float  # seconds after the workload started
    duration: float  # 0: a fault with no heal
    make: Callable[[ChaosCluster], Fault]


async def run_schedule(
    cluster: ChaosCluster,
    history: History,
    steps: list[Step],
) -> None:
    """Start each fault at its time, heal it after its duration; faults overlap
    when the schedule says so, except those that kill etcd members, which
    wait for each other."""
    t_base = history.now()
    etcd_kills = asyncio.Lock()

    async def one(step: Step) -> None:
        await asyncio.sleep(max(0.0, t_base + step.at - history.now()))
        fault = step.make(cluster)
        if fault.kills_etcd:
            async with etcd_kills:
                await run(fault, step)
        else:
            await run(fault, step)

    async def run(fault: Fault, step: Step) -> None:
        start = history.now()
        try:
            await asyncio.to_thread(fault.begin)
        except Exception as exc:  # a fault that could not be injected: say so
            history.fault(fault.name, start, history.now(), error=repr(exc), **fault.info)
            return
        begun = history.now()
        if step.duration > 0:
            await asyncio.sleep(step.duration)
        healing = history.now()
        await asyncio.to_thread(fault.heal)
        end = history.now()
        if isinstance(fault, LoseQuorum):
            # No ack may come from when quorum was gone until a member was back.
            history.windows["quorum_loss"].append([begun, healing])
        history.fault(fault.name, start, end, **fault.info)

    await asyncio.gather(*(one(s) for s in steps))


def mixed_schedule(
    duration: float, seed: int, node_names: list[str], kinds: list[str] | None = None
) -> list[Step]:
    """A random mix of every nemesis (or of `kinds`) over `duration` seconds:
    one main fault at a time (so that the cluster stays able to recover),
    sometimes with a second, compatible one on top (latency, a follower kill,
    clients cut)."""
    rng = random.Random(seed)
    kinds = kinds or MAIN_KINDS
    steps: list[Step] = []
    t = 5.0
    i = 0
    while t < duration - 25:
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        i += 1
        node = rng.choice(node_names)
        other = rng.choice([n for n in node_names if n != node])
        length = rng.uniform(6, 12)
        if kind == "pause-node":
            length = LEASE_TTL_S + rng.uniform(2, 5)
        if kind == "rolling-restart":
            length = 15.0  # no heal: about how long three restarts take here
        steps.append(Step(t, 0 if kind == "rolling-restart" else length, _maker(kind, node)))
        # A compatible second fault on another node, some of the time.
        if kind not in ("lose-quorum",) and rng.random() < 0.5:
            extra = rng.choice(["latency", "kill-etcd-follower", "cut-clients"])
            if extra == "kill-etcd-follower" and kind.startswith("kill-etcd"):
                extra = "latency"
            steps.append(Step(t + rng.uniform(1, 3), rng.uniform(3, 6), _maker(extra, other)))
        t += length + rng.uniform(6, 10)
    return steps


FAULTS: dict[str, Callable[[ChaosCluster, str], Fault]] = {
    "kill-node": KillNode,
    "kill-etcd-leader": lambda c, _node: KillEtcd(c, "leader"),
    "kill-etcd-follower": lambda c, _node: KillEtcd(c, "follower"),
    "lose-quorum": lambda c, _node: LoseQuorum(c),
    "pause-node": PauseNode,
    "isolate-node": IsolateNode,
    "split-nodes": SplitStore,
    "cut-clients": CutClients,
    "cut-node-link": CutNodeLink,
    "latency": Slow,
    "compact-lagging": CompactPastLagging,
    "partition-etcd-leader": lambda c, _node: PartitionEtcd(c, "leader"),
    "partition-etcd-follower": lambda c, _node: PartitionEtcd(c, "follower"),
    "rolling-restart": lambda c, _node: RollingRestart(c),
}
# The main faults of a mixed schedule, in this order; latency only comes on top.
MAIN_KINDS = [kind for kind in FAULTS if kind != "latency"]


def _maker(kind: str, node: str) -> Callable[[ChaosCluster], Fault]:
    make = FAULTS[kind]
    return lambda c: make(c, node)


def short_schedule(node_names: list[str]) -> list[Step]:
    """About 65 s, every kind of fault once (the follower partition aside),
    some overlapping."""
    a, b, c = node_names[0], node_names[1 % len(node_names)], node_names[-1]
    return [
        Step(2, 5, _maker("kill-node", a)),
        Step(4, 4, _maker("latency", c)),
        Step(9, 4, _maker("kill-etcd-leader", a)),
        Step(15, 6, _maker("lose-quorum", a)),
        Step(24, LEASE_TTL_S + 2, _maker("pause-node", b)),
        Step(26, 5, _maker("isolate-node", c)),
        Step(33, 4, _maker("cut-clients", a)),
        Step(33, 6, _maker("cut-node-link", a)),  # a, or the node that owns rooms
        Step(39, 6, _maker("compact-lagging", c)),
        Step(40, 4, _maker("kill-etcd-follower", a)),
        Step(46, 5, _maker("partition-etcd-leader", a)),
        Step(54, 0, _maker("rolling-restart", a)),
    ]


def latency_schedule(node_names: list[str]) -> list[Step]:
    """`latency+loss` alone, on each node in turn: 8 s each, 12 s apart (about
    45 s with three nodes), to measure what that one fault costs."""
    return [Step(5 + 20 * i, 8, _maker("latency", name)) for i, name in enumerate(node_names)]
