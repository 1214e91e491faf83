"""Which etcd members can serve the node now, asked every half second.

What it is for: a call to an etcd member that hangs (a process stopped or
stuck in I/O while its kernel still accepts TCP) or that was cut off from
the other members (it has no leader, so a write it took before it noticed
never commits) waits out its whole deadline, 5 s, and every send of the
node's group commit waits with it. The probe notices such a member within
about a second, and then:

* the calls in flight on it give up at once (`guard`), as a deadline would:
  the store reports them unavailable and nothing is acknowledged (the
  client resends with the same transaction id, which the idempotency key
  recognises);
* the member is avoided until it answers again with a leader, so no call
  waits a deadline on it when its penalty (pool.py) runs out.

It also tells the node whether it reaches etcd at all (`reachable`): a node
that no member answers is cut off, which is not the same as an etcd without
a leader (a quorum loss: members answer, none has a leader), where every
node is in the same boat and sending clients elsewhere helps nobody. And
how quickly: `fastest_s`, the round trip of the quickest member that
answered with a leader in the last round, and how many rounds in a row it
was over `slow_rtt` (SLOW_RTT_S unless `--etcd-slow-ms` says otherwise:
`slow_rounds`) or within it (`quick_rounds`); a round
in which no member served counts as neither, nor does a round in which the
node's own event loop was late by over half of `slow_rtt` (a busy node, say
in a reconnect storm, is not a node with slow links: its round trips are
long because it reads their answers late). server/storeguard.py judges.

How it works: the Maintenance ``Status`` call of every member at once, with a
short deadline. A member is *serving* if it answered and names a leader.

What it must never do: treat a call it gave up on as failed in etcd (it may
have committed; only the idempotency key decides), or change anything in
etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store.base import StoreUnavailable
from curvechat.store.etcd import conn as conn
from curvechat.tasks import cancel_and_wait

__all__ = ["PROBE_INTERVAL_S", "SLOW_RTT_S", "EtcdProbe"]

log = logging.getLogger("curvechat.store")

PROBE_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 1.0
# A member that has been failing probes is avoided this long past each one
# (longer than a probe round, so it stays avoided while it keeps failing).
AVOID_S = 2 * (PROBE_INTERVAL_S + PROBE_TIMEOUT_S)
LEADERLESS_PROBES = 2
# A round whose quickest serving member took longer than this is slow: on
# loopback or a LAN a Status round trip takes milliseconds (the default of
# `curvechat serve --etcd-slow-ms`).
SLOW_RTT_S = 0.15
# While rounds are slow (every member answers slowly: this node's links are
# lossy or long), one probe left unanswered within the deadline says little,
# and avoiding the member would cut the calls and the watch on it, which
# then start again over the same slow links: it takes this many in a row.
SILENT_PROBES_WHEN_SLOW = 2
_NOT_REACHED = {"UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL"}

T = TypeVar("T")


async def _loop_lag(until: asyncio.Future[Any], nap: float = 0.01) -> float:
    """How late, at worst, the event loop woke a task that naps `nap`
    seconds at a time, until `until` is done."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    while True:
        started = loop.time()
        await asyncio.sleep(nap)
        worst = max(worst, loop.time() - started - nap)
        if until.done():
            return worst


class _State:
    """What the probe knows of one member."""

    def __init__(self) -> None:
        self.serving = True  # innocent until a probe says otherwise
        self.down = asyncio.Event()  # set while it is not serving
        self.why = ""
        self.leaderless = 0  # probes in a row that found it without a leader
        self.silent = 0  # probes in a row it did not answer


