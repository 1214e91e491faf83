"""The trust core driven without sockets: every rule of its tables refused
once and passed once, with real keys, ops and packets.

The core is fed what a hostile server could send; what it files, what it
encrypts under and what it shows must follow from the rules alone."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from curvechat.client import events as ev
from curvechat.client.cache import Cache, cache_key
from curvechat.client.crypt import open_split
from curvechat.client.errors import KeyChanged, NotReady, UntrustedLog
from curvechat.client.trust import EpochRecord, Rotate, TrustCore
from curvechat.client.trust import rules as R
from curvechat.client.trust.jobs import OpenJob, open_in_turn
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.errors import CryptoError
from curvechat.crypto.identity import Identity
from curvechat.crypto.membership import MemberState, sign_op
from curvechat.crypto.roomkeys import EpochKey, new_epoch_key, wrap_epoch_key
from curvechat.protocol import messages as m

from support.counting import count_calls

PEOPLE = ("alice", "bob", "carol", "mallory")


class World:
    """Honest-looking artefacts for one room "r", made with real keys; alice's
    trust core is the one under test."""

    def __init__(self, tmp: Path) -> None:
        self.ids = {name: Identity.generate(name) for name in PEOPLE}
        self.events: list[ev.Event] = []
        me = self.ids["alice"]
        self.cache = Cache(tmp / "alice.db", cache_key(me.sign_seed))
        self.core = TrustCore(me, self.cache, self.events.append)
        self.states: dict[str, MemberState] = {}
        self.ops: dict[str, list[m.SignedOp]] = {}

    def op(self, room: str, kind: str, actor: str, target: str) -> m.SignedOp:
        state = self.states.get(room) or MemberState.empty(room)
        op = state.next_op(kind, actor, target, self.ids[target].sign_pub, 1)  # type: ignore[arg-type]
        signed = sign_op(self.ids[actor], op)
        self.states[room], _ = state.apply(signed)
        self.ops.setdefault(room, []).append(signed)
        return signed

    def room(self, room: str, creator: str, *members: str) -> None:
        self.op(room, "create", creator, creator)
        for user in members:
            self.op(room, "add", creator, user)

    def feed(self, room: str) -> None:
        """Alice's core learns the whole log of `room` so far."""
        known = self.core.log(room).index
        self.core.feed_ops(room, [s for s in self.ops[room]][known + 1 :])

    def key(self, room: str, epoch: int, after_op: int | None = None) -> EpochKey:
        index = self.states[room].index if after_op is None else after_op
        return new_epoch_key(room, epoch, index)

    def packet(self, key: EpochKey, sender: str, recipient: str = "alice") -> m.KeyPacket:
        return wrap_epoch_key(self.ids[sender], key, recipient, self.ids[recipient].sign_pub)

    def problems(self) -> list[str]:
        return [e.message for e in self.events if isinstance(e, ev.Problem)]


@pytest.fixture
def w(tmp_path: Path) -> World:
    world = World(tmp_path)
    world.room("r", "bob", "alice", "mallory")  # ops 0-2
    world.feed("r")
    yield world
    world.cache.close()


def refused_by(w: World, room: str, packet: m.KeyPacket) -> str | None:
    before = len(w.problems())
    filed = w.core.feed_packets(room, [packet])
    if filed:
        return None
    new = w.problems()[before:]
    assert len(new) == 1, new
    return new[0].rsplit("(", 1)[1].rstrip(")")


# --- key packets: each rule refused once ---------------------------------------------


def _k1(w: World) -> m.KeyPacket:
    w.room("x", "bob", "alice")
    return w.packet(w.key("x", 3), "bob")  # a genuine packet, of another room


def _k2(w: World) -> m.KeyPacket:
    return w.packet(w.key("r", 1), "bob", recipient="mallory")


def _k3(w: World) -> m.KeyPacket:
    return w.packet(w.key("r", 1), "carol")  # carol is not in r's log


def _k4(w: World) -> m.KeyPacket:
    good = w.packet(w.key("r", 1), "bob")
    return m.KeyPacket(room="r", epoch=2, recipient="alice", sender="bob", box=good.box)


def _k5(w: World) -> m.KeyPacket:
    return w.packet(w.key("r", 1, after_op=9), "bob")  # based on an op we have not seen


