"""Your own messages in the terminal client: "◌ pending" from Enter until the
server's ack, then a message in its place, whatever their length (1,000 to
16,000 characters) and whether or not the room's history is still loading;
the view stays with the newest message (while you type a long one, too); a
room opens at its newest message.

The app talks to the server over `slow_link` (150 ms each way), as across a
network: the screen is drawn several times before a reply comes back, which
is when a session used to lose track of its own messages."""

from __future__ import annotations

import random

from curvechat.client import events as ev
from curvechat.client.cache import CachedMessage
from curvechat.tui.app import CurvechatApp
from curvechat.tui.fold import fold, folded_note
from curvechat.tui.roomlog import RoomLog
from curvechat.tui.widgets.composer import Composer
from curvechat.tui.widgets.rooms import RoomList
from curvechat.tui.widgets.timeline import Timeline

from .conftest import Kit, on_screen, ready, say, shown, until
from support.clients import ClientFactory, Recorder

WORDS = (
    "the",
    "release",
    "notes",
    "say",
    "what",
    "changed",
    "and",
    "why",
    "so",
    "read",
    "them",
    "before",
    "you",
    "tag",
    "anything",
    "else;",
    "a",
    "build",
    "that",
    "is",
    "green",
    "on",
    "one",
    "machine",
    "may",
    "still",
    "be",
    "red",
    "on",
    "another,",
    "naïve",
    "café",
    "déjà",
    "vu,",
    "ünïcödé",
    "and",
    "日本語",
    "too",
)

SIZES = (1_000, 4_000, 9_000, 16_000)


def long_text(n: int, tag: str) -> str:
    """Exactly `n` characters of words, starting with <tag> and ending with
    <tag-end>, so that both ends can be looked for on the screen."""
    rng = random.Random(tag)
    end = f" <{tag}-end>"
    words = [f"<{tag}>"]
    while sum(len(w) + 1 for w in words) < n:
        words.append(rng.choice(WORDS))
    text = " ".join(words)[: n - len(end)].rstrip() + end
    return text + " " * (n - len(text)) if len(text) < n else text


def end_mark(text: str, tag: str) -> str:
    """What shows on the screen when a message's end is in view: its
    <tag-end>, or the line under it if the timeline folds it."""
    shown = fold(text)
    return folded_note(shown) if shown.cut else f"<{tag}-end>"


class Acks(Recorder):
    """The engine's events, and for each of our messages whether the screen
    still showed it pending at the moment the engine learnt it was stored
    (its ack, or the message itself back by push or sync; the screen hears
    of it just after): it must have, up to that moment."""

    def __init__(self, app: CurvechatApp) -> None:
        super().__init__()
        self.app = app
        self.pending_until_stored: dict[str, bool] = {}

    def __call__(self, event: ev.Event) -> None:
        txn = ""
        if isinstance(event, ev.SendAcked):
            txn, room = event.txn, event.room
        elif isinstance(event, ev.MessageReceived) and event.mine:
            txn, room = event.message.txn, event.message.room
        if txn and txn not in self.pending_until_stored and self.app.chat is not None:
            room_log = self.app.chat.logs.get(room)
            entries = room_log.entries if room_log is not None else []
            self.pending_until_stored[txn] = any(
                e.kind == "pending" and e.txn == txn for e in entries
            )
        super().__call__(event)


def acks(app: CurvechatApp) -> Acks:
    recorder = Acks(app)
    assert app.client is not None
    app.client.subscribe(recorder)
    return recorder


def at_bottom(app: CurvechatApp) -> bool:
    assert app.chat is not None
    timeline = app.chat.query_one(Timeline)
    return timeline.scroll_y >= timeline.max_scroll_y


async def send_and_see_acked(  # type: ignore[no-untyped-def]
    pilot, app: CurvechatApp, recorder: Acks, text: str, tag: str, *, in_view: bool = True
):
    """Send `text`: it is pending until the engine reports the server's ack,
    and then, promptly, a message (with its end on the screen: `in_view`)."""
    before = len(recorder.of(ev.SendAcked))
    await say(pilot, app, text)
    await recorder.until(lambda: len(recorder.of(ev.SendAcked)) > before)
    txn = recorder.of(ev.SendAcked)[-1].txn
    assert recorder.pending_until_stored[txn], f"{tag} was not pending until it was stored"
    await until(pilot, lambda: "pending" not in shown(app), f"{tag} to leave pending", 5)
    if in_view:
        end = end_mark(text, tag)
        await until(pilot, lambda: end in on_screen(app), f"{tag} in view", 5)


