"""The peer core driven without sockets: each rule of `PEER_RULES` refused
once and passed once, with real keys, ops, records and envelopes.

docs/security.md ("Peers") cites these rule ids; `test_every_rule_is_tested`
keeps the table and the tests in step."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from curvechat.bucket import TokenBucket
from curvechat.client import events as ev
from curvechat.client.cache import Cache, cache_key
from curvechat.client.errors import PeerRefused
from curvechat.client.peer.bounds import bounded
from curvechat.client.peer.core import PeerCore
from curvechat.client.peer.heard import MAX_HEARD, HeardRecords
from curvechat.client.peer.pacing import ASKS_PER_S, KEY_ASKS_PER_S, VERIFIES_PER_S
from curvechat.client.peer.records import FAILS_TO_WITHDRAW, MAX_PER_USER, RECORD_AHEAD_MS
from curvechat.client.peer.rules import PEER_RULES
from curvechat.client.trust import TrustCore
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.identity import Identity
from curvechat.crypto.membership import MemberState, sign_op
from curvechat.crypto.roomkeys import EpochKey, new_epoch_key, wrap_epoch_key
from curvechat.protocol import messages as m
from curvechat.protocol import peer as p

PEOPLE = ("alice", "bob", "carol", "mallory")
NOW = 1_800_000_000_000  # our clock, ms
T = 100.0  # our monotonic clock, s


class World:
    """Room "r" (bob made it: alice, bob, carol) and room "side" (alice,
    carol); mallory shares no room with alice. Alice's cores are tested."""

    def __init__(self, tmp: Path) -> None:
        self.ids = {name: Identity.generate(name) for name in PEOPLE}
        self.events: list[ev.Event] = []
        me = self.ids["alice"]
        self.cache = Cache(tmp / "alice.db", cache_key(me.sign_seed))
        self.trust = TrustCore(me, self.cache, self.events.append)
        self.core = PeerCore(self.trust)
        self.states: dict[str, MemberState] = {}
        self.keys: dict[str, EpochKey] = {}
        self.room("r", "bob", "alice", "carol")
        self.room("side", "carol", "alice")

    def op(self, room: str, kind: str, actor: str, target: str) -> None:
        state = self.states.get(room) or MemberState.empty(room)
        op = state.next_op(kind, actor, target, self.ids[target].sign_pub, 1)  # type: ignore[arg-type]
        signed = sign_op(self.ids[actor], op)
        self.states[room], _ = state.apply(signed)
        self.trust.feed_ops(room, [signed])

    def room(self, room: str, creator: str, *members: str) -> None:
        self.op(room, "create", creator, creator)
        for user in members:
            self.op(room, "add", creator, user)
        key = new_epoch_key(room, 0, self.states[room].index)
        self.keys[room] = key
        packet = wrap_epoch_key(self.ids[creator], key, "alice", self.ids["alice"].sign_pub)
        assert self.trust.feed_packets(room, [packet]) == 1

    def env(
        self, room: str, sender: str, txn: str, text: str = "hi", ts: int = 1, signer: str = ""
    ) -> m.Envelope:
        return seal_message(
            self.ids[signer or sender] if not signer else _as(self.ids[signer], sender),
            room=room,
            epoch=0,
            key=self.keys[room].key,
            txn=txn,
            plaintext=Plaintext(text=text, ts=ts),
        )

    def record(
        self, user: str, ts: int = 1, signer: str = "", transport: str = "", port: int = 5555
    ) -> m.SignedRecord:
        """`user`'s record (of its listener at `port`); `transport`:
        announcing that user's transport key."""
        who = self.ids[user]
        if transport:
            who = Identity.from_secrets(user, who.sign_seed, self.ids[transport].transport_secret)
        core = PeerCore(TrustCore(who, _Mem(), lambda e: None))
        signed = core.make_record([f"tcp://127.0.0.1:{port}"], ts)
        if signer:
            return m.SignedRecord(
                record=signed.record, sig=self.ids[signer].sign(p.DOMAIN_RECORD + signed.record)
            )
        return signed


def _as(identity: Identity, user: str) -> Identity:
    """`identity`'s keys under another user's name: a forger."""
    return Identity.from_secrets(user, identity.sign_seed, identity.transport_secret)


