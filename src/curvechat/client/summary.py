"""What a front end is shown about the rooms, read from the cache and the
trust core: each room's summary (`RoomSummary`: members and admins by the
verified log, head, read cursor, unread count, the newest epoch whose key
we hold) and each member of a room with what the user knows of its key
(`MemberInfo`).

It must never write to the cache or feed the trust core: it only reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from curvechat.client.cache import Cache
from curvechat.client.trust import TrustCore


@dataclass(frozen=True, slots=True)
class RoomSummary:
    room: str
    members: list[str]
    admins: list[str]
    head: int
    cursor: int
    unread: int
    epoch: int | None
    added_by: str | None = None
    """Who made the user a member, by the verified log (the user, for a
    room they created; None if they are no longer a member)."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    user: str
    admin: bool
    verified: bool
    """The user compared safety numbers with this member (`keys --verify`)."""
    key_changed: bool


def room_summaries(cache: Cache, core: TrustCore, me: str) -> list[RoomSummary]:
    """The summary of every room in the cache, in the cache's order."""
    out = []
    for room in cache.rooms():
        log = core.log(room.room)
        state = log.state
        out.append(
            RoomSummary(
                room=room.room,
                members=sorted(state.members),
                admins=sorted(u for u, mem in state.members.items() if mem.admin),
                head=room.head,
                cursor=room.cursor,
                unread=room.unread,
                epoch=core.current(room.room),
                added_by=log.adder(me),
            )
        )
    return out


def member_details(cache: Cache, core: TrustCore, me: str, room: str) -> list[MemberInfo]:
    """The members of `room` by name; `me` counts as verified."""
    changes = cache.key_changes()
    return [
        MemberInfo(
            user=u,
            admin=mem.admin,
            verified=u == me or core.verified(u),
            key_changed=u in changes,
        )
        for u, mem in sorted(core.log(room).state.members.items())
    ]
