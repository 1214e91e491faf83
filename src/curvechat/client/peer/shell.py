"""Peer-to-peer mode's I/O shell, `PeerMode`: the listener, the links to
other members (dialer.py), the announcements (the server's directory while
it is up, mDNS on the local network), and the anti-entropy rounds while no
server is reachable.

Every round (every `interval` seconds while the connection is not live) it
seals the messages of our outbox for peers, then for each listener of a
member it holds a record of (a member may run several clients) and each
room both share: sends a digest, takes the envelopes the reply carries, and
offers the ones asked for (the dialer: up to DIAL_AT_ONCE listeners at
once, each within PEER_BUDGET request timeouts; a round waits for them one
interval at most, so a member that is away or slow delays no other). The
core keeps the records, one per listener, and withdraws one that keeps
failing (its mDNS service going away counts as all but the last failure).
What comes in goes through the peer core; what it takes is told as
`PeerMessage`. The server's copy of a message (`MessageReceived`) settles
the provisional one.

This module must never decide what to believe or whom to serve (the core
does), nor send anything to the server but its own announcement and a
directory lookup, nor ever hold the engine's lock across a network wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import zmq.asyncio

from curvechat.client import events as ev
from curvechat.client.errors import ClientError, PeerRefused
from curvechat.client.peer.core import PeerCore, Provisional
from curvechat.client.peer.dialer import Dialer
from curvechat.client.peer.heard import HeardRecords
from curvechat.client.peer.listener import PeerListener
from curvechat.client.state import ConnState
from curvechat.protocol import messages as m
from curvechat.protocol import peer as p
from curvechat.protocol.errors import UNDECODABLE
from curvechat.protocol.limits import MAX_BATCH

if TYPE_CHECKING:
    from curvechat.client.engine import ChatClient

log = logging.getLogger("curvechat.peer")

RECORDS_META = "peer:records"
_records = msgspec.msgpack.Decoder(list[m.SignedRecord])


@dataclass(frozen=True, slots=True)
class PeerOptions:
    listen: bool = True
    """Accept links from members (always dial them when the server is gone)."""
    bind: str = "tcp://*:*"
    interval: float = 1.0
    timeout: float = 2.0
    mdns: bool = False
    """Announce and browse on the local network too (zeroconf)."""
    mdns_interfaces: tuple[str, ...] | None = None
    """Addresses of the interfaces mDNS uses (None: all)."""
    directory: bool = True
    """Announce and look up through the server's directory while it is up."""
    reach: Callable[[str], bool] | None = None
    """Which members to dial (a test's partition; None: all)."""


def now_ms() -> int:
    return int(time.time() * 1000)