class _Mem:
    """Just enough of a trust store for a peer that only makes its record."""

    def pin(self, user: str) -> bytes | None:
        return None

    def set_pin(self, *a: object, **k: object) -> None:
        pass

    def key_changes(self) -> dict[str, bytes]:
        return {}

    def rooms(self, *, include_left: bool = False) -> list[object]:
        return []


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path)
    yield world
    world.cache.close()


def refused(call: Callable[[], object]) -> str:
    with pytest.raises(PeerRefused) as info:
        call()
    return info.value.rule


# --- one test per rule: refused and passed --------------------------------------


def n1(w: World) -> None:
    take = functools.partial(w.core.accept_record, now_ms=NOW)
    assert refused(lambda: take(w.record("mallory"))) == "N1"  # no shared room
    assert refused(lambda: take(w.record("bob", signer="mallory"))) == "N1"
    junk = m.SignedRecord(record=b"\x93junk", sig=bytes(64))
    assert refused(lambda: take(junk)) == "N1"
    assert take(w.record("bob")) is not None
    bob_key = w.ids["bob"].transport_pub
    assert w.core.admits(bob_key)
    assert w.core.user_for_key(bob_key, "bob") == "bob"
    assert w.core.user_for_key(bob_key, "carol") is None  # carol's record does not say so
    assert not w.core.admits(w.ids["mallory"].transport_pub)
    assert w.core.user_for_key(w.ids["mallory"].transport_pub, "mallory") is None
    # carol announces bob's key as hers (a record proves who signed it, not
    # who holds the key): bob, who names himself, is still served as bob;
    # carol cannot make his connections hers
    assert take(w.record("carol", transport="bob")) is not None
    assert w.core.user_for_key(bob_key, "bob") == "bob"
    assert w.core.user_for_key(bob_key, "carol") == "carol"  # only the key's holder gets here
    # bob leaves every room we share: he is no longer served (whoever holds
    # his key is served as carol only if it names her, whose record vouched
    # for it: no more than carol could pass on herself)
    w.op("r", "leave", "bob", "bob")
    assert w.core.user_for_key(bob_key, "bob") is None
    assert w.core.user_for_key(bob_key, "carol") == "carol"
    # carol's identity key changes (re-added with a new key, which we accept):
    # her record signed by the old key vouches for nothing now, and a record
    # under the new key replaces it even if it is older
    w.op("side", "remove", "carol", "alice")
    w.op("r", "leave", "carol", "carol")
    w.ids["carol"] = Identity.generate("carol")
    w.cache.set_pin("carol", w.ids["carol"].sign_pub)  # as accepting the change does
    w.room("again", "alice", "carol")
    assert w.core.user_for_key(bob_key, "carol") is None and not w.core.admits(bob_key)
    assert w.core.peers() == []
    assert take(w.record("carol", ts=0)) is not None
    assert w.core.user_for_key(w.ids["carol"].transport_pub, "carol") == "carol"


def n2(w: World) -> None:
    take = functools.partial(w.core.accept_record, now_ms=NOW)
    assert take(w.record("bob", ts=5)) is not None
    assert refused(lambda: take(w.record("bob", ts=4))) == "N2"
    assert take(w.record("bob", ts=6)) is not None
    # dated past our clock's tolerance: it would shut out every later record
    ahead = NOW + RECORD_AHEAD_MS
    assert refused(lambda: take(w.record("bob", ts=ahead + 1))) == "N2"
    assert [p.decode_record(s.record).ts for s in w.core.records()] == [6]
    assert take(w.record("bob", ts=ahead)) is not None
    # one from our own cache was taken before: not dated against a clock that
    # may be behind at start (else a start offline would lose every record)
    assert w.core.accept_record(w.record("carol", ts=ahead + 1), None) is not None
    # another listener of bob's (a second client) is kept beside the first,
    # an older one too; at most MAX_PER_USER, the oldest giving way
    assert take(w.record("bob", ts=3, port=1)) is not None
    assert ports(w.core.peers(), "bob") == [5555, 1]
    for i in range(MAX_PER_USER):
        assert take(w.record("bob", ts=100 + i, port=10 + i)) is not None
    # (the one at 5555 is the newest: dated `ahead`)
    assert ports(w.core.peers(), "bob") == [5555, *range(9 + MAX_PER_USER, 10, -1)]
    assert refused(lambda: take(w.record("bob", ts=100, port=2))) == "N2"  # older than all
    # a withdrawn record (its client said it closed, then did not answer) is
    # not taken again; a newer one of its listener is
    assert w.core.closed(w.record("bob", ts=101, port=11))
    assert w.core.dialed(p.decode_record(w.record("bob", ts=101, port=11).record), False)
    assert refused(lambda: take(w.record("bob", ts=101, port=11))) == "N2"
    assert take(w.record("bob", ts=200, port=11)) is not None


