"""The node's directory of peer announcements: where each user's client
listens for peers, as the user signed it (`Announce`, docs/protocol.md
"Peer protocol").

The node checks that the record is the requester's own and signed by the
identity key the requester registered, keeps the newest per user in memory
(lost on restart: a client announces again after every sync) and hands it
out with the user's keys in `Directory`. Clients check the signature again
against their own pins; the node vouches for nothing.

This module must never touch the store or a socket, nor read what a record
says beyond its author (it is the clients' to judge).
"""

from __future__ import annotations

from collections import OrderedDict

from curvechat.crypto.errors import BadSignature
from curvechat.crypto.identity import verify
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol.errors import RemoteProtocolError
from curvechat.protocol.peer import DOMAIN_RECORD, decode_record

MAX_RECORDS = 100_000


class RecordRefused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PeerDirectory:
    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self._records: OrderedDict[str, tuple[int, m.SignedRecord]] = OrderedDict()
        self._max = max_records

    def __len__(self) -> int:
        return len(self._records)

    def announce(self, user: str, sign_pub: bytes, signed: m.SignedRecord) -> None:
        """Keep `signed` as `user`'s record, or raise RecordRefused."""
        try:
            record = decode_record(signed.record)
        except RemoteProtocolError as exc:
            raise RecordRefused(ErrorCode.BAD_FRAME, str(exc)) from exc
        if record.user != user:
            raise RecordRefused(ErrorCode.FORBIDDEN, "a record may only announce its author")
        try:
            verify(sign_pub, DOMAIN_RECORD + signed.record, signed.sig)
        except BadSignature as exc:
            raise RecordRefused(
                ErrorCode.BAD_SIGNATURE, "the record is not signed by your identity key"
            ) from exc
        held = self._records.get(user)
        if held is not None and held[0] > record.ts:
            return  # an older record than the one kept: nothing to do
        self._records[user] = (record.ts, signed)
        self._records.move_to_end(user)
        while len(self._records) > self._max:
            self._records.popitem(last=False)

    def record(self, user: str) -> m.SignedRecord | None:
        held = self._records.get(user)
        return None if held is None else held[1]
