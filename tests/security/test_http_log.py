"""Requests aiohttp's parser refuses are said in the node's log once a
minute at most, as one line (server/httpload.py): each used to write a
traceback at ERROR, so anyone who reached the HTTP port wrote the log as
fast as it could open connections (110 MiB in 5 s)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from support.servers import ServerProcess

BAD = b"GET *" + b"A" * 7900 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_malformed_requests_do_not_flood_the_log(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "node").start()
    sent = [0]
    try:
        port = proc.http_port
        stop = threading.Event()

        def flood() -> None:
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                        s.sendall(BAD)
                        s.recv(100)
                    sent[0] += 1
                except OSError:
                    pass

        before = proc.log_path.stat().st_size
        threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join(5)
        grown = proc.log_path.stat().st_size - before
        log = proc.log()
    finally:
        proc.stop()
    assert sent[0] > 100
    assert grown < 10_000, log[-2000:]
    assert "Traceback" not in log
    assert log.count("refused a malformed HTTP request") == 1
