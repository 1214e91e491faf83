"""One poll of one node: `GET <url>/api/state` with the nodes' bearer token,
and its result as a value: a checked `NodeState`, or a `PollFailure` with a
sentence saying why (every aiohttp error is translated here, at the
boundary, and so is anything that goes wrong reading the answer).
`parse_state` checks an answer without any I/O.

A node's answer is not trusted to be well formed: it is checked by
`curvechat.dashboard.statecheck` (the checks a node's cluster view makes
of another node's answer too), which keeps its samples only as flat maps
of finite numbers or null, bounded in number and size; an answer over
`MAX_BYTES` is refused, and a large one is decoded in a worker thread. It
must never follow a redirect (a node's URL is polled, nothing else).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import aiohttp

from curvechat.dashboard import statecheck
from curvechat.dashboard.statecheck import BadAnswer
from curvechat.monitor.view import NodeState

TIMEOUT_S = 2.5
# The largest honest answer: a node's whole history, 3600 samples (an hour,
# one a second: `dashboard.history`) of 18 fields, about 585 bytes each with
# full-precision floats: 2.1 MB, asked for once (then only newer samples).
# The monitor asks for no connection table and no events. Four times that
# leaves room for new fields; a rogue node costs the monitor at most this
# much memory (and parsing in a worker thread) per poll.
MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class PollFailure:
    error: str  # a sentence for people: why the node could not be read


def parse_state(body: Any) -> NodeState:
    """A node's `/api/state` answer, checked; raises BadAnswer."""
    node = statecheck.check_node(body)
    started = node.get("started_at")
    store_ok = node.get("store_ok")
    return NodeState(
        name=statecheck.text(node["name"]),
        boot=statecheck.text(node["boot"]),
        started_at=started if isinstance(started, int) and statecheck.is_number(started) else None,
        endpoint=statecheck.text(node.get("endpoint")),
        store_ok=store_ok if isinstance(store_ok, bool) else None,
        store_error=statecheck.text(node.get("store_error")),
        interval_s=statecheck.check_interval(body),
        samples=statecheck.check_samples(body.get("history")),
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
        # The nodes' connection tables and events are not collected: ask for none.
        params = {"since": str(since), "events_after": str(2**62), "connections": "0"}
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
            return await statecheck.load(body, parse_state)
        except TimeoutError:
            return PollFailure(f"no answer within {TIMEOUT_S:g} s")
        except aiohttp.ClientConnectorError as exc:
            return PollFailure(f"unreachable ({_why(exc.os_error)})")
        except aiohttp.ClientError as exc:
            return PollFailure(f"unreachable ({type(exc).__name__})")
        except BadAnswer as exc:
            return PollFailure(str(exc))

    @staticmethod
    async def _read(resp: aiohttp.ClientResponse) -> bytes:
        body = bytearray()
        async for chunk in resp.content.iter_any():
            body += chunk
            if len(body) > MAX_BYTES:
                raise BadAnswer(f"its answer is too large (over {MAX_BYTES // 2**20} MiB)")
        return bytes(body)
