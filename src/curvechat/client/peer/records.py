"""Who a peer is (rules N1, N2, sans-IO): the signed records members
announce (where they listen, and the transport key their listener
proves), which of them we believe and keep, and which member a connecting
key is.

A member may run several clients (in one home or several), each with a
listener of its own: its records are kept one per listener (`Listener`:
its key and endpoints), at most MAX_PER_USER, the oldest giving way, and
each is dialed. A record is withdrawn when dialing it failed
FAILS_TO_WITHDRAW times in a row and the member has a record more worth
dialing (a newer one, or one that answers); its client saying it closed
(its mDNS service goes away) counts as all but the last of those
failures. A member's last record is never withdrawn, so a member who is
away is dialed again when back. A withdrawn record is not taken again,
only a newer one of its listener.

A record is believed only if signed by the identity key our verified log
records (and we pinned, with no pending change) for a member of a room we
share, and only while that is still the key: after a key change the
record signed by the old one vouches for nothing. A record proves who
signed it, not who holds the key it announces, so a key may be announced
by several members: a request names its member.

This module must never do I/O, nor believe a record the trust core did
not vouch for. It holds the pacing of requests (pacing.py), whose buckets
the core asks too, and asks it about a connection only once N1 knows the
connection's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

from curvechat.client.peer.pacing import Pacing
from curvechat.client.peer.rules import refuse
from curvechat.client.trust import TrustCore
from curvechat.crypto.errors import BadSignature
from curvechat.crypto.identity import verify
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol import peer as p
from curvechat.protocol.errors import RemoteProtocolError

RECORD_AHEAD_MS: Final = 10 * 60 * 1000
"""How far ahead of our clock a record may be dated (N2): a record from
the future would keep every later one of its author out until then."""
MAX_PER_USER: Final = 8
"""Records kept per member, one per listener (N2): no member can make us
hold or dial more by announcing listeners by the dozen."""
FAILS_TO_WITHDRAW: Final = 3
"""Failed exchanges in a row after which a record is withdrawn, if its
member has one more worth dialing."""


class Listener(NamedTuple):
    """What a record stands for: one client's listener."""

    user: str
    transport_pub: bytes
    endpoints: tuple[str, ...]


def listener(record: p.PeerRecord) -> Listener:
    return Listener(record.user, record.transport_pub, tuple(record.endpoints))


@dataclass(slots=True)
class _Held:
    """A member's record, the identity key it was verified with, and how
    dialing it went."""

    record: p.PeerRecord
    signed: m.SignedRecord
    key: bytes
    fails: int = 0
    """Exchanges in a row that failed."""
    answered: bool = False
    """Its last exchange went through."""


