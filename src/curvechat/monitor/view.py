"""What the monitor knows, in one place: the outage timeline, each node's
rolling history of metric samples, and what each node said about itself in
its last answer. It changes only through `answered` / `failed` (the
poller's results, with the time) and `load` (the archive at start), and
it answers the page (`overview`, `history_since`).

No I/O here: no socket, no clock, no file. Samples not yet written to the
archive wait in `take_unsaved`. Everything is bounded: a history ring per
node (`MetricHistory`, shared with the node's own dashboard), samples no
closer than `MIN_SPACING_MS` to each other, the timeline's bounded lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from curvechat.dashboard.history import MetricHistory, Sample
from curvechat.monitor.timeline import Timeline, TimelineEvent

MIN_SPACING_MS = 500  # a node samples once a second; closer samples are dropped
MAX_SKEW_MS = 60_000  # samples stamped further ahead of the monitor's clock are dropped
MAX_UNSAVED = 100_000
SHOWN_OUTAGES = 200
SHOWN_EVENTS = 200


@dataclass(frozen=True)
class NodeState:
    """A node's answer to `/api/state`, checked (see `poller.parse_state`)."""

    name: str
    boot: str
    started_at: int | None = None  # Unix ms
    endpoint: str = ""
    store_ok: bool | None = None
    store_error: str = ""
    interval_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)

    def card(self) -> dict[str, Any]:
        """What the page shows of the node besides its samples."""
        return {
            "name": self.name,
            "boot": self.boot,
            "started_at": self.started_at,
            "endpoint": self.endpoint,
            "store_ok": self.store_ok,
            "store_error": self.store_error,
        }


@dataclass
class NodeEntry:
    url: str
    source: str  # where the monitor learnt of it: "command line", "etcd registry"
    listed: bool = True  # still in its source's list
    unlisted_since: int | None = None
    card: dict[str, Any] = field(default_factory=dict)  # NodeState.card() of the last answer


class MonitorView:
    def __init__(
        self, timeline: Timeline | None = None, *, history_s: float = 3600, interval_s: float = 1.0
    ) -> None:
        self.timeline = timeline or Timeline()
        self.history_s = history_s
        self.interval_s = interval_s
        self.nodes: dict[str, NodeEntry] = {}
        self.histories: dict[str, MetricHistory] = {}
        self._unsaved: list[tuple[str, Sample]] = []
        for node in self.timeline.tracks:  # known from an earlier run
            self.add_node(node, source="earlier run", listed=False)

    # --- nodes ----------------------------------------------------------------------
    def add_node(self, url: str, *, source: str, listed: bool = True) -> NodeEntry:
        entry = self.nodes.get(url)
        if entry is None:
            entry = self.nodes[url] = NodeEntry(url, source, listed)
            self.histories[url] = MetricHistory(self.history_s, self.interval_s)
            self.timeline.add_node(url)
        elif listed:
            entry.listed, entry.unlisted_since, entry.source = True, None, source
        return entry

    def unlisted(self, url: str, at: int) -> None:
        """`url` dropped out of its source's list (a node left the registry)."""
        entry = self.nodes.get(url)
        if entry is not None and entry.listed:
            entry.listed, entry.unlisted_since = False, at

    def forget(self, url: str, at: int, why: str) -> None:
        self.nodes.pop(url, None)
        self.histories.pop(url, None)
        self.timeline.forget(url, at, why)

    def last_sample_t(self, url: str) -> int:
        history = self.histories.get(url)
        latest = history.latest if history is not None else None
        return int(latest["t"]) if latest is not None else 0

    # --- poll results ---------------------------------------------------------------
    def answered(self, url: str, at: int, state: NodeState) -> list[TimelineEvent]:
        entry = self.nodes.get(url) or self.add_node(url, source="poll")
        entry.card = state.card()
        self._keep(url, state.samples, at)
        return self.timeline.answered(url, at, name=state.name, boot=state.boot)

    def failed(self, url: str, at: int, error: str) -> list[TimelineEvent]:
        if url not in self.nodes:
            self.add_node(url, source="poll")
        return self.timeline.failed(url, at, error)

    def _keep(self, url: str, samples: list[Sample], at: int) -> None:
        history = self.histories[url]
        last = self.last_sample_t(url)
        for sample in samples:
            t = sample["t"]
            if t < last + MIN_SPACING_MS or t > at + MAX_SKEW_MS:
                continue
            history.append(sample)
            if len(self._unsaved) < MAX_UNSAVED:
                self._unsaved.append((url, sample))
            last = t

    # --- the archive -------------------------------------------------------------------
    def load(self, samples: dict[str, list[Sample]]) -> None:
        """Samples kept by an earlier run (oldest first), for known nodes."""
        for url, rows in samples.items():
            history = self.histories.get(url)
            if history is not None:
                for sample in rows:
                    history.append(sample)

    def take_unsaved(self) -> list[tuple[str, Sample]]:
        taken, self._unsaved = self._unsaved, []
        return taken

    # --- the page ------------------------------------------------------------------------
    def overview(self, now: int) -> dict[str, Any]:
        """The nodes, their state and the outage timeline, for the page."""
        timeline = self.timeline
        nodes = []
        for url, entry in self.nodes.items():
            track = timeline.tracks.get(url)
            if track is None:
                continue
            history = self.histories.get(url)
            latest = history.latest if history is not None else None
            nodes.append(
                {
                    "url": url,
                    "source": entry.source,
                    "listed": entry.listed,
                    "unlisted_since": entry.unlisted_since,
                    **track.to_json(),
                    "name": track.label,
                    "card": entry.card,
                    "latest": latest if track.health == "up" else None,
                }
            )
        outages = list(timeline.outages)[-SHOWN_OUTAGES:]
        events = list(timeline.events)[-SHOWN_EVENTS:]
        return {
            "now": now,
            "summary": timeline.summary().to_json(),
            "nodes": nodes,
            "outages": [o.to_json(now) for o in reversed(outages)],
            "events": [e.to_json() for e in reversed(events)],
            "interval_s": self.interval_s,
            "history_s": self.history_s,
        }

    def history_since(self, t: int) -> dict[str, list[Sample]]:
        """Each node's samples stamped after `t`, oldest first."""
        return {url: history.since(t) for url, history in self.histories.items()}
