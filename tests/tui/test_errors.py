"""Errors in the terminal client are one sentence in plain words; the code
and the details go to the log. Every code the engine can end a command with
has its sentence (`tui.errors`); a refused membership change and a message
over the text limit read as a person would say them."""

from __future__ import annotations

import logging

import pytest
from textual.widgets import TextArea

from curvechat.client.errors import NOT_READY_CODES
from curvechat.protocol.errors import ErrorCode
from curvechat.protocol.limits import MAX_TEXT_CHARS
from curvechat.tui.screens.reader import ReaderScreen

from .conftest import Kit, on_screen, ready, say, shown, until
from support.clients import ClientFactory
from support.servers import ServerProcess

CLIENT_CODES = ("not_connected", "timeout", "untrusted_log", "key_changed", "cache_write")
ACTIONS = ("create", "invite", "remove", "leave", "dm", "send", "history", "keys", "whois")
INTERNALS = ("Error", "[", "{", "}", "forbidden", "too_large", "index", "Traceback")


@pytest.mark.parametrize(
    "code", sorted({*(c.value for c in ErrorCode), *NOT_READY_CODES, *CLIENT_CODES})
)
def test_every_code_has_one_plain_sentence(code: str) -> None:
    from curvechat.tui import errors
    from curvechat.tui.errors import Attempt

    assert code in errors.BY_CODE, f"no sentence for {code}"
    for action in ACTIONS:
        for room in ("#team", "@bob"):
            text = errors.sentence(code, Attempt(action, "carol", room))
            assert text.endswith(".") and "\n" not in text, text
            assert text.count(". ") == 0, f"more than one sentence: {text!r}"
            assert not any(word in text for word in INTERNALS), text


def test_a_bound_of_rooms_is_said_with_the_refusals_own_words() -> None:
    """`too_large` from the node for a user in 5,000 rooms, or the client's
    own for a room of 500 members, is not a request too large nor a text
    too long (/dm): the sentence says which bound."""
    from curvechat.client.errors import NotReady, ServerRefused
    from curvechat.tui.errors import Attempt, explain

    node = ServerRefused("too_large", "bob is in 5,000 rooms, the most one user may be in")
    full = NotReady("r has 500 members, the most a room holds", "too_large")
    said = explain(node, Attempt("invite", "bob", "#r"))
    assert said == "You can't add bob to #r: bob is in 5,000 rooms, the most one user may be in."
    assert explain(full, Attempt("invite", "bob", "#r")).endswith("the most a room holds.")
    assert explain(node, Attempt("dm", "bob")).startswith("You can't write to bob: bob is in")
    assert explain(node, Attempt("create", "r")).startswith("You can't create r: bob is in")


def test_a_bug_is_a_sentence_and_a_traceback_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    from curvechat.tui import errors
    from curvechat.tui.errors import Attempt

    with caplog.at_level(logging.WARNING, logger="curvechat.tui"):
        try:
            {}["room"]
        except KeyError as exc:
            text = errors.explain(exc, Attempt("remove", "alice", "#team"))
    assert text == "That did not work; this looks like a bug; the details are in chat.log."
    assert "KeyError" in caplog.text and "Traceback" in caplog.text


async def test_refusals_read_as_sentences_with_the_code_in_the_log(
    server: ServerProcess, kit: Kit, clients: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="curvechat.tui")
    app = kit.app("bob", server.connect)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot, app)
        alice, _ = await clients.make("alice", server.connect)
        await clients.make("carol", server.connect)
        await alice.create_room("team", ["bob"])  # alice is the admin, bob is not
        await until(pilot, lambda: app.chat.current == "team", "bob in #team")

        await say(pilot, app, "/remove alice")
        wanted = "!! You can't remove alice: only admins can remove members."
        await until(pilot, lambda: wanted in shown(app), "the sentence")
        assert "!! You can't remove alice" in on_screen(app)
        await say(pilot, app, "/invite carol")
        wanted = "!! You can't add carol to #team: only admins can add members."
        await until(pilot, lambda: wanted in shown(app), "the sentence")
        assert "!! You can't add carol" in on_screen(app)
        for word in ("MembershipError", "forbidden", "index", "failed:", "[", "Traceback"):
            assert word not in shown(app)
        assert "remove failed [forbidden]: forbidden: remove of 'alice' by 'bob'" in caplog.text
        assert "invite failed [forbidden]" in caplog.text
        assert "alice" in alice.members("team") and "carol" not in alice.members("team")


async def test_the_text_limit_is_stated_and_checked_before_sealing(
    server: ServerProcess, kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    """16,384 four-byte emoji (over the limit) are refused before anything is
    queued or sealed, with the limit in characters and bytes; 16,000 of
    them (the limit) are sent."""
    caplog.set_level(logging.WARNING, logger="curvechat.tui")
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "/create notes")
        await until(pilot, lambda: app.chat.current == "notes", "in #notes")
        limit = "16,000 characters (at most 64,000 bytes in UTF-8)"
        for text in ("😀" * 16_384, "a" * (MAX_TEXT_CHARS + 1)):
            await say(pilot, app, text)
            wanted = f"!! Your message is too long: the limit is {limit}."
            await until(pilot, lambda w=wanted: w in shown(app), "the limit, as a sentence")
            assert "!! Your message is too long" in on_screen(app)
            assert app.client.pending() == [] and "pending" not in shown(app)
            assert "not sent" not in shown(app) and "encrypted bytes" not in shown(app)
        assert "send failed [too_large]: too_large: message of 16,384 characters" in caplog.text

        await say(pilot, app, "😀" * MAX_TEXT_CHARS + " <last-end>")
        assert "too long" in shown(app).splitlines()[-1]  # one character over
        await say(pilot, app, "😀" * (MAX_TEXT_CHARS - 11) + " <last-end>")
        await until(pilot, lambda: app.client.pending() == [], "acked")
        folded = "⋯ folded: 1 line, 16,000 characters · /more reads it whole"
        await until(pilot, lambda: folded in on_screen(app), "in view, folded")
        assert "pending" not in shown(app) and "not sent" not in shown(app)
        await say(pilot, app, "/more")
        await until(pilot, lambda: isinstance(app.screen, ReaderScreen), "the reader")
        assert app.screen.query_one(TextArea).text.endswith("😀 <last-end>")
        (message,) = app.client.cache.messages("notes", limit=5)
        assert len(message.text or "") == MAX_TEXT_CHARS
        assert len((message.text or "").encode()) == 4 * (MAX_TEXT_CHARS - 11) + 11
