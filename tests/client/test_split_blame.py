"""Who a message sealed under another key names, and what such messages
can make an honest client do.

One signed message proves only that its sender signed the commitment of
another key than ours: a member can sign one over random bytes, without any
key. The words name nobody for certain but where two signatures say so,
the user is told once for each sender and member who gave us the key, and a
new epoch (E5) is called for once for each such member, never for a key we
made. Trust cores with real caches, keys, ops and packets; no server.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from curvechat.client import events as ev
from curvechat.client.cache import Cache, cache_key
from curvechat.client.peer.core import PeerCore
from curvechat.client.trust import Rotate, TrustCore
from curvechat.crypto.envelope import DOMAIN_MSG, Plaintext, associated_data, seal_message
from curvechat.crypto.identity import Identity
from curvechat.crypto.membership import MemberState, sign_op
from curvechat.crypto.roomkeys import EpochKey, new_epoch_key, wrap_epoch_key
from curvechat.protocol import messages as m
from curvechat.protocol import peer as p

T = 100.0


class Who:
    def __init__(self, tmp: Path, ident: Identity) -> None:
        self.id = ident
        self.events: list[ev.Event] = []
        self.cache = Cache(tmp / f"{ident.user}.db", cache_key(ident.sign_seed))
        self.core = TrustCore(ident, self.cache, self.events.append)

    def problems(self) -> list[str]:
        return [e.message for e in self.events if isinstance(e, ev.Problem)]


class World:
    def __init__(self, tmp: Path, names: tuple[str, ...]) -> None:
        self.ids = {n: Identity.generate(n) for n in names}
        self.people = {n: Who(tmp, self.ids[n]) for n in names}
        self.state = MemberState.empty("r")
        self.ops: list[m.SignedOp] = []

    def op(self, kind: str, actor: str, target: str) -> None:
        op = self.state.next_op(kind, actor, target, self.ids[target].sign_pub, 1)  # type: ignore[arg-type]
        signed = sign_op(self.ids[actor], op)
        self.state, _ = self.state.apply(signed)
        self.ops.append(signed)
        for who in self.people.values():
            who.core.feed_ops("r", [signed])

    def give(self, key: EpochKey, sender: str, to: str) -> None:
        packet = wrap_epoch_key(self.ids[sender], key, to, self.ids[to].sign_pub)
        assert self.people[to].core.feed_packets("r", [packet]) == 1

    def close(self) -> None:
        for who in self.people.values():
            who.cache.close()


def garbage(ident: Identity, epoch: int, txn: str) -> m.Envelope:
    """A signed envelope of the right length whose ct is random bytes: no
    key needed, nothing split."""
    nonce, ct = secrets.token_bytes(24), secrets.token_bytes(32 + 256 + 16)
    ad = associated_data("r", epoch, ident.user, txn)
    sig = ident.sign(DOMAIN_MSG + ad + nonce + ct)
    return m.Envelope(
        room="r", epoch=epoch, sender=ident.user, txn=txn, nonce=nonce, ct=ct, sig=sig
    )


def decide(core: TrustCore) -> object:
    return core.encryption_grant("r", now_ms=0, max_messages=100, max_age_ms=2**40)


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path, ("alice", "bob", "carol", "mallory", "dave"))
    for u in ("alice", "bob", "carol", "mallory"):
        world.op("create" if u == "alice" else "add", "alice", u)
    yield world
    world.close()


def _alice_makes(w: World, epoch: int) -> EpochKey:
    key = new_epoch_key("r", epoch, w.state.index)
    for u in ("bob", "carol", "mallory"):
        w.give(key, "alice", u)
    w.people["alice"].core.own_epoch(key)
    return key


def test_random_bytes_from_a_member_do_not_accuse_a_key_we_made(w: World) -> None:
    _alice_makes(w, 0)
    env = garbage(w.ids["mallory"], 0, "txn-garbage-1")
    alice = w.people["alice"]
    row = alice.core.verify("r", env).error or ""
    assert "than the one you made: mallory sent something else than a message" in row
    assert not isinstance(decide(alice.core), Rotate)  # no new epoch for our own key
    bob = w.people["bob"]
    row = bob.core.verify("r", env).error or ""
    assert "split, by mallory, by alice, or by whoever alice had it from" in row
    assert isinstance(decide(bob.core), Rotate)


def test_a_member_makes_each_client_rotate_once_for_each_giver_not_per_message(
    w: World,
) -> None:
    """mallory sends random bytes in every epoch: each client starts a new
    epoch once for each member who gave it a key, then no more."""
    bob = w.people["bob"].core
    rotations = 0
    for epoch in range(40):
        _alice_makes(w, epoch)
        bob.verify("r", garbage(w.ids["mallory"], epoch, f"txn-g{epoch:05d}"))
        rotations += isinstance(decide(bob), Rotate)
    assert rotations == 1
    told = [t for t in w.people["bob"].problems() if "sealed a message" in t]
    assert len(told) == 1  # one sender, one giver


def test_rewrapped_history_names_whoever_the_adder_had_it_from(w: World) -> None:
    """mallory boxes K1 to alice and K2 to bob for epoch 1; alice passes K1
    on to dave when she adds him: dave's words leave room for the maker."""
    _alice_makes(w, 0)
    k1 = new_epoch_key("r", 1, w.state.index)
    k2 = EpochKey(room="r", epoch=1, after_op=w.state.index, key=secrets.token_bytes(32))
    w.give(k1, "mallory", "alice")
    w.give(k2, "mallory", "bob")
    bobs = seal_message(w.ids["bob"], room="r", epoch=1, key=k2.key, txn="txn-bob-0001",
                        plaintext=Plaintext(text="hi all", ts=1))  # fmt: skip
    w.op("add", "alice", "dave")
    history = w.people["alice"].core.history_for("r", "dave", w.ids["dave"].sign_pub)
    dave = w.people["dave"].core
    assert dave.feed_packets("r", history) == 2
    row = dave.verify("r", bobs).error or ""
    assert "split, by bob, by alice, or by whoever alice had it from" in row


