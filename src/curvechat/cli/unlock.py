"""`curvechat unlock` and `curvechat lock`, and how every other command
takes its identity from the agent (see `curvechat.cli.agent`)."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any

from curvechat.cli import agent
from curvechat.cli.common import EXIT_USAGE, CliError, _home, _load_identity, no_identity
from curvechat.protocol.text import clip, visible

if TYPE_CHECKING:
    from curvechat.client.home import Home
    from curvechat.crypto.identity import Identity

log = logging.getLogger("curvechat.cli")

_LIFETIME_RE = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?")


def parse_lifetime(text: str) -> float:
    """``900``, ``90s``, ``15m``, ``2h``, ``1h30m`` → seconds (1 s … 24 h)."""
    m = _LIFETIME_RE.fullmatch(text.strip().lower())
    if m is None or not any(m.groups()):
        raise CliError(
            "bad_argument", f"--lifetime {clip(text)!r}: e.g. 900, 90s, 15m, 2h", EXIT_USAGE
        )
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    total = float(hours * 3600 + minutes * 60 + seconds)
    if not 1 <= total <= agent.MAX_LIFETIME_S:
        raise CliError("bad_argument", "--lifetime must be between 1 s and 24 h", EXIT_USAGE)
    return total


def _span(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600 and s % 60 == 0:
        return f"{s // 3600} h {s % 3600 // 60:02d} min" if s % 3600 else f"{s // 3600} h"
    if s >= 60:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s} s"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def identity_from_agent(home: Home) -> Identity | None:
    """The identity the agent of `home` holds, if one runs and holds the
    one `home.identity` seals; else None (the caller asks for the passphrase)."""
    path = agent.agent_path(home.path)
    if path is None:
        return None
    reply = agent.ask(path, "identity")
    if reply is None or not reply.ok:
        return None
    try:
        current = _digest(home.identity.read_bytes())
    except OSError:
        return None
    if reply.key_file != current:
        log.info("the agent at %s holds another identity file; asking for the passphrase", path)
        return None
    from curvechat.crypto.identity import Identity

    try:
        return Identity.from_secrets(reply.user, reply.sign_seed, reply.transport_secret)
    except (ValueError, TypeError):
        return None


def cmd_unlock(args: argparse.Namespace) -> int:
    home = _home(args)
    path = agent.agent_path(home.path)
    if path is None:
        raise CliError("agent_off", f"{agent.AGENT_ENV}=off: no agent is used", EXIT_USAGE)
    lifetime = parse_lifetime(args.lifetime)
    if not home.identity.exists():
        raise no_identity(args, home)
    data = home.identity.read_bytes()
    identity = _load_identity(args, home, agent=False)
    old = agent.ask(path, "stop")  # a new unlock replaces (and so renews) the old agent
    secrets = agent.Unsealed(
        user=identity.user,
        sign_seed=identity.sign_seed,
        transport_secret=identity.transport_secret,
        key_file=_digest(data),
    )
    try:
        pid = agent.start(path, secrets, lifetime)
    except agent.AgentError as exc:
        raise CliError("agent_failed", str(exc)) from exc
    now = dt.datetime.now()
    end = now + dt.timedelta(seconds=lifetime)
    until = end.strftime("%H:%M:%S" if end.date() == now.date() else "%Y-%m-%d %H:%M:%S")
    print(
        f"unlocked {identity.user} for {_span(lifetime)} (until {until})"
        f"{'; the earlier agent was stopped' if old is not None else ''}:"
        f" commands on {visible(str(home.path))} need no passphrase until then"
    )
    print(f"agent: pid {pid}, socket {visible(str(path))}; `curvechat lock` stops it")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    home = _home(args)
    path = agent.agent_path(home.path)
    reply = agent.ask(path, "stop") if path is not None else None
    if reply is None:
        print(f"no agent was running for {visible(str(home.path))}")
    else:
        print(f"locked: the agent holding {visible(reply.user)} (pid {reply.pid}) stopped")
    return 0


def add_parsers(add: Any) -> None:
    """The `unlock` and `lock` subcommands (`add` is build_parser's helper)."""
    p = add("unlock", cmd_unlock, "keep the identity unlocked for a while (an agent)")
    p.add_argument(
        "--lifetime",
        default="15m",
        metavar="TIME",
        help="how long the agent keeps it: 900, 90s, 15m, 2h (default 15m, at most 24h)",
    )
    add("lock", cmd_lock, "stop the agent started by `unlock`")