async def test_own_messages_of_1000_to_16000_characters_leave_pending_when_acked(
    slow_link: str, kit: Kit
) -> None:
    app = kit.app("alice", slow_link)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        recorder = acks(app)
        await say(pilot, app, "/create one")
        await until(pilot, lambda: app.chat.current == "one", "in #one")
        for n in SIZES:
            text = long_text(n, f"one-{n}")
            assert len(text) == n
            await send_and_see_acked(pilot, app, recorder, text, f"one-{n}")
        await send_and_see_acked(pilot, app, recorder, "short <one-short-end>", "one-short")
        assert app.client.pending() == []


async def test_messages_sent_while_a_room_loads_leave_pending_when_acked(
    slow_link: str, kit: Kit
) -> None:
    """A room opened while another is scrolled down (by a long message) loads
    its history over the slow link; what is sent meanwhile, and after, leaves
    pending as it is acked."""
    app = kit.app("alice", slow_link)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        recorder = acks(app)
        await say(pilot, app, "/create one")
        await until(pilot, lambda: app.chat.current == "one", "in #one")
        text = long_text(3_000, "one")
        await send_and_see_acked(pilot, app, recorder, text, "one", in_view=False)
        await say(pilot, app, "/create two")
        await until(pilot, lambda: app.chat.current == "two", "in #two")
        await send_and_see_acked(pilot, app, recorder, long_text(1_000, "two"), "two")
        await send_and_see_acked(pilot, app, recorder, "short <two-short-end>", "two-short")
        await say(pilot, app, "/join one")
        one_end = end_mark(text, "one")
        await until(pilot, lambda: one_end in on_screen(app), "#one at its newest", 5)
        assert app.client.pending() == []


