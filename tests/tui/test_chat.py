"""The chat app against a real server: two app instances talking, unread
counts and mentions, older history, the reconnect banner, pending messages."""

from __future__ import annotations

from curvechat.client.state import ConnState
from curvechat.tui.widgets.rooms import RoomList
from curvechat.tui.widgets.status import Banner, StatusLine

from .conftest import FixedBackoff, Kit, ready, say, shown, until
from support.clients import ClientFactory
from support.servers import ServerProcess


def rooms_line(app, room: str) -> str:  # type: ignore[no-untyped-def]
    return str(app.chat.query_one(RoomList).line(room))


async def test_two_apps_send_receive_unread_and_mentions(server: ServerProcess, kit: Kit) -> None:
    alice = kit.app("alice", server.connect)
    bob = kit.app("bob", server.connect)
    async with alice.run_test(size=(100, 30)) as pa, bob.run_test(size=(100, 30)) as pb:
        await ready(pa, alice)
        await ready(pb, bob)
        await say(pa, alice, "/create general bob")
        await until(pa, lambda: alice.chat.current == "general", "alice in #general")
        await say(pa, alice, "/create random bob")
        await until(pa, lambda: alice.chat.current == "random", "alice in #random")
        await until(pb, lambda: "#general" in rooms_line(bob, "general"), "bob sees #general")
        await until(pb, lambda: rooms_line(bob, "random"), "bob sees #random")
        await say(pb, bob, "/join #general")
        assert bob.chat.current == "general"

        await say(pa, alice, "/join general")
        await say(pa, alice, "hello bob")
        await until(pb, lambda: "alice: hello bob" in shown(bob), "bob reads alice")
        await until(pa, lambda: "◌ pending" not in shown(alice), "alice's message acked")
        assert "»alice: hello bob" in shown(alice)  # my own messages are marked
        await say(pb, bob, "hi alice\nsecond line")
        await until(pa, lambda: "bob: hi alice" in shown(alice), "alice reads bob")
        assert "second line" in shown(alice)

        # bob looks at #general; alice writes twice in #random, once naming him
        await say(pa, alice, "/join #random")
        await say(pa, alice, "anyone?")
        await until(pb, lambda: rooms_line(bob, "random").endswith("1"), "unread count 1")
        await say(pa, alice, "@bob are you there")
        await until(pb, lambda: rooms_line(bob, "random").endswith("2 @"), "mention marker")
        assert rooms_line(bob, "general") == "▸ #general"
        await say(pb, bob, "/switch random")
        await until(pb, lambda: "alice: @bob are you there" in shown(bob), "history of #random")
        assert rooms_line(bob, "random") == "▸ #random"
        await say(pa, alice, "/quit")
    assert alice.return_code == 0
    assert alice.client.status.state is ConnState.CLOSED  # /quit closed the engine


async def test_loading_older_history_page_by_page(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect, page_size=20)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        bob, _ = await clients.make("bob", server.connect)
        await bob.create_room("log", ["alice"])
        for i in range(45):
            await bob.send("log", f"line {i:02d}", wait=False)
        await until(pilot, lambda: bob.pending() == [], "bob's 45 messages acked", 30)
        await say(pilot, app, "/join log")
        await until(pilot, lambda: "bob: line 44" in shown(app), "the newest page")
        # a fresh view of the room starts from the last page only
        app.chat.logs.pop("log")
        app.chat.switch_room("log")
        await until(pilot, lambda: "line 44" in shown(app), "the newest page")
        assert "line 24" not in shown(app) and "line 25" in shown(app)
        for _ in range(30):
            if "line 00" in shown(app):
                break
            await pilot.press("pageup")
            await pilot.pause(0.05)
        assert "line 00" in shown(app) and "line 24" in shown(app)
        assert app.chat.logs["log"].has_older is False
        text = shown(app)
        assert text.index("line 00") < text.index("line 24") < text.index("line 44")


async def test_reconnect_banner_caught_up_and_pending_send(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect, client_options={"backoff": FixedBackoff(60.0)})
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        bob, bob_events = await clients.make("bob", server.connect)
        await bob.create_room("general", ["alice"])
        await until(pilot, lambda: app.chat.current == "general", "alice in #general")
        status = app.chat.query_one(StatusLine)
        banner = app.chat.query_one(Banner)
        assert "alice · tcp://127.0.0.1:" in str(status.render())
        assert " · live" in str(status.render())

        server.kill()
        await until(
            pilot,
            lambda: app.client.status.state is ConnState.RECONNECTING and banner.display,
            "the lost-connection banner",
        )
        text = str(banner.render())
        assert "connection lost" in text and "reconnect attempt 1 in" in text
        assert "reconnecting" in str(status.render())

        await say(pilot, app, "sent while offline")
        await until(pilot, lambda: "sent while offline  ◌ pending" in shown(app), "pending")

        server.start()
        assert await bob.wait_ready(20)
        for i in range(3):
            await bob.send("general", f"missed {i}")
        assert app.client.status.state is not ConnState.LIVE  # still waiting out its back-off
        await pilot.press("ctrl+r")
        await until(pilot, lambda: "caught up 3 messages" in str(banner.render()), "caught up")
        assert "reconnected" in str(banner.render())
        await until(pilot, lambda: "◌ pending" not in shown(app), "the pending message acked")
        assert "»alice: sent while offline" in shown(app)
        assert "bob: missed 2" in shown(app)
        await bob_events.until(
            lambda: any(m.text == "sent while offline" for m in bob.cache.messages("general"))
        )


async def test_a_problem_of_another_room_is_in_its_timeline_when_the_user_goes_there(
    server: ServerProcess, kit: Kit
) -> None:
    """What the engine tells about a room not on screen (e.g. a server that
    withheld some of its messages) was dropped: the user never read it."""
    from curvechat.client import events as ev
    from curvechat.tui.messages import EngineEvent

    app = kit.app("alice", server.connect)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        await say(pilot, app, "/create first")
        await say(pilot, app, "/create second")
        await until(pilot, lambda: app.chat.current == "second", "alice in #second")
        said = "the server did not hand out a message of this room (seq 3) when asked"
        app.chat.post_message(EngineEvent(ev.Problem("first", said)))
        await pilot.pause(0.1)
        assert said not in shown(app)
        await say(pilot, app, "/switch first")
        await until(pilot, lambda: said in shown(app), "the problem in #first")
