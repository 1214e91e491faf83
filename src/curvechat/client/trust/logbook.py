"""The verified membership logs a process holds in memory, kept in step with
the store it shares with the other processes of its home (the terminal
client, a `tail`, a `send`): an op one of them stored is applied here too,
checked as when the log is loaded, before the log is used again.

This module must never do I/O of its own (the store is its only memory), nor
take an op that does not verify: what it does not apply, it tells.
"""

from __future__ import annotations

from collections.abc import Callable

from curvechat.client import events as ev
from curvechat.client.trust.api import TrustStore
from curvechat.client.trust.log import RoomLog
from curvechat.crypto.errors import MembershipError
from curvechat.protocol import ErrorCode
from curvechat.protocol import messages as m
from curvechat.protocol.codec import decode_member_op


class LogBook:
    def __init__(self, store: TrustStore, emit: Callable[[ev.Event], None]) -> None:
        self.store = store
        self._emit = emit
        self._logs: dict[str, RoomLog] = {}
        self._at = -1  # the store's `written_elsewhere()` when last compared
        self._unchecked: set[str] = set()  # logs another process may have extended since

    def get(self, room: str) -> RoomLog:
        """The verified log of `room`: with the ops another process of this
        home stored since, applied and checked here as when it was loaded."""
        version = self.store.written_elsewhere()
        if version != self._at:
            self._at = version
            self._unchecked = set(self._logs)
        log = self._logs.get(room)
        if log is None:
            log = self._logs[room] = self._load(room)
        elif room in self._unchecked:
            self._unchecked.discard(room)
            if not self._apply_stored(log, self.store.ops(room, after=log.index)):
                log = self._logs[room] = self._load(room)  # read again from the start
        return log

    def forget(self, room: str) -> None:
        """Read `room`'s log from the store again when next asked for."""
        self._logs.pop(room, None)

    def held_already(self, log: RoomLog, signed: m.SignedOp) -> bool:
        """Whether `log` already holds `signed`: another process of this home
        stored it after this one asked for it (or sent it). An op at an index
        the home holds with other bytes is the server telling the processes
        different logs (MembershipError)."""
        try:
            index = decode_member_op(signed.op).index
        except Exception:
            return False  # `apply` refuses it, saying why
        held = self.store.op_at(log.room, index)
        if held is None:
            return False
        if held != (signed.op, signed.sig):
            raise MembershipError(
                ErrorCode.CONFLICT, f"op {index} differs from the one this home holds"
            )
        return index <= log.index  # else stored by another process since: applied here too

    def _load(self, room: str) -> RoomLog:
        log = RoomLog.empty(room)
        if not self._apply_stored(log, self.store.ops(room)):
            self.store.drop_ops(room)
            return RoomLog.empty(room)
        return log

    def _apply_stored(self, log: RoomLog, ops: list[tuple[bytes, bytes]]) -> bool:
        """Extend `log` by ops read from the store; False (told as a Problem,
        the log stopped before it) at one that does not apply."""
        for op_bytes, sig in ops:
            try:
                log.apply(m.SignedOp(op=op_bytes, sig=sig))
            except MembershipError as exc:
                self._emit(ev.Problem(log.room, f"local membership log is invalid: {exc}"))
                return False
        return True
