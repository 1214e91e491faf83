"""1,000 connection attempts with unknown, malformed, NULL and PLAIN
credentials: none is served, the failures are counted, the server stays up."""

from __future__ import annotations

import re
import urllib.request

import zmq

from curvechat.protocol import decode_server_frame, encode_request
from curvechat.protocol import messages as m
from curvechat.protocol.connect import parse_connect

from support.servers import ServerProcess

PER_KIND = 250


def scrape(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        mm = re.match(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", line)
        if mm and mm.group(1) == name and ",".join(sorted((mm.group(2) or "").split(","))) == want:
            return float(mm.group(3))
    return 0.0


def attempt(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, kind: str, server_key: bytes
) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if kind == "unknown":  # a valid CURVE key the server has never seen
        pub, sec = zmq.curve_keypair()
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_key, pub, sec
    elif kind == "malformed":  # CURVE against the wrong server key
        pub, sec = zmq.curve_keypair()
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (
            zmq.curve_keypair()[0],
            pub,
            sec,
        )
    elif kind == "plain":
        sock.plain_username, sock.plain_password = b"admin", b"admin"
    # "null": no security mechanism at all
    sock.connect(endpoint)
    sock.send(encode_request(1, m.ListRooms()), zmq.NOBLOCK if kind != "unknown" else 0)
    return sock


def test_thousand_hostile_connections(server: ServerProcess) -> None:
    addr = parse_connect(server.connect)[0]
    key = addr.server_key.encode()
    before = scrape(server)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    served: dict[str, int] = {}
    try:
        for kind in ("unknown", "malformed", "null", "plain"):
            socks = []
            for _ in range(PER_KIND):
                try:
                    socks.append(attempt(ctx, addr.endpoint, kind, key))
                except zmq.Again:
                    socks.append(None)  # type: ignore[arg-type]
            poller = zmq.Poller()
            for s in socks:
                if s is not None:
                    poller.register(s, zmq.POLLIN)
            replies = []
            deadline_ms = 5000 if kind == "unknown" else 1500
            while len(replies) < len(socks):
                ready = dict(poller.poll(deadline_ms))
                if not ready:
                    break
                for s in ready:
                    replies.append(decode_server_frame(s.recv()))
                    poller.unregister(s)
            if kind == "unknown":
                # answered, but only to say it must register first
                assert len(replies) == PER_KIND
                assert {r.msg.code for r in replies if isinstance(r.msg, m.Error)} == {
                    "not_registered"
                }
                assert all(isinstance(r.msg, m.Error) for r in replies)
            served[kind] = len(replies)
            for s in socks:
                if s is not None:
                    s.close()
    finally:
        ctx.term()
    assert served["malformed"] == served["null"] == served["plain"] == 0
    after = scrape(server)
    failed = metric(after, "curvechat_handshakes_total", result="failed") - metric(
        before, "curvechat_handshakes_total", result="failed"
    )
    assert failed >= 3 * PER_KIND * 0.9, failed  # counted for the dashboard
    # and the server still serves
    ctx2: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        ok = attempt(ctx2, addr.endpoint, "unknown", key)
        ok.rcvtimeo = 5000
        assert isinstance(decode_server_frame(ok.recv()).msg, m.Error)
        ok.send(encode_request(2, m.Ping(t=5)))
        assert isinstance(decode_server_frame(ok.recv()).msg, m.Pong)
        ok.close()
    finally:
        ctx2.term()
