"""`curvechat` command line.

Every client command opens the identity (passphrase from
`CURVECHAT_PASSPHRASE`, `--passphrase-file` or the terminal), connects, syncs,
does one thing and exits. Errors are one line with a code, never a traceback.

Exit codes: 0 done; 1 refused or failed (the message says why); 2 usage;
3 no server reachable; 75 a message is queued but not yet acknowledged;
130 interrupted (Ctrl-C).
With no server reachable `send` queues and `history` and `rooms` answer from
the local cache (`cli/offline.py`); how long a command waits to know that is
`cli/reach.py`.

Here is only `main`: the parser is `cli/parser.py`, the commands
`cli/commands.py` and `cli/serve.py`, what they share `cli/common.py`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys

INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run one command. A Ctrl-C at any point, the imports included (they
    take a noticeable fraction of a second), is one line and exit code 130,
    never a traceback: nothing above the standard library is imported
    before this guard."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        from curvechat.cli.output import error_line

        said = error_line("interrupted", "stopped (Ctrl-C); what was queued stays queued")
        print(said, file=sys.stderr)
        return INTERRUPTED


def _main(argv: list[str] | None) -> int:
    import logging

    from curvechat.cli.common import EXIT_FAIL, EXIT_USAGE, CliError, _fail, room_problem
    from curvechat.cli.output import log_handler
    from curvechat.cli.parser import build_parser
    from curvechat.protocol.errors import CurvechatError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2)
        if args.command not in ("serve", "monitor")
        else logging.INFO - 10 * min(args.verbose, 1),
        handlers=[log_handler(logging.StreamHandler())],
    )
    for flag in ("limit", "timeout"):
        if getattr(args, flag, 1) <= 0:
            _fail("bad_argument", f"--{flag} must be positive", EXIT_USAGE)
    if getattr(args, "last", 0) < 0:
        _fail("bad_argument", "--last must be 0 or more", EXIT_USAGE)
    named = [getattr(args, "room", None), *(getattr(args, "rooms", None) or [])]
    for room in (r for r in named if r is not None):
        problem = room_problem(room, create=args.command == "create")
        if problem is not None:
            _fail("bad_room", problem, EXIT_FAIL)
    try:
        return int(args.func(args))
    except CliError as exc:
        _fail(exc.code, exc.message, exc.exit_code)
    except CurvechatError as exc:
        # An error that keeps its message apart from its code (a server's
        # refusal, a protocol or membership error: their str() leads with
        # the code) is said by that message, the code once, in brackets.
        _fail(str(exc.code), getattr(exc, "message", None) or str(exc), EXIT_FAIL)
    except sqlite3.DatabaseError as exc:
        if args.command in ("serve", "monitor"):  # their files are not a client's cache
            raise
        # A client's cache file of another shape than ours.
        _fail("bad_cache", f"the local cache cannot be used: {exc}", EXIT_FAIL)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
