"""The centre of the chat screen: one room's history as text.

A `RoomLog` (`tui/roomlog.py`) is the model; `render_log` (`tui/logview.py`)
turns it into a `LogView` of blocks that wrap at the width they are drawn
at; the `Timeline` widget draws the rows in view only and asks for older
pages when scrolled to the top. A message that failed to decrypt or verify
is shown with a marker, never hidden; what makes each text safe to draw is
`logview.py`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from textual import events
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from curvechat.tui.logview import BlockMemo, LogView, render_log
from curvechat.tui.messages import FollowingAgain, OlderWanted, StoppedFollowing
from curvechat.tui.roomlog import RoomLog

Anchor = Literal["follow", "newest", "keep"]


class Timeline(ScrollView):
    """Shows a `RoomLog`, following its newest message; scrolling up to the
    top asks for the previous page.

    It draws only the rows on screen (Textual's line API, `render_line`):
    a log of 2,000 messages of 1,600 escapes each (48,002 rows) took 2.2 s
    a redraw when the whole log was one renderable, for every message that
    came in and every change of the view's size (`bench/tui_redraw.py`).

    Following is Textual's anchor: while the view follows, every layout
    (a message added, a long message wrapped, the input line growing or
    shrinking, a resize) keeps the bottom in view, whatever the order in
    which they happen. Scrolling up stops following; scrolling back to the
    bottom, opening a room and sending a message follow again."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.log_model: RoomLog | None = None
        self.loading_older = False
        self.following = True
        """The view sticks to the newest message (the user has not scrolled up)."""
        self.behind = False
        """Messages came in that are not drawn yet: the user reads older ones."""
        self._me = ""
        self._aliases: Mapping[str, str] = {}
        self._memo = BlockMemo()
        self._view = LogView([])
        self._measure_due = False

    def on_mount(self) -> None:
        self.follow()

    def on_resize(self, _event: events.Resize) -> None:
        self._measure()

    def _measure(self) -> None:
        """The log's rows at the view's width, as its virtual size (nothing
        before the view has a width: measured again when it gets one). A
        log taller than the view will show the scroll bar: it is wrapped at
        the width left beside it at once, not wrapped a second time when
        the bar shows."""
        self._measure_due = False
        region, console, view = self.scrollable_content_region, self.app.console, self._view
        width, bar = region.width, self.styles.scrollbar_size_vertical
        if width > 0:
            bar_to_come = not self.show_vertical_scrollbar and width > bar
            # Each entry is a row at least: more of them than the view has
            # rows will show the bar.
            if bar_to_come and len(view.items) > region.height:
                width -= bar
            height = view.height(width, console)
            if bar_to_come and width == region.width and height > region.height:
                width -= bar
                height = view.height(width, console)
            self.virtual_size = Size(width, height)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if 0 < width != self.virtual_size.width and not self._measure_due:
            # The scroll bar came or went (no resize is sent for that): the
            # rows wrap at the new width, and the log's height follows.
            self._measure_due = True
            self.call_after_refresh(self._measure)
        return self.drawn_row(scroll_y + y).apply_offsets(scroll_x, scroll_y + y)

    def drawn_row(self, row: int) -> Strip:
        """Row `row` of the whole log as the view draws it (blank past the
        end): wrapped at the width it was measured at, never wrapped again
        here (a frame drawn while the scroll bar comes or goes is cropped or
        padded, and `_measure` follows)."""
        width, style = self.scrollable_content_region.width, self.rich_style
        segments = self._view.row(row, self.virtual_size.width or width, self.app.console)
        if not segments:
            return Strip.blank(width, style)
        return Strip(segments).crop_extend(0, width, style).apply_style(style)

    def plain(self) -> str:
        """What the timeline shows, as plain text: one row for each line of
        an entry (not wrapped at the widget's width)."""
        if self.log_model is None:
            return ""
        view = render_log(self.log_model, self._me, self._aliases)
        return "\n".join(row.plain for row in view.plain_rows())

    def show(
        self,
        log: RoomLog,
        me: str,
        aliases: Mapping[str, str],
        *,
        anchor: Anchor = "follow",
    ) -> None:
        """Render `log`. anchor "follow": stay with the newest message if the
        view follows it, else stay put; "newest": go to the newest message
        and follow it (also whenever `log` is another room's); "keep": keep
        the view on what it showed (an older page was added above)."""
        switched = self.log_model is not log
        before_height = self.virtual_size.height
        before_y = self.scroll_y
        self.log_model = log
        self._me, self._aliases = me, aliases
        self._view = render_log(log, me, aliases, self._memo)
        self._measure()
        self.behind = False
        self.border_subtitle = ""
        if anchor == "newest" or switched:
            self.follow()
        elif anchor == "keep":

            def restore() -> None:
                grown = self.virtual_size.height - before_height
                self.scroll_to(y=before_y + max(grown, 0), animate=False, immediate=True)

            self.call_after_refresh(restore)

    def mark_behind(self) -> None:
        """Messages came in while the user reads older ones: say so, and draw
        them when the view is back at the bottom (`FollowingAgain`)."""
        self.behind = True
        self.border_subtitle = "new messages below ↓"

    def follow(self) -> None:
        """Go to the newest message and stay with it."""
        was = self.following
        self.following = True
        self.anchor()
        if not was:
            self._caught_up()

    def _caught_up(self) -> None:
        """The view follows again: what came in meanwhile, drawn or not, or
        left to the cache (a held log), is the screen's to bring in."""
        log = self.log_model
        if self.behind or (log is not None and log.held):
            self.post_message(FollowingAgain())

    def release_anchor(self) -> None:
        # Textual calls this when the user scrolls (keys, wheel, scrollbar).
        super().release_anchor()
        if self.following:
            self.post_message(StoppedFollowing())
        self.following = False

    def want_older(self) -> None:
        log = self.log_model
        if log is not None and log.loaded and log.has_older and not self.loading_older:
            self.post_message(OlderWanted())

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._check_anchor()  # back at the bottom: anchored again (a ScrollView does not)
        if not self.following and self.is_anchored and new_value >= self.max_scroll_y:
            self.following = True
            self._caught_up()
        # Only the user's scrolling asks for older messages: not a view that
        # reached the top because another room's shorter log replaced it.
        if new_value <= 0 < old_value and not self.following:
            self.want_older()

    def page_up(self) -> None:
        if self.scroll_y <= 0:
            self.want_older()
        else:
            self.scroll_page_up(animate=False)
