"""What the terminal client's timeline costs to draw, with hostile texts:
`render_log` printed to a 100-column Rich console (the renderable Textual
gets), the first time, again with nothing changed, and again after one new
message, in ms.

    python -m bench.tui_redraw

The timeline draws every entry it holds at each change, so these are what
one keystroke's redraw costs with such a room on screen.
"""

from __future__ import annotations

import io
import time

from rich.console import Console

from curvechat.client.cache import CachedMessage
from curvechat.tui.roomlog import RoomLog
from curvechat.tui.widgets import timeline

ROOMS = {
    "1 x 16,000 line breaks": ["\n" * 16_000],
    "20 x 16,000 escapes": ["\x1b" * 16_000] * 20,
    "2,000 one-line messages": [f"hello {i}" for i in range(2_000)],
    "2,000 x 1,600 escapes": ["\x1b" * 1_600] * 2_000,
}


def _message(seq: int, sender: str, text: str) -> CachedMessage:
    return CachedMessage("den", seq, seq * 1_000, sender, f"t{seq}", 0, text, None)


def measure(texts: list[str]) -> tuple[int, list[float]]:
    log = RoomLog("den", "alice", loaded=True)
    for seq, text in enumerate(texts, 1):
        log.add_message(_message(seq, "mallory", text))
    memo_type = getattr(timeline, "BlockMemo", None)  # absent before blocks were kept
    memo = memo_type() if memo_type is not None else None
    times: list[float] = []
    out = io.StringIO()
    for step in range(3):
        if step == 2:
            log.add_message(_message(len(texts) + 1, "bob", "one more"))
        out = io.StringIO()
        console = Console(width=100, file=out, color_system="truecolor")
        start = time.perf_counter()
        args = (log, "alice", {}) if memo is None else (log, "alice", {}, memo)
        console.print(timeline.render_log(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return out.getvalue().count("\n"), times


def main() -> None:
    print(f"{'room':26} {'rows':>7} {'first':>9} {'again':>9} {'one more':>9}  (ms)")
    for name, texts in ROOMS.items():
        rows, (first, again, more) = measure(texts)
        print(f"{name:26} {rows:7d} {first:9.1f} {again:9.1f} {more:9.1f}")


if __name__ == "__main__":
    main()
