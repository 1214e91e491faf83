#!/usr/bin/env python3
"""What the chaos suite's proxies cost: round trips of 200 bytes through one
proxy to an echo server, and the proxies' process's CPU per chunk carried
(each round trip is two chunks through the proxy).

    .venv/bin/python scripts/proxy_cost.py [ROUND_TRIPS=10000]
"""

import os
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chaos.proxy import ProxyHub


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(n: int) -> None:
    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = server.accept()
        while data := conn.recv(65536):
            conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    hub = ProxyHub()
    try:
        proxy = hub.add("echo", server.getsockname()[1])
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = b"x" * 200
        pid = hub.pid
        c0, t0 = cpu_s(pid), time.perf_counter()
        for _ in range(n):
            sock.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(sock.recv(65536))
        t1, c1 = time.perf_counter(), cpu_s(pid)
        sock.close()
        print(
            f"{n} round trips of {len(msg)} B through one proxy: "
            f"{(t1 - t0) / n * 1e6:.0f} us each; "
            f"the proxies' process {(c1 - c0) / n / 2 * 1e6:.0f} us of CPU a chunk"
        )
    finally:
        hub.close()
        server.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
