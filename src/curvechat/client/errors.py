"""The one error tree a front end catches, with the code each carries.

Everything the client side raises on purpose is a `CurvechatError`; a front
end catches that one class and shows ``error [code]: message``. Anything
else is a bug.

::

    CurvechatError                     (curvechat.protocol.errors)
    ├── ProtocolError                  code: the protocol ErrorCode
    │   ├── LocalProtocolError         we were about to send something invalid
    │   └── RemoteProtocolError        the peer sent something invalid
    ├── ConnectStringError             bad_connect_string
    ├── CryptoError                    crypto                (curvechat.crypto.errors)
    │   ├── BadSignature               bad_signature
    │   ├── DecryptError               decrypt_failed
    │   ├── KeyFileError               bad_identity
    │   │   └── WrongPassphrase        wrong_passphrase
    │   └── MembershipError            the protocol ErrorCode of the broken rule
    ├── StoreError                     store                 (server side only)
    ├── ConfigError                    bad_config: a file, flag or setting cannot be used
    │   ├── NodeNameError              bad_node_name         (curvechat.server.app)
    │   ├── HttpTokenError             http_token            (curvechat.server.httpguard)
    │   ├── ServerKeyError             bad_config            (curvechat.server.keys)
    │   ├── DataDirError               data_dir: a node's or the monitor's data directory
    │   │   └── DataDirInUse           data_dir_in_use: another node holds it (server.datadir)
    │   └── BindFailed                 bind_failed: an address to listen on
    ├── CliError                       the failed command's code (curvechat.cli.common)
    ├── AgentError                     error                 (curvechat.cli.agent)
    ├── CommandError                   error: a TUI command line (curvechat.tui.commands)
    └── ClientError                    client_error
        ├── NotConnected               not_connected: no live connection (the request was not sent)
        ├── KeyMismatch                key_mismatch: a node failed the CURVE handshake (wrong key)
        ├── RequestTimeout             timeout: sent, but no reply in time (outcome unknown)
        ├── ServerRefused              the ErrorCode the server answered with
        ├── KeyChanged                 key_changed: a peer's identity key differs from the pin
        ├── UntrustedLog               untrusted_log: a room's membership log failed verification
        ├── NotReady                   refused before asking the server (codes below)
        ├── PeerRefused                a peer's frame or record refused (peer rule's code)
        ├── PeerUnreachable            peer_unreachable: no link to a peer, or no reply in time
        ├── SetupFailed                bad_cache, no_curve: the client could not be opened
        └── CacheWriteFailed           cache_write: the local cache refused a write (disk full, I/O)
"""

from __future__ import annotations

from curvechat.protocol.errors import CurvechatError

NOT_READY_CODES = (
    "not_member",
    "bad_name",
    "bad_room",
    "bad_value",
    "empty",
    "already_member",
    "already_admin",
    "forbidden",
    "too_large",
    "no_key",
    "no_key_change",
    "no_such_message",
    "no_such_user",
    "key_changed",
    "key_changed_again",
)


class ClientError(CurvechatError):
    code = "client_error"


class NotConnected(ClientError):
    code = "not_connected"


class KeyMismatch(ClientError):
    """A node closed the connection during the CURVE handshake: the server
    key in the connect string is not that node's key (or it is not a
    curvechat node). Waiting longer cannot help."""

    code = "key_mismatch"


class RequestTimeout(ClientError):
    code = "timeout"


class ServerRefused(ClientError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class KeyChanged(ClientError):
    code = "key_changed"

    def __init__(self, user: str, pinned: bytes, offered: bytes) -> None:
        super().__init__(
            f"the identity key of {user} changed (pinned {pinned.hex()[:16]}…, now "
            f"{offered.hex()[:16]}…); nothing will be encrypted to them until you accept it"
        )
        self.user = user
        self.pinned = pinned
        self.offered = offered


class UntrustedLog(ClientError):
    code = "untrusted_log"


class NotReady(ClientError):
    """A command the engine refuses before asking the server, with one of
    `NOT_READY_CODES`."""

    def __init__(self, message: str, code: str = "not_ready") -> None:
        super().__init__(message)
        self.code = code


class PeerRefused(ClientError):
    """Something a peer sent (a record, a digest, an envelope) breaks one of
    the peer rules (`curvechat.client.peer.rules`): the code is the one the
    answer carries, `rule` the id docs/security.md cites."""

    def __init__(self, code: str, message: str, rule: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.rule = rule


class PeerUnreachable(ClientError):
    """A peer's listener could not be reached (or did not let us in), or did
    not answer in time; the round goes on with the next peer."""

    code = "peer_unreachable"


class SetupFailed(ClientError):
    """The client could not be opened: bad_cache (the local cache is not a
    curvechat cache, or from a newer version) or no_curve (libzmq lacks
    CURVE, or is too old)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class CacheWriteFailed(ClientError):
    """The local cache refused a write (the disk is full, an I/O error, a
    read-only file, or another process of the home held it past SQLite's
    wait): what was asked for was not done (a message was not queued)."""

    code = "cache_write"
