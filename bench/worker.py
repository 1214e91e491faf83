"""A load-generator process: many lightweight raw-protocol clients on plain
(synchronous) pyzmq DEALER sockets with real CURVE, driven by one poll loop.

The orchestrator talks to it over a multiprocessing pipe:

* ``("connect", None)``: connect every client, `hello`, and `register` those
  that must be registered; answers when all are welcomed.
* ``("prepare", [sender specs])``: each sender fetches its room's key packet,
  opens it, and seals its messages ahead of time (real envelopes, real
  signatures; sealing is measured separately, in the client-crypto row).
* ``("run", {...})``: send (paced or windowed), receive every push, answer
  with send/ack/receive times (monotonic ns, comparable across processes).
  A windowed sender puts the sends it makes at once (its window at the
  start, then one for each ack of a frame it received) into one `sends`
  frame, as the client engine does, and a paced one a `sends` frame of
  one; with ``spec["sends"]`` false, each send is a `send` frame.
* ``("idle", {...})``: only ping every interval, reading just the pongs,
  until "stop".
"""

from __future__ import annotations

import contextlib
import os
import time
from array import array
from multiprocessing.connection import Connection
from typing import Any

import zmq
import zmq.utils.z85

from bench.common import TEXT, light_decode, msg_id, recv_ready, txn_of
from curvechat.client.connection import HEARTBEAT_S, PING_INTERVAL_S
from curvechat.client.dealer import set_heartbeats
from curvechat.crypto.envelope import Plaintext, seal_message
from curvechat.crypto.identity import Identity
from curvechat.crypto.roomkeys import unwrap_key_packet
from curvechat.protocol import decode_server_frame, encode_request, encode_send_item, encode_sends
from curvechat.protocol import messages as m
from curvechat.protocol.limits import MAX_REPLY_BYTES

#: Request ids of pre-sealed sends: frame k of a client is rid FRAME_RID + k.
FRAME_RID = 1 << 30
#: Sends in one `sends` frame at most (about 80 KiB of the bench's messages).
SENDS_PER_FRAME = 128
#: As the real client (client/connection.py): an app-level ping every 30 s,
#: liveness from ZMTP heartbeats every 5 s (15 s without a word: dead).
PING_S = PING_INTERVAL_S


class Client:
    def __init__(self, ctx: zmq.Context, spec: dict[str, Any], endpoint: str, server_key: str):
        self.user: str = spec["user"]
        self.register: bool = spec.get("register", True)
        self.stalled: bool = spec.get("stalled", False)
        self.identity = (
            Identity.from_secrets(self.user, spec["sign_seed"], spec["transport_secret"])
            if "sign_seed" in spec
            else Identity.generate(self.user)
        )
        s = ctx.socket(zmq.DEALER)
        s.curve_serverkey = server_key.encode()
        s.curve_publickey = zmq.utils.z85.encode(self.identity.transport_pub)
        s.curve_secretkey = zmq.utils.z85.encode(self.identity.transport_secret)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES + 4096)
        s.setsockopt(zmq.SNDHWM, 100_000)
        if self.stalled:
            # A client that stops reading: tiny queues so that the backlog
            # lands on the server as soon as the kernel buffers are full. It
            # does not beat: libzmq aborts a process whose beating socket
            # fails with a full queue (curvechat/heartbeats.py).
            s.setsockopt(zmq.RCVHWM, 10)
            s.setsockopt(zmq.RCVBUF, 4096)
        else:
            set_heartbeats(s, HEARTBEAT_S, 3)  # as the client (client/connection.py)
        s.connect(endpoint)
        self.sock = s
        self.rid = 0
        self.welcomed = False
        self.ready = False
        # sender state
        self.frames: list[bytes] = []  # sends (spec "sends": `sends` items)
        self.items: list[bytes] = []  # `sends` items of `frames` not yet sent
        self.frame_end: dict[int, int] = {}  # rid -> the last rid of its `sends` frame
        self.ids: list[int] = []
        self.next = 0
        self.limit = 0
        self.last_seq = 0
        self.inflight: dict[int, int] = {}  # rid -> index into t_send
        self.t_send = array("q")
        self.t_ack = array("q")
        self.seqs = array("q")  # the seq each send was acked with (0: not acked)
        self.sent_ids = array("q")
        self.next_ping = 0.0

    def request(self, req: m.AnyRequest) -> int:
        self.rid += 1
        self.sock.send(encode_request(self.rid, req), zmq.NOBLOCK)
        return self.rid


