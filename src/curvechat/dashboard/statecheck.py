"""A node's `/api/state` answer as another process reads it: checked, never
trusted to be well formed. This is the one place that checks it, for both
readers: the monitor's poller (`curvechat.monitor.poller`) and a node's
cluster view, which passes another node's state on to its page
(`Dashboard.peer_state`).

An answer must be a JSON object that names the node and its boot id. What
is kept of it is built anew: texts cut to `MAX_TEXT` characters, numbers
only when finite, integers at most 2**53 (a boolean is not a number here),
samples as flat maps of such numbers or null, rows and events as flat maps
of texts, numbers, booleans or null, every list bounded in length, and
anything else left out. What `check_state` returns can thus be encoded and
shown as it is.

`load` decodes a body and checks it; every failure, whatever raised it,
is a `BadAnswer` saying why. A large body is decoded in a worker thread in
a way that lets the event loop run meanwhile at every object and number
(the C JSON decoder holds the GIL until it has built the whole document;
a body of nothing but nested lists still does). No I/O here.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

from curvechat.dashboard.history import Sample

MAX_TEXT = 200
MAX_INT = 2**53  # a number in an answer is at most this large
MAX_SAMPLES = 7200  # per answer (a node keeps 3600)
MAX_FIELDS = 64  # per sample, row or event
MAX_ROWS = 50_000  # connections of one node
MAX_EVENTS = 200  # a node sends at most 200 at a time
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.05, 3600.0
THREAD_BYTES = 256 * 1024  # a body over this is decoded and checked in a worker thread

T = TypeVar("T")


class BadAnswer(ValueError):
    """The answer is not a curvechat node's `/api/state`."""


def text(value: Any) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def is_number(value: Any) -> bool:
    """A finite number a float holds exactly enough: not a boolean, not NaN."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= MAX_INT
    return isinstance(value, float) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and is_number(value)


def _key(key: Any) -> bool:
    return isinstance(key, str) and 0 < len(key) <= 64


def flat(raw: Any, *, nested: bool = False) -> dict[str, Any]:
    """The texts, numbers, booleans and nulls of the map `raw` (with
    `nested`, also its maps of those, one level down)."""
    out: dict[str, Any] = {}
    if not isinstance(raw, dict):
        return out
    for key, value in raw.items():
        if len(out) >= MAX_FIELDS:
            break
        if not _key(key):
            continue
        if isinstance(value, str):
            out[key] = value[:MAX_TEXT]
        elif value is None or isinstance(value, bool) or is_number(value):
            out[key] = value
        elif nested and isinstance(value, dict):
            out[key] = flat(value)
    return out


def parse_sample(raw: Any) -> Sample | None:
    """A metric sample (None if it has no integer `t`): fields named by short
    strings, holding finite numbers or null; anything else is left out."""
    if not isinstance(raw, dict) or not _integer(raw.get("t")):
        return None
    sample: Sample = {}
    for key, value in raw.items():
        if _key(key) and (value is None or is_number(value)):
            sample[key] = value
            if len(sample) >= MAX_FIELDS:
                break
    sample["t"] = raw["t"]
    return sample


def check_samples(history: Any) -> list[Sample]:
    """The samples of an answer's `history`, oldest first."""
    raw = history[-MAX_SAMPLES:] if isinstance(history, list) else []
    samples = [s for s in (parse_sample(r) for r in raw) if s is not None]
    samples.sort(key=lambda s: int(s["t"]))
    return samples


def check_node(body: Any) -> dict[str, Any]:
    """What the node says about itself (`node`); raises BadAnswer."""
    if not isinstance(body, dict) or not isinstance(body.get("node"), dict):
        raise BadAnswer("its answer is not a curvechat node's state")
    node = flat(body["node"], nested=True)
    if not text(node.get("name")) or not text(node.get("boot")):
        raise BadAnswer("its answer names no node or boot id")
    return node


def check_interval(body: dict[str, Any]) -> float:
    """The node's sampling interval, within [MIN_INTERVAL_S, MAX_INTERVAL_S]
    (1 s if it gives none)."""
    interval: Any = body.get("interval_s")
    if not is_number(interval) or interval <= 0:
        return 1.0
    return min(max(float(interval), MIN_INTERVAL_S), MAX_INTERVAL_S)


def check_state(body: Any) -> dict[str, Any]:
    """The whole answer, checked, for a page: what the node says about itself,
    its samples, connection rows, events (each with an integer `seq` and `t`)
    and peer-to-peer counts. Raises BadAnswer."""
    node = check_node(body)
    rows = body.get("connections")
    events = body.get("events")
    returns = body.get("peer_returns")
    state: dict[str, Any] = {
        "node": node,
        "interval_s": check_interval(body),
        "connections": [flat(r) for r in rows[:MAX_ROWS] if isinstance(r, dict)]
        if isinstance(rows, list)
        else [],
        "peer_returns": {
            k: v for k, v in flat(returns).items() if k in ("clients", "messages") and _integer(v)
        },
        "history": check_samples(body.get("history")),
        "events": [
            flat(e)
            for e in (events[-MAX_EVENTS:] if isinstance(events, list) else [])
            if isinstance(e, dict) and _integer(e.get("seq")) and _integer(e.get("t"))
        ],
    }
    if is_number(body.get("now")):
        state["now"] = body["now"]
    return state


# Python hooks: the decoder comes back to the interpreter at every object
# and number, where the thread can give the event loop its turn. (Not at a
# list: a body of nothing but nested empty lists still holds the GIL while
# it is decoded, up to about 2 s for MAX_BYTES of them here.)
def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return dict(pairs)


def _int(text: str) -> int:
    return int(text)


def _float(text: str) -> float:
    return float(text)


def _decode_and_check(body: bytes, check: Callable[[Any], T], threaded: bool) -> T:
    try:
        if threaded:
            document = json.loads(
                body, object_pairs_hook=_object, parse_int=_int, parse_float=_float
            )
        else:
            document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadAnswer("its answer is not JSON (or nests too deeply)") from exc
    try:
        return check(document)
    except BadAnswer:
        raise
    except Exception as exc:  # a check that did not foresee something: still a bad answer
        raise BadAnswer(f"its answer could not be read ({type(exc).__name__})") from exc


async def load(body: bytes, check: Callable[[Any], T]) -> T:
    """`check` of the JSON document `body`, in a worker thread when the body
    is over THREAD_BYTES; raises BadAnswer, whatever went wrong."""
    if len(body) <= THREAD_BYTES:
        return _decode_and_check(body, check, threaded=False)
    return await asyncio.to_thread(_decode_and_check, body, check, True)
