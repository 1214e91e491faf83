"""Every slash command against a real server, with its error cases: each
mistake is one line in the timeline, never a traceback."""

from __future__ import annotations

import contextlib

from textual.widgets import Static

from curvechat.client.errors import KeyChanged
from curvechat.crypto.identity import Identity, fingerprint
from curvechat.tui.app import CurvechatApp
from curvechat.tui.messages import LineSubmitted
from curvechat.tui.screens.keychange import KeyChangeScreen
from curvechat.tui.settings import load_aliases
from curvechat.tui.widgets.composer import Composer
from curvechat.tui.widgets.status import StatusLine

from .conftest import Kit, ready, say, shown, until
from support.clients import ClientFactory
from support.servers import ServerProcess


async def expect(pilot, app: CurvechatApp, line: str, *wanted: str, error: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Run `line`; wait until each of `wanted` is shown (as an error line
    when `error`)."""
    await say(pilot, app, line)
    for text in wanted:
        mark = "!! " if error else ""
        await until(pilot, lambda t=text, mk=mark: f"{mk}{t}" in shown(app), f"{line!r} → {text!r}")
    assert "Traceback" not in shown(app)


async def test_slash_commands_and_their_errors(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        bob, bob_events = await clients.make("bob", server.connect)
        await clients.make("carol", server.connect)
        chat = app.chat
        assert chat is not None

        await expect(pilot, app, "/help", "/create ROOM [USER ...]", "/whois USER")
        await expect(pilot, app, "/help switch", "/switch ROOM — open a room you are in")
        await expect(pilot, app, "/help nope", "no command /nope", error=True)
        await expect(pilot, app, "/frob", "unknown command /frob", error=True)
        await expect(pilot, app, "/rooms", "no rooms yet")
        await expect(pilot, app, "/members", "/members: no room selected", error=True)
        await expect(pilot, app, "/leave", "/leave: no room selected", error=True)
        await expect(pilot, app, "/invite bob", "/invite: no room selected", error=True)
        await expect(pilot, app, "just text", "no room selected", error=True)

        await expect(pilot, app, "/create", "/create: missing ROOM", error=True)
        await expect(
            pilot, app, "/create Bad!Name", "Bad!Name can't be a room name: use a-z", error=True
        )
        await expect(pilot, app, "/create lost ghost", "There is no user called ghost.", error=True)
        await expect(pilot, app, "/create team bob", "created #team with alice, bob")
        assert chat.current == "team"
        await expect(
            pilot, app, "/create team", "A room called team already exists; pick", error=True
        )
        assert "room_exists" not in shown(app)  # the code is in the log, not on the screen

        await expect(pilot, app, "/invite", "/invite: missing USER", error=True)
        await expect(pilot, app, "/invite ghost", "There is no user called ghost.", error=True)
        await expect(pilot, app, "/invite carol", "added carol to #team")
        await expect(pilot, app, "/invite carol", "carol is already a member of #team.", error=True)
        await expect(
            pilot,
            app,
            "/members",
            "members of #team: alice (admin), bob (unverified), carol (unverified)",
        )
        await expect(pilot, app, "/remove alice", "/remove: to remove yourself, /leave", error=True)
        await expect(pilot, app, "/remove carol", "removed carol from #team; the room key rotated")
        await expect(pilot, app, "/remove carol", "carol is not a member of #team.", error=True)
        await expect(pilot, app, "/rooms", "#team: 2 members")

        await expect(pilot, app, "/dm", "/dm: missing USER", error=True)
        await expect(pilot, app, "/dm alice", "/dm: that is you", error=True)
        await expect(pilot, app, "/dm ghost hi", "There is no user called ghost.", error=True)
        await say(pilot, app, "/dm bob psst")
        await until(pilot, lambda: chat.current == "@alice:bob", "the DM room")
        await bob_events.until(
            lambda: [m.text for m in bob.cache.messages("@alice:bob")] == ["psst"]
        )
        await expect(pilot, app, "/switch #team", "created #team")
        assert chat.current == "team"
        await expect(pilot, app, "/join @bob", "»alice: psst")
        assert chat.current == "@alice:bob"
        await expect(pilot, app, "/switch nowhere", "/switch: you are not in nowhere", error=True)
        await expect(pilot, app, "/join", "/join: missing ROOM", error=True)
        await expect(pilot, app, "/join a b", "/join: too many arguments", error=True)

        await expect(pilot, app, "/whois", "/whois: missing USER", error=True)
        await expect(pilot, app, "/whois ghost", "There is no user called ghost.", error=True)
        await expect(pilot, app, "/whois bob", "bob: fingerprint ", "safety number with bob: ")
        await expect(pilot, app, "/keys", "your fingerprint (alice): ", "no pending key changes")
        await expect(pilot, app, "/keys bob", "safety number with bob: ")
        await expect(pilot, app, "/keys zed", "No key is known for zed; /whois zed", error=True)
        await expect(pilot, app, "/keys accept", "/keys accept: missing USER", error=True)
        await expect(
            pilot, app, "/keys accept bob", "/keys: no key change is pending for bob", error=True
        )
        await expect(pilot, app, "/keys a b c", "/keys: too many arguments", error=True)

        await expect(pilot, app, "/nick", "/nick: missing USER", error=True)
        await expect(pilot, app, "/nick bob Bobby", "bob is shown as Bobby~ on this machine")
        assert load_aliases(kit.root / "alice") == {"bob": "Bobby"}
        await bob.send("@alice:bob", "it is me")
        await until(pilot, lambda: "Bobby~: it is me" in shown(app), "the alias in the timeline")
        await expect(pilot, app, "/nick bob", "bob is shown as bob again")
        await expect(pilot, app, "/nick bob", "/nick: bob has no alias", error=True)

        await expect(pilot, app, "/switch team", "created #team")
        await expect(pilot, app, "/leave now", "/leave: too many arguments", error=True)
        await say(pilot, app, "/leave")
        await until(pilot, lambda: chat.current == "@alice:bob", "back in the DM after /leave")
        assert "team" not in [r.room for r in app.client.rooms()]
        await expect(pilot, app, "/switch team", "/switch: you are not in team", error=True)


async def test_removed_while_typing_the_line_is_not_sent_to_the_next_room(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        bob, _ = await clients.make("bob", server.connect)
        carol, _ = await clients.make("carol", server.connect)
        await carol.create_room("aaa", ["alice"])
        await bob.create_room("secret", ["alice"])
        await until(pilot, lambda: "secret" in app.chat.room_ids(), "in #secret")
        await say(pilot, app, "/switch secret")
        await until(pilot, lambda: app.chat.current == "secret", "on #secret")
        composer = app.chat.query_one(Composer)
        composer.text = "the #secret password is hunter2"
        await bob.remove("secret", "alice")
        await until(pilot, lambda: app.chat.current == "aaa", "moved to #aaa")
        await pilot.press("enter")
        await until(pilot, lambda: "you were removed from #secret" in shown(app), "told")
        assert "the line you were typing was not sent" in shown(app)
        await pilot.pause(0.5)
        assert [m.text for m in carol.cache.messages("aaa")] == []
        assert app.client.pending() == []
        assert composer.sent[-1] == "the #secret password is hunter2"  # Up brings it back
        # An Enter handled after the switch, though pressed before it: not sent either.
        app.chat.post_message(LineSubmitted("also for #secret", "secret"))
        await until(pilot, lambda: "the line was typed in another room" in shown(app), "told")
        await pilot.pause(0.3)
        assert [m.text for m in carol.cache.messages("aaa")] == []
        assert app.client.pending() == []


async def _bob_offers_a_new_key(pilot, app, server, clients) -> bytes | None:  # type: ignore[no-untyped-def]
    """Alice in #general with bob, the key she pinned for him not the one the
    directory now says, and the warning on screen; returns the real pin."""
    await ready(pilot, app)
    bob, _ = await clients.make("bob", server.connect)
    await bob.create_room("general", ["alice"])
    await until(pilot, lambda: app.chat.current == "general", "alice in #general")
    real: bytes | None = app.client.cache.pin("bob")
    app.client.cache.set_pin("bob", Identity.generate("bob").sign_pub)
    await say(pilot, app, "/whois bob")
    await until(pilot, lambda: isinstance(app.screen, KeyChangeScreen), "the warning")
    return real


async def test_the_enter_that_ends_a_line_does_not_accept_a_changed_key(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(80, 24)) as pilot:
        real = await _bob_offers_a_new_key(pilot, app, server, clients)
        await pilot.press("enter")  # the end of a line typed as the dialog opened
        await until(pilot, lambda: "key change of bob not accepted" in shown(app), "dismissed")
        assert app.client.cache.pin("bob") != real


async def test_key_change_warning_and_accept(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(80, 24)) as pilot:
        real = await _bob_offers_a_new_key(pilot, app, server, clients)
        assert "THE IDENTITY KEY OF BOB HAS CHANGED" in str(
            app.screen.query_one("#keychange-title").render()
        )
        status = app.chat.query_one(StatusLine)
        assert "KEY CHANGED: bob" in str(status.render())
        await pilot.press("escape")
        await until(pilot, lambda: "key change of bob not accepted" in shown(app), "dismissed")
        assert "!! The identity key of bob changed; compare safety numbers" in shown(app)
        await say(pilot, app, "/keys bob")
        await until(pilot, lambda: "bob offers a NEW key" in shown(app), "/keys shows it")
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, KeyChangeScreen), "the warning again")
        await pilot.press("ctrl+a")
        await until(pilot, lambda: "accepted the new key of bob" in shown(app), "accepted")
        assert app.client.cache.pin("bob") == real
        assert "KEY CHANGED" not in str(status.render())


def dialog_text(app: CurvechatApp) -> str:
    assert isinstance(app.screen, KeyChangeScreen)
    return str(app.screen.query_one("#keychange-body", Static).render())


async def test_a_key_offered_while_the_warning_is_open_takes_its_place(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    """Another key offered while the warning shows one: the warning shows the
    new one, a notice says the offer changed, and accepting pins what is
    shown."""
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(100, 30)) as pilot:
        real = await _bob_offers_a_new_key(pilot, app, server, clients)
        assert real is not None and fingerprint(real) in dialog_text(app)
        dialog = app.screen
        other = Identity.generate("bob").sign_pub
        with contextlib.suppress(KeyChanged):  # as a directory answer would
            app.client.core.check_pin("bob", other, directory=True)
        await until(pilot, lambda: fingerprint(other) in dialog_text(app), "the new key shown")
        assert app.screen is dialog and fingerprint(real) not in dialog_text(app)
        assert "offered key changed while this warning was open" in dialog_text(app)
        assert "the key bob offers changed while the warning was open" in shown(app)
        await pilot.press("ctrl+a")
        await until(pilot, lambda: "accepted the new key of bob" in shown(app), "accepted")
        assert app.client.cache.pin("bob") == other


async def test_an_offer_changed_unseen_is_not_accepted(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    """The offer changes without the warning being told (another process of
    the home recorded it): Ctrl+A accepts nothing, says why, and the warning
    opens again with the key offered now."""
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(100, 30)) as pilot:
        real = await _bob_offers_a_new_key(pilot, app, server, clients)
        assert real is not None and fingerprint(real) in dialog_text(app)
        before = app.client.cache.pin("bob")
        other = Identity.generate("bob").sign_pub
        app.client.cache.record_key_change("bob", other)
        await pilot.press("ctrl+a")
        await until(
            pilot,
            lambda: (
                "!! The key bob offers changed since it was shown, so nothing was accepted"
                in shown(app)
            ),
            "refused",
        )
        assert app.client.cache.pin("bob") == before
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, KeyChangeScreen) and fingerprint(other) in dialog_text(app)
            ),
            "the warning again, with the new key",
        )
        assert "accepted the new key of bob" not in shown(app)


async def test_keys_accept_shows_the_key_and_asks(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    """`/keys accept USER` never accepts by itself: it shows the offered
    key's fingerprint and opens the warning, whose Ctrl+A accepts it."""
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(100, 30)) as pilot:
        real = await _bob_offers_a_new_key(pilot, app, server, clients)
        assert real is not None
        before = app.client.cache.pin("bob")
        await pilot.press("escape")
        await until(pilot, lambda: "key change of bob not accepted" in shown(app), "dismissed")
        await say(pilot, app, "/keys accept bob")
        await until(pilot, lambda: isinstance(app.screen, KeyChangeScreen), "the warning")
        assert f"bob offers the key {fingerprint(real)}" in shown(app)
        assert fingerprint(real) in dialog_text(app)
        assert app.client.cache.pin("bob") == before
        await pilot.press("ctrl+a")
        await until(pilot, lambda: "accepted the new key of bob" in shown(app), "accepted")
        assert app.client.cache.pin("bob") == real