def n3(w: World) -> None:
    assert refused(lambda: w.core.answer("bob", p.Digest(room="side", have=[]), T)) == "N3"
    assert w.core.shared_rooms("bob") == ["r"]
    assert w.core.shared_rooms("carol") == ["r", "side"]
    assert w.core.answer("carol", p.Digest(room="side", have=[]), T).envelopes == []


def n4(w: World) -> None:
    taken, bad = w.core.accept("bob", "r", [w.env("side", "carol", "txn-t1xx")], T)
    assert taken == [] and [r.code for r in bad] == ["bad_envelope"]
    assert (
        refused(lambda: w.core.accept("bob", "side", [w.env("side", "carol", "txn-t1xx")], T))
        == "N3"
    )
    taken, bad = w.core.accept("carol", "side", [w.env("side", "carol", "txn-t1xx")], T)
    assert [t.txn for t in taken] == ["txn-t1xx"] and bad == []


def n5(w: World) -> None:
    forged = w.env("r", "carol", "txn-f1xx", signer="mallory")  # mallory writes as carol
    outsider = w.env("r", "mallory", "txn-f2xx")  # mallory has the key, is no member
    tampered = m.Envelope(**{**_fields(w.env("r", "carol", "txn-f3xx")), "txn": "txn-f4xx"})
    taken, bad = w.core.accept("bob", "r", [forged, outsider, tampered], T)
    assert taken == [] and [r.txn for r in bad] == ["txn-f1xx", "txn-f2xx", "txn-f4xx"]
    assert w.core.provisional("r") == []
    taken, bad = w.core.accept("bob", "r", [w.env("r", "carol", "txn-okxx", text="relayed")], T)
    assert [(t.sender, t.text, t.via) for t in taken] == [("carol", "relayed", "bob")]


def _fields(env: m.Envelope) -> dict[str, object]:
    return {f: getattr(env, f) for f in env.__struct_fields__}


def n6(w: World) -> None:
    env = w.env("r", "carol", "txn-t1xx")
    assert len(w.core.accept("bob", "r", [env], T)[0]) == 1
    assert w.core.accept("bob", "r", [env], T) == ([], [])  # again: nothing new, nothing wrong
    w.cache.put_message("r", 1, 1, "bob", "onserver", 1, "x", None)
    assert w.core.accept("bob", "r", [w.env("r", "bob", "onserver")], T) == ([], [])
    have = [p.TxnRef("bob", "onserver"), p.TxnRef("bob", "txn-newx")]
    reply = w.core.answer("bob", p.Digest(room="r", have=have), T)
    assert reply.want == [p.TxnRef("bob", "txn-newx")]
    assert reply.envelopes == [env]
    # Ours relayed back after we gave up on it (its send refused for good):
    # not taken again, so not handed on as "not on the server yet".
    assert w.core.seal_own("r", "mine-gone", "the plan is off", 2, 2)
    (mine,) = [i.envelope for i in w.core.provisional("r") if i.txn == "mine-gone"]
    assert w.core.settle("r", "alice", "mine-gone")
    assert w.core.accept("bob", "r", [mine], T) == ([], [])
    assert mine not in w.core.answer("carol", p.Digest(room="r", have=[]), T + 1).envelopes


