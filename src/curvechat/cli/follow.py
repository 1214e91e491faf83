"""`curvechat tail`: a room's new messages until interrupted, with a line
on stderr when the connection changes (not on every heartbeat) and when
you stop being a member (you left, or were removed): then it ends."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from curvechat.cli.common import (
    CliError,
    _message_line,
    _message_record,
    _resolve_room,
    _run,
    no_such_room,
)
from curvechat.cli.output import json_line
from curvechat.protocol.text import visible

if TYPE_CHECKING:
    from curvechat.client.engine import ChatClient
    from curvechat.client.model import CachedRoom
    from curvechat.client.state import ConnStatus

MEMBERSHIP_POLL_S = 1.0
"""How often tail looks at the room in the local cache: a `leave` run from
another process of the same home changes it without any event here."""
DEPARTURE_GRACE_S = 2.0
"""How long tail waits to learn who ended the membership before it says
"removed" without a name."""
DEPARTURE_GRACE_STEPS = 10


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ConnectionNotes:
    """The connection lines of `tail`: one when it is lost, one when the
    reason it stays down changes, one when it is back. The engine reports
    every ping's round trip as a status too; those say nothing new."""

    def __init__(self, status: ConnStatus) -> None:
        from curvechat.client.state import ConnState

        self.up = status.state is ConnState.LIVE
        self.endpoint = status.endpoint
        self.reason = ""
        self.down_since = 0.0

    def line(self, st: ConnStatus) -> str | None:
        from curvechat.client.state import ConnState

        if st.state is ConnState.LIVE:
            if self.up and st.endpoint == self.endpoint:
                return None
            was_down = not self.up and self.down_since
            self.up, self.endpoint, self.reason = True, st.endpoint, ""
            after = f" (after {time.monotonic() - self.down_since:.1f} s)" if was_down else ""
            return f"-- connected to {st.endpoint}{after}"
        if st.state is not ConnState.RECONNECTING:
            return None  # connecting (a step of reconnecting), closed
        # "tcp://h:1: refused" and "tcp://h:2: refused" are the same reason
        reason = st.detail.partition(": ")[2] if st.detail.startswith("tcp://") else st.detail
        if self.up:
            self.up, self.reason, self.down_since = False, reason, time.monotonic()
            if st.moving:  # the node is draining
                return f"-- moving to another node ({visible(st.detail)})"
            wait = max(0.0, (st.next_retry_at or 0.0) - time.time())
            return (
                f"-- connection lost ({visible(st.detail)}); reconnecting"
                f" (first retry in {wait:.1f} s)"
            )
        if reason != self.reason:
            self.reason = reason
            return f"-- still reconnecting: {visible(st.detail)}"
        return None


class MessageLines:
    """What `tail` prints for the engine's message events. A message comes
    once, in seq order, as the room moves on; but one can also open late,
    below what was printed (its key or its sender's op came after it, or a
    node served it again: docs/security.md 4.3), and a message printed can
    turn out a replay of an earlier one (`ReplayMarked`). A printed line
    cannot be taken back, so both are said: the late one with `late` (JSON)
    or a note on stderr before it, the replay with a `replay_of` record
    (JSON) or a note on stderr."""

    def __init__(self, room: str, *, as_json: bool) -> None:
        self.room = room
        self.as_json = as_json
        self.top = 0
        """The highest seq printed (or given by `--last`)."""

    def message(self, msg: Any) -> tuple[str | None, str]:
        """(the note for stderr or None, what goes to stdout)."""
        late = msg.seq <= self.top
        self.top = max(self.top, msg.seq)
        if self.as_json:
            record = _message_record(msg)
            if late:
                record["late"] = True
            return None, json_line(record)
        note = f"-- #{msg.seq} is an earlier message, opened only now" if late else None
        return note, _message_line(msg)

    def replay(self, seq: int, original: int) -> tuple[str | None, str | None]:
        if self.as_json:
            return None, json_line({"room": self.room, "seq": seq, "replay_of": original})
        return (
            f"-- #{seq} was a replay of #{original} (the same message again): not a new message",
            None,
        )


def departure(client: ChatClient, room: str) -> tuple[str, str] | None:
    """None while we are a member of `room`; else (how, by whom): ("left",
    me), ("removed", actor), or ("removed", "") when the server just stopped
    serving the room to us (the removal itself never reached this cache)."""
    from curvechat.protocol import decode_member_op
    from curvechat.protocol.errors import ProtocolError

    cached = client.cache.room(room)
    if cached is not None and not cached.left:
        return None
    last = None
    for op_bytes, _sig in client.cache.ops(room):
        try:
            op = decode_member_op(op_bytes)
        except ProtocolError:
            continue
        if op.target == client.me:
            last = op
    if last is not None and last.kind == "leave":
        return ("left", client.me)
    if last is not None and last.kind == "remove":
        return ("removed", last.actor)
    return ("removed", "")


