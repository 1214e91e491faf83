"""The hostile rules of the trust harness (test_trust_harness.py), one family
of lies each. A rule switches a lie to alice on (it lasts until `stop_lying`),
then alice resyncs, as after a push saying the room changed (a server may send
one any time), and says something in the room if she believes she is in it.

The attacker is the server colluding with mallory: it knows everything the
double recorded (who each packet is for, every log, what it has served alice)
and picks lies alice might take, but it never knows a key mallory does not.

`enable` chooses the families of a run (test_trust_harness.py runs each
alone, then all together).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule
from security.hostile_double import Attacks

from curvechat.crypto.errors import CryptoError
from curvechat.crypto.identity import Identity
from curvechat.crypto.roomkeys import new_epoch_key, unwrap_key_packet, wrap_epoch_key
from curvechat.protocol import messages as m

FAMILIES = ("reroute", "fresh", "log", "keys", "info", "directory", "messages", "doomed")
ENABLED: set[str] = set(FAMILIES)
"""The families whose lies may be drawn; `enable` sets it for one run."""


def enable(families: str) -> None:
    """`families`: "all" or a comma-separated list of FAMILIES."""
    chosen = set(FAMILIES) if families == "all" else set(families.split(","))
    assert set(FAMILIES) >= chosen, f"unknown attack families: {chosen - set(FAMILIES)}"
    ENABLED.clear()
    ENABLED.update(chosen)


def has_rooms(self: Any) -> bool:
    return bool(self.double.truth)


def attack(family: str) -> Callable[[Callable[..., str | None]], Any]:
    """A hostile rule: `lie` returns the room it lies about (None: no lie)."""
    assert family in FAMILIES

    def wrap(lie: Callable[..., str | None]) -> Any:
        @functools.wraps(lie)
        def step(self: Any, data: st.DataObject) -> None:
            room = lie(self, data)
            if room is not None:
                self.attempt("alice resyncs", self.d["alice"].resync())
                if room in self.d["alice"].joined():
                    self.say("alice", room)

        ruled = rule(data=st.data())(step)
        ruled = precondition(lambda self: family in ENABLED)(ruled)
        return precondition(has_rooms)(ruled)

    return wrap


class HostileRules:
    """Mixed into the harness (which provides double, d, ids, pick, ...)."""

    double: Any
    d: Any
    ids: dict[str, Identity]
    pick: Any
    member: Any
    rooms_of: Any
    run: Any
    attempt: Any
    say: Any

    def __init__(self) -> None:
        super().__init__()
        self.fakes: dict[str, Identity] = {}  # mallory's keys, offered under others' names
        self.crafted: list[bytes] = []  # epoch keys mallory made outside her engine
        self._mallory_keys: list[bytes] = []
        self._packets_done = 0

    def mallory_keys(self) -> list[bytes]:
        """Every epoch key mallory can hold: those in packets boxed for her, or
        for a key of hers that alice took for someone else's after having been
        shown theirs (trust on first use is as good as it gets); and the keys
        she made herself."""
        double, keys = self.double, self._mallory_keys
        for packet in double.packets_seen[self._packets_done :]:
            holder = None
            if packet.recipient == "mallory":
                holder = self.ids["mallory"]
            elif packet.recipient in self.fakes:
                real = double.directory.get(packet.recipient)
                if real is not None and double.first_shown.get(packet.recipient) == real:
                    holder = self.fakes[packet.recipient]
            sender_key = double.directory.get(packet.sender)
            if holder is not None and sender_key is not None:
                with contextlib.suppress(CryptoError):
                    keys.append(unwrap_key_packet(holder, packet, sender_key).key)
        self._packets_done = len(double.packets_seen)
        keys.extend(k for k in self.crafted if k not in keys)
        return keys

    def _serve_packets(self, room: str, packets: list[m.KeyPacket]) -> None:
        """Serve `packets` with `room`'s keys, and claim the newest as its epoch."""
        a = self.double.attacks
        a.extra_packets[room] = [*a.extra_packets.get(room, []), *packets]
        a.claims.setdefault(room, {})["epoch"] = max(p.epoch for p in packets)

    @rule(everything=st.booleans(), data=st.data())
    def stop_lying(self, everything: bool, data: st.DataObject) -> None:
        """About one room, or about everything."""
        if everything:
            self.double.attacks = Attacks()
        else:
            self.double.attacks.forget(self.pick(data, self.double.rooms() or ["r0"], "room"))

    @attack("reroute")
    def reroute_packets(self, data: st.DataObject) -> str | None:
        """A genuine packet boxed for alice, of an epoch mallory holds too,
        served for a room mallory is not in as its current epoch (beside that
        room's own packets, or instead of them). The server picks what alice
        might take: a sender on the room's log, a base op the log has reached
        with no departure since, a newer epoch than it has served her there."""
        double, seen = self.double, self.double.packets_seen
        mallorys = {(p.room, p.epoch) for p in seen if p.recipient == "mallory"}
        choices = [
            (room, i)
            for room in self.rooms_of("alice")
            for i, p in enumerate(seen)
            if p.recipient == "alice"
            and (p.room, p.epoch) in mallorys
            and p.room != room
            and not self.member(room, "mallory")
            and p.sender in double.ever_members(room)
            and double.last_departure(room)
            <= double.after_ops.get((p.room, p.epoch), 0)
            <= double.state(room).index
            and p.epoch > double.victim_epoch.get(room, -1)
        ]
        choice = self.pick(data, choices, "room, packet")
        if choice is None:
            return None
        room, packet = choice[0], seen[choice[1]]
        note(f"server: {packet.room}/epoch {packet.epoch} from {packet.sender} served as {room}")
        self._serve_packets(room, [packet])
        if data.draw(st.booleans(), "instead of its own"):
            double.attacks.keys_upto[room] = -1
        return room

    @attack("fresh")
    def mallory_fresh_key(self, data: st.DataObject) -> str | None:
        """Mallory, gone from a room, boxes a fresh key for alice for a new
        epoch on (or near) the room's head. If she is still in it, she leaves
        first (she chooses when: the departure is what the lie exploits)."""
        double = self.double
        ever = [r for r in double.rooms() if "mallory" in double.ever_members(r)]
        room = self.pick(data, ever, "room")
        if room is None:
            return None
        if self.member(room, "mallory"):
            self.attempt(f"mallory leaves {room}", self.d["mallory"].leave(room))
            if self.member(room, "mallory"):
                return None
        newest = max(self.run(double.epoch(room)), double.victim_epoch.get(room, -1))
        epoch = newest + data.draw(st.integers(1, 2), "ahead")
        after = max(0, double.state(room).index - data.draw(st.integers(0, 1), "behind"))
        key = new_epoch_key(room, epoch, after)
        self.crafted.append(key.key)
        note(f"server: mallory's own key for {room}/epoch {epoch} after op {after}")
        alice = self.ids["alice"].sign_pub
        self._serve_packets(room, [wrap_epoch_key(self.ids["mallory"], key, "alice", alice)])
        return room

    @attack("log")
    def withhold_log(self, data: st.DataObject) -> str | None:
        """A room's log served only up to some op."""
        room = self.pick(data, self.double.rooms(), "room")
        cut = data.draw(st.integers(-1, self.double.state(room).index), "last op served")
        self.double.attacks.log_cut[room] = cut
        return room

    @attack("log")
    def replay_ops(self, data: st.DataObject) -> str | None:
        """Ops from anywhere in the record, served as a room's log."""
        room, seen = self.pick(data, self.double.rooms(), "room"), self.double.ops_seen
        start = data.draw(st.integers(0, len(seen) - 1), "from")
        count = data.draw(st.integers(1, 3), "count")
        self.double.attacks.log_replay[room] = seen[start : start + count]
        return room

    @attack("keys")
    def withhold_rotations(self, data: st.DataObject) -> str | None:
        """A room's key packets served only up to some epoch."""
        room = self.pick(data, self.double.rooms(), "room")
        upto = data.draw(st.integers(-1, self.run(self.double.epoch(room))), "upto")
        self.double.attacks.keys_upto[room] = upto
        return room

    @attack("info")
    def claim_room_info(self, data: st.DataObject) -> str | None:
        """An old RoomInfo of a room replayed, or any epoch and op head claimed
        (for a room alice left too: it is listed as joined)."""
        room = self.pick(data, self.double.rooms(), "room")
        old = [i for i in self.double.infos_seen if i.room == room]
        if old and data.draw(st.booleans(), "replay an old one"):
            info = old[data.draw(st.integers(0, len(old) - 1), "which")]
            claim = {"epoch": info.epoch, "op_head": info.op_head, "head": info.head}
        else:
            epoch = self.run(self.double.epoch(room))
            head = self.double.state(room).index
            claim = {
                "epoch": data.draw(st.integers(0, epoch + 2), "epoch"),
                "op_head": data.draw(st.integers(0, head + 1), "op_head"),
            }
        self.double.attacks.claims[room] = claim
        return room

    @attack("directory")
    def substitute_key(self, data: st.DataObject) -> str | None:
        """The directory answers a key of mallory's for someone (asked or not,
        seen before or not)."""
        user = data.draw(st.sampled_from(("bob", "carol", "mallory", "dave")), "user")
        fake = self.fakes.setdefault(user, Identity.generate(user))
        self.double.attacks.directory[user] = fake.sign_pub
        return self.pick(data, self.rooms_of("alice"), "room")

    @attack("messages")
    def replay_messages(self, data: st.DataObject) -> str | None:
        """A message from anywhere in the record, slipped into a room's sync."""
        room, sent = self.pick(data, self.double.rooms(), "room"), self.double.sent
        if not sent:
            return None
        env = sent[data.draw(st.integers(0, len(sent) - 1), "envelope")].env
        seq = data.draw(st.integers(1, 12), "seq")
        item = m.StoredMessage(seq=seq, ts=int(time.time() * 1000), envelope=env)
        extra = self.double.attacks.extra_messages
        extra[room] = [*extra.get(room, []), item]
        return room

    @attack("doomed")
    def alice_invites_anyway(self, data: st.DataObject) -> str | None:
        """Not a lie: alice invites someone to a room she is no admin of. The
        server refuses, and keeps whatever keys she sent along."""
        room = self.pick(data, self.rooms_of("alice"), "room")
        if room is not None:
            self.invite_to(data, "alice", room)
        return room

    def invite_to(self, data: st.DataObject, actor: str, room: str) -> None:
        raise NotImplementedError
