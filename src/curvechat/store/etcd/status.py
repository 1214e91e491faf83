"""How full etcd is: each member's database size from its Status call, and
the space quota it is held to.

What it is for: etcd keeps everything in one file capped by its
``--quota-backend-bytes`` (2 GiB by default); at the cap it raises the
NOSPACE alarm and refuses every write. The node polls this to show how close
the cluster is (docs/operations.md, Size quota and compaction).

How it works: the Maintenance ``Status`` call of every member (each member
has its own file; the fullest one raises the alarm first). ``dbSize`` is the
file's size, which is what etcd compares with its quota; ``dbSizeInUse`` is
the part in use (what a defragmentation would shrink the file to). etcd 3.4
does not report its quota; etcd 3.6 does (``dbSizeQuota``, field 12 of
StatusResponse), which the generated stubs of `aetcd` do not know: it is
read from the message's unknown fields when present.

What it must never do: change anything in etcd, or raise anything but
`StoreUnavailable` for a member that does not answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store.base import StoreUnavailable
from curvechat.store.etcd import conn as conn

__all__ = [
    "DEFAULT_QUOTA_BYTES",
    "MemberStatus",
    "member_statuses",
    "reported_quota",
]

DEFAULT_QUOTA_BYTES = 2 * 1024**3  # etcd's default --quota-backend-bytes
_QUOTA_FIELD = 12  # StatusResponse.dbSizeQuota (etcd 3.6 and later)
STATUS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class MemberStatus:
    """One member's answer: its file size, the part of it in use, and the
    quota it reported (0: it did not say)."""

    endpoint: str
    db_size: int
    db_size_in_use: int
    quota: int = 0


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """The varint at `data[i:]` and the index after it (ValueError if cut off)."""
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def reported_quota(wire: bytes) -> int:
    """``dbSizeQuota`` of a serialized StatusResponse, or 0 if absent or
    not a sane value (a malformed message yields 0, never an exception)."""
    found = 0
    i = 0
    try:
        while i < len(wire):
            tag, i = _varint(wire, i)
            number, kind = tag >> 3, tag & 7
            if kind == 0:
                value, i = _varint(wire, i)
                if number == _QUOTA_FIELD:
                    found = value
            elif kind == 1:
                i += 8
            elif kind == 2:
                length, i = _varint(wire, i)
                i += length
            elif kind == 5:
                i += 4
            else:
                return 0  # groups (3, 4) are not in etcd's messages
            if i > len(wire):
                return 0
    except ValueError:
        return 0
    return found if 0 < found < 2**62 else 0


async def _status(endpoint: str, stub: Any, timeout: float) -> MemberStatus:
    try:
        resp = await stub.Status(rpc.StatusRequest(), timeout=timeout)
    except rpc.AioRpcError as exc:
        raise StoreUnavailable(f"etcd {endpoint}: {exc.code().name}: {exc.details()}") from exc
    return MemberStatus(
        endpoint,
        max(0, int(resp.dbSize)),
        max(0, int(resp.dbSizeInUse)),
        reported_quota(resp.SerializeToString()),
    )


async def member_statuses(
    members: list[tuple[str, Any]],
    login: conn.Login | None,
    timeout: float = STATUS_TIMEOUT_S,
) -> tuple[list[MemberStatus], list[str]]:
    """The Status of every member given as (endpoint, gRPC channel), asked
    at once: the answers, and for each member that did not answer a line
    saying why."""

    async def one(endpoint: str, channel: Any) -> MemberStatus | str:
        stub = conn.authed(rpc.MaintenanceStub(channel), login, channel)
        try:
            return await _status(endpoint, stub, timeout)
        except StoreUnavailable as exc:
            return str(exc)
        except rpc.AioRpcError as exc:  # the login itself failed
            return f"etcd {endpoint}: {exc.code().name}: {exc.details()}"

    results = await asyncio.gather(*(one(e, c) for e, c in members))
    answers = [r for r in results if isinstance(r, MemberStatus)]
    return answers, [r for r in results if isinstance(r, str)]