def _k6(w: World) -> m.KeyPacket:
    w.op("r", "remove", "bob", "mallory")  # op 3
    w.feed("r")
    return w.packet(w.key("r", 1), "mallory")  # mallory, gone, makes the next key


def _k7(w: World) -> m.KeyPacket:
    assert w.core.feed_packets("r", [w.packet(w.key("r", 0), "bob")]) == 1
    return w.packet(w.key("r", 0), "bob")  # another key for the same epoch


PACKET_CASES: dict[str, Callable[[World], m.KeyPacket]] = {
    "K1": _k1,
    "K2": _k2,
    "K3": _k3,
    "K4": _k4,
    "K5": _k5,
    "K6": _k6,
    "K7": _k7,
}


def test_every_packet_rule_has_a_case() -> None:
    assert sorted(PACKET_CASES) == [rule.id for rule in R.PACKET_RULES]


@pytest.mark.parametrize("rule", sorted(set(PACKET_CASES) - {"K7"}))
def test_packet_refused(w: World, rule: str) -> None:
    packet = PACKET_CASES[rule](w)
    assert refused_by(w, "r", packet) == rule
    assert w.core.held("r") == {}


def test_k7_another_key_for_a_held_epoch_is_kept_beside_it_and_retires_the_epoch(
    w: World,
) -> None:
    """A packet that breaks K7 alone is not filed as the epoch's key (the
    first stays), but kept beside it, told once, to open what was sealed
    under it; the epoch is not encrypted under again (E5)."""
    packet = _k7(w)
    first = w.core.held("r")[0]
    before = len(w.problems())
    assert w.core.feed_packets("r", [packet]) == 1
    assert w.core.held("r")[0] == first
    (alt,) = w.cache.alternates("r", 0)
    assert alt.key != first.key and alt.sender == "bob"
    told = w.problems()[before:]
    assert len(told) == 1 and "another key for epoch 0" in told[0]
    assert w.core.feed_packets("r", [packet]) == 0 and len(w.problems()) == before + 1
    decision = w.core.encryption_key("r", now_ms=0, max_messages=100, max_age_ms=10**9)
    assert isinstance(decision, Rotate) and "(E5)" in decision.reason


def test_a_refused_packet_is_told_once_and_a_flood_in_one_line(w: World) -> None:
    """A member who starts hundreds of epochs with garbage in our packet
    costs one line, not one at each fetch of each packet (the server keeps
    the first packet for an epoch, so every fetch brings them back)."""
    good = w.packet(w.key("r", 1), "mallory")
    flood = [
        m.KeyPacket(room="r", epoch=e, recipient="alice", sender="mallory", box=good.box)
        for e in range(2, 302)
    ]
    for _ in range(3):  # fetched again at every message that did not open
        assert w.core.feed_packets("r", flood) == 0
    (line,) = w.problems()
    assert line.startswith("300 key packets for r (epochs 2, 3, 4, 5, 6 and 295 more) from ")
    assert line.endswith("(K4)")
    # a packet refused for another reason, or another packet, is told
    assert refused_by(w, "r", w.packet(w.key("r", 1, after_op=9), "bob")) == "K5"
    assert refused_by(w, "r", _k2(w)) == "K2"
    assert len(w.problems()) == 3
    assert w.core.feed_packets("r", [good]) == 1  # a genuine one is filed as ever


def test_a_fetch_of_late_history_passes_over_the_epochs_held(w: World) -> None:
    """`new_only`: a packet of an epoch we hold is not opened (a fetch from
    the oldest epoch we lack walks over every epoch above it) nor told."""
    assert w.core.feed_packets("r", [w.packet(w.key("r", 2), "bob")]) == 1
    garbage = m.KeyPacket(room="r", epoch=2, recipient="alice", sender="bob", box=bytes(80))
    late = w.packet(w.key("r", 1), "bob")
    assert w.core.feed_packets("r", [garbage, late], new_only=True) == 1
    assert sorted(w.core.held("r")) == [1, 2] and w.problems() == []
    assert w.core.feed_packets("r", [garbage]) == 0  # read as ever without it: K4
    assert w.problems()[-1].endswith("(K4)")


def test_packet_from_a_member_is_filed_under_its_own_room_and_epoch(w: World) -> None:
    key = w.key("r", 4)
    assert w.core.feed_packets("r", [w.packet(key, "mallory")]) == 1
    assert w.core.held("r") == {4: EpochRecord(4, 2, key.key, "mallory")}


