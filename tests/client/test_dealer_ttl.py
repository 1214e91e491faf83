"""The TTL the client's heartbeats carry: the node's only liveness check of
its clients (server/router.py), so it must be there, and long enough for a
large frame on a slow uplink."""

from __future__ import annotations

import zmq
import zmq.asyncio

from curvechat.client.connection import HEARTBEAT_S
from curvechat.client.dealer import TTL_MAX_MS, heartbeat_ttl_ms, open_dealer
from curvechat.protocol.connect import ServerAddress
from curvechat.protocol.limits import MAX_FRAME_BYTES


def test_the_ttl_is_twice_our_own_patience_and_outlasts_a_large_frame_on_a_slow_uplink() -> None:
    ttl = heartbeat_ttl_ms(HEARTBEAT_S, 3)
    assert ttl == int(HEARTBEAT_S * 3 * 2 * 1000)
    slow_uplink_s = MAX_FRAME_BYTES * 8 / 100_000  # the largest frame at 100 kbit/s
    assert ttl / 1000 > slow_uplink_s
    # libzmq reads a TTL into 16 bits of milliseconds: more would wrap to a
    # short one at the node, which would then drop a healthy client.
    assert heartbeat_ttl_ms(3600.0, 10) == TTL_MAX_MS <= 65_535
    assert heartbeat_ttl_ms(0.01, 1) == 100  # under 100 ms it would be 0: no TTL


async def test_the_dealer_heartbeats_with_the_ttl() -> None:
    ctx = zmq.asyncio.Context()
    try:
        pub, sec = zmq.curve_keypair()
        server_pub, _ = zmq.curve_keypair()
        addr = ServerAddress("tcp://127.0.0.1:9", server_pub.decode())
        sock, monitor = open_dealer(
            ctx, addr, public_key=pub, secret_key=sec, beat_s=5.0, liveness=3
        )
        assert sock.getsockopt(zmq.HEARTBEAT_TTL) == 30_000
        assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 5_000
        sock.close(linger=0)
        monitor.close(linger=0)
    finally:
        ctx.term()