def n7(w: World) -> None:
    small = PeerCore(w.trust, max_pool=2)
    envs = [w.env("r", "carol", f"txn-t{i:04}", ts=i) for i in range(3)]
    taken, bad = small.accept("bob", "r", envs, T)
    assert len(taken) == 2 and [r.code for r in bad] == ["pool_full"]
    # One sender cannot crowd out the others, nor fill the room against ours.
    fair = PeerCore(w.trust, max_pool=4, max_from_one=2)
    taken, bad = fair.accept("bob", "r", [w.env("r", "carol", f"txn-c{i:04}") for i in range(3)], T)
    assert len(taken) == 2 and [r.code for r in bad] == ["pool_full"]
    assert len(fair.accept("carol", "r", [w.env("r", "bob", "txn-bob1")], T)[0]) == 1
    assert all(fair.seal_own("r", f"mine{i:04}", "x", i, 1) for i in range(4))  # ours apart
    assert not fair.seal_own("r", "mine0004", "x", 4, 1)  # full for ours: said so
    assert "mine0004" not in {i.txn for i in fair.provisional("r")}
    assert fair.settle("r", "carol", "txn-c0000")  # the server has one: room again
    assert len(fair.accept("bob", "r", [w.env("r", "carol", "txn-c0002")], T)[0]) == 1
    # One sender's in all rooms together: more rooms with us in them hold no more.
    spread = PeerCore(w.trust, max_pool=10, max_from_one=3)
    taken, bad = spread.accept(
        "bob", "r", [w.env("r", "carol", f"txn-r{i:04}") for i in range(2)], T
    )
    assert len(taken) == 2 and bad == []
    side = [w.env("side", "carol", f"txn-s{i:04}") for i in range(2)]
    taken, bad = spread.accept("carol", "side", side, T)
    assert len(taken) == 1 and [r.code for r in bad] == ["pool_full"]
    for i in range(300):
        assert w.core.seal_own("r", f"mine{i:04}", "x", i, 1)
    newest, older = w.core.digests("r", 0)  # more than a digest lists: two parts
    assert len(newest.have) == p.MAX_DIGEST and newest.until is None
    assert newest.have[-1] == p.TxnRef("alice", "mine0299")  # the newest
    assert newest.after == p.At(43, "alice", "mine0043")
    assert len(older.have) == 44 and older.after is None and older.until == newest.after
    assert len(w.core.answer("bob", p.Digest(room="r", have=[]), T).envelopes) == p.MAX_RELAY
    big = [w.env("r", "carol", f"txn-b{i:04}", text="x" * 15_000) for i in range(40)]
    assert sum(p.envelope_size(e) for e in bounded(big)) <= p.RELAY_BYTES


def n8(w: World) -> None:
    later = w.env("r", "bob", "txn-bbbb", ts=20)
    earlier = w.env("r", "carol", "txn-cccc", ts=10)
    w.core.accept("bob", "r", [later, earlier], T)
    assert [i.txn for i in w.core.provisional("r")] == ["txn-cccc", "txn-bbbb"]
    assert w.cache.messages("r") == []  # nothing in the history
    assert w.core.settle("r", "carol", "txn-cccc")
    assert not w.core.settle("r", "carol", "txn-cccc")
    assert [i.txn for i in w.core.provisional("r")] == ["txn-bbbb"]


def n9(w: World) -> None:
    assert w.core.seal_own("r", "txn-m1xx", "hello", 5, 6)
    mine = w.core.provisional("r")[0]
    assert mine.mine and w.trust.verify("r", mine.envelope).text == "hello"
    w.op("r", "remove", "bob", "carol")  # epoch 0 may no longer be used (E2)
    assert not w.core.seal_own("r", "txn-m2xx", "after the removal", 7, 8)
    assert [i.txn for i in w.core.provisional("r")] == ["txn-m1xx"]
    # The client's rotation limits hold offline too, our peer messages counted.
    limited = PeerCore(w.trust, rotate_after_messages=3, rotate_after_seconds=3600)
    sealed = [limited.seal_own("side", f"txn-s{i}xx", "x", i, 1_000) for i in range(4)]
    assert sealed == [True, True, True, False]
    aged = PeerCore(w.trust, rotate_after_messages=100, rotate_after_seconds=1)
    stored_ms = w.cache.epoch_usage("side", 0)[1]
    assert not aged.seal_own("side", "txn-oldx", "x", 1, stored_ms + 5_000)