async def test_the_view_stays_with_the_newest_message_while_you_type(
    slow_link: str, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", slow_link)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        recorder = acks(app)
        bob, _ = await clients.make("bob", slow_link)
        await bob.create_room("general", ["alice"])
        await until(pilot, lambda: app.chat.current == "general", "alice in #general")
        for i in range(3):
            await bob.send("general", long_text(1_500, f"bob-{i}"))
        bob_end = end_mark(long_text(1_500, "bob-2"), "bob-2")
        await until(pilot, lambda: bob_end in on_screen(app), "bob's messages", 10)

        composer = app.chat.query_one(Composer)
        draft = long_text(2_000, "draft")
        draft_end = end_mark(draft, "draft")
        composer.text = draft  # the input line grows to its full height
        composer.move_cursor(composer.document.end)
        await until(pilot, lambda: composer.size.height > 2, "a taller input line")
        await bob.send("general", "while you type <bob-typed-end>")
        await until(pilot, lambda: "<bob-typed-end>" in shown(app), "bob's message arrives")
        await until(pilot, lambda: "<bob-typed-end>" in on_screen(app), "bob's message in view", 5)
        before = len(recorder.of(ev.SendAcked))
        await pilot.press("enter")
        await recorder.until(lambda: len(recorder.of(ev.SendAcked)) > before)
        await until(
            pilot,
            lambda: "pending" not in shown(app) and draft_end in on_screen(app),
            "the draft sent, acked and in view",
            5,
        )
        assert at_bottom(app)


async def test_a_room_opens_at_its_newest_message(
    slow_link: str, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", slow_link)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        recorder = acks(app)
        await say(pilot, app, "/create notes")
        await until(pilot, lambda: app.chat.current == "notes", "in #notes")
        note = long_text(2_500, "note")
        await send_and_see_acked(pilot, app, recorder, note, "note", in_view=False)
        note_end = end_mark(note, "note")

        bob, _ = await clients.make("bob", slow_link)
        await bob.create_room("long", ["alice"])
        rng = random.Random(77)
        texts = [long_text(rng.randint(1_200, 3_000), f"m{i}") for i in range(77)]
        for text in texts:
            bob.queue("long", text)
        m76_end = end_mark(texts[76], "m76")
        await until(pilot, lambda: bob.pending() == [], "bob's 77 messages acked", 60)
        await until(
            pilot,
            lambda: len(app.client.cache.messages("long", limit=100)) == 77,
            "alice has them",
            30,
        )

        def listed() -> list[str]:
            return [r.room for r in app.chat.query_one(RoomList).rows]

        # The room list is redrawn from the cache on its own turn: the room
        # may be cached a moment before it is listed.
        await until(pilot, lambda: "long" in listed(), "#long listed", 10)
        rooms = listed()
        step = "ctrl+n" if rooms.index("long") > rooms.index("notes") else "ctrl+b"
        back = "ctrl+b" if step == "ctrl+n" else "ctrl+n"
        for _ in range(3):  # open it, go back to #notes, open it again
            await pilot.press(step)
            await until(pilot, lambda: app.chat.current == "long", "in #long")
            await until(pilot, lambda: m76_end in on_screen(app), "#long at its newest", 5)
            assert at_bottom(app)
            await pilot.pause(0.5)  # and it stays there
            assert m76_end in on_screen(app) and at_bottom(app)
            await pilot.press(back)
            await until(pilot, lambda: app.chat.current == "notes", "in #notes")
            await until(pilot, lambda: note_end in on_screen(app), "#notes at its newest", 5)


def test_an_ack_ends_pending_once_whatever_comes_first() -> None:
    """The ack places the message by its seq; the message itself (by push,
    sync or the ack's own report) does the same; together, it is shown once."""
    for order in (("ack", "message"), ("message", "ack")):
        log = RoomLog("den", "alice", loaded=True)
        log.add_message(CachedMessage("den", 1, 1_000, "bob", "b1", 1_000, "hi", None))
        log.add_pending("a2", "mine", 2_000)
        log.add_pending("a3", "next", 2_500)
        for step in order:
            if step == "ack":
                assert log.acked("a2", 2, 3_000, "alice") is (order[0] == "ack")
            else:
                log.add_message(CachedMessage("den", 2, 3_000, "alice", "a2", 2_000, "mine", None))
        kinds = [(e.kind, e.txn, e.seq) for e in log.ordered()]
        assert kinds == [("message", "b1", 1), ("message", "a2", 2), ("pending", "a3", 0)]
    assert log.acked("nope", 9, 0, "alice") is False


def test_a_member_reusing_another_senders_txn_touches_nothing_of_theirs() -> None:
    """A member learns others' txn ids (peer digests): a message of theirs
    with our pending txn, or with another member's, must not end or hide
    ours or that member's pending entry, nor take an ack or a failure."""
    log = RoomLog("den", "alice", loaded=True)
    log.add_pending("a1", "mine", 1_000)  # ours
    log.add_pending("b1", "bob's, peer to peer", 1_500, sender="bob")
    log.add_pending("b1", "mallory's copy of bob's txn", 1_600, sender="mallory")
    log.add_message(CachedMessage("den", 1, 2_000, "mallory", "a1", 2_000, "not yours", None))
    log.add_message(CachedMessage("den", 2, 2_100, "mallory", "b1", 2_100, "nor bob's", None))
    pending = {(e.sender, e.txn, e.text) for e in log.entries if e.kind == "pending"}
    assert pending == {("", "a1", "mine"), ("bob", "b1", "bob's, peer to peer")}
    log.fail("a1", "refused")  # our failure finds our entry
    assert [e.error for e in log.entries if e.kind == "pending" and e.txn == "a1"] == ["refused"]
    assert log.acked("b1", 3, 3_000, "alice") is False  # not ours to ack
    assert log.acked("a1", 3, 3_000, "alice") is True
    log.add_message(CachedMessage("den", 4, 3_100, "bob", "b1", 1_500, "bob's", None))
    assert [e.txn for e in log.entries if e.kind == "pending"] == []


def test_a_message_opened_later_takes_the_place_of_its_unreadable_entry() -> None:
    """The engine opens a message it could not open before (its key came
    later) and tells it again at the same seq: it replaces the entry that
    said it could not be read, once; an entry that was readable is never
    replaced, nor made unreadable."""
    log = RoomLog("den", "alice", loaded=True)
    log.add_message(CachedMessage("den", 1, 1_000, "bob", "b1", None, None, "no key (M2)"))
    log.add_message(CachedMessage("den", 2, 1_100, "bob", "b2", 1_100, "second", None))
    assert log.add_message(CachedMessage("den", 1, 1_000, "bob", "b1", 900, "first", None))
    assert not log.add_message(CachedMessage("den", 1, 1_000, "bob", "b1", 900, "first", None))
    assert not log.add_message(CachedMessage("den", 2, 1_100, "eve", "e1", 0, "swapped", None))
    assert not log.add_message(CachedMessage("den", 2, 1_100, "bob", "b2", None, None, "bad"))
    assert [(e.seq, e.text, e.error) for e in log.ordered()] == [
        (1, "first", None),
        (2, "second", None),
    ]
