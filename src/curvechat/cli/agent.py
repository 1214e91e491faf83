"""The unlock agent: an unsealed identity kept in memory for a while, so a
script of many commands pays Argon2id once (like ssh-agent).

`curvechat unlock` opens the key file with the passphrase and hands the
secrets, through a pipe, to a small process of its own (``python -m
curvechat.cli.agent``). That process

* listens on a Unix socket, by default ``HOME/agent.sock`` (the client home,
  mode 0700), or the path in ``$CURVECHAT_AGENT`` (``off``: no agent); the
  socket is created mode 0600 and its directory must be the user's and not
  writable by anyone else;
* answers only peers of its own uid (SO_PEERCRED), and a client talks only
  to an agent of its own uid (SO_PEERCRED again, and the socket's owner);
* never writes the secrets anywhere: they arrive on its stdin and live in
  its memory; it makes itself non-dumpable (no core file, no ptrace or
  /proc/PID/mem by other processes of the user) where Linux allows;
* exits when its lifetime is over (counted on CLOCK_BOOTTIME, so a suspended
  laptop does not stretch it), on `curvechat lock`, on SIGTERM/SIGINT/SIGHUP,
  or when its socket is removed or replaced; it removes its socket.

One request per connection, msgpack both ways: ``{op: "identity" | "status"
| "stop"}``; the answer names the SHA-256 of the key file it was unlocked
from, so a client uses it only for the identity file it would open itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO, Final, Literal

import msgspec

from curvechat.protocol.errors import UNDECODABLE, CurvechatError

AGENT_ENV: Final = "CURVECHAT_AGENT"
SOCKET_NAME: Final = "agent.sock"
DEFAULT_LIFETIME_S: Final = 15 * 60.0
MAX_LIFETIME_S: Final = 24 * 3600.0
IO_TIMEOUT_S: Final = 2.0
START_TIMEOUT_S: Final = 10.0
POLL_S: Final = 1.0  # how often the agent checks its socket and its lifetime
MAX_MESSAGE: Final = 4096
_SUN_PATH_MAX: Final = 107  # sockaddr_un.sun_path is 108 bytes with the NUL
_PR_SET_DUMPABLE: Final = 4


class AgentError(CurvechatError):
    """The agent could not be started (the message says why)."""


class Unsealed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the agent holds: the identity's secrets, and which file they
    were unsealed from (SHA-256 hex of its bytes)."""

    user: str
    sign_seed: bytes
    transport_secret: bytes
    key_file: str

    def __repr__(self) -> str:
        return f"Unsealed(user={self.user!r})"


class _Handoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    socket: str
    lifetime: float
    secrets: Unsealed


class Request(msgspec.Struct, frozen=True):
    op: Literal["identity", "status", "stop"]


class Reply(msgspec.Struct, frozen=True):
    ok: bool
    error: str = ""
    user: str = ""
    key_file: str = ""
    expires_in: float = 0.0
    pid: int = 0
    sign_seed: bytes = b""
    transport_secret: bytes = b""

    def __repr__(self) -> str:
        return f"Reply(ok={self.ok!r}, user={self.user!r}, expires_in={self.expires_in:.0f})"


def agent_path(home: Path) -> Path | None:
    """Where the agent of `home` listens: ``$CURVECHAT_AGENT`` if set (None
    for ``off``), else ``HOME/agent.sock``."""
    value = os.environ.get(AGENT_ENV, "").strip()
    if value.lower() == "off":
        return None
    return Path(value).absolute() if value else (home / SOCKET_NAME).absolute()