def n10(w: World) -> None:
    digest = p.Digest(room="r", have=[])
    burst = int(2 * ASKS_PER_S)
    for _ in range(burst):
        w.core.answer("bob", digest, T)
    assert refused(lambda: w.core.answer("bob", digest, T)) == "N10"
    assert refused(lambda: w.core.accept("bob", "r", [], T)) == "N10"  # an offer is a request too
    w.core.answer("carol", digest, T)  # another member is still served
    w.core.answer("bob", p.Digest(room="r", have=[]), T + 1.5 / ASKS_PER_S)  # a token back
    # a connection's requests, all rooms together, before any is read; a key
    # no record announces (any more) is refused at once, before reading
    bob_key = w.ids["bob"].transport_pub
    assert w.core.pace(bob_key, T) == "not_shared"
    assert w.core.accept_record(w.record("bob"), NOW) is not None
    assert all(w.core.pace(bob_key, T) is None for _ in range(int(2 * KEY_ASKS_PER_S)))
    assert w.core.pace(bob_key, T) == "rate_limited"
    assert w.core.pace(bob_key, T + 1.5 / KEY_ASKS_PER_S) is None
    # verifying: a member's envelopes past its budget are refused unverified, by their txn
    envs = [w.env("r", "carol", f"txn-v{i:04}") for i in range(5)]
    tight = PeerCore(w.trust)
    tight.pacing.verifies["bob"] = TokenBucket(VERIFIES_PER_S, 3, stamp=T)
    taken, bad = tight.accept("bob", "r", envs, T)
    assert len(taken) == 3
    assert [(r.txn, r.code) for r in bad] == [
        ("txn-v0003", "rate_limited"),
        ("txn-v0004", "rate_limited"),
    ]
    # a digest's reply we asked for is not a request of theirs; its envelopes still count
    taken, bad = tight.accept("bob", "r", envs[3:], T + 1.5 / VERIFIES_PER_S, asked=False)
    assert [i.txn for i in taken] == ["txn-v0003"] and [r.txn for r in bad] == ["txn-v0004"]


def test_a_pool_larger_than_a_digest_still_spreads(w: World) -> None:
    """The dialer holds 600 provisional messages (more than a digest lists);
    the listener holds them too and two more: an old one and a new one. The
    listener gives exactly those two, not what the dialer holds and could
    not list."""
    dialer = PeerCore(w.trust, max_pool=2000, max_from_one=2000)
    listener = PeerCore(w.trust, max_pool=2000, max_from_one=2000)
    held = [w.env("r", "carol", f"txn-h{i:04}", ts=10 * i) for i in range(600)]
    extra = [w.env("r", "carol", "txn-old1", ts=1_005), w.env("r", "carol", "txn-new1", ts=9_000)]
    for core, envs in ((dialer, held), (listener, held + extra)):
        for k in range(0, len(envs), p.MAX_RELAY):
            _, bad = core.accept("bob", "r", envs[k : k + p.MAX_RELAY], T + k, asked=False)
            assert bad == []
    # before: one digest of the newest 256, and the oldest 64 of the 344 it
    # held and could not list given back every time, the two never
    unbounded = p.Digest(room="r", have=dialer.digests("r", 0)[0].have)
    again = listener.answer("carol", unbounded, T + 50).envelopes
    assert [e.txn for e in again] == [f"txn-h{i:04}" for i in range(p.MAX_RELAY)]
    given: list[str] = []
    for turn in range(3):  # 600 = 256 newest and 344 older: 2 older parts in turn
        for digest in dialer.digests("r", turn):
            reply = listener.answer("carol", digest, T + 100 + turn)
            assert reply.want == []
            given += [e.txn for e in reply.envelopes]
            dialer.accept("bob", "r", reply.envelopes, T + 100 + turn, asked=False)
    assert sorted(given) == ["txn-new1", "txn-old1"]  # each once, and nothing else


def test_records_heard_on_the_network_say_whether_we_know_their_user(w: World) -> None:
    """mDNS lets anyone send records under any number of names: the shell
    keeps those of users whose key we pinned apart, if that key signed them:
    a forged one is a stranger's, and cannot take the place of theirs."""

    def heard(signed: m.SignedRecord) -> tuple[str, bool] | None:
        said = w.core.heard_from(signed)
        return None if said is None else (said[0].user, said[1])

    assert heard(w.record("bob")) == ("bob", True)
    assert heard(w.record("bob", signer="mallory")) == ("bob", False)
    assert heard(w.record("mallory")) == ("mallory", False)
    assert heard(m.SignedRecord(record=b"\x93junk", sig=bytes(64))) is None


