"""The client's exception tree.

::

    ClientError
    ├── NotConnected        no live connection right now (the request was not sent)
    ├── RequestTimeout      sent, but no reply in time: the outcome is unknown
    ├── ServerRefused       the server answered with an error code
    ├── KeyChanged          a peer's identity key differs from the pinned one
    ├── UntrustedLog        a room's membership log failed verification
    └── NotReady            the engine has no identity / server / room state for that
"""

from __future__ import annotations


class ClientError(Exception):
    code = "client_error"


class NotConnected(ClientError):
    code = "not_connected"


class RequestTimeout(ClientError):
    code = "timeout"


class ServerRefused(ClientError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class KeyChanged(ClientError):
    def __init__(self, user: str, pinned: bytes, offered: bytes) -> None:
        super().__init__(
            f"the identity key of {user} changed (pinned {pinned.hex()[:16]}…, now "
            f"{offered.hex()[:16]}…); nothing will be encrypted to them until you accept it"
        )
        self.code = "key_changed"
        self.user = user
        self.pinned = pinned
        self.offered = offered


class UntrustedLog(ClientError):
    code = "untrusted_log"


class NotReady(ClientError):
    """A command the engine refuses before asking the server, with a code
    (not_member, bad_name, bad_room, empty, already_member, forbidden,
    no_key, no_key_change, no_such_message)."""

    def __init__(self, message: str, code: str = "not_ready") -> None:
        super().__init__(message)
        self.code = code
