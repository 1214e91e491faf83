"""The server double of the hostile-server harness (test_trust_harness.py).

Honest by default: every request goes to the real request logic
(`curvechat.server.handlers.Handlers`) over a real SQLite store, with a
stand-in for the node around it (no sockets, pushes are dropped). Beside
that it records everything a server ever sees or stores: every signed op and
key packet of every request (refused ones included), every envelope with the
ground truth at the moment it was sent, every directory key, every RoomInfo.

`attacks` changes what the victim (and only the victim) is told: any answer
built from that record or from keys the attacker makes. The store, i.e. the
ground truth, only ever changes through the honest handlers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import zmq.utils.z85

from curvechat.crypto.identity import Identity
from curvechat.crypto.membership import MemberState, replay
from curvechat.protocol import PROTOCOL_VERSION, decode_member_op
from curvechat.protocol import messages as m
from curvechat.server.handlers import Handlers, Refusal
from curvechat.server.metrics import NodeMetrics
from curvechat.server.ratelimit import RateLimits
from curvechat.server.rooms import RoomCache
from curvechat.store.sqlite import SQLiteStore

UNREGISTERED_OK = (m.Hello, m.Register, m.Ping)
MUTATIONS = (m.CreateRoom, m.AddMember, m.RemoveMember, m.Leave, m.Promote, m.NewEpoch)


class _Node:
    """What `Handlers` use of a `ChatNode`, without sockets."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.limits = RateLimits(new_epochs=1e9)  # the harness is about trust, not pace
        self.rooms = RoomCache(store)
        self.metrics = NodeMetrics()
        self.node_name, self.boot = "double", "0"
        self.draining = False
        self.store_cut_off = False

    def push(self, users: list[str], msg: m.AnyReply, *, skip: bytes | None = None) -> int:
        return len(users)  # the harness resyncs clients explicitly

    def bind_user(self, sess: Any, user: str) -> None:
        sess.user = user

    def note_ping(self, *args: Any) -> None:
        pass

    def welcome(self, sess: Any, hello: m.Hello) -> m.Welcome:
        sess.client, sess.batch = hello.client, hello.batch
        return m.Welcome(
            node=self.node_name,
            boot=self.boot,
            user=sess.user,
            time=int(time.time() * 1000),
            version=PROTOCOL_VERSION,
        )


@dataclass
class Sent:
    """An envelope a client handed the server, and the truth at that moment."""

    env: m.Envelope
    op_index: int
    """Index of the room's last true op when it was sent (-1: no such room)."""
    horizon: int
    """The newest true op of the room the sender had been shown or had made."""
    n: int
    """Its place among all envelopes sent."""


@dataclass
class Attacks:
    """What the double tells the victim instead of the truth (empty: honest)."""

    directory: dict[str, bytes] = field(default_factory=dict)
    """user -> key answered for them (also when not asked)."""
    claims: dict[str, dict[str, int]] = field(default_factory=dict)
    """room -> RoomInfo fields to claim; a room listed here is listed as joined."""
    log_cut: dict[str, int] = field(default_factory=dict)
    """room -> index of the last op served."""
    log_replay: dict[str, list[m.SignedOp]] = field(default_factory=dict)
    """room -> ops served instead of its log."""
    keys_upto: dict[str, int] = field(default_factory=dict)
    """room -> newest epoch whose packets are served (later rotations withheld)."""
    extra_packets: dict[str, list[m.KeyPacket]] = field(default_factory=dict)
    """room -> packets served with the room's own."""
    extra_messages: dict[str, list[m.StoredMessage]] = field(default_factory=dict)
    """room -> stored messages slipped into sync replies."""

    def _maps(self) -> tuple[dict[str, Any], ...]:
        return (self.claims, self.log_cut, self.log_replay, self.keys_upto, self.extra_packets)

    def touches(self, room: str) -> bool:
        return any(room in d for d in self._maps())

    def forget(self, room: str) -> None:
        for d in (*self._maps(), self.extra_messages):
            d.pop(room, None)