def ports(records: list[p.PeerRecord], user: str) -> list[int]:
    """The ports of `user`'s listeners among `records`, in their order."""
    return [int(r.endpoints[0].rsplit(":", 1)[1]) for r in records if r.user == user]


def test_each_listener_of_a_member_is_dialed_and_a_dead_one_withdrawn(w: World) -> None:
    """bob runs two clients: both records are dialed. The one that quit
    (port 2, the newer) fails FAILS_TO_WITHDRAW exchanges in a row while the
    other answers: it is withdrawn, and not taken again from the directory
    or the network unless newer. A member's last record is never withdrawn:
    one who is away is dialed again when back."""
    take = functools.partial(w.core.accept_record, now_ms=NOW)
    first, second = w.record("bob", ts=10, port=1), w.record("bob", ts=20, port=2)
    assert take(first) is not None and take(second) is not None
    alive, dead = (p.decode_record(r.record) for r in (first, second))
    assert ports(w.core.peers(), "bob") == [2, 1]  # each one dialed, the newest first
    w.core.dialed(alive, True)
    for _ in range(FAILS_TO_WITHDRAW - 1):
        assert not w.core.dialed(dead, False)
    w.core.dialed(dead, True)  # failures in a row only
    for _ in range(FAILS_TO_WITHDRAW - 1):
        assert not w.core.dialed(dead, False)
    assert w.core.dialed(dead, False)
    assert ports(w.core.peers(), "bob") == [1]
    assert [p.decode_record(s.record).ts for s in w.core.records()] == [10]
    assert refused(lambda: take(second)) == "N2"
    # the last one stays, however long it fails, and its client closing does not withdraw it
    for _ in range(3 * FAILS_TO_WITHDRAW):
        assert not w.core.dialed(alive, False)
    assert w.core.closed(first)
    assert not w.core.dialed(alive, False)
    assert ports(w.core.peers(), "bob") == [1]
    # a newer record of the withdrawn listener (its client announced again) is taken
    assert take(w.record("bob", ts=30, port=2)) is not None
    assert ports(w.core.peers(), "bob") == [2, 1]
    # of two that both fail, the newer stays
    for _ in range(FAILS_TO_WITHDRAW):
        w.core.dialed(p.decode_record(w.record("bob", ts=30, port=2).record), False)
    assert ports(w.core.peers(), "bob") == [2, 1]  # the older did not answer its last
    w.core.dialed(alive, False)
    assert ports(w.core.peers(), "bob") == [2]
    # the connections of a withdrawn listener's key are still let in while
    # another record announces it (same home: same key)
    assert w.core.admits(w.ids["bob"].transport_pub)


def test_a_forged_goodbye_shuts_out_no_later_record(w: World) -> None:
    """A goodbye (an mDNS service gone) carries whatever record its service
    announced, which anyone on the network can forge or replay: whatever
    date it claims, the listener is withdrawn (once its next exchange
    failed) only up to the record held, so its next record is taken."""
    take = functools.partial(w.core.accept_record, now_ms=NOW)
    assert take(w.record("bob", ts=NOW - 10, port=1111)) is not None  # an old client
    w.core.dialed(p.decode_record(w.record("bob", ts=NOW - 10, port=1111).record), True)
    live = w.record("bob", ts=NOW - 5, port=2222)
    assert take(live) is not None
    record = p.decode_record(live.record)
    forged = p.encode_record(msgspec.structs.replace(record, ts=2**53))
    assert w.core.closed(m.SignedRecord(record=forged, sig=b"\0" * 64))
    assert w.core.dialed(record, False)  # (its client did close)
    assert ports(w.core.peers(), "bob") == [1111]
    assert refused(lambda: take(live)) == "N2"  # what was withdrawn stays so
    assert take(w.record("bob", ts=NOW, port=2222)) is not None  # it announced again


