"""The bare limits beneath curvechat, measured in the same run:

* pyzmq ROUTER/DEALER with CURVE: round trip and 100-way fan-out, on frames
  the size of a real `push_message`;
* SQLite WAL ``synchronous=FULL``: one commit (one fsync of the WAL) and the
  group-commit insert rate, on the store's own `messages` table;
* the round trip and the one commit twice: back to back, and on the
  latency rows' schedule (one every `LATENCY_INTERVAL`, idle in between: a
  diagnostic, not a target's yardstick);
* etcd: batched-transaction puts (one transaction in flight, like the store's
  committer), values the size of a stored message;
* PyNaCl: sign+encrypt and verify+decrypt of one envelope-sized message.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.signing
import zmq

from bench.common import (
    LATENCY_INTERVAL,
    TEXT,
    push_frame_size,
    recv_ready,
    sample_envelope,
    summary_ms,
)
from curvechat.crypto.envelope import Plaintext, open_message, seal_message
from curvechat.crypto.identity import Identity
from curvechat.protocol import encode
from curvechat.protocol.messages import Envelope

SPAWN = mp.get_context("spawn")
PACED_N = 400
"""Samples of each paced bare figure: as many as the latency row's
messages at `--duration 4` (about 850 at the default 8 s): its p99 is the
4th-worst sample, a noisy figure."""


def _curve_server(sock: zmq.Socket, secret: bytes, public: bytes) -> None:
    sock.curve_server = True
    sock.curve_secretkey = secret
    sock.curve_publickey = public


def _curve_client(sock: zmq.Socket, server_public: bytes) -> None:
    pub, sec = zmq.curve_keypair()
    sock.curve_serverkey = server_public
    sock.curve_publickey = pub
    sock.curve_secretkey = sec


# --- round trip ---------------------------------------------------------------
def _echo_server(endpoint: str, secret: bytes, public: bytes, ready: Connection) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    _curve_server(sock, secret, public)
    sock.bind(endpoint)
    ready.send(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    while True:
        frames = sock.recv_multipart()
        if frames[1] == b"quit":
            break
        sock.send_multipart(frames)
    sock.close(0)
    ctx.term()


def _tick(due: float, step: float) -> float:
    """Sleep until `due` (a monotonic time) if it is ahead; the next one."""
    time.sleep(max(0.0, due - time.monotonic()))
    return due + step


def zmq_round_trip(size: int, n: int = 3000, pause: float = 0.0) -> dict[str, Any]:
    """Round trips of `size` bytes: `n` back to back, or one every `pause` s
    on a fixed schedule (as the latency rows send)."""
    public, secret = zmq.curve_keypair()
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=_echo_server, args=("tcp://127.0.0.1:*", secret, public, child))
    proc.start()
    endpoint = parent.recv()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    _curve_client(sock, public)
    sock.connect(endpoint)
    payload = os.urandom(size)
    for _ in range(200):  # handshake and warm-up
        sock.send(payload)
        sock.recv()
    rtts = []
    due = time.monotonic() + pause
    for _ in range(n):
        if pause:
            due = _tick(due, pause)
        t0 = time.monotonic_ns()
        sock.send(payload)
        sock.recv()
        rtts.append(time.monotonic_ns() - t0)
    sock.send(b"quit")
    proc.join(10)
    sock.close(0)
    ctx.term()
    return summary_ms(rtts)


# --- fan-out ------------------------------------------------------------------
def _fan_receivers(
    endpoint: str, server_public: bytes, names: list[bytes], pipe: Connection
) -> None:
    ctx = zmq.Context()
    socks = []
    for name in names:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.ROUTING_ID, name)
        s.setsockopt(zmq.RCVHWM, 100_000)
        _curve_client(s, server_public)
        s.connect(endpoint)
        s.send(b"hi")
        socks.append(s)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    count = 0
    first = last = 0
    stops = 0
    pipe.send("ready")
    while stops < len(socks):
        for s, _ in poller.poll(1000):
            for data in recv_ready(s):
                if data == b"stop":
                    stops += 1
                    continue
                last = time.monotonic_ns()
                if not first:
                    first = last
                count += 1
    pipe.send({"count": count, "first": first, "last": last})
    for s in socks:
        s.close(0)
    ctx.term()


def zmq_fan_out(size: int, members: int = 100, seconds: float = 4.0) -> dict[str, Any]:
    public, secret = zmq.curve_keypair()
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    _curve_server(router, secret, public)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.setsockopt(zmq.SNDHWM, 10_000)
    router.bind("tcp://127.0.0.1:*")
    endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
    names = [b"r%03d" % i for i in range(members)]
    halves = [names[: members // 2], names[members // 2 :]]
    pipes, procs = [], []
    for half in halves:
        parent, child = SPAWN.Pipe()
        p = SPAWN.Process(target=_fan_receivers, args=(endpoint, public, half, child))
        p.start()
        pipes.append(parent)
        procs.append(p)
    seen = 0
    while seen < members:
        router.recv_multipart()
        seen += 1
    for p in pipes:
        p.recv()
    payload = os.urandom(size)
    cpu0 = time.process_time()
    t0 = time.monotonic()
    sent = retries = 0
    while time.monotonic() - t0 < seconds:
        for name in names:
            while True:
                try:
                    router.send_multipart([name, payload], zmq.NOBLOCK)
                    break
                except zmq.Again:
                    retries += 1
                    time.sleep(0.0001)
            sent += 1
    sender_cpu = time.process_time() - cpu0
    send_wall = time.monotonic() - t0
    for name in names:
        router.send_multipart([name, b"stop"])
    results = [p.recv() for p in pipes]
    for p in procs:
        p.join(10)
    router.close(0)
    ctx.term()
    count = sum(r["count"] for r in results)
    span = (max(r["last"] for r in results) - min(r["first"] for r in results)) / 1e9
    return {
        "members": members,
        "deliveries": count,
        "deliveries_per_s": round(count / span, 1),
        "sender_cpu_pct": round(100 * sender_cpu / send_wall, 1),
        "hwm_waits": retries,
    }


# --- SQLite -------------------------------------------------------------------
def sqlite_limits(root: Path, envelope_size: int, seconds: float = 3.0) -> dict[str, Any]:
    path = root / "bare-sqlite.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        """CREATE TABLE messages (
        room TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
        sender TEXT NOT NULL, txn TEXT NOT NULL, envelope BLOB NOT NULL,
        PRIMARY KEY (room, seq), UNIQUE (room, sender, txn))"""
    )
    blob = os.urandom(envelope_size)
    seq = 0

    def commit(batch: int) -> None:
        nonlocal seq
        conn.execute("BEGIN IMMEDIATE")
        rows = []
        for _ in range(batch):
            seq += 1
            rows.append(("room-0", seq, 1, "alice", f"t{seq:012d}", blob))
        conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")

    def one_row(pause: float) -> dict[str, Any]:
        times = []
        due = time.monotonic() + pause
        for _ in range(PACED_N if pause else 300):
            if pause:
                due = _tick(due, pause)
            t0 = time.monotonic_ns()
            commit(1)
            times.append(time.monotonic_ns() - t0)
        return summary_ms(times)

    out: dict[str, Any] = {
        "commit_1": one_row(0.0),
        "commit_1_paced": one_row(LATENCY_INTERVAL),
    }
    for batch in (8, 256):
        n = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds / 2:
            commit(batch)
            n += batch
        out[f"rows_per_s_batch_{batch}"] = round(n / (time.monotonic() - t0), 1)
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return out


# --- etcd -----------------------------------------------------------------------
TXN_PUTS = 128
"""Puts per transaction: etcd's default `--max-txn-ops`, the store's transaction size."""


async def put_batches(
    store: Any, prefix: bytes, value: bytes, seconds: float
) -> tuple[int, float, list[int]]:
    """Transactions of TXN_PUTS puts of `value` under new keys of `prefix`,
    one in flight, for `seconds`: (puts, wall seconds, each one's ns)."""
    from aetcd import rpc  # type: ignore[import-untyped]

    n = 0
    lat: list[int] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        req = rpc.TxnRequest()  # built in place, as the store builds its own
        for i in range(TXN_PUTS):
            store.add_put(req.success, prefix + b"%012d" % (n + i), value)
        t1 = time.monotonic_ns()
        await store._send_txn(req)
        lat.append(time.monotonic_ns() - t1)
        n += TXN_PUTS
    return n, time.monotonic() - t0, lat


async def delete_keys(store: Any, prefix: bytes, *, compact: bool) -> None:
    """Delete every key under `prefix`; with `compact`, compact them away
    at once. Left as tombstones, keys deleted make every later put cost
    etcd about three times its CPU until a compaction (docs/performance.md,
    "The bare etcd run's tombstones")."""
    from aetcd import rpc  # type: ignore[import-untyped]

    from curvechat.store.etcd import prefix_end

    end = prefix_end(prefix)
    gone = await store._call("DeleteRange", rpc.DeleteRangeRequest(key=prefix, range_end=end))
    if compact:
        await store._call(
            "Compact", rpc.CompactionRequest(revision=gone.header.revision, physical=True)
        )


async def etcd_limits(endpoints: list[str], value_size: int, seconds: float = 3.0) -> dict:
    from curvechat.store.etcd import EtcdStore

    prefix = b"/bare-bench/"
    store = EtcdStore(endpoints, prefix=prefix.decode())
    await store.open()
    try:
        n, wall, lat = await put_batches(store, prefix, os.urandom(value_size), seconds)
        # Compacted: the cluster workloads that run next on this cluster
        # would otherwise pay for these keys' tombstones.
        await delete_keys(store, prefix, compact=True)
    finally:
        await store.close()
    return {
        "txn_ops": TXN_PUTS,
        "puts_per_s": round(n / wall, 1),
        "txn_ms": summary_ms(lat),
    }


# --- crypto ---------------------------------------------------------------------
def crypto_limits(seconds: float = 1.0) -> dict[str, Any]:
    ident = Identity.generate("alice")
    key = os.urandom(32)
    signer = nacl.signing.SigningKey.generate()
    verifier = signer.verify_key
    body = os.urandom(256)
    ad = os.urandom(40)
    nonce = os.urandom(24)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, ad, nonce, key)
    signed = signer.sign(ad + nonce + ct).signature

    def rate(fn: Any) -> float:
        n = 0
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            for _ in range(200):
                fn()
            n += 200
        return elapsed / n * 1e6  # µs per call

    def bare_seal() -> None:
        c = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, ad, os.urandom(24), key)
        signer.sign(ad + nonce + c)

    def bare_open() -> None:
        verifier.verify(ad + nonce + ct, signed)
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, ad, nonce, key)

    def cc_seal() -> Envelope:
        return seal_message(
            ident,
            room="room-0",
            epoch=0,
            key=key,
            txn="abcdefgh12345678",
            plaintext=Plaintext(text=TEXT, ts=1),
        )

    env = cc_seal()

    def cc_open() -> None:
        open_message(env, key=key, sender_sign_pub=ident.sign_pub)

    out = {
        "bare_seal_us": rate(bare_seal),
        "bare_open_us": rate(bare_open),
        "seal_us": rate(cc_seal),
        "open_us": rate(cc_open),
    }
    return {k: round(v, 2) for k, v in out.items()}


def run_all(root: Path) -> dict[str, Any]:
    size = push_frame_size()
    env_size = len(encode(sample_envelope()))
    out: dict[str, Any] = {"push_frame_bytes": size, "envelope_bytes": env_size}
    out["zmq_rtt"] = zmq_round_trip(size)
    out["zmq_rtt_paced"] = zmq_round_trip(size, PACED_N, LATENCY_INTERVAL)
    out["paced_interval_s"] = LATENCY_INTERVAL
    out["zmq_fanout"] = zmq_fan_out(size)
    out["sqlite"] = sqlite_limits(root, env_size)
    out["crypto"] = crypto_limits()
    return out