class PeerRecords:
    def __init__(self, trust: TrustCore) -> None:
        self.trust = trust
        self.me = trust.me
        self._records: dict[str, dict[Listener, _Held]] = {}
        self._withdrawn: dict[str, dict[Listener, int]] = {}  # user -> listener -> ts withdrawn
        self._by_key: dict[bytes, dict[str, int]] = {}  # transport key -> user -> its records
        self.pacing = Pacing()  # N10

    def make_record(self, endpoints: list[str], now_ms: int) -> m.SignedRecord:
        record = p.encode_record(
            p.PeerRecord(
                user=self.me,
                transport_pub=self.trust.identity.transport_pub,
                # only what a member may dial (an address, not a name)
                endpoints=[e for e in endpoints if p.endpoint_problem(e) is None][
                    : p.MAX_ENDPOINTS
                ],
                ts=now_ms,
            )
        )
        return m.SignedRecord(record=record, sig=self.trust.identity.sign(p.DOMAIN_RECORD + record))

    def shared_rooms(self, user: str) -> list[str]:
        """N3: the rooms both `user` and we are members of, by our verified log."""
        out = []
        for cached in self.trust.store.rooms():
            log = self.trust.log(cached.room)
            if log.is_member(self.me) and log.is_member(user):
                out.append(cached.room)
        return out

    def _identity_key(self, user: str) -> bytes | None:
        """The key our verified log records for `user` in a room we share,
        if it is also the pinned one (no pending change)."""
        pinned = self.trust.store.pin(user)
        if pinned is None or user in self.trust.store.key_changes():
            return None
        for room in self.shared_rooms(user):
            member = self.trust.log(room).state.members.get(user)
            if member is not None and member.key == pinned:
                return pinned
        return None

    def accept_record(self, signed: m.SignedRecord, now_ms: int | None) -> p.PeerRecord | None:
        """Take a peer's announcement (N1, N2) at our time `now_ms` (None: a
        record from our own cache, accepted before: not dated against a
        clock that may be behind). None: it is ours, or the one we hold.
        Raises PeerRefused otherwise."""
        try:
            record = p.decode_record(signed.record)
        except RemoteProtocolError as exc:
            raise refuse("N1", ErrorCode.BAD_FRAME, f"undecodable record ({exc.message})") from exc
        user = record.user
        if user == self.me:
            return None
        key = self._identity_key(user)
        if key is None:
            raise refuse("N1", p.PeerCode.NOT_SHARED, f"record of {user}")
        try:
            verify(key, p.DOMAIN_RECORD + signed.record, signed.sig)
        except BadSignature as exc:
            raise refuse("N1", ErrorCode.BAD_SIGNATURE, f"record of {user}") from exc
        if now_ms is not None and record.ts > now_ms + RECORD_AHEAD_MS:
            raise refuse("N2", p.PeerCode.STALE_RECORD, f"record of {user} from the future")
        held = self._records.get(user, {})
        for old in [at for at, h in held.items() if h.key != key]:
            self._drop(old)  # signed by an older key: it gives way
        at = listener(record)
        same = held.get(at)
        if same is not None and same.signed == signed:
            return None
        if same is not None and same.record.ts >= record.ts:
            raise refuse("N2", p.PeerCode.STALE_RECORD, f"record of {user}")
        if record.ts <= self._withdrawn.get(user, {}).get(at, -1):
            raise refuse("N2", p.PeerCode.STALE_RECORD, f"withdrawn record of {user}")
        if same is None and len(held) >= MAX_PER_USER:
            oldest = min(held, key=lambda a: held[a].record.ts)
            if held[oldest].record.ts >= record.ts:
                raise refuse("N2", p.PeerCode.STALE_RECORD, f"record of {user}, older than all")
            self._drop(oldest)
        if same is not None:
            self._drop(at)
        self._records.setdefault(user, {})[at] = _Held(record, signed, key)
        users = self._by_key.setdefault(record.transport_pub, {})
        users[user] = users.get(user, 0) + 1
        return record

    def _drop(self, at: Listener) -> None:
        held = self._records[at.user]
        del held[at]
        if not held:
            del self._records[at.user]
        users = self._by_key[at.transport_pub]
        users[at.user] -= 1
        if not users[at.user]:
            del users[at.user]
            if not users:
                del self._by_key[at.transport_pub]

    def _withdraw(self, at: Listener, ts: int) -> None:
        self._drop(at)
        gone = self._withdrawn.setdefault(at.user, {})
        gone.pop(at, None)
        gone[at] = ts
        if len(gone) > MAX_PER_USER:
            del gone[next(iter(gone))]  # the one withdrawn first

    def dialed(self, record: p.PeerRecord, answered: bool) -> bool:
        """How an exchange with `record`'s listener went. True if that
        withdrew the record: it failed FAILS_TO_WITHDRAW times in a row, and
        its member has another that is newer, or answered its last exchange."""
        at = listener(record)
        held = self._records.get(record.user, {}).get(at)
        if held is None:
            return False
        held.answered = answered
        held.fails = 0 if answered else held.fails + 1
        if held.fails < FAILS_TO_WITHDRAW:
            return False
        better = [
            h
            for a, h in self._records[record.user].items()
            if a != at and h.key == held.key and (h.record.ts > held.record.ts or h.answered)
        ]
        if not better:
            return False
        self._withdraw(at, held.record.ts)
        return True

    def closed(self, signed: m.SignedRecord) -> bool:
        """The client that announced `signed` said it closed (its mDNS
        service went away). Anyone on the network can say so: a member's
        records are broadcast, so neither a signature nor a date proves it,
        and an attacker could pick which of a member's records is left by
        saying goodbye for the others. So a goodbye is a hint, not a
        withdrawal: the record held for that listener (if `signed` is no
        older) counts as having failed all but its last exchange and as not
        answering, so that its next failed exchange withdraws it by
        `dialed`'s rule, and one that goes through shows the goodbye was
        not its client's. True if a record was so marked."""
        try:
            record = p.decode_record(signed.record)
        except RemoteProtocolError:
            return False
        held = self._records.get(record.user, {}).get(listener(record))
        if held is None or held.record.ts > record.ts:
            return False
        held.fails = max(held.fails, FAILS_TO_WITHDRAW - 1)
        held.answered = False
        return True

    def heard_from(self, signed: m.SignedRecord) -> tuple[Listener, bool] | None:
        """The listener a record heard on the network claims to be (its
        user's), and whether it is of a user we know: their pinned key
        signed it (one it did not sign is as a stranger's, so that a forged
        record cannot take the place of theirs). None if it does not decode."""
        try:
            record = p.decode_record(signed.record)
        except RemoteProtocolError:
            return None
        pinned = self.trust.store.pin(record.user)
        if pinned is None:
            return listener(record), False
        try:
            verify(pinned, p.DOMAIN_RECORD + signed.record, signed.sig)
        except BadSignature:
            return listener(record), False
        return listener(record), True

    def records(self) -> list[m.SignedRecord]:
        return [held.signed for user in self._records.values() for held in user.values()]

    def _current(self, user: str) -> list[p.PeerRecord]:
        """`user`'s records verified with the key N1 trusts for `user` now
        (not ones since replaced by a key change), the newest first."""
        held = self._records.get(user)
        if not held:
            return []
        key = self._identity_key(user)
        current = [h.record for h in held.values() if h.key == key]
        return sorted(current, key=lambda r: r.ts, reverse=True)

    def peers(self) -> list[p.PeerRecord]:
        """The records of users we share a room with now (whom we may dial):
        each listener of theirs."""
        return [record for user in sorted(self._records) for record in self._current(user)]

    def _claimants(self, transport_pub: bytes) -> list[str]:
        """The members we share a room with whose current records announce
        the key (a key no record announces costs a dict lookup)."""
        users = self._by_key.get(transport_pub, {})
        return [
            u
            for u in sorted(users)
            if any(r.transport_pub == transport_pub for r in self._current(u))
        ]

    def pace(self, transport_pub: bytes, now: float) -> str | None:
        """Before a request is read: None to read it, or the code it is
        refused with. A key no record announces now (a member's newer record
        named another, after its connection was let in) is refused at once
        (N1); any other is paced, all its rooms together (N10)."""
        if transport_pub not in self._by_key:
            return p.PeerCode.NOT_SHARED
        return None if self.pacing.connection(transport_pub, now) else ErrorCode.RATE_LIMITED

    def admits(self, transport_pub: bytes) -> bool:
        """N1 at the handshake (the ZAP decision): a member's record announces the key."""
        return bool(self._claimants(transport_pub))

    def user_for_key(self, transport_pub: bytes, named: str) -> str | None:
        """N1 for a request: the member a connection with `transport_pub` is
        served as, or None. A record proves who signed it, not that its author
        holds the key it announces, so another member may announce our
        peer's key too: the request names its member (`named`), whose record
        must announce the key."""
        return named if named in self._claimants(transport_pub) else None