class PeerMode:
    def __init__(self, client: ChatClient, options: PeerOptions) -> None:
        self.client = client
        self.options = options
        self.core = PeerCore(
            client.core,
            rotate_after_messages=client.outbox.rotate_after_messages,
            rotate_after_seconds=client.outbox.rotate_after_seconds,
        )
        self.listener: PeerListener | None = None
        self.endpoints: list[str] = []
        self.dialer = Dialer(
            self.core,
            client.identity,
            timeout=options.timeout,
            tell=self._tell,
            emit=client.parts.emit,
            withdrawn=self._withdrawn,
        )
        self.reached: set[str] = set()
        self.active = False
        self._tasks: list[asyncio.Task[None]] = []
        self._mdns: object | None = None
        self.exchanged = 0
        """Messages written or taken peer to peer not yet reported to a server."""
        self._sealed: set[str] = set()
        """Txns of our outbox already sealed for peers."""
        self.heard = HeardRecords(self.core)
        """Records heard by mDNS, judged again when our rooms change."""
        self._load_records()
        client.subscribe(self._on_event)

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        # Neither a listener that cannot bind nor a network without multicast
        # stops the client: peer-to-peer mode is told to be off, or partly.
        if self.options.listen:
            listener = PeerListener(
                self.client.identity,
                self.core.admits,
                lambda key: self.core.pace(key, time.monotonic()),
                self.core.user_for_key,
                self.handle,
                bind=self.options.bind,
            )
            try:
                self.endpoints = announced(await listener.start())
                self.listener = listener
            except zmq.ZMQError as exc:
                await listener.close()
                self._problem(f"not listening for peers on {self.options.bind}: {exc}")
        if self.options.mdns:
            from curvechat.client.peer.mdns import MdnsPeers

            mdns = MdnsPeers(
                self.client.me,
                self._heard,
                on_removed=self._gone,
                interfaces=list(self.options.mdns_interfaces or []) or None,
            )
            self._mdns = mdns
            try:
                await mdns.start(self._own_record() if self.listener else None)
            except Exception as exc:  # zeroconf raises OSError and its own errors
                # (zeroconf's own exceptions may say nothing but their name)
                why = str(exc) or type(exc).__name__
                self._problem(f"no peer discovery on the local network (mDNS): {why}")
        self._tasks.append(asyncio.create_task(self._rounds(), name="peer-rounds"))

    async def close(self) -> None:
        for task in [*self._tasks, *self.dialer.tasks]:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # closing goes on whatever a task did
                log.exception("peer task %s failed", task.get_name())
        self._tasks.clear()
        if self._mdns is not None:
            from curvechat.client.peer.mdns import MdnsPeers

            assert isinstance(self._mdns, MdnsPeers)
            await self._mdns.close()
        if self.listener is not None:
            await self.listener.close()
        self.dialer.close()

    def _problem(self, text: str) -> None:
        log.warning("%s", text)
        self.client.parts.emit(ev.Problem(None, text))

    # --- records ------------------------------------------------------------------------
    def _own_record(self) -> m.SignedRecord:
        return self.core.make_record(self.endpoints, now_ms())

    def _load_records(self) -> None:
        raw = self.client.cache.get_meta(RECORDS_META)
        if not raw:
            return
        try:
            for signed in _records.decode(bytes.fromhex(raw)):
                self.take_record(signed, save=False, cached=True)
        except (ValueError, *UNDECODABLE):
            log.warning("stored peer records unreadable; dropped")

    def take_record(
        self, signed: m.SignedRecord, *, save: bool = True, cached: bool = False
    ) -> bool:
        """A record from the directory, mDNS or (`cached`) our cache, judged
        by the core (a cached one not against our clock: it may be behind)."""
        try:
            record = self.core.accept_record(signed, None if cached else now_ms())
        except PeerRefused as exc:
            log.debug("peer record refused: %s", exc)
            return False
        if record is None:
            return False
        if save:
            self._save_records()
        return True

    def _save_records(self) -> None:
        encoded = msgspec.msgpack.encode(self.core.records())
        self.client.cache.set_meta(RECORDS_META, encoded.hex())

    def _heard(self, signed: m.SignedRecord) -> None:
        self.heard.hear(signed)
        self.take_record(signed)

    def _gone(self, signed: m.SignedRecord) -> None:
        """A record's mDNS service went away: its client closed."""
        self.heard.forget(signed)
        if self.core.closed(signed):
            log.info("peer record said its client closed: withdrawn if its next exchange fails")

    def _withdrawn(self, record: p.PeerRecord) -> None:
        log.info("peer record of %s withdrawn: dialing it kept failing", record.user)
        self._save_records()

    async def publish(self) -> None:
        """While the server is up: announce where we listen, and look up
        where the members we share rooms with do."""
        for signed in self.heard.records():
            self.take_record(signed)
        if not self.options.directory:
            return
        parts = self.client.parts
        try:
            if self.listener is not None:
                count = self.exchanged
                await parts.ask(
                    m.Announce(record=self._own_record(), peer_messages=count), m.Announced
                )
                self.exchanged -= count
            members = sorted(
                {u for r in self.client.cache.rooms() for u in self.client.members(r.room)}
                - {self.client.me}
            )
            for start in range(0, len(members), MAX_BATCH):
                reply = await parts.ask(
                    m.Lookup(users=members[start : start + MAX_BATCH]), m.Directory
                )
                for entry in reply.users:
                    if entry.peer is not None:
                        self.take_record(entry.peer)
        except ClientError as exc:
            log.info("peer announcement not made: %s", exc)

    # --- events from the engine ----------------------------------------------------------
    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.MessageReceived):
            self.core.settle(event.message.room, event.message.sender, event.message.txn)
            if event.mine:
                self._sealed.discard(event.message.txn)
        elif isinstance(event, ev.SendFailed):
            self.core.settle(event.room, self.client.me, event.txn)
            self._sealed.discard(event.txn)
        elif isinstance(event, ev.CaughtUp | ev.RoomUpdated):
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(asyncio.create_task(self.publish(), name="peer-publish"))

    # --- the listener's side -----------------------------------------------------------
    async def handle(self, user: str, req: p.AnyPeerRequest) -> p.AnyPeerReply:
        if isinstance(req, p.Digest):
            return self.core.answer(user, req, time.monotonic())
        taken, refused = self.core.accept(user, req.room, req.envelopes, time.monotonic())
        self._tell(taken)
        return p.OfferReply(room=req.room, accepted=len(taken), refused=refused)

    def _tell(self, taken: list[Provisional]) -> None:
        self.exchanged += len(taken)
        for item in taken:
            if not item.mine:
                self.client.parts.emit(
                    ev.PeerMessage(
                        item.room, item.sender, item.txn, item.text, item.sent_ms, item.via
                    )
                )

    # --- the dialing side ------------------------------------------------------------------
    async def _rounds(self) -> None:
        while True:
            await asyncio.sleep(self.options.interval)
            offline = self.client.status.state is not ConnState.LIVE
            try:
                if offline:
                    await self.round()
                elif self.active:
                    self._set(False, set())
            except Exception:
                log.exception("peer round failed")

    def _seal_outbox(self) -> None:
        waiting: set[str] = set()  # rooms whose next message waits for the server
        for item in self.client.cache.outbox():
            if item.txn in self._sealed or item.room in waiting:
                continue  # in order: none after one that waits
            if self.core.seal_own(item.room, item.txn, item.text, item.created_ms, now_ms()):
                self._sealed.add(item.txn)
                self.exchanged += 1
            else:
                waiting.add(item.room)

    async def round(self) -> None:
        """One anti-entropy round: an exchange with every member we can reach
        that is not still busy with the one before, several at once. It waits
        for them one round interval at most: a member that is away, or slow
        to answer, goes on in the background and delays no other."""
        self._seal_outbox()
        reach = self.options.reach
        records = [r for r in self.core.peers() if reach is None or reach(r.user)]
        self._set(True, await self.dialer.dial(records, self.options.interval))

    def _set(self, active: bool, reached: set[str]) -> None:
        if active != self.active or reached != self.reached:
            self.active, self.reached = active, reached
            self.client.parts.emit(ev.PeerStatus(active=active, peers=len(reached)))


def announced(endpoint: str) -> list[str]:
    """The endpoints to announce for a bound one: a wildcard address stands
    for this host's IPv4 addresses (loopback last)."""
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    if host not in ("0.0.0.0", "*"):
        return [endpoint]
    try:
        import ifaddr

        ips = [
            str(ip.ip)
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
            if isinstance(ip.ip, str) and not ip.ip.startswith(("127.", "169.254."))
        ]
    except Exception:
        ips = []
    return [f"tcp://{ip}:{port}" for ip in ips[: p.MAX_ENDPOINTS - 1]] + [f"tcp://127.0.0.1:{port}"]
