"""Textual messages that carry the engine's events and the widgets' requests."""

from __future__ import annotations

from textual.message import Message

from curvechat.client import events as ev


class EngineEvent(Message):
    """One event from `ChatClient.subscribe`, delivered on the app's loop."""

    def __init__(self, event: ev.Event) -> None:
        super().__init__()
        self.event = event


class LineSubmitted(Message):
    """The composer's text (a message or a slash command) after Enter."""

    def __init__(self, text: str, room: str = "") -> None:
        super().__init__()
        self.text = text
        self.room = room
        """The room on screen when Enter was pressed (the line was typed for it)."""


class RoomChosen(Message):
    """The user picked a room in the rooms list."""

    def __init__(self, room: str) -> None:
        super().__init__()
        self.room = room


class OlderWanted(Message):
    """The timeline was scrolled to its top and has older history to load."""


class FollowingAgain(Message):
    """The timeline was scrolled back to its bottom: it follows the newest
    message again (what came in meanwhile may not be drawn yet)."""


class StoppedFollowing(Message):
    """The user scrolled the timeline up: it no longer follows the newest
    message (what comes in is drawn when it follows again)."""
