"""The system under test, wired for faults: a 3-member etcd cluster, chat
nodes on it, and a fault-injecting proxy on every path that can be cut:

    clients ──► [client proxy of node X] ──► node X ──► [proxy X→etcd mJ] ──► etcd mJ
    node Y ──► [link proxy of node X] ──► node X's link   (forwarded sends)
    etcd mI ──► [peer proxy of mJ] ──► etcd mJ   (Raft; links cut per pair, peers.py)

Each node advertises its client proxy (``--advertise``), so the peers a
welcome names are proxied too, and reaches etcd only through its own proxy to
each member (``--store etcd://proxy,proxy,proxy/PREFIX``): one node can be
cut off from etcd, or from its clients, without touching the others. The
node link is bound on a port of its own and advertised in the registry as
its proxy (``--link-bind``, ``--link-advertise``), so the other nodes'
forwards to this node's rooms can be cut too.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import subprocess
import time
import uuid
from pathlib import Path

from curvechat.server.ownership import owner_of

from .peers import PeerNet, add_peer_proxies
from .proxy import Proxy, ProxyHub
from support.etcd import EtcdCluster
from support.servers import ServerProcess, free_port


class ChaosNode:
    def __init__(self, root: Path, name: str, hub: ProxyHub, etcd: EtcdCluster, prefix: str):
        self.name = name
        self.proc = ServerProcess(root / name)
        self.client_proxy = hub.add(f"{name}<-clients", self.proc.port)
        self.etcd_proxies = [hub.add(f"{name}->{m.name}", m.client_port) for m in etcd.members]
        link_port = free_port()
        self.link_proxy = hub.add(f"{name}<-nodes", link_port)
        store = "etcd://" + ",".join(p.endpoint for p in self.etcd_proxies) + "/" + prefix
        self.proc.extra_args = (
            "--store",
            store,
            "--advertise",
            f"tcp://{self.client_proxy.endpoint}",
            "--link-bind",
            f"tcp://127.0.0.1:{link_port}",
            "--link-advertise",
            f"tcp://{self.link_proxy.endpoint}",
        )
        self.paused = False

    @property
    def connect(self) -> str:
        return self.proc.connect

    @property
    def proxies(self) -> list[Proxy]:
        return [self.client_proxy, *self.etcd_proxies, self.link_proxy]

    def node_id(self) -> str:
        """The node's name in its own logs (kept in DATA/node.id)."""
        path = self.proc.data / "node.id"
        return path.read_text().strip() if path.exists() else ""

    def alive(self) -> bool:
        return self.proc.proc is not None and self.proc.proc.poll() is None

    def start(self, timeout: float = 30.0, attempts: int = 4) -> None:
        """Start (again); a node cannot start without etcd, so retry."""
        for attempt in range(attempts):
            try:
                self.proc.start(timeout)
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                time.sleep(1)

    def kill(self) -> None:
        self.cont()
        self.proc.kill()

    def pause(self) -> None:
        if self.alive():
            self.proc.freeze()
            self.paused = True

    def cont(self) -> None:
        if self.paused:
            self.proc.thaw()
        self.paused = False


# A forward given up (timeout, error), or a link found unreachable by its
# heartbeat (server/forwarder.py): either way the owner's sends are
# committed elsewhere (here, or at its stand-in).
_FALLBACK = re.compile(
    r"^(\S+ \S+) WARNING \S+ node link to (\S+): .*;"
    r" (?:committing here|its rooms' sends go to a stand-in)$",
    re.M,
)


def _fallbacks(log: str, names: dict[str, str]) -> list[tuple[float, str]]:
    """The lines of a node's log where it took over an owner's sends: (time,
    owner's chaos name)."""
    out = []
    for stamp, owner in _FALLBACK.findall(log):
        t = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append((t, names.get(owner, owner)))
    return out


class ChaosCluster:
    def __init__(self, root: Path, nodes: int = 3) -> None:
        self.root = root
        self.hub = ProxyHub()
        self.etcd = EtcdCluster(root / "etcd", 3)
        self.prefix = f"chaos-{uuid.uuid4().hex[:12]}"
        self.nodes: list[ChaosNode] = []
        self._size = nodes
        self.rooms: list[str] = []  # the workload's, once it made them

    def start(self) -> ChaosCluster:
        # etcd's peer links through proxies too, so that members can be
        # partitioned from each other (peers.py).
        self.peer_net = PeerNet(m.name for m in self.etcd.members)
        self.peer_proxies = add_peer_proxies(
            self.hub, self.peer_net, [(m.name, m.peer_port) for m in self.etcd.members]
        )
        for member, proxy in zip(self.etcd.members, self.peer_proxies, strict=True):
            member.advertised_peer_port = proxy.port
        self.etcd.start()
        for i in range(self._size):
            node = ChaosNode(self.root, "abcdefgh"[i], self.hub, self.etcd, self.prefix)
            self.nodes.append(node)
            node.start()
        return self

    def node(self, name: str) -> ChaosNode:
        return next(n for n in self.nodes if n.name == name)

    def room_owner(self, prefer: str) -> str:
        """`prefer` if it owns one of the workload's rooms (server/ownership.py,
        over all nodes), else the node that owns the most."""
        ids = {n.node_id(): n.name for n in self.nodes}
        owned = [ids[owner_of(room, ids)] for room in self.rooms if owner_of(room, ids)]
        if prefer in owned or not owned:
            return prefer
        return max(set(owned), key=owned.count)

    def heal_network(self) -> None:
        for proxy in self.hub.proxies:
            proxy.heal()
        if hasattr(self, "peer_net"):
            self.peer_net.heal()

    def ensure_up(self) -> None:
        """Every etcd member and node running (after the faults)."""
        for member in self.etcd.members:
            if not member.alive():
                member.restart()
        self.etcd.wait_healthy(60)
        for node in self.nodes:
            node.cont()
            if not node.alive():
                node.start()

    def stop(self) -> tuple[dict[str, list[str]], dict[str, int], list[tuple[float, str]]]:
        """Stop everything; returns each node's log lines that hold a traceback,
        how many times each node's watch re-listed after a compaction, and
        the forwards a node committed itself because the owner's link did
        not answer (or refused) them: (wall-clock time, owner's name here)."""
        problems: dict[str, list[str]] = {}
        relists: dict[str, int] = {}
        fallbacks: list[tuple[float, str]] = []
        names = {n.node_id(): n.name for n in self.nodes}
        for node in self.nodes:
            node.cont()
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                node.proc.stop()
            log = node.proc.log()
            relists[node.name] = log.count("re-listing")
            fallbacks += _fallbacks(log, names)
            bad = [
                line
                for line in log.splitlines()
                if any(k in line for k in ("Traceback", "never retrieved", "did not finish"))
            ]
            if bad:
                problems[node.name] = bad[:10]
        self.hub.close()
        self.etcd.stop()
        return problems, relists, fallbacks
