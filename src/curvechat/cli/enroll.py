"""`curvechat init`: a new identity, kept only if the server takes its name.

The server binds a name to an identity key at its first registration, and
that binding is also the only check it offers a key it does not know yet
(`lookup` needs a registered connection). So `init`

1. checks everything local first: the name, that the home has no identity,
   the connect string, the passphrase;
2. seals the new identity (Argon2id) in memory and stages it next to its
   final place, as a hidden file created 0600 (a disk that cannot take it
   fails here, before the server binds the name to a key nobody kept);
3. registers over a bare connection (nothing else is written: no cache);
4. on success links the staged file to ``identity.key`` (never over an
   existing one) and remembers the server; on a failure, or a Ctrl-C, before
   the registration was sent (or on a refusal of the name) it removes what
   it created — the staged file and the directories it made — and nothing
   else.

If a registration was sent but never confirmed (the server went away, or a
Ctrl-C stopped `init` once the request may have left), or was refused for a
reason that may pass (`store_unavailable`, `rate_limited`: anything but a
refusal of the name itself), the identity is kept: deleting it could lose a
name the server did bind; the next command registers it again
(registration is idempotent), and the message says so. If the link fails
after the server took the name, the staged file stays, and the error says
where it is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

from curvechat.cli.common import (
    EXIT_QUEUED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    _addresses,
    _home,
    _passphrase,
    kept_servers,
)
from curvechat.cli.main import INTERRUPTED
from curvechat.protocol.text import clip, visible

if TYPE_CHECKING:
    from pathlib import Path

    from curvechat.client.enroll import Progress
    from curvechat.client.home import Home
    from curvechat.crypto.identity import Identity
    from curvechat.crypto.keyfile import Staging
    from curvechat.protocol.connect import ServerAddress


async def register(
    identity: Identity,
    addresses: list[ServerAddress],
    wait: float,
    timeout: float,
    progress: Progress | None = None,
) -> bool:
    """`curvechat.client.enroll.register`, its refusals as CliError: True
    registered, False sent and not confirmed (outcome unknown)."""
    from curvechat.client.enroll import Unreachable
    from curvechat.client.enroll import register as enroll
    from curvechat.client.errors import KeyMismatch, ServerRefused

    try:
        return await enroll(
            identity,
            addresses,
            wait=wait,
            timeout=timeout,
            client_id="curvechat-init",
            progress=progress,
        )
    except RuntimeError as exc:  # libzmq without CURVE, or too old
        raise CliError("no_curve", str(exc)) from exc
    except ServerRefused as exc:
        raise CliError(exc.code, exc.message) from exc
    except KeyMismatch as exc:
        raise CliError(exc.code, str(exc)) from exc
    except Unreachable as exc:
        raise CliError(exc.code, str(exc), EXIT_UNREACHABLE) from exc


def cmd_init(args: argparse.Namespace) -> int:
    from curvechat.crypto.identity import Identity, fingerprint
    from curvechat.crypto.keyfile import sealed_identity
    from curvechat.protocol.limits import is_user_name

    if not is_user_name(args.user):
        raise CliError(
            "bad_name",
            f"{clip(args.user)!r}: a user name is a-z first, then a-z 0-9 . _ -, up to 32",
            EXIT_USAGE,
        )
    from curvechat.cli.reach import connect_timeout

    try:
        wait = connect_timeout(args)
    except ValueError as exc:
        raise CliError("bad_argument", str(exc), EXIT_USAGE) from exc
    home = _home(args)
    if home.identity.exists():
        raise CliError("identity_exists", f"{home.identity} exists; refusing to overwrite it")
    server = args.server or os.environ.get("CURVECHAT_SERVER") or home.saved_server()
    addresses = _addresses(server) if server else None
    passphrase = _passphrase(args, confirm=True)
    identity = Identity.generate(args.user)
    data = sealed_identity(identity, passphrase)
    from curvechat.client.enroll import IdentityExists, Progress, WriteFailed, keep
    from curvechat.crypto.keyfile import Staging

    created = Staging()
    progress = Progress()
    kept = ""  # where the identity is, once it is kept
    try:
        try:
            created.mkdir(home.path)
            staged = created.stage(home.identity, data)
        except OSError as exc:
            where = visible(clip(str(home.path)))
            raise CliError(
                "write_failed", f"cannot write in {where}: {exc.strerror or exc}"
            ) from exc
        confirmed = True
        if addresses is not None:
            confirmed = asyncio.run(register(identity, addresses, wait, args.timeout, progress))
            home.save_server(kept_servers(server, progress.nodes))
        try:
            keep(staged, home.identity)
        except (IdentityExists, WriteFailed) as exc:
            if addresses is None:
                raise CliError(exc.code, str(exc)) from None
            created.keep(staged)  # it holds the key the server bound the name to
            kept = f"in {staged}"
            raise CliError(
                exc.code,
                f"{exc}; {args.user} is registered with the identity in {staged}:"
                f" rename it to {home.identity}",
            ) from None
        kept = f"in {home.identity}"
        _report(home, identity, fingerprint(identity.sign_pub), server, addresses, confirmed)
        if not confirmed and progress.refused is not None:
            print(
                f"curvechat: the server's answer was [{visible(progress.refused)}]", file=sys.stderr
            )
    except BaseException as exc:
        # Once sent, the server may have bound the name to this key: keep it
        # (a CliError then is a refusal of the name: nothing was stored).
        if not kept and progress.sent and not isinstance(exc, CliError):
            kept = _keep_sent(home, staged, created, server)
        if not kept:
            created.undo()
            if isinstance(exc, KeyboardInterrupt):
                sent = "" if addresses is None else " before the registration was sent"
                raise CliError(
                    "interrupted",
                    f"stopped (Ctrl-C){sent}; nothing was kept in {home.path}",
                    INTERRUPTED,
                ) from None
            if isinstance(exc, CliError) and exc.code != "identity_exists":
                exc.message += f" (nothing was kept in {home.path})"
        elif isinstance(exc, KeyboardInterrupt):
            said = _stopped_after(args.user, kept, progress.sent)
            raise CliError("interrupted", said, INTERRUPTED) from None
        raise
    return 0 if confirmed else EXIT_QUEUED


def _stopped_after(user: str, where: str, sent: bool) -> str:
    """What a Ctrl-C that came once the identity was kept leaves."""
    if not sent:  # no server given
        return (
            f"stopped (Ctrl-C) with the identity of {user} kept {where};"
            " it registers on its first connection"
        )
    return (
        f"stopped (Ctrl-C) after the registration of {user} was sent, so its identity is"
        f" kept {where}; the next command that connects (`curvechat rooms`, say)"
        " completes the registration"
    )


def _keep_sent(home: Home, staged: Path, created: Staging, server: str | None) -> str:
    """After a registration that may have reached the server and was not
    seen through: the staged identity becomes the home's and the server is
    remembered, as for an unconfirmed one. Says where the identity is."""
    from curvechat.client.enroll import keep_sent

    created.keep(staged)
    if server is not None:
        home.save_server(server)
    if keep_sent(staged, home.identity) == staged:
        return f"in {staged} (rename it to {home.identity})"
    return f"in {home.identity}"


def _report(
    home: Any,
    identity: Identity,
    fpr: str,
    server: str | None,
    addresses: list[ServerAddress] | None,
    confirmed: bool,
) -> None:
    print(f"identity for {identity.user} created in {visible(str(home.path))}")
    print(f"fingerprint: {fpr}")
    if server is None or addresses is None:
        print("no server given: registration happens on first connection")
        return
    if not confirmed:
        print(
            f"curvechat: the server did not confirm the registration of {identity.user};"
            " it is sent again on the next connection",
            file=sys.stderr,
        )
        return
    print(f"registered as {identity.user}")
    for addr in addresses:
        print(f"server fingerprint: {addr.fingerprint} ({addr.endpoint.removeprefix('tcp://')})")
