"""The etcd probe without sockets: when it gives up on calls in flight,
which members it keeps out of the rotation, and when a node counts as cut
off. Each member's Status answer is scripted."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from curvechat.store.base import StoreUnavailable
from curvechat.store.etcd.health import EtcdProbe


def _probe(
    *names: str, slow: float = 0.0
) -> tuple[EtcdProbe, dict[str, tuple[bool, str, int]], Any]:
    """A probe over members `names` whose answers are scripted; with `slow`,
    every member answers after that many seconds."""
    members = [SimpleNamespace(endpoint=n, avoid_until=0.0) for n in names]
    store = SimpleNamespace(pool=SimpleNamespace(members=members), login=None)
    probe = EtcdProbe(store)
    answers = {n: (True, "", 1) for n in names}  # answered, why not serving, leader

    async def status(member: Any) -> tuple[bool, str, int]:
        if slow:
            await asyncio.sleep(slow)
        return answers[member.endpoint]

    probe._status = status  # type: ignore[method-assign]
    return probe, answers, store


async def _pending(probe: EtcdProbe, endpoint: str) -> asyncio.Task[Any]:
    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(probe.guard(endpoint, never))
    await asyncio.sleep(0)
    return task


async def test_a_call_on_a_member_that_goes_silent_gives_up() -> None:
    probe, answers, store = _probe("m1", "m2")
    await probe.probe_once()
    task = await _pending(probe, "m1")
    answers["m1"] = (False, "no answer within 1 s", 0)
    await probe.probe_once()
    with pytest.raises(StoreUnavailable, match="gave up"):
        await task
    assert store.pool.members[0].avoid_until > time.monotonic()  # kept out of the rotation
    assert probe.serving() == ["m2"]
    answers["m1"] = (True, "", 1)
    await probe.probe_once()
    assert sorted(probe.serving()) == ["m1", "m2"]


async def test_no_leader_counts_only_the_second_time_in_a_row() -> None:
    probe, answers, _store = _probe("m1", "m2", "m3")
    await probe.probe_once()
    task = await _pending(probe, "m3")
    answers["m3"] = (True, "it has no leader", 0)  # an election, or cut off from the others
    await probe.probe_once()
    assert not task.done()
    await probe.probe_once()
    with pytest.raises(StoreUnavailable):
        await task


async def test_every_call_in_flight_gives_up_when_the_leader_changes() -> None:
    probe, answers, _store = _probe("m1", "m2", "m3")
    await probe.probe_once()
    calls = [await _pending(probe, m) for m in ("m1", "m2")]
    answers.update({m: (True, "", 2) for m in answers})  # a new leader
    await probe.probe_once()
    for task in calls:
        with pytest.raises(StoreUnavailable, match="leader changed"):
            await task
    done = asyncio.get_running_loop().create_future()
    done.set_result("ok")
    assert await probe.guard("m1", done) == "ok"  # calls started after it are not affected


async def test_cut_off_only_when_no_member_answers() -> None:
    probe, answers, _store = _probe("m1", "m2", "m3")
    for m in answers:  # a quorum loss: members answer, without a leader
        answers[m] = (True, "it has no leader", 0)
    await probe.probe_once()
    await probe.probe_once()
    assert probe.silent_rounds == 0
    for m in answers:  # the node's links to etcd are cut
        answers[m] = (False, "no answer within 1 s", 0)
    for rounds in (1, 2, 3):
        await probe.probe_once()
        assert probe.silent_rounds == rounds


async def test_rounds_are_slow_or_quick_by_the_quickest_serving_member() -> None:
    probe, answers, _store = _probe("m1", "m2", "m3")
    delays = dict.fromkeys(answers, 0.0)

    async def status(member: Any) -> tuple[bool, str, int]:
        await asyncio.sleep(delays[member.endpoint])
        return answers[member.endpoint]

    probe._status = status  # type: ignore[method-assign]
    await probe.probe_once()
    assert (probe.quick_rounds, probe.slow_rounds) == (1, 0)
    delays.update(m1=0.2, m2=0.2, m3=0.2)  # every link to etcd is slow
    await probe.probe_once()
    await probe.probe_once()
    assert (probe.quick_rounds, probe.slow_rounds) == (0, 2)
    assert probe.fastest_s is not None and probe.fastest_s >= 0.2
    delays["m2"] = 0.0
    answers["m2"] = (True, "it has no leader", 0)  # a quick member that cannot serve
    await probe.probe_once()
    assert probe.slow_rounds == 3
    answers["m2"] = (True, "", 1)  # one quick member serving is enough
    await probe.probe_once()
    assert (probe.quick_rounds, probe.slow_rounds) == (1, 0)
    for m in answers:  # nobody serves (a quorum loss): the round counts as neither
        answers[m] = (True, "it has no leader", 0)
    await probe.probe_once()
    assert (probe.quick_rounds, probe.slow_rounds, probe.fastest_s) == (1, 0, None)


async def test_a_round_the_node_itself_was_late_for_is_not_counted() -> None:
    """The answers came late because the node's own event loop was busy
    (a reconnect storm, say), not because its links are slow."""
    probe, answers, _store = _probe("m1", "m2")

    async def status(member: Any) -> tuple[bool, str, int]:
        await asyncio.sleep(0.001)
        time.sleep(0.3)  # the loop is held: every timer fires late
        return answers[member.endpoint]

    probe._status = status  # type: ignore[method-assign]
    await probe.probe_once()
    assert probe.loop_lag_s > 0.2
    assert (probe.quick_rounds, probe.slow_rounds) == (0, 0)


async def test_while_rounds_are_slow_a_member_is_avoided_after_two_silent_probes() -> None:
    probe, answers, _store = _probe("m1", "m2", slow=0.2)  # every member answers slowly
    await probe.probe_once()
    assert probe.slow_rounds == 1
    answers["m1"] = (False, "no answer within 1 s", 0)
    await probe.probe_once()
    assert sorted(probe.serving()) == ["m1", "m2"]  # one silent probe: not yet
    await probe.probe_once()
    assert probe.serving() == ["m2"]


async def test_the_slow_threshold_is_the_operators_to_set() -> None:
    """`curvechat serve --etcd-slow-ms 500`: 200 ms rounds are quick then."""
    probe, _answers, _store = _probe("m1", slow=0.2)
    probe.slow_rtt = 0.5
    await probe.probe_once()
    assert (probe.quick_rounds, probe.slow_rounds) == (1, 0)


async def test_an_answer_between_two_silent_probes_ends_the_run() -> None:
    """While rounds are slow: silent, then an answer naming no leader, then
    silent again is not two silent probes in a row."""
    probe, answers, _store = _probe("m1", "m2", slow=0.2)  # every member answers slowly
    await probe.probe_once()
    for answer in [(False, "no answer", 0), (True, "it has no leader", 0), (False, "no answer", 0)]:
        answers["m1"] = answer
        await probe.probe_once()
    assert sorted(probe.serving()) == ["m1", "m2"]