class EtcdProbe:
    """Probes every member of `store` (an open `EtcdStore`)."""

    def __init__(
        self,
        store: Any,
        *,
        interval: float = PROBE_INTERVAL_S,
        timeout: float = PROBE_TIMEOUT_S,
        slow_rtt: float = SLOW_RTT_S,
    ) -> None:
        self.store = store
        self.slow_rtt = slow_rtt  # a round slower than this is slow (--etcd-slow-ms)
        self.interval = interval
        self.timeout = timeout
        self._state: dict[str, _State] = {}
        self.last_reach = time.monotonic()  # when some member last answered
        self.rounds = 0
        self.silent_rounds = 0  # rounds in a row in which no member answered
        self.fastest_s: float | None = None  # the last round's quickest serving member
        self.slow_rounds = 0  # rounds in a row whose quickest member was over slow_rtt
        self.quick_rounds = 0  # rounds in a row whose quickest member was within it
        self.loop_lag_s = 0.0  # how late the event loop ran a timer during the last round
        self._task: asyncio.Task[None] | None = None
        # Set (and replaced) when the members' leader changes: a write that a
        # follower had forwarded to the old leader is lost with it, and would
        # wait out its whole deadline.
        self._leader_moved = asyncio.Event()
        self.leader = 0
        self.leader_changes = 0

    # --- for the store ---------------------------------------------------------
    def state(self, endpoint: str) -> _State:
        st = self._state.get(endpoint)
        if st is None:
            st = self._state[endpoint] = _State()
        return st

    async def guard(self, endpoint: str, call: Awaitable[T]) -> T:
        """Await `call` on member `endpoint`, or give up on it as soon as the
        probe finds the member not serving (StoreUnavailable)."""
        st = self.state(endpoint)
        if st.down.is_set():
            return await call  # every member is avoided and this one was picked
        task = asyncio.ensure_future(call)
        down = asyncio.ensure_future(st.down.wait())
        moved = asyncio.ensure_future(self._leader_moved.wait())
        try:
            await asyncio.wait({task, down, moved}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            down.cancel()
            moved.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            why = st.why if st.down.is_set() else "etcd's leader changed while it waited"
            raise StoreUnavailable(f"etcd {endpoint}: gave up on the call: {why}")
        return await task

    # --- what the node asks -----------------------------------------------------
    def reachable(self, within: float) -> bool:
        """Whether some member answered in the last `within` seconds."""
        return time.monotonic() - self.last_reach <= within

    def serving(self) -> list[str]:
        return [ep for ep, st in self._state.items() if st.serving]

    # --- the loop ------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="etcd-probe")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.probe_once()
            except Exception:  # a bug: say so, keep probing
                log.exception("etcd probe failed")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def probe_once(self) -> None:
        members = list(self.store.pool.members)
        round_ = asyncio.gather(*(self._timed(mb) for mb in members))
        lag = asyncio.ensure_future(_loop_lag(round_))
        try:
            timed = await round_
        except BaseException:
            lag.cancel()
            raise
        self.loop_lag_s = await lag  # at most one more nap
        results = [result for result, _rtt in timed]
        self.rounds += 1
        now = time.monotonic()
        answered_any = any(answered for answered, _why, _leader in results)
        self.silent_rounds = 0 if answered_any else self.silent_rounds + 1
        if self.loop_lag_s <= self.slow_rtt / 2:
            self._time_round([rtt for (ok, why, leader), rtt in timed if ok and leader and not why])
        leaders = {leader for _a, _w, leader in results if leader}
        if len(leaders) == 1:
            (leader,) = leaders
            if self.leader and leader != self.leader:
                log.info("etcd's leader changed: calls in flight give up")
                self.leader_changes += 1
                self._leader_moved.set()
                self._leader_moved = asyncio.Event()
            self.leader = leader
        for mb, (answered, why, _leader) in zip(members, results, strict=True):
            st = self.state(mb.endpoint)
            if answered:
                self.last_reach = now
            # Without a leader during an election too: only the second probe
            # in a row that finds none counts (a silent member counts at once,
            # unless the rounds are slow: SILENT_PROBES_WHEN_SLOW).
            st.leaderless = st.leaderless + 1 if answered and why else 0
            st.silent = 0 if answered else st.silent + 1  # in a row: any answer ends it
            if answered and why and st.leaderless < LEADERLESS_PROBES:
                continue
            if st.silent and self.slow_rounds and st.silent < SILENT_PROBES_WHEN_SLOW:
                continue
            if not why:
                if not st.serving:
                    log.info("etcd %s serves again", mb.endpoint)
                st.serving, st.why = True, ""
                st.down.clear()
                continue
            if st.serving:
                log.warning("etcd %s: %s; avoiding it", mb.endpoint, why)
            st.serving, st.why = False, why
            st.down.set()
            mb.avoid_until = max(mb.avoid_until, now + AVOID_S)

    def _time_round(self, rtts: list[float]) -> None:
        """Count the round as slow or quick by its quickest serving member."""
        self.fastest_s = min(rtts) if rtts else None
        if self.fastest_s is None:
            return
        if self.fastest_s > self.slow_rtt:
            self.slow_rounds += 1
            self.quick_rounds = 0
        else:
            self.quick_rounds += 1
            self.slow_rounds = 0

    async def _timed(self, member: Any) -> tuple[tuple[bool, str, int], float]:
        started = time.monotonic()
        result = await self._status(member)
        return result, time.monotonic() - started

    async def _status(self, member: Any) -> tuple[bool, str, int]:
        """(answered, why it cannot serve: "" if it can, the leader it names)."""
        stub = conn.authed(rpc.MaintenanceStub(member.channel), self.store.login, member.channel)
        try:
            resp = await stub.Status(rpc.StatusRequest(), timeout=self.timeout)
        except rpc.AioRpcError as exc:
            code = exc.code().name
            if code == "DEADLINE_EXCEEDED":
                return False, f"no answer within {self.timeout:g} s", 0
            if code in _NOT_REACHED:
                return False, f"{code}: {exc.details()}", 0
            # It answered, with a refusal the probe cannot judge (its
            # credentials, say): leave the member to the calls themselves.
            return True, "", 0
        except Exception as exc:  # a probe never raises
            return False, repr(exc), 0
        leader = int(resp.leader)
        if not leader:
            return True, "it has no leader (cut off from the other members?)", 0
        return True, "", leader
