"""The crypto of opening messages, apart from the decisions about them.

What it is for: the trust core decides which messages the rules let
through and with which keys (`OpenJob`); the verifying and decrypting can
then be run by whoever holds the CPU time (`Crypt`: in turn here, or on
threads in `client/crypt.py`).

It must never choose a key or judge a result: the core does both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from curvechat.crypto.envelope import Plaintext, open_message
from curvechat.crypto.errors import CryptoError
from curvechat.protocol import messages as m


@dataclass(frozen=True, slots=True)
class OpenJob:
    """The crypto of one message the rules let through: verify `envelope`
    against `sender_sign_pub` and decrypt it under `key` (both chosen by the
    core)."""

    envelope: m.Envelope
    key: bytes
    sender_sign_pub: bytes


Crypt = Callable[[Sequence[OpenJob]], list[Plaintext | CryptoError]]
"""Runs the jobs (in any way: in turn, or on threads) and returns one result
per job, in order: the plaintext, or the error that refused it. It decides
nothing."""


def open_in_turn(jobs: Sequence[OpenJob]) -> list[Plaintext | CryptoError]:
    out: list[Plaintext | CryptoError] = []
    for job in jobs:
        try:
            out.append(open_message(job.envelope, key=job.key, sender_sign_pub=job.sender_sign_pub))
        except CryptoError as exc:
            out.append(exc)
    return out
