"""The outage timeline: which nodes are up, which are down and since when,
and every outage with its duration.

This is the monitor's sans-IO core: it never touches a socket, a clock or a
file. The poller tells it what a poll found (`answered`, `failed`, each with
the time), the page reads `summary(now)`, `tracks`, `outages` and `events`,
and the archive keeps `to_json()`.

Theory of operation
-------------------
Each node (named by the URL it is polled at) is in one of three states:

    UNKNOWN  not polled yet: the monitor has just learnt of it
    UP       its last poll was answered
    DOWN     `down_after` polls in a row failed

Each poll becomes one input:

    ANSWERED     answered, with the boot id seen before (or the first one)
    RESTARTED    answered with another boot id: the process was replaced
    FAILED       failed, fewer than `down_after` failures in a row so far
    UNREACHABLE  failed, the `down_after`-th failure in a row or later

One failed poll is not an outage (a slow answer, a pause): `down_after`
failures in a row are, and the outage then starts at the first of them. It
ends at the first answered poll. A node that was replaced between two polls
(RESTARTED while UP) was down too briefly to see: that is logged as a
restart, not as an outage. After a restart of the monitor itself
(`resume`), every node keeps its last known state; an outage that was open
stays open (marked as not watched throughout), and one that opens before
the node answered once in this run has an unknown start (it may have begun
while nobody was watching).

`TRANSITIONS` below is that table; `Timeline.observe` does nothing but look
the pair up and run the action, and a test walks every row.

Every list is bounded, per node first: a node keeps its last
`MAX_OUTAGES_PER_NODE` outages and `MAX_EVENTS_PER_NODE` events, and past
the totals (`MAX_OUTAGES`, `MAX_EVENTS`) the node holding the most loses
its oldest. So a node that flaps, or answers with a new boot id every
time, pushes out only its own history, never another node's. It logs
`node_restarted` at most once per `RESTART_EVENT_EVERY_MS`; the restarts
in between are counted in the next one's text.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

DOWN_AFTER = 2  # failed polls in a row that make an outage
MAX_OUTAGES_PER_NODE = 100
MAX_EVENTS_PER_NODE = 100
MAX_OUTAGES = 1000  # all nodes together
MAX_EVENTS = 1000
RESTART_EVENT_EVERY_MS = 60_000  # node_restarted: at most one per node this often
FORMAT = 1  # of to_json()

Level = Literal["info", "warning", "error"]


class Health(enum.StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class Seen(enum.StrEnum):
    ANSWERED = "answered"
    RESTARTED = "restarted"
    FAILED = "failed"
    UNREACHABLE = "unreachable"


class Action(enum.StrEnum):
    NONE = "none"
    FIRST_SEEN = "first_seen"
    RESTARTED = "restarted"
    OPEN_OUTAGE = "open_outage"
    CLOSE_OUTAGE = "close_outage"
    NOTE_ERROR = "note_error"


H, S, A = Health, Seen, Action
TRANSITIONS: dict[tuple[Health, Seen], tuple[Health, Action]] = {
    (H.UNKNOWN, S.ANSWERED): (H.UP, A.FIRST_SEEN),
    (H.UNKNOWN, S.RESTARTED): (H.UP, A.FIRST_SEEN),
    (H.UNKNOWN, S.FAILED): (H.UNKNOWN, A.NOTE_ERROR),
    (H.UNKNOWN, S.UNREACHABLE): (H.DOWN, A.OPEN_OUTAGE),
    (H.UP, S.ANSWERED): (H.UP, A.NONE),
    (H.UP, S.RESTARTED): (H.UP, A.RESTARTED),
    (H.UP, S.FAILED): (H.UP, A.NOTE_ERROR),  # suspect, not yet down
    (H.UP, S.UNREACHABLE): (H.DOWN, A.OPEN_OUTAGE),
    (H.DOWN, S.ANSWERED): (H.UP, A.CLOSE_OUTAGE),
    (H.DOWN, S.RESTARTED): (H.UP, A.CLOSE_OUTAGE),
    (H.DOWN, S.FAILED): (H.DOWN, A.NOTE_ERROR),  # after a resume: the count starts over
    (H.DOWN, S.UNREACHABLE): (H.DOWN, A.NOTE_ERROR),
}


@dataclass
class Outage:
    """A node's time down: from the first of the failed polls that made it
    (`start`) to the first answered poll after them (`end`, None while it
    lasts). `last_ok`: the last answer before it. `start_known`: False when
    the node had not answered in this run of the monitor (it may have gone
    down earlier); `watched`: False when the monitor itself was stopped for
    part of it (it may have come back earlier)."""

    node: str
    name: str
    start: int  # Unix ms
    error: str
    last_ok: int | None = None
    end: int | None = None
    restarted: bool = False  # it came back as a new process
    start_known: bool = True
    watched: bool = True

    def duration(self, now: int) -> int:
        return max(0, (self.end if self.end is not None else now) - self.start)

    def to_json(self, now: int) -> dict[str, Any]:
        return {**asdict(self), "duration_ms": self.duration(now), "ongoing": self.end is None}


@dataclass(frozen=True)
class TimelineEvent:
    seq: int
    t: int  # Unix ms
    kind: str  # node_found, node_down, node_up, node_restarted, node_forgotten, monitor_started
    level: Level
    node: str  # the node's URL ("" for the monitor's own events)
    name: str
    detail: str
    duration_ms: int | None = None  # node_up: how long it was down; monitor_started: the gap

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NodeTrack:
    """What the timeline knows of one node."""

    node: str  # the URL it is polled at: its identity here, stable across restarts
    name: str = ""  # what it calls itself (changes when it restarts)
    health: Health = Health.UNKNOWN
    since: int | None = None  # when it entered `health`
    last_ok: int | None = None
    boot: str = ""
    failures: int = 0  # failed polls in a row
    first_failure: int | None = None
    error: str = ""  # why the last poll failed ("" after an answer)
    restart_logged: int | None = None  # when its last node_restarted was logged
    restarts_unlogged: int = 0  # restarts since then, not logged one by one

    @property
    def label(self) -> str:
        return self.name or self.node

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Summary:
    """The state of all nodes at once, for the status line.

    `state`: no_nodes, connecting (no node has been decided yet), up (every
    node up), partial (some down or not yet decided), down (every node
    down). `since`: when that became true (the last node to go down, the
    last to come up), or for partial the earliest outage still open."""

    state: Literal["no_nodes", "connecting", "up", "partial", "down"]
    since: int | None
    up: int
    down: int
    unknown: int

    @property
    def total(self) -> int:
        return self.up + self.down + self.unknown

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def keep(items: deque[Any], item: Outage | TimelineEvent, per_node: int, total: int) -> None:
    """Append `item`, then drop the oldest of its node's beyond `per_node`,
    and beyond `total` the oldest of the node that holds the most."""
    items.append(item)
    mine = [i for i, kept in enumerate(items) if kept.node == item.node]
    if len(mine) > per_node:
        del items[mine[0]]
    if len(items) > total:
        counts = Counter(kept.node for kept in items)
        most = max(counts, key=counts.__getitem__)
        del items[next(i for i, kept in enumerate(items) if kept.node == most)]


@dataclass
class Timeline:
    down_after: int = DOWN_AFTER
    tracks: dict[str, NodeTrack] = field(default_factory=dict)
    outages: deque[Outage] = field(default_factory=deque)
    events: deque[TimelineEvent] = field(default_factory=deque)
    seq: int = 0
    watching_since: int = 0  # when this run of the monitor began (`resume`)
    last_seen: int = 0  # the latest time anything was observed
    _open: dict[str, Outage] = field(default_factory=dict)
    _new: list[TimelineEvent] = field(default_factory=list, repr=False)  # of the current input

    # --- inputs --------------------------------------------------------------------
    def add_node(self, node: str) -> NodeTrack:
        """Start tracking `node` (a no-op if it is tracked)."""
        track = self.tracks.get(node)
        if track is None:
            track = self.tracks[node] = NodeTrack(node)
        return track

    def forget(self, node: str, at: int, why: str) -> None:
        track = self.tracks.pop(node, None)
        if track is None:
            return
        outage = self._open.pop(node, None)
        if outage is not None:
            outage.end, outage.watched = at, False
        self._event(at, "node_forgotten", "info", track, f"{track.label} no longer watched: {why}")

    def answered(self, node: str, at: int, *, name: str, boot: str) -> list[TimelineEvent]:
        """A poll of `node` at `at` was answered by process `boot` named `name`."""
        track = self.add_node(node)
        seen = Seen.RESTARTED if track.boot and boot != track.boot else Seen.ANSWERED
        return self._step(track, seen, at, name=name, boot=boot)

    def failed(self, node: str, at: int, error: str) -> list[TimelineEvent]:
        """A poll of `node` at `at` failed (no answer, refused, not a node)."""
        track = self.add_node(node)
        track.failures += 1
        if track.failures == 1:
            track.first_failure = at
        seen = Seen.UNREACHABLE if track.failures >= self.down_after else Seen.FAILED
        return self._step(track, seen, at, error=error)

    def resume(self, at: int) -> None:
        """This run of the monitor starts at `at` (after `from_json`, or first)."""
        gap = at - self.last_seen if self.last_seen else None
        for track in self.tracks.values():
            track.failures, track.first_failure = 0, None
        for outage in self._open.values():
            outage.watched = False
        self.watching_since = at
        detail = "monitor started"
        if gap is not None:
            detail += "; it was not watching for the time since its last poll"
        self._event(at, "monitor_started", "info", None, detail, gap)
        self.last_seen = max(self.last_seen, at)

    # --- the table's actions ---------------------------------------------------------
    def _step(
        self,
        track: NodeTrack,
        seen: Seen,
        at: int,
        *,
        name: str = "",
        boot: str = "",
        error: str = "",
    ) -> list[TimelineEvent]:
        self._new = []
        health, action = TRANSITIONS[(track.health, seen)]
        was = track.label
        if seen in (Seen.ANSWERED, Seen.RESTARTED):
            track.name, track.boot, track.last_ok = name, boot, at
            track.failures, track.first_failure, track.error = 0, None, ""
        else:
            track.error = error
        start = track.first_failure if track.first_failure is not None else at
        if action is Action.FIRST_SEEN:
            self._event(at, "node_found", "info", track, f"{track.label} is up")
        elif action is Action.RESTARTED:
            self._restarted(track, at, was)
        elif action is Action.OPEN_OUTAGE:
            known = track.last_ok is not None and track.last_ok >= self.watching_since
            outage = Outage(track.node, track.label, start, error, track.last_ok, start_known=known)
            self._open[track.node] = outage
            keep(self.outages, outage, MAX_OUTAGES_PER_NODE, MAX_OUTAGES)
            what = "went down" if known else "is down (since before it was first polled)"
            self._event(start, "node_down", "error", track, f"{track.label} {what}: {error}")
        elif action is Action.CLOSE_OUTAGE:
            ended = self._open.pop(track.node, None)
            duration = None
            if ended is not None:
                ended.end = at
                ended.restarted = seen is Seen.RESTARTED
                duration = ended.duration(at)
            how = " (restarted)" if seen is Seen.RESTARTED else ""
            self._event(at, "node_up", "info", track, f"{track.label} is back{how}", duration)
        if health is not track.health:
            track.health = health
            track.since = start if health is Health.DOWN else at
        self.last_seen = max(self.last_seen, at)
        return self._new

    def _restarted(self, track: NodeTrack, at: int, was: str) -> None:
        """node_restarted, or only counted if one was logged less than
        RESTART_EVENT_EVERY_MS ago."""
        if track.restart_logged is not None and at - track.restart_logged < RESTART_EVENT_EVERY_MS:
            track.restarts_unlogged += 1
            return
        detail = f"{track.label} restarted between two polls (it was {was})"
        if track.restarts_unlogged:
            n = track.restarts_unlogged
            detail += f"; {n} more restart{'s' if n > 1 else ''} since the last one logged"
        track.restart_logged, track.restarts_unlogged = at, 0
        self._event(at, "node_restarted", "warning", track, detail)

    def _event(
        self,
        at: int,
        kind: str,
        level: Level,
        track: NodeTrack | None,
        detail: str,
        duration: int | None = None,
    ) -> None:
        self.seq += 1
        node, name = (track.node, track.label) if track is not None else ("", "")
        event = TimelineEvent(self.seq, at, kind, level, node, name, detail, duration)
        keep(self.events, event, MAX_EVENTS_PER_NODE, MAX_EVENTS)
        self._new.append(event)

    # --- outputs ------------------------------------------------------------------------
    def open_outage(self, node: str) -> Outage | None:
        return self._open.get(node)

    def summary(self) -> Summary:
        tracks = list(self.tracks.values())
        up = [t for t in tracks if t.health is Health.UP]
        down = [t for t in tracks if t.health is Health.DOWN]
        unknown = len(tracks) - len(up) - len(down)
        counts = {"up": len(up), "down": len(down), "unknown": unknown}
        if not tracks:
            return Summary("no_nodes", None, **counts)
        if len(down) == len(tracks):
            return Summary("down", max(t.since or 0 for t in down), **counts)
        if len(up) == len(tracks):
            return Summary("up", max(t.since or 0 for t in up), **counts)
        if down:
            return Summary("partial", min(t.since or 0 for t in down), **counts)
        if not up:
            return Summary("connecting", None, **counts)
        return Summary("partial", None, **counts)

    def outages_since(self, t: int) -> list[Outage]:
        """Outages that ended after `t` or are still open, oldest first."""
        return [o for o in self.outages if o.end is None or o.end > t]

    # --- persistence -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "seq": self.seq,
            "last_seen": self.last_seen,
            "tracks": [t.to_json() for t in self.tracks.values()],
            "outages": [asdict(o) for o in self.outages],
            "events": [e.to_json() for e in self.events],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, down_after: int = DOWN_AFTER) -> Timeline:
        """A timeline as `to_json` left it; raises ValueError if it is not one."""
        if data.get("format") != FORMAT:
            raise ValueError(f"not a timeline of format {FORMAT}")
        try:
            timeline = cls(down_after=down_after, seq=int(data["seq"]))
            timeline.last_seen = int(data["last_seen"])
            for raw in data["tracks"]:
                track = NodeTrack(**raw)
                track.health = Health(track.health)
                timeline.tracks[track.node] = track
            for raw in data["outages"]:
                outage = Outage(**raw)
                keep(timeline.outages, outage, MAX_OUTAGES_PER_NODE, MAX_OUTAGES)
                if outage.end is None and outage.node in timeline.tracks:
                    timeline._open[outage.node] = outage
            for raw in data["events"]:
                keep(timeline.events, TimelineEvent(**raw), MAX_EVENTS_PER_NODE, MAX_EVENTS)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a damaged timeline: {exc}") from exc
        for node, track in timeline.tracks.items():
            if track.health is Health.DOWN and node not in timeline._open:
                # its outage fell off the bounded list: keep it open anyway
                outage = Outage(node, track.label, track.since or 0, track.error, track.last_ok)
                timeline._open[node] = outage
        return timeline
