"""A malicious curvechat server: the real node with hooks that tamper.

Run like `curvechat serve` (same --data/--bind/--http). Tampering is switched
on and off at run time by `tamper.json` in the data directory, re-read on
every request, so a test can let clients pin keys and build rooms honestly
first and attack later. Each key of the JSON turns on one attack:

- "substitute_key": {"user": U, "key": hex}  directory answers U's key as `key`
- "inject_member": {"room": R, "op": hex, "sig": hex}  append a forged op to R's log
- "replay": true          sync/history replies replay their first item at a new seq
- "reorder": true         sync/history replies list their items in reverse
- "drop_pushes": true     message pushes are not sent (clients must find the gap)
- "hole": {"room": R, "seqs": [N, ...]}  pages and pushes of R never hold these
  seqs (withheld for good, the messages after them served as usual)
- "shift": {"room": R, "from": N, "by": K}  pages and pushes of R name each
  message from seq N on at its seq plus K
- "spread": {"room": R, "from": N, "gap": G}  pages and pushes of R name the
  message at seq s >= N at seq N - 1 + (s - N + 1) * G (G - 1 made-up seqs
  before each)
- "flip": {"field": F, "bit": N}  flip bit N of envelope field F (ct, nonce, sig)
  or change an associated-data field (room, epoch, sender, txn) in every
  message the node hands out
- "allow_forged_sender": true  accept envelopes whose sender is not the requester
- "capture_sends": true   append every envelope a client sends, as received and
  before the real handler (which may still refuse it), to `sends.jsonl` in the
  data directory: one JSON line {"user": requester, "envelope": msgpack hex}
- "swap_keys": {"room": R, "from": X}  fetch_keys for R answers the requester's
  genuine key packets of room X instead (as they are: they still say room X)
- "inject_keys": {"room": R, "packets": [hex]}  fetch_keys for R also answers
  these msgpack-encoded KeyPackets (those for the requester, from min_epoch)
- "withhold_keys": U       fetch_keys answers user U no key packets
- "report_epoch": {"room": R, "epoch": E}  list_rooms says R is at epoch E
- "ack_seq": N             every send is stored as usual, but acked as seq N
- "ack_txn": T             every send is stored as usual, but its ack names txn T
- "store_down": true      list_rooms is refused store_unavailable, as a node whose
  store lost its quorum refuses it (so no client gets through a sync)
- "server_ts": N          every stored message the node hands out (page or push)
  carries server timestamp N
- "ack_ts": N             every send is acked with server timestamp N
- "send_error": {"code": C, "message": M}  every send is refused with this error
- "lose_acks": true       every send is stored as usual, but its ack is held back
  while this is on: the sender times out, as when a connection dies between
  the commit and the reply
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import msgspec

from curvechat.protocol import ErrorCode, encode
from curvechat.protocol import messages as m
from curvechat.server import handlers as h
from curvechat.server import node as n
from curvechat.server.app import serve

STATE: dict[str, Any] = {"path": None, "mtime": 0.0, "plan": {}}
SENDS = "sends.jsonl"


def plan() -> dict[str, Any]:
    path: Path = STATE["path"]
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return {}
    if mtime != STATE["mtime"]:
        STATE["plan"] = json.loads(path.read_text() or "{}")
        STATE["mtime"] = mtime
    return dict(STATE["plan"])


def tamper_envelope(env: m.Envelope, how: dict[str, Any]) -> m.Envelope:
    field, bit = how["field"], int(how.get("bit", 0))
    if field in ("ct", "nonce", "sig"):
        raw = bytearray(getattr(env, field))
        raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
        return msgspec.structs.replace(env, **{field: bytes(raw)})
    if field == "epoch":
        return msgspec.structs.replace(env, epoch=env.epoch + 1)
    if field == "sender":
        return msgspec.structs.replace(env, sender=how["value"])
    if field == "txn":
        return msgspec.structs.replace(env, txn=env.txn[:-1] + ("A" if env.txn[-1] != "A" else "B"))
    if field == "room":
        return msgspec.structs.replace(env, room=how["value"])
    raise ValueError(field)


def tamper_items(
    items: list[m.StoredMessage], p: dict[str, Any], head: int, room: str = ""
) -> list[m.StoredMessage]:
    out = list(items)
    hole = p.get("hole")
    if hole and hole["room"] == room:
        out = [i for i in out if i.seq not in hole["seqs"]]
    spread = p.get("spread")
    if spread and spread["room"] == room:
        n, g = int(spread["from"]), int(spread["gap"])
        out = [
            msgspec.structs.replace(i, seq=n - 1 + (i.seq - n + 1) * g) if i.seq >= n else i
            for i in out
        ]
    shift = p.get("shift")
    if shift and shift["room"] == room:
        out = [
            msgspec.structs.replace(i, seq=i.seq + int(shift["by"]))
            if i.seq >= int(shift["from"])
            else i
            for i in out
        ]
    if "flip" in p:
        out = [
            msgspec.structs.replace(i, envelope=tamper_envelope(i.envelope, p["flip"])) for i in out
        ]
    if "server_ts" in p:
        out = [msgspec.structs.replace(i, ts=int(p["server_ts"])) for i in out]
    if p.get("replay") and out:
        out.append(msgspec.structs.replace(out[0], seq=head + 1))
    if p.get("reorder"):
        out.reverse()
    return out


def install() -> None:
    orig_lookup = h.Handlers.lookup
    orig_members = h.Handlers.members
    orig_list = h.Handlers.list_rooms
    orig_history = h.Handlers.history
    orig_sync = h.Handlers.sync
    orig_send = h.Handlers.send
    orig_fetch_keys = h.Handlers.fetch_keys
    orig_push = n.ChatNode.push

    async def lookup(self: h.Handlers, sess: n.Session, req: m.Lookup) -> m.AnyReply:
        reply = await orig_lookup(self, sess, req)
        sub = plan().get("substitute_key")
        if sub and isinstance(reply, m.Directory):
            users = [
                m.UserKeys(user=u.user, sign_pub=bytes.fromhex(sub["key"]))
                if u.user == sub["user"]
                else u
                for u in reply.users
            ]
            return m.Directory(users=users)
        return reply

    async def members(self: h.Handlers, sess: n.Session, req: m.Members) -> m.AnyReply:
        reply = await orig_members(self, sess, req)
        inj = plan().get("inject_member")
        if inj and inj["room"] == req.room and isinstance(reply, m.MemberLog):
            forged = m.SignedOp(op=bytes.fromhex(inj["op"]), sig=bytes.fromhex(inj["sig"]))
            return m.MemberLog(room=reply.room, ops=[*reply.ops, forged])
        return reply

    async def list_rooms(self: h.Handlers, sess: n.Session, req: m.ListRooms) -> m.AnyReply:
        p = plan()
        if p.get("store_down"):
            raise h.Refusal(ErrorCode.STORE_UNAVAILABLE, "store unavailable: no leader")
        reply = await orig_list(self, sess, req)
        inj, told = p.get("inject_member"), p.get("report_epoch")
        if (inj or told) and isinstance(reply, m.RoomList):
            rooms = []
            for r in reply.rooms:
                if inj and r.room == inj["room"]:
                    r = msgspec.structs.replace(r, op_head=r.op_head + 1)
                if told and r.room == told["room"]:
                    r = msgspec.structs.replace(r, epoch=int(told["epoch"]))
                rooms.append(r)
            return m.RoomList(rooms=rooms)
        return reply

    async def history(self: h.Handlers, sess: n.Session, req: m.History) -> m.AnyReply:
        reply = await orig_history(self, sess, req)
        if isinstance(reply, m.Messages):
            items = tamper_items(reply.items, plan(), reply.head, reply.room)
            return m.Messages(room=reply.room, items=items, head=reply.head)
        return reply

    async def sync(self: h.Handlers, sess: n.Session, req: m.Sync) -> m.AnyReply:
        reply = await orig_sync(self, sess, req)
        if isinstance(reply, m.SyncReply):
            p = plan()
            rooms = [
                m.Messages(room=r.room, items=tamper_items(r.items, p, r.head, r.room), head=r.head)
                for r in reply.rooms
            ]
            return m.SyncReply(rooms=rooms, more=reply.more)
        return reply

    async def send(
        self: h.Handlers, sess: n.Session, req: m.Send, queued: Any = None
    ) -> m.AnyReply:
        p = plan()
        if p.get("capture_sends"):
            line = {"user": sess.user, "envelope": encode(req.envelope).hex()}
            with (STATE["path"].parent / SENDS).open("a") as f:
                f.write(json.dumps(line) + "\n")
        if p.get("send_error"):
            raise h.Refusal(p["send_error"]["code"], p["send_error"]["message"])
        if p.get("allow_forged_sender") and req.envelope.sender != sess.user:
            sess = dataclasses.replace(sess, user=req.envelope.sender)
        reply = await orig_send(self, sess, req, queued)
        while plan().get("lose_acks"):
            await asyncio.sleep(0.1)  # the ack waits (its connection may be gone by then)
        if isinstance(reply, m.SendAck) and "ack_seq" in p:
            reply = msgspec.structs.replace(reply, seq=int(p["ack_seq"]))
        if isinstance(reply, m.SendAck) and "ack_ts" in p:
            reply = msgspec.structs.replace(reply, ts=int(p["ack_ts"]))
        if isinstance(reply, m.SendAck) and "ack_txn" in p:
            reply = msgspec.structs.replace(reply, txn=str(p["ack_txn"]))
        return reply

    async def fetch_keys(self: h.Handlers, sess: n.Session, req: m.FetchKeys) -> m.AnyReply:
        p = plan()
        swap, inj = p.get("swap_keys"), p.get("inject_keys")
        if swap and swap["room"] == req.room:
            other = await orig_fetch_keys(
                self, sess, m.FetchKeys(room=swap["from"], min_epoch=req.min_epoch)
            )
            if isinstance(other, m.KeyPackets):
                return m.KeyPackets(room=req.room, packets=other.packets)
            return other
        reply = await orig_fetch_keys(self, sess, req)
        if p.get("withhold_keys") == sess.user and isinstance(reply, m.KeyPackets):
            return m.KeyPackets(room=reply.room, packets=[])
        if inj and inj["room"] == req.room and isinstance(reply, m.KeyPackets):
            forged = [
                msgspec.msgpack.decode(bytes.fromhex(x), type=m.KeyPacket) for x in inj["packets"]
            ]
            extra = [k for k in forged if k.recipient == sess.user and k.epoch >= req.min_epoch]
            return m.KeyPackets(room=reply.room, packets=[*reply.packets, *extra])
        return reply

    def push(
        self: n.ChatNode, users: list[str], msg: m.AnyReply, *, skip: bytes | None = None
    ) -> int:
        p = plan()
        if isinstance(msg, m.MessagePush):
            if p.get("drop_pushes"):
                return 0
            hole = p.get("hole")
            if hole and hole["room"] == msg.room and msg.message.seq in hole["seqs"]:
                return 0
            renumber = {k: p.get(k) for k in ("shift", "spread")}
            (moved,) = tamper_items([msg.message], renumber, 0, msg.room)
            msg = m.MessagePush(room=msg.room, message=moved)
            if "flip" in p:
                stored = msgspec.structs.replace(
                    msg.message, envelope=tamper_envelope(msg.message.envelope, p["flip"])
                )
                msg = m.MessagePush(room=msg.room, message=stored)
            if "server_ts" in p:
                stored = msgspec.structs.replace(msg.message, ts=int(p["server_ts"]))
                msg = m.MessagePush(room=msg.room, message=stored)
        # A message push goes to clients that read them in a `batch` frame
        # (ChatNode.push), so every attack here reaches that path too.
        return orig_push(self, users, msg, skip=skip)

    h.Handlers.lookup = lookup  # type: ignore[method-assign]
    h.Handlers.members = members  # type: ignore[method-assign]
    h.Handlers.list_rooms = list_rooms  # type: ignore[method-assign]
    h.Handlers.history = history  # type: ignore[method-assign]
    h.Handlers.sync = sync  # type: ignore[method-assign]
    h.Handlers.send = send  # type: ignore[method-assign]
    h.Handlers.fetch_keys = fetch_keys  # type: ignore[method-assign]
    n.ChatNode.push = push  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--http", required=True)
    args = parser.parse_args()
    data = Path(args.data)
    STATE["path"] = data / "tamper.json"
    install()
    print(f"evil node starting {time.time()}", flush=True)
    asyncio.run(serve(data, args.bind, args.http))


if __name__ == "__main__":
    main()
