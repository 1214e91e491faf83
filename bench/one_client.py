"""One real client engine (E2E on) at full rate, against a node of its own:
it queues N messages at once in a room of its own, after 300 to warm up,
and waits for the last ack; per round, acked sends/s and the CPU per
message of the client's process and of the node (docs/performance.md,
"The rotation without draining the window").

    python -m bench.one_client 6000 --rounds 3
    python -m bench.one_client 6000 --rotate-after 1000000   # never rotates
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.engines import Engine
from bench.harness import ServerProcess, Users
from bench.run import SERVER_ARGS

ROOM = "solo"


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) process `pid` used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def until_acked(e: Engine) -> None:
    while e.unacked > 0:
        e.acked_event.clear()
        await e.acked_event.wait()


async def run(root: Path, server: ServerProcess, args: argparse.Namespace) -> None:
    assert server.proc is not None
    e = Engine(Users().spec("sender"), root / "sender", server.connect)
    e.client.outbox.rotate_after_messages = args.rotate_after
    await e.client.start()
    assert await e.client.wait_ready(60)
    await e.client.create_room(ROOM, [])
    while not e.client.core.held(ROOM):
        await asyncio.sleep(0.05)
    e.queue(ROOM, 300)
    await until_acked(e)
    for round_ in range(1, args.rounds + 1):
        node0, mine0, t0 = process_cpu(server.proc.pid), os.times(), time.monotonic()
        e.queue(ROOM, args.count)
        await until_acked(e)
        took = time.monotonic() - t0
        mine1, node = os.times(), process_cpu(server.proc.pid) - node0
        mine = mine1.user + mine1.system - mine0.user - mine0.system
        print(
            f"round {round_}: {args.count / took:,.0f} acked sends/s; client CPU"
            f" {mine / args.count * 1e6:.0f} us a message ({mine / took:.0%} of a core),"
            f" node {node / args.count * 1e6:.0f} us ({node / took:.0%})"
        )
    await e.client.close()
    e.cache.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("count", type=int, nargs="?", default=6000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rotate-after", type=int, default=100, help="messages per epoch")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = ServerProcess(root / "node", extra_args=SERVER_ARGS).start()
        try:
            asyncio.run(run(root, server, args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
