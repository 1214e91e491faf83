"""The commands that still answer with no server reachable: `send` and
`dm` queue in the outbox and exit 75 (the next command that connects, `tail`
or `chat` delivers each message once: the outbox keeps its txn id); `history`
and `rooms` answer from the local cache, saying on stderr that they are
offline and when the cache last synced (`--json` rows carry `offline` and
`last_sync`).

It must never pretend to be online: an answer from the cache always says
so, and a message is reported sent only once the server acknowledged it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from curvechat.cli.common import (
    EXIT_QUEUED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    _iso,
    _message_line,
    _message_record,
    _resolve_room,
    _with_client,
)
from curvechat.cli.follow import departed_note, departure
from curvechat.cli.output import json_line
from curvechat.client.recall import last_sync_ms
from curvechat.client.sending import check_text
from curvechat.protocol.errors import LocalProtocolError
from curvechat.protocol.text import clip, visible

if TYPE_CHECKING:
    from curvechat.cli.reach import Offline
    from curvechat.client.engine import ChatClient


def _sync_fields(client: ChatClient, away: Offline | None) -> dict[str, Any]:
    return {"offline": away is not None, "last_sync": _iso(last_sync_ms(client.cache))}


# --- sending ------------------------------------------------------------------------------
async def _send_lines(client: ChatClient, room: str, lines: list[str], timeout: float) -> int:
    from curvechat.cli.reach import Acks, not_acked_line

    acks = Acks(client, client.queue_many(room, lines))
    # `timeout` bounds the wait for each next ack: many lines take as long as
    # the server keeps acknowledging them.
    done = await acks.wait(timeout)
    if acks.failed:
        raise acks.failed[0][1]
    if not done:
        print(not_acked_line(client, len(acks.left), "message(s) queued,"), file=sys.stderr)
        return EXIT_QUEUED
    print(f"sent {acks.acked} message(s) to {room}" if acks.acked != 1 else f"sent to {room}")
    return 0


def _queue_offline(client: ChatClient, away: Offline, room: str, lines: list[str]) -> int:
    client.queue_many(room, lines)
    print(
        f"curvechat: offline ({visible(away.why)}); {len(lines)} message(s) queued for"
        f" {visible(room)}: the next command that connects (`send`, `tail`, `chat`…) sends them",
        file=sys.stderr,
    )
    return EXIT_QUEUED


def cmd_send(args: argparse.Namespace) -> int:
    if args.text == "-" and sys.stdin is None:
        raise CliError(
            "no_input", "send - reads the messages from stdin, which is closed", EXIT_USAGE
        )
    given = sys.stdin.read().splitlines() if args.text == "-" else [args.text]
    lines = [ln for ln in given if ln.strip()]
    blank = len(given) - len(lines)
    if not lines:
        if args.text != "-":
            why = "nothing to send: the message is empty or blank"
        else:
            why = f"nothing to send: {blank} blank line(s)" if blank else "nothing to send"
        raise CliError("empty", why, EXIT_USAGE)
    if args.text == "-":
        for n, line in enumerate(given, 1):  # all or nothing: every line checked first
            if line.strip():
                try:
                    check_text(line)
                except LocalProtocolError as exc:
                    why = f"line {n} of the input: {exc.message}; nothing was sent"
                    raise CliError(exc.code, why) from None
    if blank:
        print(f"curvechat: skipped {blank} blank line(s)", file=sys.stderr)

    async def body(client: ChatClient) -> int:
        return await _send_lines(client, _resolve_room(client, args.room), lines, args.timeout)

    async def offline(client: ChatClient, away: Offline) -> int:
        return _queue_offline(client, away, _resolve_room(client, args.room), lines)

    return asyncio.run(_with_client(args, body, offline=offline))


def cmd_dm(args: argparse.Namespace) -> int:
    async def body(client: ChatClient) -> int:
        check_text(args.text)  # before the room is made for it
        room = await client.open_dm(args.user)
        return await _send_lines(client, room, [args.text], args.timeout)

    async def offline(client: ChatClient, away: Offline) -> int:
        """Queued only into a direct-message room this cache knows: opening
        a new one needs the server."""
        from curvechat.protocol.limits import dm_room

        try:
            room = dm_room(client.me, args.user)
        except ValueError:
            why = f"a direct message needs another user's valid name, not {clip(args.user)!r}"
            raise CliError("bad_name", why) from None
        if client.cache.room(room) is None:
            why = f"{away.why}; a new direct-message room needs the server"
            raise CliError("unreachable", why, EXIT_UNREACHABLE)
        return _queue_offline(client, away, room, [args.text])

    return asyncio.run(_with_client(args, body, offline=offline))


# --- reading ------------------------------------------------------------------------------
def cmd_history(args: argparse.Namespace) -> int:
    async def show(client: ChatClient, away: Offline | None) -> int:
        room = _resolve_room(client, args.room)
        messages = await client.history(room, limit=args.limit)
        if away is not None:
            print(away.note(), file=sys.stderr)
        gone = departure(client, room)  # the room is cached: `_resolve_room`
        if gone is not None:
            print(departed_note(room, *gone), file=sys.stderr)
        extra = _sync_fields(client, away)
        for msg in messages:
            print(json_line({**_message_record(msg), **extra}) if args.json else _message_line(msg))
        if not messages and not args.json:
            where = " in the local cache" if away is not None else " yet"
            print(f"-- no messages in {visible(room)}{where}", file=sys.stderr)
        return 0

    async def body(client: ChatClient) -> int:
        return await show(client, None)

    return asyncio.run(_with_client(args, body, offline=show))


def cmd_rooms(args: argparse.Namespace) -> int:
    async def show(client: ChatClient, away: Offline | None) -> int:
        rooms = client.rooms()
        if away is not None:
            print(away.note(), file=sys.stderr)
        if not rooms and not args.json:
            print(
                "-- no rooms yet: `curvechat create ROOM` makes one, or a member invites you",
                file=sys.stderr,
            )
        extra = _sync_fields(client, away)
        for r in rooms:
            if args.json:
                row = {
                    "room": r.room,
                    "members": r.members,
                    "admins": r.admins,
                    "head": r.head,
                    "unread": r.unread,
                    "epoch": r.epoch,
                    "added_by": r.added_by,
                }
                print(json_line({**row, **extra}))
            else:
                print(f"{r.room:24} {r.head:6} msgs  members: {', '.join(r.members)}")
        return 0

    async def body(client: ChatClient) -> int:
        return await show(client, None)

    return asyncio.run(_with_client(args, body, offline=show))
