"""Size limits and name rules shared by the client, the server and the store.

Every frame and every field on the wire has an upper bound here; the codec
checks them before any message reaches application code.
"""

from __future__ import annotations

import re
from typing import Final

PROTOCOL_VERSION: Final = 1

MIN_LIBZMQ: Final = (4, 3, 2)
"""The oldest libzmq either end runs on: older CURVE handshakes have known
CVEs (CVE-2019-6250, CVE-2019-13132)."""


def libzmq_refusal(version: tuple[int, ...], has_curve: bool) -> str | None:
    """Why a libzmq of `version` (with or without CURVE) must not be used,
    or None. The caller asks libzmq (``zmq.zmq_version_info()``,
    ``zmq.has("curve")``): this package loads no transport."""
    if not has_curve:
        return "this libzmq was built without CURVE support"
    if version < MIN_LIBZMQ:
        return f"libzmq {'.'.join(map(str, version))} is older than 4.3.2 (known CURVE CVEs)"
    return None


MAX_FRAME_BYTES: Final = 256 * 1024
"""Largest single ZeroMQ frame either side accepts (also the socket MAXMSGSIZE)."""

MAX_CIPHERTEXT_BYTES: Final = 64 * 1024
"""Largest encrypted message body (the padded plaintext and the 16-byte tag)."""

MAX_TEXT_CHARS: Final = 16_000
"""Longest text a client sends, in characters (Unicode code points: "é" and
"👍" are one each, "👩‍💻" is three). Checked before anything is queued or
sealed. A code point is at most 4 bytes in UTF-8, so a text is at most
`MAX_TEXT_BYTES`, and every text within the limit seals within
`MAX_CIPHERTEXT_BYTES` (64,000 bytes of text, 31 of msgpack around it,
padding to 64,256, the key commitment and the tag: 64,304). The limit is
one number a person can check: there is no separate byte limit to run into."""

MAX_TEXT_BYTES: Final = 4 * MAX_TEXT_CHARS
"""The most UTF-8 bytes a text within `MAX_TEXT_CHARS` can take."""

TEXT_LIMIT: Final = f"{MAX_TEXT_CHARS:,} characters (at most {MAX_TEXT_BYTES:,} bytes in UTF-8)"
"""The text limit as the client, the command line and the docs state it."""

MAX_OPENED_TEXT_CHARS: Final = 16 * 1024
"""Longest text a client accepts in a message it opens: 16,384, the limit
before `MAX_TEXT_CHARS`, so that messages sent by older clients stay readable."""

MAX_NAME_LEN: Final = 32
MAX_TXN_LEN: Final = 64
MAX_BATCH: Final = 500
"""Most items in one list of a request (ops, packets, users, sync cursors)."""

MAX_MEMBERS: Final = MAX_BATCH
"""Most members a room holds: a new epoch carries its key boxed for every
member in one request (`EpochUpload.packets`, at most MAX_BATCH), so a
room past it could never start another."""

MAX_ROOMS_PER_USER: Final = 5_000
"""Most rooms one user is a member of: anyone may add a user to rooms (as
an admin of their own), and the list of a user's rooms is one reply, at
most MAX_REPLY_BYTES (about 110 bytes a room)."""

MAX_CONTACTS: Final = 5_000
"""The most users one user's contact list holds (`set_contacts`): the
users who may put them in a room when they take rooms only from contacts."""

MAX_PAGE: Final = 500
"""Most messages, ops or key packets one reply carries."""

MAX_BATCH_ITEMS: Final = 1024
"""Most acks and message pushes one `batch` frame carries."""

MAX_SENDS: Final = 256
"""Most sends one `sends` request carries (a node serves at most 256 requests
in flight per connection)."""

BATCH_BUDGET_BYTES: Final = 256 * 1024
"""Item bytes a server puts in one `batch` frame before it starts the next
(an item larger than this goes in a frame of its own), so a batch frame
always fits `MAX_REPLY_BYTES`."""

MAX_PEERS: Final = 32
"""Most cluster nodes a welcome names (and a client remembers beyond its own list)."""

MAX_REPLY_BYTES: Final = 1024 * 1024
"""Largest frame a server sends (and a client accepts)."""

REPLY_BUDGET_BYTES: Final = 512 * 1024
"""Envelope bytes a server puts in one history or sync reply; a page stops
early rather than grow past it (one envelope is at most about 65 KiB, so a
page always holds at least one)."""

MAX_OP_BYTES: Final = 1024
MAX_BOX_BYTES: Final = 512
MAX_CLIENT_ID_LEN: Final = 64

USER_RE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
ROOM_RE: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
DM_RE: Final = re.compile(r"@([a-z][a-z0-9_.-]{0,31}):([a-z][a-z0-9_.-]{0,31})")
TXN_RE: Final = re.compile(r"[A-Za-z0-9_-]{8,64}")

# \Z, not $: in Python's re, $ also matches before a trailing newline.
USER_PATTERN: Final = "^" + USER_RE.pattern + r"\Z"
ROOM_PATTERN: Final = "^(?:" + ROOM_RE.pattern + "|" + DM_RE.pattern + r")\Z"
TXN_PATTERN: Final = "^" + TXN_RE.pattern + r"\Z"


def is_user_name(name: str) -> bool:
    return USER_RE.fullmatch(name) is not None


def is_room_id(room: str) -> bool:
    return ROOM_RE.fullmatch(room) is not None or dm_members(room) is not None


def dm_room(a: str, b: str) -> str:
    """The room id of the direct-message room between two users (order-free)."""
    if not (is_user_name(a) and is_user_name(b)) or a == b:
        raise ValueError(f"a direct message needs two different valid user names: {a!r}, {b!r}")
    lo, hi = sorted((a, b))
    return f"@{lo}:{hi}"


def dm_members(room: str) -> tuple[str, str] | None:
    """The two users of a direct-message room id, or None if `room` is not one.

    Only the canonical form (names sorted, different) counts as a DM id.
    """
    m = DM_RE.fullmatch(room)
    if m is None:
        return None
    a, b = m.group(1), m.group(2)
    if not a < b:
        return None
    return a, b