class Worker:
    def __init__(self, index: int, spec: dict[str, Any]) -> None:
        self.index = index
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 60_000)
        self.ctx.set(zmq.IO_THREADS, 1)
        self.specs = spec["clients"]
        self.endpoints: list[str] = spec["endpoints"]
        self.server_keys: list[str] = spec["server_keys"]
        self.batch: bool = spec.get("batch", True)
        self.sends: bool = spec.get("sends", False)
        self.clients: list[Client] = []
        self.by_sock: dict[zmq.Socket, Client] = {}
        self.recv_ids = array("q")
        self.recv_t = array("q")
        self.errors: dict[str, int] = {}
        self.pushes = 0
        self.pongs = 0
        self.sending = False
        self.mode = "window"
        self.order_violations = 0

    # --- connect ----------------------------------------------------------------
    def connect(self, batch: int = 0, budget: float = 0.0) -> dict[str, Any]:
        """Connect every client, `batch` at a time (0: all at once): a herd of
        thousands of CURVE handshakes at once outlasts the server's handshake
        timeout, as it would in real life. With a `budget` (seconds), stop
        opening new connections when it is spent, or when a batch does not
        complete in 60 s, and report how many made it."""
        t0 = time.monotonic()
        batch = batch or len(self.specs)
        failed = 0
        for start in range(0, len(self.specs), batch):
            if budget and time.monotonic() - t0 > budget:
                break
            chunk = []
            for i in range(start, min(start + batch, len(self.specs))):
                spec = self.specs[i]
                node = spec.get("node", i % len(self.endpoints))
                c = Client(self.ctx, spec, self.endpoints[node], self.server_keys[node])
                self.clients.append(c)
                self.by_sock[c.sock] = c
                c.request(m.Hello(client="curvechat-bench", batch=self.batch, sends=self.sends))
                chunk.append(c)
            failed = self._welcome(chunk, 60.0 if budget else 120.0)
            if failed:
                if not budget:
                    raise RuntimeError(f"{failed} clients did not connect in time")
                break
        # Only the clients that made it take part in what follows.
        gone = [c for c in self.clients if not c.ready]
        for c in gone:
            del self.by_sock[c.sock]
            c.sock.close(0)
        self.clients = [c for c in self.clients if c.ready]
        return {
            "connected": len(self.clients),
            "not_connected": len(gone),
            "seconds": round(time.monotonic() - t0, 3),
        }

    def _welcome(self, clients: list[Client], timeout: float) -> int:
        """Wait for every client's welcome (and registration); returns how
        many did not make it in `timeout` seconds."""
        poller = zmq.Poller()
        for c in clients:
            poller.register(c.sock, zmq.POLLIN)
        pending = len(clients)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            self._pings(time.monotonic(), PING_S, only_ready=True)
            for sock, _ in poller.poll(200):
                c = self.by_sock[sock]
                for data in recv_ready(sock):
                    if self._on_welcome_reply(c, decode_server_frame(data).msg):
                        pending -= 1
        return pending

    @staticmethod
    def _on_welcome_reply(c: Client, msg: m.AnyReply) -> bool:
        """Handle one reply while connecting; True when `c` has just become ready."""
        if isinstance(msg, m.Error):
            raise RuntimeError(f"{c.user}: {msg.code}: {msg.message}")
        if isinstance(msg, m.Welcome) and not c.welcomed:
            c.welcomed = True
            if msg.user is None and c.register:
                c.request(
                    m.Register(
                        user=c.user,
                        sign_pub=c.identity.sign_pub,
                        transport_sig=c.identity.transport_sig(),
                    )
                )
                return False
        elif not isinstance(msg, m.Registered):
            return False
        c.ready = True
        return True

    def _wait_reply(self, c: Client, rid: int) -> m.AnyReply:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if c.sock.poll(1000):
                frame = decode_server_frame(c.sock.recv())
                if frame.rid == rid:
                    return frame.msg
        raise RuntimeError(f"{c.user}: no reply")

    # --- prepare ----------------------------------------------------------------
    def prepare(self, senders: list[dict[str, Any]]) -> dict[str, Any]:
        t0 = time.monotonic()
        n = 0
        for s in senders:
            c = self.clients[s["client"]]
            reply = self._wait_reply(c, c.request(m.FetchKeys(room=s["room"])))
            assert isinstance(reply, m.KeyPackets), reply
            packet = max(reply.packets, key=lambda p: p.epoch)
            key = unwrap_key_packet(c.identity, packet, s["creator_pub"])
            for _ in range(s["count"]):
                mid = msg_id(self.index, s["client"], len(c.frames))
                env = seal_message(
                    c.identity,
                    room=s["room"],
                    epoch=key.epoch,
                    key=key.key,
                    txn=txn_of(mid),
                    plaintext=Plaintext(text=TEXT, ts=int(time.time() * 1000)),
                )
                rid, send = FRAME_RID + len(c.frames), m.Send(envelope=env)
                c.frames.append(
                    encode_send_item(rid, send) if self.sends else encode_request(rid, send)
                )
                c.ids.append(mid)
                if len(c.frames) % 500 == 0:
                    # report meanwhile, as a real client would
                    self._pings(time.monotonic(), PING_S)
            n += s["count"]
        return {"sealed": n, "seconds": round(time.monotonic() - t0, 3)}

    # --- idle ---------------------------------------------------------------------
    def idle(self, pipe: Connection, cfg: dict[str, Any]) -> dict[str, Any]:
        """Keep every client connected and pinging every `ping_interval`, until
        the orchestrator says stop; counts the pongs.

        An idle client costs its own machine nearly nothing, so this loop must
        not either: the clients share the node's two cores, and a poll over
        every socket every 20 ms (as `run` does) took 22-30 % of a core per
        2,500 clients. Each `tick` it pings the clients that are
        due and reads only the sockets with a ping out; libzmq's I/O thread
        answers the ZMTP heartbeats meanwhile, as for a real client."""
        interval = float(cfg.get("ping_interval", PING_S))
        tick = float(cfg.get("tick", 0.1))
        n = len(self.clients)
        start = time.monotonic()
        cpu0 = os.times()
        # the pings spread evenly over the interval, in a fixed order
        due = [start + interval * i / max(n, 1) for i in range(n)]
        nxt = 0
        waiting: set[int] = set()
        self.pongs = 0
        while not pipe.poll(tick):
            now = time.monotonic()
            while interval > 0 and n and due[nxt] <= now:
                if _ping(self.clients[nxt]):
                    waiting.add(nxt)
                due[nxt] += interval
                nxt = (nxt + 1) % n
            for i in list(waiting):
                c = self.clients[i]
                for data in recv_ready(c.sock):
                    for _rid, kind, _txn, seq in light_decode(data):
                        if kind == "pong":
                            self.pongs += 1
                            waiting.discard(i)
                        elif kind == "push_mark":
                            self._echo_mark(c, seq)
        pipe.recv()
        return {**_usage(start, cpu0), "pongs": self.pongs}

    # --- run ----------------------------------------------------------------------
    def run(self, pipe: Connection, cfg: dict[str, Any]) -> dict[str, Any]:
        mode = cfg.get("mode", "window")  # window | rate
        duration = cfg.get("duration")
        window = int(cfg.get("window", 1))
        interval = float(cfg.get("interval", 0.01))
        # Like the real client: every connection pings every PING_S.
        ping_interval = cfg.get("ping_interval", PING_S)
        self.recv_ids = array("q")
        self.recv_t = array("q")
        self.errors = {}
        self.pushes = self.pongs = 0
        self.sending = True
        self.mode = mode
        poller = zmq.Poller()
        for c in self.clients:
            if not c.stalled:
                poller.register(c.sock, zmq.POLLIN)
        poller.register(pipe.fileno(), zmq.POLLIN)
        start = time.monotonic()
        cpu0 = os.times()
        start_ns = time.monotonic_ns()
        stop_at = start + duration if duration else None
        active: list[Client] = []
        for idx, count in cfg.get("senders", {}).items():
            c = self.clients[int(idx)]
            c.t_send, c.t_ack, c.sent_ids, c.inflight = array("q"), array("q"), array("q"), {}
            c.seqs = array("q")
            c.limit = min(len(c.frames), c.next + int(count))
            active.append(c)
        if ping_interval:
            n = len(self.clients)
            for i, c in enumerate(self.clients):
                c.next_ping = start + ping_interval * i / max(n, 1)
        # Paced senders are spread over the interval.
        step = int(interval * 1e9)
        sched = {id(c): start_ns + step * k // max(len(active), 1) for k, c in enumerate(active)}
        drain_until: float | None = None
        if mode == "window":
            now_ns = time.monotonic_ns()
            for c in active:
                for _ in range(window):
                    if not self._send_next(c, now_ns):
                        break
                self._flush(c)
        stop_requested = False
        quiet = float(cfg.get("quiet", 0.5))
        while True:
            now = time.monotonic()
            if self.sending and (stop_requested or (stop_at is not None and now >= stop_at)):
                self.sending = False
                drain_until = now + float(cfg.get("drain", 5.0))
            if not self.sending:
                outstanding = sum(len(c.inflight) for c in active)
                if outstanding == 0 or (drain_until is not None and now >= drain_until):
                    # let the pushes still in flight arrive
                    quiet_end = time.monotonic() + quiet
                    while time.monotonic() < quiet_end:
                        if self._drain(poller, 100, pipe) > 0:
                            quiet_end = time.monotonic() + quiet
                    break
            timeout: float = 50
            if self.sending and mode == "rate" and active:
                nxt = min(sched.values())
                timeout = max(0.0, min(timeout, (nxt - time.monotonic_ns()) / 1e6))
            if ping_interval:
                timeout = min(timeout, 20)
            if self._drain(poller, timeout, pipe) < 0:
                stop_requested = True
            if self.sending and mode == "rate":
                now_ns = time.monotonic_ns()
                for c in active:
                    if now_ns >= sched[id(c)]:
                        self._send_next(c, now_ns)
                        sched[id(c)] += step
            if ping_interval:
                self._pings(time.monotonic(), ping_interval)
        return {
            **_usage(start, cpu0),
            "start_ns": start_ns,
            "recv_ids": self.recv_ids.tobytes(),
            "recv_t": self.recv_t.tobytes(),
            "pushes": self.pushes,
            "pongs": self.pongs,
            "errors": self.errors,
            "order_violations": self.order_violations,
            "sends": [
                {
                    "ids": c.sent_ids.tobytes(),
                    "t_send": c.t_send.tobytes(),
                    "t_ack": c.t_ack.tobytes(),
                    "seqs": c.seqs.tobytes(),
                }
                for c in active
            ],
        }

    def _pings(self, now: float, interval: float, *, only_ready: bool = False) -> None:
        # A stalled client pings too: it stops reading, not talking.
        for c in self.clients:
            if now >= c.next_ping and (c.ready or not only_ready):
                c.next_ping = now + interval
                _ping(c)

    @staticmethod
    def _echo_mark(c: Client, mark: int) -> None:
        """Flow control: prove to the node at once that we read up to its
        mark, as the client engine does (else it withholds our pushes and
        refuses our sends once 4 MiB are unconfirmed)."""
        c.rid += 1
        with contextlib.suppress(zmq.Again):
            ping = m.Ping(t=int(time.time() * 1000), read_mark=mark)
            c.sock.send(encode_request(c.rid, ping), zmq.NOBLOCK)

    def _send_next(self, c: Client, now_ns: int) -> bool:
        """Send (or, windowed with `sends` frames, queue for `_flush`) the next send."""
        if c.next >= c.limit:
            return False
        if self.sends and self.mode == "window":
            c.items.append(c.frames[c.next])
        else:
            frame = c.frames[c.next]
            if self.sends:  # paced: a `sends` frame of one, as the client engine
                frame = encode_sends(FRAME_RID + c.next, [frame])
            try:
                c.sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                return False
        c.inflight[FRAME_RID + c.next] = len(c.t_send)
        c.t_send.append(now_ns)
        c.t_ack.append(0)
        c.seqs.append(0)
        c.sent_ids.append(c.ids[c.next])
        c.next += 1
        return True

    def _flush(self, c: Client) -> None:
        """The sends `_send_next` queued, in `sends` frames of at most
        SENDS_PER_FRAME (well within the node's MAX_SENDS and frame size)."""
        first = FRAME_RID + c.next - len(c.items)
        for at in range(0, len(c.items), SENDS_PER_FRAME):
            items = c.items[at : at + SENDS_PER_FRAME]
            start = first + at
            for rid in range(start, start + len(items)):
                c.frame_end[rid] = start + len(items) - 1
            c.sock.send(encode_sends(start, items), zmq.NOBLOCK)  # SNDHWM 100,000: no Again
        c.items = []

    def _drain(self, poller: zmq.Poller, timeout: float, pipe: Connection) -> int:
        """Receive everything that is ready; returns frames handled (-1: stop asked)."""
        got = 0
        stop = False
        for sock, _ in poller.poll(timeout):
            if not isinstance(sock, zmq.Socket):
                if pipe.poll():
                    pipe.recv()
                    stop = True
                continue
            c = self.by_sock[sock]
            for data in recv_ready(sock):
                now = time.monotonic_ns()
                got += 1
                for rid, kind, txn, seq in light_decode(data):
                    if kind == "push_message" and txn is not None:
                        self.pushes += 1
                        self.recv_ids.append(int(txn[1:]))
                        self.recv_t.append(now)
                    elif kind == "pong":
                        self.pongs += 1
                    elif kind == "push_mark":
                        self._echo_mark(c, seq)
                    elif kind in ("send_ack", "error") and rid:
                        self._on_send_reply(c, rid, kind == "send_ack", seq, now, txn)
                self._flush(c)
        return -1 if stop else got

    def _on_send_reply(
        self, c: Client, rid: int, acked: bool, seq: int, now: int, code: str | None = None
    ) -> None:
        """A `send_ack` (acked) or an `error` (`code`) answering request `rid` of `c`."""
        if not acked:
            self.errors["error"] = self.errors.get("error", 0) + 1
            # A send refused unread (rate_limited) answers the rest of its
            # `sends` frame too; any other refusal answers that send only.
            if code == "rate_limited":
                for later in range(rid + 1, c.frame_end.get(rid, rid) + 1):
                    c.frame_end.pop(later, None)
                    idx = c.inflight.pop(later, None)
                    if idx is not None:
                        c.t_ack[idx] = -1
                        if self.sending and self.mode == "window":
                            self._send_next(c, now)  # its slot in the window
        c.frame_end.pop(rid, None)
        idx = c.inflight.pop(rid, None)
        if idx is None:
            return
        c.t_ack[idx] = now if acked else -1
        if acked:
            c.seqs[idx] = seq
            # one sender, one room: seqs must follow the send order
            if seq <= c.last_seq:
                self.order_violations += 1
            c.last_seq = seq
        if self.sending and self.mode == "window":
            self._send_next(c, now)


def _ping(c: Client) -> bool:
    """An app-level ping from `c`, as the real client sends; False if its
    queue is full (or it has no peer yet)."""
    c.rid += 1
    try:
        c.sock.send(encode_request(c.rid, m.Ping(t=int(time.time() * 1000))), zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True


def _usage(start: float, cpu0: os.times_result) -> dict[str, float]:
    """Wall time and this process's CPU since `start` (monotonic) and `cpu0`."""
    wall = time.monotonic() - start
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"wall_s": wall, "cpu_s": cpu, "cpu_pct": 100 * cpu / wall if wall else 0}


def main(index: int, spec: dict[str, Any], pipe: Connection) -> None:
    if spec.get("nice"):
        # before any socket: libzmq's I/O threads inherit it
        os.nice(int(spec["nice"]))
    w = Worker(index, spec)
    try:
        while True:
            cmd, arg = pipe.recv()
            if cmd == "connect":
                pipe.send(("ok", w.connect(*(arg or (0, 0.0)))))
            elif cmd == "prepare":
                pipe.send(("ok", w.prepare(arg)))
            elif cmd == "run":
                pipe.send(("ok", w.run(pipe, arg)))
            elif cmd == "idle":
                pipe.send(("ok", w.idle(pipe, arg)))
            elif cmd == "quit":
                break
    except BaseException as exc:
        import traceback

        pipe.send(("error", f"{exc!r}\n{traceback.format_exc()}"))
    finally:
        for c in w.clients:
            c.sock.close(0)
        w.ctx.term()