def test_a_goodbye_for_a_listener_that_answers_withdraws_nothing(w: World) -> None:
    """Anyone on the network can replay a member's old record (records are
    broadcast) and say goodbye for the live one: that must not leave us only
    the dead record. A goodbye withdraws nothing by itself, and a listener
    that answers its next exchange keeps its record, goodbyes or not."""
    take = functools.partial(w.core.accept_record, now_ms=NOW)
    live = w.record("bob", ts=NOW - 5, port=2222)
    assert take(live) is not None
    assert take(w.record("bob", ts=NOW - 600_000, port=1)) is not None  # replayed: a dead run
    record = p.decode_record(live.record)
    for _ in range(3):
        assert w.core.closed(live)  # forged goodbyes...
        assert not w.core.dialed(record, True)  # ...but it answers
    assert ports(w.core.peers(), "bob") == [2222, 1]
    # and after a goodbye, a failed exchange withdraws it only for a record
    # more worth dialing: not for the old one that never answered
    assert w.core.closed(live)
    assert not w.core.dialed(record, False)
    assert ports(w.core.peers(), "bob") == [2222, 1]


def test_heard_records_are_kept_per_listener_and_bounded(w: World) -> None:
    """Heard on the network, kept to be judged again when our rooms change:
    each listener of a user we know, MAX_PER_USER at most (the oldest
    heard goes first), forgotten when its service goes away; strangers'
    only the newest MAX_HEARD, whatever their names."""
    heard = HeardRecords(w.core)
    bob = [w.record("bob", ts=i, port=100 + i) for i in range(MAX_PER_USER + 2)]
    for signed in bob:
        heard.hear(signed)
    heard.hear(bob[5])  # heard again: newest
    for i in range(MAX_HEARD + 50):
        junk = p.PeerRecord(user=f"x{i}", transport_pub=bytes(32), endpoints=[], ts=1)
        heard.hear(m.SignedRecord(record=p.encode_record(junk), sig=bytes(64)))
    heard.hear(w.record("bob", signer="mallory", port=7))  # a forgery is a stranger's
    assert list(heard.known) == ["bob"]
    kept = [*heard.known["bob"].values()]
    assert kept == [*bob[2:5], *bob[6:], bob[5]]
    assert len(heard.strangers) == MAX_HEARD
    assert next(iter(heard.strangers)).user == "x51"  # the oldest went first
    heard.forget(bob[5])
    heard.forget(w.record("bob", ts=99, port=102))  # not the one heard there: kept
    assert len(heard.known["bob"]) == MAX_PER_USER - 1 and bob[2] in heard.records()


CASES: dict[str, Callable[[World], None]] = {
    "N1": n1, "N2": n2, "N3": n3, "N4": n4, "N5": n5, "N6": n6, "N7": n7, "N8": n8, "N9": n9,
    "N10": n10,
}  # fmt: skip


@pytest.mark.parametrize("rule", [r.id for r in PEER_RULES])
def test_rule(rule: str, w: World) -> None:
    CASES[rule](w)


def test_every_rule_is_tested() -> None:
    assert sorted(CASES) == sorted(r.id for r in PEER_RULES)


def test_no_event_reaches_the_user_for_refused_frames(w: World) -> None:
    w.core.accept("bob", "r", [w.env("r", "carol", "txn-f1xx", signer="mallory")], T)
    assert [e for e in w.events if isinstance(e, ev.MessageReceived)] == []


def test_refusals_a_member_relays_are_told_once_a_minute(w: World) -> None:
    """A member relaying junk: each reason told with its count, once a
    minute per member, room and reason; our own bounds never."""
    junk = [p.Refused(f"t{i}", p.PeerCode.BAD_ENVELOPE) for i in range(64)]
    ours = [p.Refused("full", p.PeerCode.POOL_FULL), p.Refused("paced", "rate_limited")]
    assert w.core.told("bob", "r", junk + ours, T) == [("bad_envelope", 64)]
    assert w.core.told("bob", "r", junk, T + 30) == []
    assert w.core.told("carol", "r", junk[:1], T + 30) == [("bad_envelope", 1)]
    assert w.core.told("bob", "side", junk[:2], T + 30) == [("bad_envelope", 2)]
    assert w.core.told("bob", "r", junk, T + 61) == [("bad_envelope", 64)]
    assert w.core.told("bob", "r", ours, T + 200) == []
