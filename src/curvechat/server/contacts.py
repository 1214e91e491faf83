"""Who may put a user in a room: the rule, and a user's contact list as a
request changes it.

A user who takes rooms only from contacts (`ContactsRecord.only`) can be
put in a room (a room created with them in it, a direct-message room
too, or an add) only by a user on their list. Anyone else is refused
with `contacts_only`, and nothing changes. A user who never set any
contacts takes rooms from anyone, as before the list existed.

Pure: the handlers (server/contact_handlers.py, server/room_handlers.py)
read the records and write them; this module must never touch the store
or a socket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from curvechat.protocol.limits import MAX_CONTACTS
from curvechat.store import ContactsRecord


class BadChange(ValueError):
    """A change of a contact list that is refused as a whole: `code` is the
    protocol's error code for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def refusing(
    actor: str, targets: Sequence[str], records: Mapping[str, ContactsRecord]
) -> list[str]:
    """Those of `targets` whose contact settings refuse to let `actor` put
    them in a room, sorted (the actor is never refused by their own)."""
    return sorted(
        {
            t
            for t in targets
            if t != actor and (r := records.get(t)) is not None and r.only and actor not in r.users
        }
    )


def changed(
    user: str,
    current: ContactsRecord | None,
    *,
    only: bool | None,
    add: Sequence[str],
    remove: Sequence[str],
) -> ContactsRecord:
    """`current` (None: never set) with `add` added, `remove` removed and
    `only` set where given. Raises BadChange: a user both added and
    removed, the user themself added, or the list past MAX_CONTACTS."""
    both = sorted(set(add) & set(remove))
    if both:
        raise BadChange("bad_frame", f"both added and removed: {', '.join(both[:5])}")
    if user in add:
        raise BadChange("bad_frame", "you cannot be a contact of your own")
    base = current or ContactsRecord()
    users = (set(base.users) | set(add)) - set(remove)
    if len(users) > MAX_CONTACTS:
        raise BadChange(
            "too_large",
            f"a contact list holds at most {MAX_CONTACTS:,} users ({len(users):,} asked)",
        )
    return ContactsRecord(only=base.only if only is None else only, users=tuple(sorted(users)))


def refusal_text(refused: Sequence[str], actor: str) -> str:
    """What the refused requester is told."""
    names = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
    verb = "takes" if len(refused) == 1 else "take"
    return (
        f"{names} {verb} rooms only from their contacts, and {actor} is not one:"
        f" ask them to add you (curvechat contacts add {actor})"
    )
