"""Canary plaintexts sent through real clients never reach the server: not in
the SQLite file, not in its WAL, not in the server's log, not anywhere in the
server process's memory."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path

from support.clients import ClientFactory
from support.servers import ServerProcess

# `make canaries` runs 10,000 (CURVECHAT_CANARIES); make test runs 3,000.
CANARIES = int(os.environ.get("CURVECHAT_CANARIES", "3000"))
SENDERS = 4


CANARY_RE = re.compile(rb"CANARY-[0-9a-f]{24}")


def found_in(blob: bytes) -> set[bytes]:
    """Every canary-shaped string in `blob` (one pass, whatever the count)."""
    return set(CANARY_RE.findall(blob))


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
        senders = [(await clients.make(f"s{i}", server.connect))[0] for i in range(SENDERS)]
        reader, reader_events = await clients.make("reader", server.connect)
        await senders[0].create_room("canary", [f"s{i}" for i in range(1, SENDERS)] + ["reader"])
        for sender in senders[1:]:
            await sender.history("canary")
        canaries = [f"CANARY-{secrets.token_hex(12)}" for _ in range(CANARIES)]
        share = CANARIES // SENDERS

        async def send_all(sender, mine: list[str]) -> None:  # type: ignore[no-untyped-def]
            txns = [await sender.send("canary", c, wait=False) for c in mine]
            for txn in txns:
                await sender.wait_ack(str(txn), 120)

        await asyncio.gather(
            *(send_all(s, canaries[i * share : (i + 1) * share]) for i, s in enumerate(senders))
        )
        await reader_events.until(
            lambda: (room := reader.cache.room("canary")) is not None and room.cursor == CANARIES,
            timeout=120,
        )
        # the clients did see them (so the search below can find what exists)
        got = {m.text for m in reader.cache.messages("canary", limit=CANARIES)}
        assert got == set(canaries)
        assert server.proc is not None
        memory = process_memory(server.proc.pid)
        assert len(memory) > 1_000_000
        files = {p.name: p.read_bytes() for p in server.data.iterdir() if p.is_file()}
        assert "curvechat.db" in files
        places = {**files, "server log": server.log().encode(), "server memory": memory}
        wanted = {c.encode() for c in canaries}
        for where, blob in places.items():
            found = found_in(blob) & wanted
            assert not found, f"{len(found)} canaries in {where}"
        # control: the same search does find them where they are (this process)
        assert found_in(process_memory(os.getpid())) >= wanted
    finally:
        server.kill()
    # after a kill -9 the WAL is still on disk: search it too
    for path in server.data.iterdir():
        assert not found_in(path.read_bytes()) & wanted, f"canary in {path.name}"