async def test_member_names_as_typed_and_long_errors(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        await clients.make("bob", server.connect)
        await clients.make("carol", server.connect)
        await expect(
            pilot,
            app,
            "/create ok Bad!User",
            "/create: Bad!User is not a valid user name",
            error=True,
        )
        await expect(pilot, app, "/create ok3 alice @bob bob", "created #ok3 with alice, bob")
        assert "alice, alice" not in shown(app) and "bob, bob" not in shown(app)
        await expect(pilot, app, "/invite @carol", "added carol to #ok3")
        await expect(pilot, app, "/remove @carol", "removed carol from #ok3")
        await say(pilot, app, "/whois " + "x" * 100_000)
        await until(pilot, lambda: "…" in shown(app), "the error, cut short")
        assert max(len(line) for line in shown(app).splitlines()) < 1_000


async def test_contacts_command_and_the_refusal_a_non_contact_reads(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot, app)
        bob, _ = await clients.make("bob", server.connect)
        await clients.make("carol", server.connect)
        await bob.set_contacts(only=True, add=["carol"])

        await expect(pilot, app, "/contacts", "anyone may put you in a room; contacts (0): none")
        await expect(pilot, app, "/contacts frob", "/contacts: no action frob", error=True)
        await expect(pilot, app, "/contacts add", "/contacts add: missing USER", error=True)
        await expect(
            pilot, app, "/contacts only carol", "/contacts only: too many arguments", error=True
        )
        await expect(
            pilot, app, "/contacts add Bad!", "/contacts: Bad! is not a valid user name", error=True
        )
        await expect(
            pilot, app, "/contacts add ghost", "There is no user called ghost.", error=True
        )
        await expect(
            pilot, app, "/contacts add alice", "You can't be one of your own contacts.", error=True
        )
        await expect(pilot, app, "/contacts add @carol, bob", "contacts (2): bob, carol")
        await expect(
            pilot, app, "/contacts only", "only your contacts may put you in a room; contacts (2)"
        )
        await expect(
            pilot,
            app,
            "/create team bob",
            "You can't create team: only contacts of bob may put them in a room",
            error=True,
        )
        await expect(
            pilot,
            app,
            "/dm bob",
            "You can't write to bob: only contacts of bob may put them in a room",
            error=True,
        )
        assert "contacts_only" not in shown(app)  # the code is in the log
        await expect(pilot, app, "/contacts remove bob", "contacts (1): carol")
        await expect(pilot, app, "/contacts anyone", "anyone may put you in a room; contacts (1)")
        assert (await bob.contacts()).users == ["carol"]  # bob's own list, untouched