class Double:
    def __init__(self, data: Path, victim: str) -> None:
        self.store = SQLiteStore(data / "store.db")
        self.handlers = Handlers(_Node(self.store))  # type: ignore[arg-type]
        self.victim = victim
        self.attacks = Attacks()
        self.sessions: dict[str, SimpleNamespace] = {}
        # The record: ground truth and everything seen.
        self.truth: dict[str, list[m.SignedOp]] = {}
        self.directory: dict[str, bytes] = {}
        self.ops_seen: list[m.SignedOp] = []
        self.packets_seen: list[m.KeyPacket] = []
        self.sent: list[Sent] = []
        self.invited: dict[tuple[str, str, str], int] = {}
        """(inviter, room, invitee) -> how many envelopes had been sent when the
        inviter first asked to add them, accepted or not."""
        self.infos_seen: list[m.RoomInfo] = []
        self.first_shown: dict[str, bytes] = {}
        """user -> the first key of theirs the victim was shown in a complete
        directory answer or a log it could verify (trust on first use)."""
        self.horizon: dict[str, int] = {}
        """room -> the newest true op the victim has been shown or has made."""
        self.victim_epoch: dict[str, int] = {}
        """room -> the newest epoch number the victim has been served or has made."""
        self.after_ops: dict[tuple[str, int], int] = {}
        """(room, epoch) -> the op an epoch was uploaded as based on."""
        self._states: dict[tuple[str, int], MemberState] = {}
        self._decoded: dict[str, list[m.MemberOp]] = {}

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    def connect(self, identity: Identity) -> None:
        key = zmq.utils.z85.encode(identity.transport_pub).decode()
        self.sessions[identity.user] = SimpleNamespace(
            user=None,
            transport_key=key,
            routing_id=identity.user.encode(),
            request_t0=0.0,
            fd=-1,  # no socket: its address is no one's (not paced)
        )

    # --- ground truth ---------------------------------------------------------
    def state(self, room: str, index: int | None = None) -> MemberState:
        """The true membership of `room` after op `index` (default: the last)."""
        ops = self.truth.get(room, [])
        index = len(ops) - 1 if index is None else min(index, len(ops) - 1)
        if (room, index) not in self._states:
            self._states[room, index] = replay(room, ops[: index + 1])
        return self._states[room, index]

    def rooms(self) -> list[str]:
        return sorted(self.truth)

    def ops(self, room: str) -> list[m.MemberOp]:
        """The room's true log, decoded."""
        ops = self.truth.get(room, [])
        if len(self._decoded.get(room, ())) != len(ops):
            self._decoded[room] = [decode_member_op(s.op) for s in ops]
        return self._decoded[room]

    def added_after(self, room: str, user: str, index: int) -> bool:
        return any(op.target == user and op.kind == "add" for op in self.ops(room)[index + 1 :])

    def last_departure(self, room: str) -> int:
        gone = [op.index for op in self.ops(room) if op.kind in ("remove", "leave")]
        return max(gone, default=-1)

    def ever_members(self, room: str) -> set[str]:
        return {op.target for op in self.ops(room)}

    def entitled(self, sent: Sent, user: str) -> bool:
        """Whether `user` may read an envelope: a member of its room at some op
        between the last one its sender had been shown and the last one there
        was when it was sent (the sender cannot know better); or added later,
        or invited later by its sender even if in vain (whoever adds a member
        gives them the history)."""
        room, last = sent.env.room, sent.op_index
        first = sent.horizon if sent.horizon >= 0 else last
        invited = self.invited.get((sent.env.sender, room, user), -1)
        return (
            any(self.state(room, j).is_member(user) for j in range(first, last + 1))
            or self.added_after(room, user, last)
            or invited > sent.n
        )

    async def epoch(self, room: str) -> int:
        record = await self.store.room(room)
        return -1 if record is None else record.epoch

    async def _refresh_truth(self, room: str) -> None:
        self.truth[room] = [m.SignedOp(op=r.op, sig=r.sig) for r in await self.store.ops(room)]

    # --- serving ----------------------------------------------------------------
    async def handle(self, user: str, req: m.AnyRequest) -> m.AnyReply:
        sess = self.sessions[user]
        self._see_request(user, req)
        reply: m.AnyReply | None = None
        if user == self.victim and sess.user is not None:
            reply = await self._hostile(sess, req)
        if reply is None:
            reply = await self._honest(sess, req)
        if isinstance(req, m.Register) and isinstance(reply, m.Registered):
            self.directory[req.user] = req.sign_pub
        if isinstance(req, MUTATIONS) and isinstance(reply, m.RoomChanged):
            await self._refresh_truth(req.room)
            if user == self.victim:
                self.horizon[req.room] = len(self.truth[req.room]) - 1
        self._see_reply(user, req, reply)
        return reply

    async def _honest(self, sess: Any, req: m.AnyRequest) -> m.AnyReply:
        if sess.user is None and not isinstance(req, UNREGISTERED_OK):
            return m.Error(code="not_registered", message="register first")
        try:
            return await self.handlers.dispatch(sess, req)
        except Refusal as exc:
            return m.Error(code=exc.code, message=exc.message[:500])

    def _see_request(self, user: str, req: m.AnyRequest) -> None:
        if isinstance(req, m.CreateRoom):
            self.ops_seen.extend(req.ops)
        elif isinstance(req, m.AddMember | m.RemoveMember | m.Leave | m.Promote):
            self.ops_seen.append(req.op)
        if isinstance(req, m.AddMember):
            self.packets_seen.extend(req.packets)
            invitee = decode_member_op(req.op.op).target
            self.invited[(user, req.room, invitee)] = len(self.sent)  # the latest invite
        elif isinstance(req, m.CreateRoom | m.RemoveMember | m.NewEpoch):
            self.packets_seen.extend(req.epoch.packets)
            self.after_ops.setdefault((req.room, req.epoch.epoch), req.epoch.after_op)
            if user == self.victim:
                self._victim_saw(req.room, req.epoch.epoch)
        elif isinstance(req, m.Send):
            room = req.envelope.room
            index = len(self.truth.get(room, [])) - 1
            horizon = self.horizon.get(room, -1) if user == self.victim else index
            self.sent.append(Sent(req.envelope, index, horizon, len(self.sent)))

    def _see_reply(self, user: str, req: m.AnyRequest, reply: m.AnyReply) -> None:
        if isinstance(reply, m.RoomChanged):
            self.infos_seen.append(reply.info)
        elif isinstance(reply, m.RoomList):
            self.infos_seen.extend(reply.rooms)
        if user != self.victim:
            return
        if isinstance(reply, m.KeyPackets):
            for packet in reply.packets:
                self._victim_saw(reply.room, packet.epoch)
        elif isinstance(reply, m.Directory) and isinstance(req, m.Lookup):
            # Only an answer to all it asked counts: a client may well drop
            # the rest, and keys nobody asked for are not "shown" to anyone.
            found = {entry.user: entry.sign_pub for entry in reply.users}
            if set(req.users) <= set(found):
                for user in req.users:
                    self.first_shown.setdefault(user, found[user])
        elif isinstance(reply, m.MemberLog) and isinstance(req, m.Members):
            # Shown = what a verifier holding the log up to `after` can apply:
            # the true ops that continue it, up to the first that does not, or
            # that names a key other than the one first shown for its target.
            truth, index = self.truth.get(reply.room, []), req.after + 1
            for signed in reply.ops:
                if index >= len(truth) or truth[index] != signed:
                    break
                op = decode_member_op(signed.op)
                adds = op.kind in ("create", "add")
                if adds and self.first_shown.setdefault(op.target, op.target_key) != op.target_key:
                    break
                self.horizon[reply.room] = max(self.horizon.get(reply.room, -1), index)
                index += 1

    def _victim_saw(self, room: str, epoch: int) -> None:
        self.victim_epoch[room] = max(self.victim_epoch.get(room, -1), epoch)

    # --- lying --------------------------------------------------------------------
    async def _hostile(self, sess: Any, req: m.AnyRequest) -> m.AnyReply | None:
        a = self.attacks
        if isinstance(req, m.Lookup) and a.directory:
            reply = await self._honest(sess, req)
            found = {u.user: u.sign_pub for u in getattr(reply, "users", [])}
            found.update(a.directory)
            return m.Directory(users=[m.UserKeys(user=u, sign_pub=k) for u, k in found.items()])
        if isinstance(req, m.ListRooms) and a.claims:
            reply = await self._honest(sess, req)
            assert isinstance(reply, m.RoomList)
            listed = {info.room: info for info in reply.rooms}
            for room, claim in a.claims.items():
                info = listed.get(room) or await self._info(room)
                if info is not None:
                    listed[room] = msgspec.structs.replace(info, **claim)
            return m.RoomList(rooms=sorted(listed.values(), key=lambda i: i.room))
        if isinstance(req, m.Members) and a.touches(req.room):
            if req.room in a.log_replay:
                return m.MemberLog(room=req.room, ops=a.log_replay[req.room])
            cut = a.log_cut.get(req.room, 2**31)
            ops = self.truth.get(req.room, [])[req.after + 1 : cut + 1]
            return m.MemberLog(room=req.room, ops=ops)
        if isinstance(req, m.FetchKeys) and a.touches(req.room):
            upto = a.keys_upto.get(req.room, 2**31)
            mine = [
                m.KeyPacket(
                    room=p.room, epoch=p.epoch, recipient=p.recipient, sender=p.sender, box=p.box
                )
                for p in await self._packets(req.room, req.min_epoch)
                if p.epoch <= upto
            ]
            return m.KeyPackets(room=req.room, packets=mine + a.extra_packets.get(req.room, []))
        if isinstance(req, m.Sync) and a.extra_messages:
            reply = await self._honest(sess, req)
            assert isinstance(reply, m.SyncReply)
            rooms = {msgs.room: msgs for msgs in reply.rooms}
            for room, items in a.extra_messages.items():
                old = rooms.get(room) or m.Messages(room=room, items=[], head=0)
                head = max([old.head, *(i.seq for i in items)])
                rooms[room] = m.Messages(room=room, items=[*old.items, *items], head=head)
            return m.SyncReply(rooms=list(rooms.values()), more=reply.more)
        return None

    async def _info(self, room: str) -> m.RoomInfo | None:
        record = await self.store.room(room)
        if record is None:
            return None
        return m.RoomInfo(
            room=room,
            head=record.head,
            epoch=record.epoch,
            op_head=record.op_head,
            members=len(self.state(room).members),
        )

    async def _packets(self, room: str, min_epoch: int) -> list[Any]:
        if await self.store.room(room) is None:
            return []
        return await self.store.key_packets(room, self.victim, min_epoch)
