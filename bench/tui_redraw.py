"""What the terminal client's timeline costs to draw, with hostile texts:
the `Timeline` widget in a headless Textual app (100x40), the first time a
room is shown, again with nothing changed, after one new message, and
after the view is resized, in ms (from `show`, or the resize, until the
screen is drawn).

    python -m bench.tui_redraw

Each of these is what a keystroke's or a message's redraw costs with such a
room on screen. The widget draws only the rows on screen (Textual's line
API); a block of a message is wrapped once for each width, so the first
time and a resize still wrap every message of the room (at most
`KEPT_MESSAGES` of them).
"""

from __future__ import annotations

import asyncio
import time

from textual.app import App, ComposeResult

from curvechat.client.cache import CachedMessage
from curvechat.tui.roomlog import RoomLog
from curvechat.tui.widgets.timeline import Timeline

ROOMS = {
    "1 x 16,000 line breaks": ["\n" * 16_000],
    "20 x 16,000 escapes": ["\x1b" * 16_000] * 20,
    "2,000 one-line messages": [f"hello {i}" for i in range(2_000)],
    "2,000 x 1,600 escapes": ["\x1b" * 1_600] * 2_000,
}


def _message(seq: int, sender: str, text: str) -> CachedMessage:
    return CachedMessage("den", seq, seq * 1_000, sender, f"t{seq}", 0, text, None)


class _Bench(App[None]):
    CSS = "Timeline { height: 1fr; }"

    def compose(self) -> ComposeResult:
        yield Timeline(id="timeline")


async def measure(texts: list[str]) -> tuple[int, list[float]]:
    log = RoomLog("den", "alice", loaded=True)
    for seq, text in enumerate(texts, 1):
        log.add_message(_message(seq, "mallory", text))
    app = _Bench()
    times: list[float] = []
    async with app.run_test(size=(100, 40)) as pilot:
        timeline = app.query_one(Timeline)
        for step in range(4):
            start = time.perf_counter()
            if step == 2:
                log.add_message(_message(len(texts) + 1, "bob", "one more"))
            if step == 3:
                await pilot.resize_terminal(90, 40)
            else:
                timeline.show(log, "alice", {})
            await pilot.pause()
            times.append((time.perf_counter() - start) * 1e3)
        rows = timeline.virtual_size.height
    return rows, times


async def _main() -> None:
    print(f"{'room':26} {'rows':>7} {'first':>9} {'again':>9} {'one more':>9} {'resize':>9}  (ms)")
    for name, texts in ROOMS.items():
        rows, (first, again, more, resized) = await measure(texts)
        print(f"{name:26} {rows:7d} {first:9.1f} {again:9.1f} {more:9.1f} {resized:9.1f}")


def main() -> None:
    asyncio.run(_main())


if __name__ == "__main__":
    main()
