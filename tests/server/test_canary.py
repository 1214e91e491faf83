"""Canary plaintexts sent through real clients never reach the server: not in
the SQLite file, not in its WAL, not in the server's log, not anywhere in the
server process's memory."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from support.clients import ClientFactory
from support.servers import ServerProcess

CANARIES = 300


def process_memory(pid: int) -> bytes:
    """Every readable mapping of a process (needs ptrace rights over it: the
    same user, which the test is)."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            if m is None or not m.group(3).startswith("r"):
                continue
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            if end - start > 1 << 30:
                continue
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except (OSError, ValueError, OverflowError):
                continue
    return b"".join(chunks)


async def test_canaries_never_reach_the_server(tmp_path: Path, clients: ClientFactory) -> None:
    server = ServerProcess(tmp_path / "node").start()
    try:
        alice, _ = await clients.make("alice", server.connect)
        bob, bob_events = await clients.make("bob", server.connect)
        await alice.create_room("canary", ["bob"])
        canaries = [f"CANARY-{secrets.token_hex(12)}" for _ in range(CANARIES)]
        txns = [await alice.send("canary", c, wait=False) for c in canaries]
        for txn in txns:
            await alice.wait_ack(str(txn), 60)
        await bob_events.until(lambda: len(bob.cache.messages("canary", limit=1000)) == CANARIES)
        # the clients did see them (so the search below can find what exists)
        assert {m.text for m in bob.cache.messages("canary", limit=1000)} == set(canaries)

        assert server.proc is not None
        memory = process_memory(server.proc.pid)
        assert len(memory) > 1_000_000
        files = {p.name: p.read_bytes() for p in server.data.iterdir() if p.is_file()}
        assert "curvechat.db" in files
        places = {**files, "server log": server.log().encode(), "server memory": memory}
        for where, blob in places.items():
            found = [c for c in canaries if c.encode() in blob]
            assert not found, f"{len(found)} canaries in {where}"
        # control: the same search does find them where they are (this process)
        own = process_memory(os.getpid())
        assert sum(c.encode() in own for c in canaries) == CANARIES
    finally:
        server.kill()
    # after a kill -9 the WAL is still on disk: search it too
    for path in server.data.iterdir():
        blob = path.read_bytes()
        assert not [c for c in canaries if c.encode() in blob], f"canary in {path.name}"
