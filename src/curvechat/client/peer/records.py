"""Who a peer is (rules N1, N2, sans-IO): the signed records members
announce (where they listen, and the transport key their listener
proves), which of them we believe, and which member a connecting key is.

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
from typing import Final

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


@dataclass(frozen=True, slots=True)
class _Held:
    """A member's record, and the identity key it was verified with."""

    record: p.PeerRecord
    signed: m.SignedRecord
    key: bytes


class PeerRecords:
    def __init__(self, trust: TrustCore) -> None:
        self.trust = trust
        self.me = trust.me
        self._records: dict[str, _Held] = {}
        self._by_key: dict[bytes, set[str]] = {}  # transport key -> users announcing it
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
        if record.user == self.me:
            return None
        key = self._identity_key(record.user)
        if key is None:
            raise refuse("N1", p.PeerCode.NOT_SHARED, f"record of {record.user}")
        try:
            verify(key, p.DOMAIN_RECORD + signed.record, signed.sig)
        except BadSignature as exc:
            raise refuse("N1", ErrorCode.BAD_SIGNATURE, f"record of {record.user}") from exc
        if now_ms is not None and record.ts > now_ms + RECORD_AHEAD_MS:
            raise refuse("N2", p.PeerCode.STALE_RECORD, f"record of {record.user} from the future")
        held = self._records.get(record.user)
        if held is not None and held.key == key:  # one signed by an older key gives way
            if held.signed == signed:
                return None
            if held.record.ts >= record.ts:
                raise refuse("N2", p.PeerCode.STALE_RECORD, f"record of {record.user}")
        if held is not None:
            users = self._by_key[held.record.transport_pub]
            users.discard(record.user)
            if not users:
                del self._by_key[held.record.transport_pub]
        self._records[record.user] = _Held(record, signed, key)
        self._by_key.setdefault(record.transport_pub, set()).add(record.user)
        return record

    def heard_from(self, signed: m.SignedRecord) -> tuple[str, bool] | None:
        """The user a record heard on the network claims to be from, and
        whether it is a user we know: their pinned key signed it (one it did
        not sign is as a stranger's, so that a forged record cannot take the
        place of theirs). None if it does not decode."""
        try:
            user = p.decode_record(signed.record).user
        except RemoteProtocolError:
            return None
        pinned = self.trust.store.pin(user)
        if pinned is None:
            return user, False
        try:
            verify(pinned, p.DOMAIN_RECORD + signed.record, signed.sig)
        except BadSignature:
            return user, False
        return user, True

    def records(self) -> list[m.SignedRecord]:
        return [held.signed for held in self._records.values()]

    def _current(self, user: str) -> p.PeerRecord | None:
        """`user`'s record, if it was verified with the key N1 trusts for
        `user` now (not one since replaced by a key change)."""
        held = self._records.get(user)
        if held is None or held.key != self._identity_key(user):
            return None
        return held.record

    def peers(self) -> list[p.PeerRecord]:
        """The records of users we share a room with now (whom we may dial)."""
        current = (self._current(user) for user in sorted(self._records))
        return [record for record in current if record is not None]

    def _claimants(self, transport_pub: bytes) -> list[str]:
        """The members we share a room with whose current records announce
        the key (a key no record announces costs a dict lookup)."""
        users = self._by_key.get(transport_pub, ())
        return [u for u in sorted(users) if self._current(u) is not None]

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
