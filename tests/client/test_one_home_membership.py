"""Processes of one home share the cache, and with it the verified
membership log: an op one process stored is the other's as well. A removal
that `curvechat remove` stored is known to the terminal client beside it
before its next key is made (were it not, the key would be boxed for the
member just removed: an honest server refuses that epoch, one that holds
the push back and takes it hands the key to the removed member). An op a
process fetches that the other already stored is not applied twice, and
one that differs from it is refused as another story."""

from __future__ import annotations

from pathlib import Path

import pytest
from client.test_trust_core import World

from curvechat.client.cache import Cache, cache_key
from curvechat.client.errors import UntrustedLog
from curvechat.client.trust import Rotate, TrustCore
from curvechat.crypto.membership import MemberState, sign_op

from support.clients import ClientFactory
from support.servers import ServerProcess


async def test_a_removal_another_process_stored_is_known_before_a_key_is_boxed(
    server: ServerProcess, clients: ClientFactory
) -> None:
    one, _ = await clients.make("alice", server.connect)
    two, _ = await clients.make("alice", server.connect)
    await clients.make("bob", server.connect)
    await one.create_room("r", ["bob"])
    assert one.core.log("r").is_member("bob")

    # `one` is busy (its lock held: a long burst, a sealing turn) or its push
    # is late: it hears nothing from the server while `two` removes bob.
    async with one.lock:
        await two.remove("r", "bob")
        fresh = TrustCore(one.identity, one.cache, lambda _e: None)
        assert not fresh.log("r").is_member("bob")  # what the shared cache says

        held = one.core.held("r")  # the room keys: read again (2ce1046)
        decision = one.core.encryption_grant("r", now_ms=0, max_messages=100, max_age_ms=1 << 40)
        _, packets = one.core.new_epoch("r", max(held) + 1)
        seen = (
            one.core.log("r").is_member("bob"),
            sorted(p.recipient for p in packets),
            # the epoch `one` would seal under: never one bob holds (epoch 0)
            None if isinstance(decision, Rotate) else decision.record.epoch,
        )
    # `one` must decide by the log its home verified: bob is gone, the key it
    # makes next is boxed for alice alone, and it seals under no key bob has
    # (it rotates: the epoch `two` made is learned as another member's would
    # be, by a push or the refusal of a send under the older one).
    assert seen == (False, ["alice"], None)


def test_ops_another_process_stored_are_applied_once_and_must_agree(tmp_path: Path) -> None:
    """Sans I/O: two trust cores on one cache file (two processes of alice's
    home). What one feeds, the other's log holds at its next look; a reply
    asked for before that, which repeats those ops, is not applied twice;
    a reply whose op at a held index differs is refused, and nothing of it
    is kept."""
    w = World(tmp_path)
    w.room("r", "bob", "alice")  # ops 0-1
    w.feed("r")
    other_cache = Cache(tmp_path / "alice.db", cache_key(w.ids["alice"].sign_seed))
    other = TrustCore(w.ids["alice"], other_cache, w.events.append)
    try:
        assert other.log("r").index == 1
        asked_after = other.log("r").index  # `other` asks the server for ops past 1 ...
        w.op("r", "add", "bob", "carol")  # op 2
        w.op("r", "remove", "bob", "carol")  # op 3
        w.feed("r")  # ... while the first process stores ops 2-3
        assert other.log("r").index == 3 and not other.log("r").is_member("carol")
        other.feed_ops("r", w.ops["r"][asked_after + 1 :])  # the reply: ops 2-3 again
        assert other.log("r").index == 3 and w.problems() == []

        forged = MemberState.empty("r")
        for signed in w.ops["r"][:2]:
            forged, _ = forged.apply(signed)
        op = forged.next_op("add", "bob", "mallory", w.ids["mallory"].sign_pub, 1)
        with pytest.raises(UntrustedLog):  # another op 2: a second story
            other.feed_ops("r", [sign_op(w.ids["bob"], op)])
        assert other.log("r").index == 3 and not other.log("r").is_member("mallory")
        assert any("differs from the one this home holds" in p for p in w.problems())
    finally:
        other_cache.close()
        w.cache.close()


def test_a_second_story_stored_meanwhile_is_refused_not_overwritten(tmp_path: Path) -> None:
    """The server tells two processes of the home two different op 2s at
    about the same moment, and one stores its own after the other looked at
    the log and before it stored: the op stored first stays, and the second
    story is refused and told (it once overwrote the first, silently)."""
    w = World(tmp_path)
    w.room("r", "bob", "alice")  # ops 0-1, held by both processes
    w.feed("r")
    other_cache = Cache(tmp_path / "alice.db", cache_key(w.ids["alice"].sign_seed))
    other = TrustCore(w.ids["alice"], other_cache, w.events.append)
    try:
        assert other.log("r").index == 1
        story_x = w.op("r", "add", "bob", "carol")  # op 2 as `other` is told it
        forged = MemberState.empty("r")
        for signed in w.ops["r"][:2]:
            forged, _ = forged.apply(signed)
        story_y = sign_op(
            w.ids["bob"], forged.next_op("add", "bob", "mallory", w.ids["mallory"].sign_pub, 1)
        )  # op 2 as `w.core` is told it

        real = w.core._book.held_already
        raced: list[bool] = []

        def held_already(log, signed):  # type: ignore[no-untyped-def]
            if not raced:  # `other` commits right after this process looked
                raced.append(True)
                other.feed_ops("r", [story_x])
            return real(log, signed)

        w.core._book.held_already = held_already  # type: ignore[method-assign]
        with pytest.raises(UntrustedLog):  # another op 2: a second story
            w.core.feed_ops("r", [story_y])
        stored = w.cache.ops("r", after=1)
        assert stored == [(story_x.op, story_x.sig)]  # what `other` verified stays
    finally:
        other_cache.close()
        w.cache.close()


def test_a_held_op_is_checked_by_reading_one_row(tmp_path: Path) -> None:
    """A server answering with a page of ops the log already holds costs a
    row read for each, not the rest of the log for each."""
    w = World(tmp_path)
    w.room("r", "bob", "alice")
    for _ in range(150):
        w.op("r", "add", "bob", "carol")
        w.op("r", "remove", "bob", "carol")
    w.feed("r")  # ops 0-301
    real = w.cache.ops
    rows: list[int] = []

    def counting(room: str, after: int = -1) -> list[tuple[bytes, bytes]]:
        got = real(room, after)
        rows.append(len(got))
        return got

    w.cache.ops = counting  # type: ignore[method-assign]
    try:
        w.core.feed_ops("r", w.ops["r"][:100])  # a page of held ops, from op 0
        assert w.core.log("r").index == 301
        assert sum(rows) <= 2 * 100, sum(rows)
    finally:
        w.cache.close()
