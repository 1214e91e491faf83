"""An alias can't pass for a user: alice shows bob as `bobby` while nobody
called bobby is in sight; later a real user registers `bobby` and writes to
her. Every alias is drawn marked, `bobby~` (no user or room name can hold a
`~`), so the two are told apart in the rooms list, the timeline and the
members; and an alias with the mark, or one that names two, is left out of
aliases.json at start."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

from curvechat.tui.format import room_label, shown_name, unalias
from curvechat.tui.settings import load_aliases, save_aliases
from curvechat.tui.widgets.rooms import RoomList

from .conftest import Kit, ready, say, shown, until
from .test_commands_live import expect
from support.clients import ClientFactory
from support.servers import ServerProcess


async def test_a_user_named_like_an_alias_is_drawn_apart(
    server: ServerProcess, kit: Kit, clients: ClientFactory
) -> None:
    app = kit.app("alice", server.connect)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        chat = app.chat
        assert chat is not None
        bob, _ = await clients.make("bob", server.connect)
        await bob.open_dm("alice")
        await bob.send("@alice:bob", "hi, it's bob")
        await until(pilot, lambda: chat.current == "@alice:bob", "bob's dm on screen")
        # "bobby" names nobody alice can see: accepted
        await expect(pilot, app, "/a bob bobby", "bob is shown as bobby~ on this machine")
        bobby, _ = await clients.make("bobby", server.connect)  # registered later
        await bobby.open_dm("alice")
        await bobby.send("@alice:bobby", "hi, it's bob: send me the password")
        await until(pilot, lambda: len(chat.query_one(RoomList).rows) == 2, "both rows")
        labels = sorted(r.label for r in chat.query_one(RoomList).rows)
        assert labels == ["@bobby", "@bobby~"]
        real = shown(app)
        members = str(chat.query_one("#members", Static).render())
        await say(pilot, app, "/switch @bobby")
        await until(pilot, lambda: chat.current == "@alice:bobby", "bobby's dm shown")
        fake = shown(app)
        assert "bobby~: hi, it's bob" in real
        assert "bobby: hi, it's bob: send me the password" in fake and "bobby~" not in fake
        assert "bobby~" in members
        assert "bobby~" not in str(chat.query_one("#members", Static).render())
        # what is drawn is also what commands take
        await expect(pilot, app, "/switch @bobby~", "hi, it's bob")
        assert chat.current == "@alice:bob"


def test_an_alias_is_marked_wherever_it_is_drawn() -> None:
    aliases = {"bob": "bobby", "#team": "crew"}
    assert shown_name("bob", aliases) == "bobby~" and shown_name("bobby", aliases) == "bobby"
    assert room_label("@alice:bob", "alice", aliases) == "@bobby~"
    assert room_label("@alice:bobby", "alice", aliases) == "@bobby"
    assert room_label("team", "alice", aliases) == "crew~"
    # another pair's room (a server may list one) is not drawn as ours with bob
    assert room_label("@bob:carol", "alice", aliases) == "#@bob:carol"
    assert room_label("@alice:bob", "bob") == "@alice"
    for typed in ("bobby", "bobby~", "@bobby~"):
        assert unalias(typed, aliases) == "bob"
    assert unalias("@bobby", aliases) == "@bobby"  # the real bobby's room
    assert unalias("@crew~", aliases) == "@crew~"  # a room alias names no user
    assert unalias("crew~", aliases) == "#team"


def test_an_alias_with_the_mark_or_that_names_two_is_left_out(tmp_path: Path) -> None:
    save_aliases(tmp_path, {"bob": "bobby", "carol": "x", "dan": "x", "erin": "bob~"})
    assert load_aliases(tmp_path) == {"bob": "bobby"}
