"""What the user reads when something they asked for did not happen: one
sentence in plain words. The code and the details (the server's words, the
rule that refused a membership change, a traceback for a bug) go to the log,
`chat.log` in the home, never to the screen.

Every code the engine can end a command with is mapped here, once:
the server's refusals (`ErrorCode`, as `ServerRefused`), the engine's own
refusals before asking (`NotReady` and its `NOT_READY_CODES`), a membership
change the rules refuse (`MembershipError`, which carries an `ErrorCode`),
local protocol errors (`too_large`), the connection's `not_connected`
and `timeout`, and a cache that refuses a write (`cache_write`). A
sentence may name what the user tried: `Attempt` says which command, whom
and where.

Pure: no Textual, no I/O but the log, so the tests (and any front end) can
use it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from curvechat.client.errors import KeyChanged, NotReady, ServerRefused
from curvechat.protocol.errors import CurvechatError
from curvechat.protocol.limits import TEXT_LIMIT
from curvechat.protocol.text import visible

log = logging.getLogger("curvechat.tui")

LOG_NAME = "chat.log"
"""Where the details are: the log file in the user's home."""

BUG = f"this looks like a bug; the details are in {LOG_NAME}"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the user tried: a command name ("remove", "invite", …), "send"
    or "history"; the user or room it named (`target`); the room it was
    in, as shown ("#team", "@bob")."""

    action: str
    target: str = ""
    room: str = ""

    @property
    def dm(self) -> bool:
        return self.room.startswith("@")


# What the user tried, as the end of "You can't …".
WHAT: dict[str, str] = {
    "create": "create {target}",
    "invite": "add {target} to {room}",
    "remove": "remove {target} from {room}",
    "leave": "leave {room}",
    "dm": "write to {target}",
    "msg": "write to {target}",
    "g": "write in {target}",
    "join": "join {target}",
    "send": "write in {room}",
    "history": "read the history of {room}",
}

# One sentence per code, for any command. {what}: WHAT[action]; {target},
# {room}: from the Attempt; {limit}: TEXT_LIMIT.
BY_CODE: dict[str, str] = {
    # the server's refusals (ErrorCode)
    "bad_frame": f"The server could not understand the request; {BUG}.",
    "too_large": "That is more than the server takes in one request.",
    "bad_version": (
        "The server speaks another version of the protocol; update curvechat here or there."
    ),
    "not_registered": "You are not signed in yet; try again once the status line says live.",
    "name_taken": "Your user name belongs to another key on this server.",
    "key_taken": "Your key is registered under another user name on this server.",
    "bad_signature": f"A signature did not check out, so nothing changed; {BUG}.",
    "no_such_user": "There is no user called {target}.",
    "no_such_room": "There is no room called {target}.",
    "room_exists": "A room called {target} already exists; pick another name.",
    "not_member": "You are not a member of {room}.",
    "forbidden": "You can't {what}: you don't have the right to.",
    "contacts_only": (
        "You can't {what}: only contacts of {users} may put them in a room, and you are not"
        " one; ask them to add you to their contacts."
    ),
    "bad_op": "You can't {what} in the room's present state.",
    "conflict": "Someone changed {room} at the same moment; try again.",
    "stale_epoch": "The key of {room} changed at the same moment; try again.",
    "out_of_order": "A message you sent before this one is not stored yet; both go again in order.",
    "bad_envelope": f"The server refused the message as malformed; {BUG}.",
    "rate_limited": "You are going too fast for the server; wait a moment and try again.",
    "too_many_connections": (
        "You have too many sessions open on this server; close one and try again."
    ),
    "store_unavailable": "The server can't save anything right now; try again in a moment.",
    "store_full": (
        "The server's disk is nearly full: it takes no new messages, users or rooms until its"
        " operator frees space."
    ),
    "draining": "That server is about to restart; the client moves to another one.",
    "internal": (
        "The server failed on its side; try again, and tell its operator if it keeps happening."
    ),
    # the engine's refusals before asking (NotReady)
    "bad_name": "{target} is not a valid user name.",
    "bad_room": (
        "{target} can't be a room name: use a-z, 0-9, '.', '_' and '-', at most 64 characters."
    ),
    "bad_value": "That is not one of the allowed values.",
    "empty": "There is nothing to send.",
    "already_member": "{target} is already a member of {room}.",
    "already_admin": "{target} is already an admin of {room}.",
    "no_key": "There is no key for {room} yet; try again in a moment.",
    "no_key_change": "No key change of {target} is waiting for you.",
    "no_such_message": "That message is not waiting for the server.",
    "key_changed": (
        "The identity key of {target} changed; compare safety numbers, then /keys accept {target}."
    ),
    "key_changed_again": (
        "The key {target} offers changed since it was shown, so nothing was accepted;"
        " compare the new safety number with them first."
    ),
    # the connection and the client
    "not_connected": "You are not connected; try again when the status line says live.",
    "key_mismatch": (
        "The server's key is not the one in your connect string; check it with its operator."
    ),
    "timeout": "The server did not answer in time; check whether it happened before trying again.",
    "untrusted_log": f"The member list of {{room}} did not verify, so nothing changed; {BUG}.",
    "crypto": f"A cryptographic check failed, so nothing changed; {BUG}.",
    "decrypt_failed": f"A cryptographic check failed, so nothing changed; {BUG}.",
    "bad_identity": "Your identity file could not be read.",
    "wrong_passphrase": "That passphrase does not open your identity.",
    "bad_cache": f"The local cache in your home could not be opened; see {LOG_NAME}.",
    "cache_write": (
        "The local cache in your home can't be written (the disk may be full, or another"
        f" curvechat of this home holds it too long), so nothing was saved; see {LOG_NAME}."
    ),
    "no_curve": (
        "This machine's ZeroMQ library has no CURVE encryption (or is older than 4.3.2);"
        " install a newer libzmq."
    ),
}

TOO_LONG = "Your message is too long: the limit is {limit}."
NOT_TEXT = "Your message can't be sent: it is not valid Unicode text."

# Where a command's own words say it better: (action, code).
BY_ACTION: dict[tuple[str, str], str] = {
    ("remove", "forbidden"): "You can't remove {target}: only admins can remove members.",
    ("remove", "not_member"): "{target} is not a member of {room}.",
    ("remove", "bad_op"): "{target} is not a member of {room}.",
    ("invite", "forbidden"): "You can't add {target} to {room}: only admins can add members.",
    ("invite", "bad_op"): "{target} is already a member of {room}.",
    ("invite@dm", "forbidden"): (
        "A direct-message room is for two people; /create a room to talk with {target} too."
    ),
    ("create", "forbidden"): "{target} is the name of a direct-message room; use /dm instead.",
    ("create", "no_such_user"): "There is no user called {users}.",
    ("join", "room_exists"): (
        "A room called {target} exists, but you are not in it: ask one of its members"
        " to /invite you."
    ),
    **{
        (action, code): text  # /msg and /dm check their TEXT before the room is opened
        for action in ("send", "msg", "dm")
        for code, text in (("too_large", TOO_LONG), ("bad_frame", NOT_TEXT))
    },
    ("send", "cache_write"): (
        "Your message was not queued, as the local cache in your home can't be written"
        " (the disk may be full, or another curvechat of this home holds it too long);"
        " it is back in the input line."
    ),
    ("send", "not_member"): "You are no longer a member of {room}.",
    ("send", "key_changed"): (
        "The identity key of {target} changed; compare safety numbers and /keys accept"
        " {target} before writing in {room}."
    ),
    ("history", "not_connected"): "Older messages can't be loaded while you are offline.",
    ("history", "timeout"): "The server did not send older messages in time; try again.",
    ("keys", "no_such_user"): "No key is known for {target}; /whois {target} looks it up.",
    ("whois", "no_such_user"): "There is no user called {target}.",
    ("contacts", "no_such_user"): "There is no user called {users}.",
    ("contacts", "bad_name"): "You can't be one of your own contacts.",
    ("contacts", "conflict"): (
        "Your contacts changed at the same moment (another of your sessions); try again."
    ),
}

FALLBACK = f"That did not work; {BUG}."

BOUND = "You can't {what}: {detail}."
"""`too_large` for a bound of rooms (a room's members, a user's rooms): the
refusal says which, whether the server's or this client's own."""


def code_of(exc: BaseException) -> str:
    """The one-word code of `exc` ("bug" for anything not raised on purpose)."""
    if isinstance(exc, CurvechatError):
        return str(exc.code)
    return "bug"


def sentence(code: str, attempt: Attempt, *, users: str = "", detail: str = "") -> str:
    """The sentence for `code` when the user tried `attempt` (with `detail`,
    the refusal's own words, where its template names them)."""
    template = (
        (BOUND if detail else None)
        or (BY_ACTION.get((f"{attempt.action}@dm", code)) if attempt.dm else None)
        or BY_ACTION.get((attempt.action, code))
        or BY_CODE.get(code)
        or FALLBACK
    )
    fields = {"target": attempt.target or "that", "room": attempt.room or "this room"}
    what = WHAT.get(attempt.action, "do that").format(**fields)
    text = template.format(
        what=what, limit=TEXT_LIMIT, users=users or fields["target"], detail=detail, **fields
    )
    return visible(text)


def explain(exc: BaseException, attempt: Attempt) -> str:
    """One sentence for the screen; the code and the details to the log."""
    code = code_of(exc)
    if code == "bug":
        log.error("%s failed", attempt.action, exc_info=exc)
    else:
        log.warning("%s failed [%s]: %s", attempt.action, code, exc)
    users = ""
    if code == "no_such_user" and not isinstance(exc, NotReady):
        # the directory names the users it does not know: "no such user: a, b"
        users = str(getattr(exc, "message", "")).removeprefix("no such user:").strip()
    if code == "contacts_only":
        # the server names them: "bob, carol take rooms only from their contacts, …"
        users = str(getattr(exc, "message", "")).partition(" take")[0][:300]
    if isinstance(exc, KeyChanged):
        attempt = Attempt(attempt.action, exc.user, attempt.room)
    detail = ""
    if code == "too_large" and isinstance(exc, ServerRefused | NotReady):
        # a bound of rooms, not a text too long (that one is a local error)
        detail = str(getattr(exc, "message", exc))[:300]
    return sentence(code, attempt, users=users, detail=detail)


def explain_code(code: str, detail: str, attempt: Attempt) -> str:
    """As `explain`, for an error known by its code (a send that failed in
    the outbox, after it was queued)."""
    log.warning("%s failed [%s]: %s", attempt.action, code, detail)
    return sentence(code, attempt)