def _clock() -> float:
    """Seconds on a clock that keeps counting while the machine sleeps."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _read_all(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(MAX_MESSAGE + 1)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_MESSAGE:
            raise ValueError("message too long")


# --- the client side ---------------------------------------------------------------
def ask(path: Path, op: Literal["identity", "status", "stop"]) -> Reply | None:
    """The agent's answer to `op`, or None if no agent of ours answers at
    `path` (none running, a stale socket, someone else's socket, …)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(IO_TIMEOUT_S)
        try:
            sock.connect(os.fspath(path))
            if peer_uid(sock) != os.getuid():
                return None
            sock.sendall(msgspec.msgpack.encode(Request(op)))
            sock.shutdown(socket.SHUT_WR)
            data = _read_all(sock)
        except (OSError, ValueError):
            return None
    try:
        return msgspec.msgpack.decode(data, type=Reply)
    except UNDECODABLE:
        return None


def start(path: Path, secrets: Unsealed, lifetime: float) -> int:
    """Start an agent holding `secrets` at `path` for `lifetime` seconds;
    its pid once it listens. Raises AgentError."""
    _check_socket_path(path)
    handoff = msgspec.msgpack.encode(_Handoff(os.fspath(path), lifetime, secrets))
    # The passphrase stays out of the agent's environment.
    env = {k: v for k, v in os.environ.items() if k != "CURVECHAT_PASSPHRASE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "curvechat.cli.agent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        cwd="/",
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(handoff)
        proc.stdin.close()
        proc.wait(START_TIMEOUT_S)  # it forks the agent and exits at once
        line = _read_line(proc.stdout, START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AgentError("the agent did not start") from None
    finally:
        proc.stdout.close()
    word, _, rest = line.partition(" ")
    if word == "ready" and rest.isdigit():
        return int(rest)
    raise AgentError(rest or "the agent did not start")


def _read_line(stream: IO[bytes], timeout: float) -> str:
    """One line from a pipe, waiting at most `timeout` seconds."""
    fd = stream.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data and len(data) < MAX_MESSAGE:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, MAX_MESSAGE)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace").split("\n", 1)[0].strip()


def _check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise AgentError(
            f"the socket path {path} is too long for a Unix socket; "
            f"set {AGENT_ENV} to a shorter one (e.g. $XDG_RUNTIME_DIR/curvechat-agent.sock)"
        )
    if not hasattr(socket, "SO_PEERCRED"):
        raise AgentError("the agent needs SO_PEERCRED (Linux)")


# --- the agent process -----------------------------------------------------------------
class Agent:
    """The listening side. `serve` runs until the lifetime is over, a stop
    request, or the socket is gone; `close` removes the socket."""

    def __init__(
        self, path: Path, secrets: Unsealed, lifetime: float, *, uid: int | None = None
    ) -> None:
        self.path = path
        self.user = secrets.user
        self.key_file = secrets.key_file
        self._seed = bytearray(secrets.sign_seed)
        self._transport = bytearray(secrets.transport_secret)
        self.uid = os.getuid() if uid is None else uid
        self.deadline = _clock() + lifetime
        self.refused = 0
        self._sock: socket.socket | None = None
        self._ino: tuple[int, int] | None = None
        self._stop = False

    def remaining(self) -> float:
        return max(0.0, self.deadline - _clock())

    def bind(self) -> None:
        """Listen at `path`. Raises AgentError."""
        _check_socket_path(self.path)
        directory = self.path.parent
        try:  # its own directory, 0700, if need be; never the ones above it
            directory.mkdir(exist_ok=True, mode=0o700)
        except FileNotFoundError:
            raise AgentError(f"{directory.parent} does not exist") from None
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise AgentError(f"{directory} is not a directory of yours")
        if st.st_mode & 0o022:
            raise AgentError(f"{directory} is writable by others (mode {st.st_mode & 0o777:o})")
        with contextlib.suppress(FileNotFoundError):
            old = os.lstat(self.path)
            if not stat.S_ISSOCK(old.st_mode) or old.st_uid != os.getuid():
                raise AgentError(f"{self.path} exists and is not a socket of yours")
            self.path.unlink()  # a stale socket (its agent is gone)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        mask = os.umask(0o177)  # the socket is 0600 from the start
        try:
            sock.bind(os.fspath(self.path))
        except OSError as exc:
            sock.close()
            raise AgentError(f"cannot listen at {self.path}: {exc.strerror}") from exc
        finally:
            os.umask(mask)
        os.chmod(self.path, 0o600)
        sock.listen(8)
        st = os.lstat(self.path)
        self._ino = (st.st_dev, st.st_ino)
        self._sock = sock

    def _still_ours(self) -> bool:
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._ino

    def serve(self) -> None:
        assert self._sock is not None
        while not self._stop and self.remaining() > 0 and self._still_ours():
            self._sock.settimeout(min(self.remaining(), POLL_S) or 0.001)
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(IO_TIMEOUT_S)
        try:
            if peer_uid(conn) != self.uid:
                self.refused += 1
                return
            request = msgspec.msgpack.decode(_read_all(conn), type=Request)
        except (OSError, ValueError, *UNDECODABLE):
            return
        reply = Reply(
            ok=True,
            user=self.user,
            key_file=self.key_file,
            expires_in=self.remaining(),
            pid=os.getpid(),
        )
        if request.op == "identity":
            reply = msgspec.structs.replace(
                reply, sign_seed=bytes(self._seed), transport_secret=bytes(self._transport)
            )
        elif request.op == "stop":
            self._stop = True
        with contextlib.suppress(OSError):
            conn.sendall(msgspec.msgpack.encode(reply))

    def close(self) -> None:
        if self._sock is not None:
            if self._still_ours():
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self._sock.close()
            self._sock = None
        # Best effort: the bytes handed out were copies, and Python may
        # have left others in freed memory.
        self._seed[:] = bytes(len(self._seed))
        self._transport[:] = bytes(len(self._transport))


def _not_dumpable() -> None:
    """No core file, and no ptrace or /proc/PID/mem for other processes of
    the user (Linux's PR_SET_DUMPABLE, as ssh-agent does)."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _agent_main() -> int:
    """The agent process: read the handoff, fork away from the starter,
    listen, say ``ready PID`` (or ``error …``) on stdout, serve."""
    _not_dumpable()
    try:
        handoff = msgspec.msgpack.decode(sys.stdin.buffer.read(MAX_MESSAGE), type=_Handoff)
    except UNDECODABLE:
        print("error the handoff is malformed", flush=True)
        return 1
    if os.fork():
        os._exit(0)  # the starter reaps this one; the agent lives on
    out = sys.stdout
    agent = Agent(Path(handoff.socket), handoff.secrets, handoff.lifetime)
    try:
        agent.bind()
    except (AgentError, OSError) as exc:
        print(f"error {exc}", file=out, flush=True)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop_on_signal)
    print(f"ready {os.getpid()}", file=out, flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    try:
        agent.serve()
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(_agent_main())
