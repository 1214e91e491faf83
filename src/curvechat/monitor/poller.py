"""One poll of one node: `GET <url>/api/state` with the nodes' bearer token,
and its result as a value: a checked `NodeState`, or a `PollFailure` with a
sentence saying why (every aiohttp error is translated here, at the
boundary). `parse_state` checks an answer without any I/O.

A node's answer is not trusted to be well formed: it must be a JSON object
with the node's name and boot id, its samples are kept only as flat maps
of numbers, bounded in number and size, and an answer over `MAX_BYTES` is
refused. It must never follow a redirect (a node's URL is polled, nothing
else).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import aiohttp

from curvechat.dashboard.history import Sample
from curvechat.monitor.view import NodeState

TIMEOUT_S = 2.5
MAX_BYTES = 32 * 1024 * 1024
MAX_SAMPLES = 7200  # per answer (a node keeps 3600)
MAX_FIELDS = 64  # per sample
MAX_TEXT = 200
MAX_INT = 2**53  # a number in an answer is at most this large


@dataclass(frozen=True)
class PollFailure:
    error: str  # a sentence for people: why the node could not be read


class BadAnswer(ValueError):
    """The answer is not a curvechat node's `/api/state`."""


def _text(value: Any) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def _number(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return abs(value) <= MAX_INT  # a float of it is finite too
    return isinstance(value, float) and math.isfinite(value)


def parse_sample(raw: Any) -> Sample | None:
    """A sample as the monitor keeps it (None if it has no integer `t`):
    fields named by short strings, holding numbers, booleans or null."""
    if not isinstance(raw, dict) or isinstance(raw.get("t"), bool):
        return None
    if not isinstance(raw.get("t"), int):
        return None
    sample: Sample = {}
    for key, value in raw.items():
        if isinstance(key, str) and len(key) <= 64 and _number(value):
            sample[key] = value
            if len(sample) >= MAX_FIELDS:
                break
    sample["t"] = raw["t"]
    return sample


def parse_state(body: Any) -> NodeState:
    """A node's `/api/state` answer, checked; raises BadAnswer."""
    if not isinstance(body, dict) or not isinstance(body.get("node"), dict):
        raise BadAnswer("its answer is not a curvechat node's state")
    node = body["node"]
    name, boot = _text(node.get("name")), _text(node.get("boot"))
    if not name or not boot:
        raise BadAnswer("its answer names no node or boot id")
    history = body.get("history")
    raw_samples = history[-MAX_SAMPLES:] if isinstance(history, list) else []
    samples = [s for s in (parse_sample(r) for r in raw_samples) if s is not None]
    samples.sort(key=lambda s: int(s["t"]))
    started = node.get("started_at")
    store_ok = node.get("store_ok")
    interval = body.get("interval_s")
    return NodeState(
        name=name,
        boot=boot,
        started_at=started if isinstance(started, int) and not isinstance(started, bool) else None,
        endpoint=_text(node.get("endpoint")),
        store_ok=store_ok if isinstance(store_ok, bool) else None,
        store_error=_text(node.get("store_error")),
        interval_s=float(interval) if isinstance(interval, int | float) and interval > 0 else 1.0,
        samples=samples,
    )


def _why(error: OSError) -> str:
    """A connection failure in words: "connection refused", "no route to host"."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if error.errno is not None:
        return os.strerror(error.errno).lower()
    return type(error).__name__


class NodePoller:
    """Polls nodes over one aiohttp session (the caller owns its lifetime)."""

    def __init__(self, session: aiohttp.ClientSession, token: str = "") -> None:
        self.session = session
        self.token = token

    async def poll(self, url: str, since: int) -> NodeState | PollFailure:
        """The state of the node at `url` with the samples after `since` (Unix ms)."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # The nodes' own events are not collected: ask for none of them.
        params = {"since": str(since), "events_after": str(2**62)}
        try:
            async with self.session.get(
                url.rstrip("/") + "/api/state",
                params=params,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            ) as resp:
                if resp.status == 401:
                    why = "it refused the monitor's token" if self.token else "it asks for a token"
                    return PollFailure(f"{why} (give the nodes' token with --node-token-file)")
                if resp.status == 421:
                    return PollFailure("it does not answer to the host name in its URL")
                if resp.status != 200:
                    return PollFailure(f"it answered HTTP {resp.status}")
                if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
                    return PollFailure("its answer is compressed (a node's is not)")
                body = await self._read(resp)
        except TimeoutError:
            return PollFailure(f"no answer within {TIMEOUT_S:g} s")
        except aiohttp.ClientConnectorError as exc:
            return PollFailure(f"unreachable ({_why(exc.os_error)})")
        except aiohttp.ClientError as exc:
            return PollFailure(f"unreachable ({type(exc).__name__})")
        except BadAnswer as exc:
            return PollFailure(str(exc))
        try:
            return parse_state(body)
        except BadAnswer as exc:
            return PollFailure(str(exc))

    @staticmethod
    async def _read(resp: aiohttp.ClientResponse) -> Any:
        body = bytearray()
        async for chunk in resp.content.iter_any():
            body += chunk
            if len(body) > MAX_BYTES:
                raise BadAnswer("its answer is too large")
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise BadAnswer("its answer is not JSON (or nests too deeply)") from exc