def test_an_attempt_again_reuses_the_epochs_key(w: World) -> None:
    """A server that refuses an attempt to start an epoch but keeps its
    packets has no second key of it to hand out: the attempt again at the
    same epoch and head boxes the same key; a taken epoch or a new head
    gets a fresh one."""
    alice = w.people["alice"].core
    first, first_packets = alice.new_epoch("r", 0)
    again, _ = alice.new_epoch("r", 0)
    assert again.key == first.key
    alice.own_epoch(again)
    bob = w.people["bob"].core
    assert bob.feed_packets("r", [p for p in first_packets if p.recipient == "bob"]) == 1
    env = seal_message(w.ids["alice"], room="r", epoch=0, key=again.key, txn="txn-alice-001",
                       plaintext=Plaintext(text="hello", ts=1))  # fmt: skip
    assert bob.verify("r", env).text == "hello"
    assert alice.new_epoch("r", 1)[0].key != first.key
    nxt = alice.new_epoch("r", 1)[0]
    w.op("add", "alice", "dave")
    assert alice.new_epoch("r", 1)[0].key != nxt.key


def test_a_peer_relaying_random_bytes_for_every_epoch_is_told_once(w: World) -> None:
    """Peer to peer (no server refuses old epochs): one signed random
    envelope for each of 300 epochs alice holds costs one problem a giver."""
    alice = w.people["alice"]
    for e in range(300):
        w.give(new_epoch_key("r", e, w.state.index), "bob" if e % 2 else "carol", "alice")
    peer = PeerCore(alice.core)
    envs = [garbage(w.ids["mallory"], e, f"txn-p{e:06d}") for e in range(300)]
    for n, at in enumerate(range(0, 300, p.MAX_RELAY)):
        taken, _ = peer.accept("mallory", "r", envs[at : at + p.MAX_RELAY], T + n * 0.2)
        assert not taken
    told = [t for t in alice.problems() if "sealed a message" in t]
    assert len(told) == 2, told  # mallory, with bob's keys and with carol's
