"""A hang the 10-minute chaos run found: the whole client process froze
(every thread waiting) after a burst of reconnects.

libzmq's I/O thread sends socket-monitor events with a blocking send, holding
the socket's monitor lock. If the monitor's reading end is closed first (the
engine's connection cancelled its monitor reader, whose `finally` closes it,
and only then called `disable_monitor()`), the next event, say a reconnect
to a flapping node that resets the link, blocks the I/O thread for good; then
`disable_monitor()` (or `close()`) waits for that lock with the GIL held. The
fix (client/nodesocket.py `NodeSocket.close`): disable the monitor first, while
its reader still reads.

Each order runs in a child process, so that the hang cannot hang the suite.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import socket, struct, sys, threading, time
import zmq

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(100)

def reset_everyone():  # a flapping node: every connection is reset at once
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

threading.Thread(target=reset_everyone, daemon=True).start()
ctx = zmq.Context()
sock = ctx.socket(zmq.DEALER)
sock.setsockopt(zmq.RECONNECT_IVL, 10)
sock.setsockopt(zmq.LINGER, 0)
monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
sock.connect("tcp://127.0.0.1:%d" % srv.getsockname()[1])
monitor.recv_multipart()  # it is reconnecting in a loop now
if sys.argv[1] == "reader-first":  # the order before the fix
    monitor.close(linger=0)
    time.sleep(0.5)  # a few more reconnects
    sock.disable_monitor()
else:  # the engine's order now
    time.sleep(0.5)
    sock.disable_monitor()
    monitor.close(linger=0)
sock.close(linger=0)
print("closed", flush=True)
ctx.term()
"""


def teardown(order: str, timeout: float = 8.0) -> str:
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, order], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "hung"
    return done.stdout.strip() or done.stderr[-500:]


def test_monitor_disabled_before_its_reader_closes_never_hangs() -> None:
    assert [teardown("monitor-first") for _ in range(3)] == ["closed"] * 3


def test_the_old_order_hangs() -> None:
    """The mechanism itself, so that the reason for the order stays checked:
    if a libzmq release stops blocking here, this says so."""
    # The healthy order closes in about 0.6 s; four seconds is a hang.
    assert teardown("reader-first", timeout=4.0) == "hung"