def test_whoever_added_us_rewraps_older_epochs_even_after_leaving(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.room("r", "bob", "carol")  # ops 0-1; epoch 0 is based on op 1
    w.op("r", "promote", "bob", "carol")  # op 2
    old = w.key("r", 0, after_op=1)
    w.op("r", "add", "carol", "alice")  # op 3: carol adds alice, and wraps epoch 0
    w.op("r", "leave", "carol", "carol")  # op 4
    w.feed("r")
    assert w.core.feed_packets("r", [w.packet(old, "carol")]) == 1
    # …but what carol makes after the add is not hers to give: she was not a
    # member at op 4, and her add (op 3) is not after it.
    assert refused_by(w, "r", w.packet(w.key("r", 1, after_op=4), "carol")) == "K6"
    w.cache.close()


# --- encrypting -------------------------------------------------------------------------------


def decide(w: World, room: str = "r") -> EpochRecord | Rotate:
    return w.core.encryption_key(room, now_ms=int(time.time() * 1000), max_messages=100,
                                 max_age_ms=10**9)  # fmt: skip


def test_encrypt_under_a_current_members_key(w: World) -> None:
    key = w.key("r", 0)
    w.core.feed_packets("r", [w.packet(key, "bob")])
    decision = decide(w)
    assert isinstance(decision, EpochRecord) and decision.key == key.key


def test_e1_a_key_based_past_our_log_is_not_used(w: World) -> None:
    w.cache.put_epoch_key("r", 0, 7, bytes(32), "bob")
    assert decide(w) == Rotate(1, R.explain(R.ENCRYPT_RULES[0]))


def test_e2_a_departure_after_the_base_forces_a_new_epoch(w: World) -> None:
    w.core.feed_packets("r", [w.packet(w.key("r", 0), "bob")])
    w.op("r", "leave", "mallory", "mallory")
    w.feed("r")
    decision = decide(w)
    assert isinstance(decision, Rotate) and decision.reason.endswith("(E2)")


def test_a_stale_refusal_the_log_does_not_explain_rotates_once_per_log_state(w: World) -> None:
    w.core.feed_packets("r", [w.packet(w.key("r", 0), "bob")])
    assert not w.core.rotate_on_refusal("r", 1)  # not the epoch we hold
    assert w.core.rotate_on_refusal("r", 0)
    assert not w.core.rotate_on_refusal("r", 0)  # again, nothing changed: no
    w.core.feed_packets("r", [w.packet(w.key("r", 1), "bob")])
    assert not w.core.rotate_on_refusal("r", 0)  # a newer epoch is held: send under it
    assert not w.core.rotate_on_refusal("r", 1)  # the log has not moved
    w.op("r", "add", "bob", "carol")
    w.feed("r")
    assert w.core.rotate_on_refusal("r", 1)  # a new state of the log: once more
    assert not w.core.rotate_on_refusal("r", 1)


def test_a_stale_refusal_the_log_explains_rotates_every_time(w: World) -> None:
    w.core.feed_packets("r", [w.packet(w.key("r", 0), "bob")])
    w.op("r", "leave", "mallory", "mallory")
    w.feed("r")
    assert w.core.rotate_on_refusal("r", 0)
    assert w.core.rotate_on_refusal("r", 0)  # E2 calls for it, whatever was done before


def test_e3_a_key_given_by_someone_who_left_is_not_used(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.room("r", "mallory", "alice", "bob")  # mallory created r and "added" everyone
    w.op("r", "promote", "mallory", "bob")
    w.feed("r")
    w.core.feed_packets("r", [w.packet(w.key("r", 0, after_op=2), "mallory")])
    # bob removes mallory; the rotation packets are withheld by the server
    w.op("r", "remove", "bob", "mallory")
    w.feed("r")
    decision = decide(w)
    assert isinstance(decision, Rotate) and decision.reason.endswith("(E2)")
    # a key of unknown origin (an old cache) is not used either
    w.cache.put_epoch_key("r", 5, w.core.log("r").index, bytes(32), None)
    decision = decide(w)
    assert isinstance(decision, Rotate) and decision.reason.endswith("(E3)")
    w.cache.close()


def test_e4_a_key_boxed_for_someone_whose_add_failed_is_not_used(w: World) -> None:
    w.core.feed_packets("r", [w.packet(w.key("r", 0), "bob")])
    packets = w.core.history_for("r", "carol", w.ids["carol"].sign_pub)
    assert [p.recipient for p in packets] == ["carol"]
    # the server refused the add (or said so): carol is not in our log, but
    # it holds our packets for her
    decision = decide(w)
    assert isinstance(decision, Rotate) and decision.reason.endswith("(E4)")
    # once carol's add is in the log, the key is fine again
    w.op("r", "add", "bob", "carol")
    w.feed("r")
    decision = decide(w)
    assert isinstance(decision, EpochRecord) and decision.epoch == 0


def test_no_member_no_key_and_key_change_refuse(w: World) -> None:
    with pytest.raises(NotReady, match="no key"):
        decide(w)
    w.core.feed_packets("r", [w.packet(w.key("r", 0), "bob")])
    w.cache.record_key_change("bob", Identity.generate("bob").sign_pub)
    with pytest.raises(KeyChanged):
        decide(w)
    w.room("y", "bob", "carol")
    w.feed("y")
    with pytest.raises(NotReady, match="not a member"):
        decide(w, "y")


# --- messages ---------------------------------------------------------------------------------


def envelope(
    w: World, sender: str, room: str, key: EpochKey, txn: str = "txn-0000000000000001"
) -> m.Envelope:
    return seal_message(w.ids[sender], room=room, epoch=key.epoch, key=key.key, txn=txn,
                        plaintext=Plaintext(text=f"from {sender}", ts=1))  # fmt: skip


def test_message_rules(w: World) -> None:
    key = w.key("r", 0)
    w.core.feed_packets("r", [w.packet(key, "bob")])
    ok = w.core.open("r", 1, envelope(w, "bob", "r", key))
    assert (ok.text, ok.error) == ("from bob", None)
    w.room("x", "bob", "alice")
    assert w.core.open("r", 2, envelope(w, "bob", "r", w.key("r", 3))).error == (
        "no key for epoch 3 (M2)"
    )
    cases = {"M1": envelope(w, "bob", "x", key), "M3": envelope(w, "carol", "r", key)}
    for rule, env in cases.items():
        assert w.core.open("r", 2, env).error == f"refused: requires that {_says(rule)} ({rule})"
    forged = envelope(w, "mallory", "r", key)
    forged = m.Envelope(**{**_fields(forged), "sender": "bob"})
    assert "verify" in (w.core.open("r", 3, forged).error or "")
    # M4: a departed member's key of a later epoch (one she cannot hold)
    w.op("r", "remove", "bob", "mallory")
    w.feed("r")
    later = w.key("r", 1)
    w.core.feed_packets("r", [w.packet(later, "bob")])
    error = w.core.open("r", 4, envelope(w, "mallory", "r", later)).error
    assert error == f"refused: requires that {_says('M4')} (M4)"


def test_an_op_recording_a_key_other_than_the_pin_stops_the_log_in_memory_too(
    tmp_path: Path,
) -> None:
    """P2 in a log: the op that records a key other than the pin is not
    taken, neither in the cache nor in the log the core decides by, so the
    member it adds is not one (M3) until the user accepts the key."""
    w = World(tmp_path)
    w.cache.set_pin("carol", Identity.generate("carol").sign_pub)  # another key pinned
    w.room("r", "bob", "alice", "carol")  # ops 0-2: carol's add records her real key
    with pytest.raises(UntrustedLog):
        w.feed("r")
    log = w.core.log("r")
    assert log.index == 1 and "carol" not in log.logged_keys and not log.is_member("carol")
    assert len(w.cache.ops("r")) == 2
    key = w.key("r", 0, after_op=1)
    w.core.feed_packets("r", [w.packet(key, "bob")])
    refused = w.core.open("r", 1, envelope(w, "carol", "r", key))
    assert (refused.text, refused.rule) == (None, "M3")
    w.cache.accept_key_change("carol", w.cache.key_changes()["carol"])
    w.feed("r")  # the same op, now that the key is the pin
    assert w.core.log("r").is_member("carol")
    assert w.core.open("r", 1, envelope(w, "carol", "r", key)).text == "from carol"
    w.cache.close()


def test_a_page_is_judged_alike_whether_its_crypto_runs_in_turn_or_on_two_threads(
    w: World,
) -> None:
    """`verify_many` hands only what the rules let through to the crypt
    function, with the keys it chose, and judges what comes back: the
    two-thread one of the engine gives the same answers as one in turn."""
    key = w.key("r", 0)
    w.core.feed_packets("r", [w.packet(key, "bob")])
    w.room("x", "bob", "alice")
    envs = []
    for i in range(80):
        env = envelope(w, "bob", "r", key, txn=f"txn-{i:016d}")
        if i % 7 == 3:  # a forged one: mallory's signature, bob's name
            env = m.Envelope(**{**_fields(envelope(w, "mallory", "r", key)), "sender": "bob"})
        if i % 11 == 5:  # M1: sealed for another room
            env = envelope(w, "bob", "x", key, txn=f"txn-{i:016d}")
        envs.append(env)
    asked: list[OpenJob] = []

    def spy(jobs: Sequence[OpenJob]) -> list[Plaintext | CryptoError]:
        asked.extend(jobs)
        return open_in_turn(jobs)

    in_turn = w.core.verify_many("r", envs, crypt=spy)
    split = w.core.verify_many("r", envs, crypt=open_split)
    assert in_turn == split
    assert len(asked) == 80 - len([i for i in range(80) if i % 11 == 5])  # M1 never asked
    assert all(job.key == key.key for job in asked)
    errors = [o.error for o in split]
    assert errors.count(None) == len([i for i in range(80) if i % 7 != 3 and i % 11 != 5])
    assert all("verify" in (errors[i] or "") for i in range(80) if i % 7 == 3 and i % 11 != 5)
    with pytest.raises(ValueError):
        w.core.verify_many("r", envs, crypt=lambda jobs: open_in_turn(jobs)[1:])


def test_message_replay_is_marked(w: World) -> None:
    key = w.key("r", 0)
    w.core.feed_packets("r", [w.packet(key, "bob")])
    env = envelope(w, "bob", "r", key)
    w.cache.put_message("r", 1, 1, "bob", env.txn, 1, "from bob", None)
    assert w.core.open("r", 2, env).error == "replay of message 1"


def _says(rule_id: str) -> str:
    return next(r.says for r in R.ALL_RULES if r.id == rule_id)


def _fields(env: m.Envelope) -> dict[str, object]:
    return {f: getattr(env, f) for f in env.__struct_fields__}


# --- listings ------------------------------------------------------------------------------------


def test_a_room_we_left_cannot_be_listed_back(w: World) -> None:
    w.op("r", "leave", "alice", "alice")
    w.feed("r")
    info = m.RoomInfo(room="r", head=0, epoch=0, op_head=w.core.log("r").index, members=2)
    plan = w.core.listing([info])
    assert plan.fetch_ops == ["r"]  # the claim only makes us look at the log
    assert w.cache.room("r") is not None and w.cache.room("r").left  # type: ignore[union-attr]
    assert not w.core.settle("r")


def test_every_rule_is_cited_in_the_security_doc() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    missing = [r.id for r in R.ALL_RULES if f"**{r.id}**" not in doc]
    assert missing == []


def test_a_copy_shown_first_is_re_marked_when_the_original_turns_up(w: World) -> None:
    key = w.key("r", 0)
    w.core.feed_packets("r", [w.packet(key, "bob")])
    env = envelope(w, "bob", "r", key)
    w.cache.put_message("r", 9, 1, "bob", env.txn, 1, "from bob", None)  # the copy, first
    assert w.core.open("r", 2, env).error is None  # the original, at a lower seq
    (copy,) = [r for r in w.cache.messages("r") if r.seq == 9]
    assert copy.text is None and copy.error == "replay of message 2"
    assert any("was a replay" in p for p in w.problems())


def test_the_cache_file_holds_no_text_and_no_epoch_key(w: World, tmp_path: Path) -> None:
    key = w.key("r", 0)
    w.core.feed_packets("r", [w.packet(key, "bob")])
    w.cache.put_message("r", 1, 1, "bob", "txn-0000000000000001", 1, "canary-in-a-message", None)
    w.cache.enqueue("r", "txn-0000000000000002", "canary-in-the-outbox")
    w.cache.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("alice.db"))
    assert b"canary" not in raw and key.key not in raw
    assert b"txn-0000000000000001" in raw  # control: the file is what we searched
    w.cache = Cache(tmp_path / "alice.db", cache_key(w.ids["alice"].sign_seed))


def test_e5_messages_sealed_under_another_key_are_told_once_and_rotate(w: World) -> None:
    """mallory, who gave us epoch 0's key, seals under another: each such
    message is refused naming her, the split is told once for all of them,
    and our next message starts a new epoch."""
    ours = w.key("r", 0)
    w.core.feed_packets("r", [w.packet(ours, "mallory")])
    other = w.key("r", 0).key
    envs = [
        seal_message(w.ids[who], room="r", epoch=0, key=other, txn=f"txn-{who}-{i:04d}",
                     plaintext=Plaintext(text="x", ts=1))
        for who in ("mallory", "bob") for i in range(50)
    ]  # fmt: skip
    opened = w.core.verify_many("r", envs)
    assert all(o.text is None and o.rule == "M5" for o in opened)
    assert "mallory signed it under another key (or over nothing)" in (opened[0].error or "")
    assert "split, by bob, by mallory, or by whoever mallory had it from" in opened[-1].error
    assert w.core.verify_many("r", envs[:1])[0].error == opened[0].error  # again: not told
    assert len(w.problems()) == 2
    decision = decide(w)
    assert isinstance(decision, Rotate) and decision.reason.endswith("(E5)")
    # a message under the key we hold opens as ever
    env = seal_message(w.ids["bob"], room="r", epoch=0, key=ours.key, txn="txn-bob-fine",
                       plaintext=Plaintext(text="fine", ts=1))  # fmt: skip
    assert w.core.verify("r", env).text == "fine"


def test_a_packet_that_did_not_open_is_not_opened_again_and_fetches_start_past_it(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node keeps the first packet for each epoch and member: one that
    did not open (K4) comes back at every fetch. It is not opened again, and
    the fetches of a round start past the epochs right above the newest key
    held whose packet did not open; a new round asks for them again."""
    opened = count_calls(monkeypatch, R, "unwrap_key_packet")
    assert w.core.feed_packets("r", [w.packet(w.key("r", 0), "bob")]) == 1
    good = w.packet(w.key("r", 1), "mallory")
    garbage = [
        m.KeyPacket(room="r", epoch=e, recipient="alice", sender="mallory", box=bytes(80))
        for e in range(1, 41)
    ]
    for _ in range(3):
        assert w.core.feed_packets("r", garbage) == 0
    assert opened == [1 + 40]  # the good one, and each garbage packet once
    assert len(w.problems()) == 1
    assert w.core.keys_from("r") == 41
    w.core.new_round()
    assert w.core.keys_from("r") == 1
    # another packet for a refused epoch is opened, and filed if it opens
    assert w.core.feed_packets("r", [good]) == 1 and opened == [42]


def test_the_epochs_remembered_as_refused_stay_bounded_in_all_rooms(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_REMEMBERED epochs in all rooms, they are forgotten (and
    fetched again): a member making epochs in many rooms cannot grow it."""
    from curvechat.client.trust import refusals

    monkeypatch.setattr(refusals, "MAX_REMEMBERED", 8)
    for room in ("r", "s", "t"):
        if room != "r":
            w.room(room, "bob", "alice", "mallory")
            w.feed(room)
        garbage = [
            m.KeyPacket(room=room, epoch=e, recipient="alice", sender="mallory", box=bytes(80))
            for e in range(5)
        ]
        assert w.core.feed_packets(room, garbage) == 0
        kept = w.core._refusals._refused_epochs
        assert sum(len(epochs) for epochs in kept.values()) <= 8


def test_an_epoch_we_made_takes_its_number_back_from_a_key_filed_for_it_before(
    w: World,
) -> None:
    """A key planted for the next epoch's number (bob's, K6 lets him give
    one) is filed; the server then takes the epoch we make under that
    number: ours is the epoch's key, the planted one is kept beside it and
    told, and the epoch counts as split (E5)."""
    assert w.core.feed_packets("r", [w.packet(w.key("r", 0), "bob")]) == 1
    assert w.core.feed_packets("r", [w.packet(w.key("r", 1), "bob")]) == 1
    planted = w.core.held("r")[1]
    before = len(w.problems())
    ours, _packets = w.core.new_epoch("r", 1)
    w.core.own_epoch(ours)
    assert w.core.held("r")[1].key == ours.key and w.core.held("r")[1].sender == "alice"
    assert [a.key for a in w.cache.alternates("r", 1)] == [planted.key]
    assert len(w.problems()) == before + 1
    decision = w.core.encryption_key("r", now_ms=0, max_messages=100, max_age_ms=10**9)
    assert isinstance(decision, Rotate) and "(E5)" in decision.reason
