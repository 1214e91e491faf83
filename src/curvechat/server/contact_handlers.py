"""The contact requests: read one's contact list (`contacts`) and change it
(`set_contacts`). The rule the room requests apply with it is
server/contacts.py's (`RoomHandlers._check_adds`).

Refusals are `Refusal(code, message)`. What this module must never do:
touch a socket, or write a list another request changed meanwhile (the
store's compare-and-swap: `put_contacts` with what was read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.server.contacts import BadChange, changed
from curvechat.server.epochpace import EpochPace
from curvechat.server.room_handlers import Refusal
from curvechat.store import Conflict, ContactsRecord, Store

if TYPE_CHECKING:
    from curvechat.server.session import Session

CAS_TRIES = 5
"""Times a change is tried against a list that another request of the same
user changed meanwhile, before it is refused with `conflict`."""


def contact_list(record: ContactsRecord | None) -> m.ContactList:
    record = record or ContactsRecord()
    return m.ContactList(only=record.only, users=list(record.users))


class ContactHandlers:
    """The contact half of `Handlers` (server/handlers.py)."""

    store: Store
    contacts_pace: EpochPace
    """Changes of one user's list: each rewrites the whole record (up to
    about 170 KB), so they are paced as new epochs are (`--rate-epochs`)."""

    async def contacts(self, sess: Session, req: m.Contacts) -> m.AnyReply:
        assert sess.user is not None
        return contact_list((await self.store.contacts([sess.user])).get(sess.user))

    async def set_contacts(self, sess: Session, req: m.SetContacts) -> m.AnyReply:
        user = sess.user
        assert user is not None
        if not self.contacts_pace.allow("", user):
            raise Refusal(
                ErrorCode.RATE_LIMITED,
                f"contact changes come faster than {self.contacts_pace.rate:g} a second;"
                " try again in a moment",
            )
        if req.add:
            known = await self.store.users(req.add)
            unknown = sorted(set(req.add) - set(known))
            if unknown:
                raise Refusal(ErrorCode.NO_SUCH_USER, f"no such user: {', '.join(unknown[:5])}")
        for _ in range(CAS_TRIES):
            current = (await self.store.contacts([user])).get(user)
            try:
                record = changed(user, current, only=req.only, add=req.add, remove=req.remove)
            except BadChange as exc:
                raise Refusal(ErrorCode(exc.code), str(exc)) from exc
            if record == (current or ContactsRecord()):
                return contact_list(record)
            self.store.check_space()
            try:
                await self.store.put_contacts(user, record, current)
            except Conflict:
                continue
            return contact_list(record)
        raise Refusal(ErrorCode.CONFLICT, "your contacts changed meanwhile; try again")
