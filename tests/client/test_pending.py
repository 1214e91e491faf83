"""Requests matched with their replies (`client/pending.py`) over a real
ZeroMQ DEALER/ROUTER pair: `submit` (the outbox's task-less send) and `ask`
end the same way for each kind of answer, or for none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import zmq
import zmq.asyncio

from curvechat.client.errors import NotConnected, RequestTimeout, ServerRefused
from curvechat.client.pending import Pending
from curvechat.protocol import ErrorCode, decode_request, decode_server_frame, encode_reply
from curvechat.protocol import messages as m


@dataclass
class Pair:
    dealer: zmq.asyncio.Socket
    router: zmq.asyncio.Socket
    pending: Pending

    async def take(self) -> tuple[bytes, int, m.AnyRequest]:
        """What the ROUTER got: (peer id, request id, request)."""
        peer, data = await asyncio.wait_for(self.router.recv_multipart(), 5)
        frame = decode_request(data)
        return peer, frame.rid, frame.req

    async def reply(self, peer: bytes, rid: int, msg: m.AnyReply) -> None:
        await self.router.send_multipart([peer, encode_reply(rid, msg)])

    async def pump(self) -> None:
        """Hand the DEALER's next reply to `pending`, as the connection's reader does."""
        frame = decode_server_frame(await asyncio.wait_for(self.dealer.recv(), 5))
        self.pending.answer(frame.rid, frame.msg)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind("inproc://pending")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect("inproc://pending")
    yield Pair(dealer, router, Pending())
    dealer.close(linger=0)
    router.close(linger=0)
    ctx.term()


def ping() -> m.Ping:
    return m.Ping(t=1)


PONG = m.Pong(t=1, time=2, node="n1", boot="b1")


async def test_submit_writes_at_once_and_resolves_with_the_reply(pair: Pair) -> None:
    fut = pair.pending.submit(pair.dealer, ping(), 5.0)
    peer, rid, req = await pair.take()  # written before `submit` returned
    assert isinstance(req, m.Ping) and not fut.done()
    await pair.reply(peer, rid, PONG)
    await pair.pump()
    assert isinstance(await fut, m.Pong)


async def test_submitted_frames_go_out_in_order(pair: Pair) -> None:
    futs = [pair.pending.submit(pair.dealer, m.History(room="r", after=i), 5.0) for i in range(50)]
    got = [await pair.take() for _ in futs]
    assert [req.after for _, _, req in got] == list(range(50))  # type: ignore[union-attr]
    for peer, rid, _ in reversed(got):  # answered in any order: each to its own future
        await pair.reply(peer, rid, PONG)
        await pair.pump()
    assert all(isinstance(f.result(), m.Pong) for f in futs)


async def test_an_error_reply_fails_both_ways_with_its_code(pair: Pair) -> None:
    fut = pair.pending.submit(pair.dealer, ping(), 5.0)
    asked = asyncio.ensure_future(pair.pending.ask(pair.dealer, ping(), 5.0))
    for _ in range(2):
        peer, rid, _ = await pair.take()
        await pair.reply(peer, rid, m.Error(code=ErrorCode.RATE_LIMITED, message="slow down"))
        await pair.pump()
    for done in (fut, asked):
        with pytest.raises(ServerRefused) as refused:
            await done
        assert refused.value.code == ErrorCode.RATE_LIMITED


async def test_no_reply_times_out_and_a_late_one_is_ignored(pair: Pair) -> None:
    fut = pair.pending.submit(pair.dealer, ping(), 0.1)
    peer, rid, _ = await pair.take()
    with pytest.raises(RequestTimeout):
        await fut
    await pair.reply(peer, rid, PONG)
    await pair.pump()  # nobody waits for it any more: no error


async def test_a_lost_socket_fails_what_waits(pair: Pair) -> None:
    fut = pair.pending.submit(pair.dealer, ping(), 5.0)
    pair.pending.fail_all("gone")
    with pytest.raises(NotConnected):
        await fut


async def test_a_closed_socket_fails_the_submit(pair: Pair) -> None:
    pair.dealer.close(linger=0)
    with pytest.raises(NotConnected):
        await pair.pending.submit(pair.dealer, ping(), 5.0)


async def test_a_request_too_large_to_send_fails_alone(pair: Pair) -> None:
    """A frame over the limit is this request's failure (its code), not an
    exception out of `submit`: the outbox fails that one message."""
    from curvechat.protocol import LocalProtocolError
    from curvechat.protocol.limits import MAX_FRAME_BYTES

    env = m.Envelope(
        room="r", epoch=0, sender="alice", txn="t" * 16, nonce=bytes(24),
        ct=bytes(MAX_FRAME_BYTES), sig=bytes(64),
    )  # fmt: skip
    fut = pair.pending.submit(pair.dealer, m.Send(envelope=env), 5.0)
    with pytest.raises(LocalProtocolError) as refused:
        await fut
    assert refused.value.code == ErrorCode.TOO_LARGE
    await asyncio.sleep(0)  # its done-callbacks run
    assert not pair.pending._futures  # nothing left waiting


def _send(i: int, ct: int = 48) -> m.Send:
    env = m.Envelope(
        room="r", epoch=0, sender="alice", txn=f"txn-{i:08d}", nonce=bytes(24),
        ct=bytes(ct), sig=bytes(64),
    )  # fmt: skip
    return m.Send(envelope=env)


async def test_sends_go_several_to_a_frame_and_are_answered_each(pair: Pair) -> None:
    futs = pair.pending.submit_sends(pair.dealer, [_send(i) for i in range(5)], 5.0)
    peer, rid, req = await pair.take()  # one frame, written before `submit_sends` returned
    assert isinstance(req, m.Sends)
    assert [i.send for i in req.items] == [_send(i) for i in range(5)]
    rids = [i.rid for i in req.items]
    assert rid == rids[0] and len(set(rids)) == 5
    refusal = m.Error(code=ErrorCode.NOT_MEMBER, message="no")  # about one send only
    for n, item_rid in enumerate(rids):
        ack = m.SendAck(room="r", txn=f"txn-{n:08d}", seq=n + 1, ts=1)
        await pair.reply(peer, item_rid, refusal if n == 0 else ack)
        await pair.pump()
    with pytest.raises(ServerRefused):
        await futs[0]
    assert [f.result().seq for f in futs[1:]] == [2, 3, 4, 5]  # type: ignore[union-attr]


@pytest.mark.parametrize("code", [ErrorCode.RATE_LIMITED, ErrorCode.BAD_FRAME])
async def test_a_sends_frame_refused_whole_fails_each_of_its_sends(
    pair: Pair, code: ErrorCode
) -> None:
    futs = pair.pending.submit_sends(pair.dealer, [_send(i) for i in range(3)], 5.0)
    peer, rid, _ = await pair.take()
    await pair.reply(peer, rid, m.Error(code=code, message="not read"))  # once, to its rid
    await pair.pump()
    for fut in futs:
        with pytest.raises(ServerRefused) as refused:
            await fut
        assert refused.value.code == code
    assert not pair.pending._futures and not pair.pending._frames  # nothing left waiting


async def test_a_refusal_of_a_later_send_stands_for_the_rest_of_its_frame(pair: Pair) -> None:
    futs = pair.pending.submit_sends(pair.dealer, [_send(i) for i in range(5)], 5.0)
    peer, _, req = await pair.take()
    rids = [i.rid for i in req.items]  # type: ignore[union-attr]
    for n in (0, 1):
        await pair.reply(peer, rids[n], m.SendAck(room="r", txn=f"txn-{n:08d}", seq=n + 1, ts=1))
        await pair.pump()
    # The node read no further than the third: one answer, to it.
    await pair.reply(peer, rids[2], m.Error(code=ErrorCode.RATE_LIMITED, message="slow down"))
    await pair.pump()
    assert [f.result().seq for f in futs[:2]] == [1, 2]  # type: ignore[union-attr]
    for fut in futs[2:]:
        with pytest.raises(ServerRefused) as refused:
            await fut
        assert refused.value.code == ErrorCode.RATE_LIMITED
    assert not pair.pending._futures and not pair.pending._frames  # nothing left waiting


async def test_sends_fill_frames_up_to_the_limit(pair: Pair) -> None:
    from curvechat.protocol.limits import MAX_SENDS

    futs = pair.pending.submit_sends(pair.dealer, [_send(i) for i in range(MAX_SENDS + 3)], 5.0)
    first = await pair.take()
    second = await pair.take()
    sizes = [len(f[2].items) for f in (first, second)]  # type: ignore[union-attr]
    assert sizes == [MAX_SENDS, 3] and len(futs) == MAX_SENDS + 3


async def test_sends_frames_stay_small_enough_to_upload_within_a_deadline(pair: Pair) -> None:
    from curvechat.client.pending import SENDS_FRAME_BYTES

    big = [_send(i, ct=20_000) for i in range(10)]  # 200 KB in all
    pair.pending.submit_sends(pair.dealer, big, 5.0)
    counts = []
    while sum(counts) < len(big):
        _, _, req = await pair.take()
        assert isinstance(req, m.Sends)
        counts.append(len(req.items))
    assert counts == [3, 3, 3, 1]
    assert 3 * 20_000 < SENDS_FRAME_BYTES < 4 * 20_000


async def test_request_ids_stay_fresh_after_earlier_ones_were_answered(pair: Pair) -> None:
    seen: set[int] = set()
    for round_ in range(3):  # each round's answers leave finished deadlines behind
        futs = pair.pending.submit_sends(pair.dealer, [_send(i) for i in range(3)], 5.0)
        peer, _, req = await pair.take()
        rids = [i.rid for i in req.items]  # type: ignore[union-attr]
        assert len(set(rids)) == 3 and not seen & set(rids), (round_, rids, seen)
        seen |= set(rids)
        for n, rid in enumerate(rids):
            await pair.reply(peer, rid, m.SendAck(room="r", txn=f"txn-{n:08d}", seq=n + 1, ts=1))
            await pair.pump()
        assert [f.result().seq for f in futs] == [1, 2, 3]  # type: ignore[union-attr]