def require_member(client: ChatClient, room: str) -> CachedRoom:
    """The cached room, if we are a member of it (after the sync); else
    `no_such_room` (this home never joined it) or `not_member` (it left, or
    the server no longer serves it to us)."""
    cached = client.cache.room(room)
    if cached is None:
        raise no_such_room(room)
    if departure(client, room) is not None:
        raise CliError("not_member", f"you are no longer a member of {room}")
    return cached


def departed_note(room: str, how: str, actor: str) -> str:
    """What `history` says on stderr of a room `departure` found you out of."""
    if how == "left":
        why = f"you left {visible(room)}"
    elif actor:
        why = f"you were removed from {visible(room)} by {visible(actor)}"
    else:
        why = f"you are no longer a member of {visible(room)}"
    return f"-- {why}: these are the messages this home kept"


def peer_options(args: argparse.Namespace) -> dict[str, Any]:
    """`tail --peers`: peer-to-peer mode (listening, mDNS) for this client."""
    if not getattr(args, "peers", False):
        return {}
    from curvechat.client.peer.shell import PeerOptions

    return {"peers": PeerOptions(mdns=True)}


def _peer_json(event: Any) -> dict[str, Any]:
    return {
        "room": event.room,
        "sender": event.sender,
        "txn": event.txn,
        "text": event.text,
        "sent_ms": event.sent_ms,
        "provisional": True,
    }


def cmd_tail(args: argparse.Namespace) -> int:
    from curvechat.client import events as ev

    async def body(client: ChatClient) -> int:
        room = _resolve_room(client, args.room)
        cached = require_member(client, room)
        lines = MessageLines(room, as_json=args.json)

        def show(note: str | None, line: str | None) -> None:
            if note is not None:
                _note(note)
            if line is not None:
                print(line, flush=True)

        for msg in await client.history(room, limit=args.last) if args.last else []:
            show(*lines.message(msg))
        # What the cache held before: a message below it that comes now opened late.
        lines.top = max(lines.top, cached.cursor)

        notes = ConnectionNotes(client.status)
        stop = asyncio.Event()
        check = asyncio.Event()

        def on_event(event: Any) -> None:
            if isinstance(event, ev.MessageReceived) and event.message.room == room:
                show(*lines.message(event.message))
            elif isinstance(event, ev.ReplayMarked) and event.room == room:
                show(*lines.replay(event.seq, event.original))
            elif isinstance(event, ev.StatusChanged):
                line = notes.line(event.status)
                if line is not None:
                    _note(line)
            elif isinstance(event, ev.PeerMessage) and event.room == room:
                if args.json:
                    print(json.dumps(_peer_json(event)), flush=True)
                else:
                    line = f"{visible(event.sender)}: {visible(event.text)}"
                    print(f"{line}  (peer-to-peer, not on the server yet)", flush=True)
            elif isinstance(event, ev.PeerStatus) and event.active and event.peers:
                _note(f"-- server unreachable · peer-to-peer with {event.peers} member(s)")
            elif isinstance(event, ev.CaughtUp) and event.messages:
                _note(f"-- caught up {event.messages} message(s)")
            elif isinstance(event, ev.RoomUpdated) and event.room == room:
                check.set()

        client.subscribe(on_event)
        where = f" on {client.status.endpoint}" if client.status.endpoint else ""
        _note(f"-- following {room}{where}; Ctrl-C to stop")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        gone = None
        while not stop.is_set():
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, check)]
            await asyncio.wait(
                waiters, timeout=MEMBERSHIP_POLL_S, return_when=asyncio.FIRST_COMPLETED
            )
            for w in waiters:
                w.cancel()
            check.clear()
            gone = departure(client, room)
            if gone is not None:
                break
        # A `leave` run from another process of this home: the server tells
        # us at once, and that process files its leave op a moment later.
        for _ in range(DEPARTURE_GRACE_STEPS):
            if gone is None or gone[1]:
                break
            await asyncio.sleep(DEPARTURE_GRACE_S / DEPARTURE_GRACE_STEPS)
            gone = departure(client, room)
        if gone is None:
            return 0
        how, actor = gone
        if how == "left":
            _note(f"-- you left {room}; stopping")
            return 0
        by = f" by {visible(actor)}" if actor else ""
        raise CliError("removed", f"you were removed from {room}{by}; stopping")

    return _run(args, body)
