"""Leadership and membership over a real SQLite store, moved by a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from socmeth.clock import FakeClock
from socmeth.cluster import RENEW_S, Leadership, Membership
from socmeth.errors import StoreError
from socmeth.metrics import Metrics
from socmeth.models import JobDefinition, JobType
from socmeth.queue.memory import MemoryQueue
from socmeth.scheduler import Scheduler
from socmeth.store.base import Fence, NodeBeat
from socmeth.store.sql import SqlStore, open_store

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqlStore]:
    opened = await open_store(f"sqlite:///{tmp_path / 'socmeth.db'}", clock=clock)
    yield opened
    await opened.close()


class Duties:
    """Record what a Leadership asked of its node."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def lead(self, term: int) -> None:
        self.events.append(f"lead {term}")

    async def follow(self) -> None:
        self.events.append("follow")


def leadership(
    store: SqlStore, clock: FakeClock, node_id: str
) -> tuple[Leadership, Duties]:
    duties = Duties()
    return (
        Leadership(store, clock, node_id, lead=duties.lead, follow=duties.follow),
        duties,
    )


async def tick(clock: FakeClock, seconds: float = RENEW_S) -> None:
    """Let the loops reach their sleeps, move the clock, and give them time for
    their store round trips."""
    await asyncio.sleep(0.01)
    clock.advance(seconds)
    await asyncio.sleep(0.05)


async def until(holds: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if holds():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not happen")


async def test_one_node_leads_and_the_other_takes_over_when_it_stops(
    store: SqlStore, clock: FakeClock
) -> None:
    a, a_duties = leadership(store, clock, "a")
    b, b_duties = leadership(store, clock, "b")
    await a.start()
    await b.start()
    try:
        await tick(clock)
        assert (a.leading, b.leading) == (True, False)
        assert a_duties.events == ["lead 1"]

        await a.stop()  # hands the lease over at once
        assert a_duties.events == ["lead 1", "follow"]
        await tick(clock)
        await until(lambda: b.leading, "b leading")
        assert b_duties.events == ["lead 2"]
    finally:
        await b.stop()


async def test_a_leader_whose_renewal_fails_stops_leading_at_once(
    store: SqlStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, duties = leadership(store, clock, "a")
    await a.start()
    try:

        async def unreachable(*_: object, **__: object) -> None:
            raise StoreError("the store cannot be reached")

        monkeypatch.setattr(store, "acquire_lease", unreachable)
        await tick(clock)
        await until(lambda: not a.leading, "a stepping down")
        assert duties.events == ["lead 1", "follow"]

        monkeypatch.undo()
        await tick(clock)
        await until(lambda: a.leading, "a leading again")
        assert duties.events == ["lead 1", "follow", "lead 1"]  # nobody took it
    finally:
        await a.stop()


async def test_a_lease_left_by_a_crash_is_taken_once_it_lapses(
    store: SqlStore, clock: FakeClock
) -> None:
    assert await store.acquire_lease("crashed", timedelta(seconds=1.5)) is not None
    a, duties = leadership(store, clock, "a")
    await a.start()
    try:
        await tick(clock, 1.0)
        assert not a.leading
        await tick(clock, 1.0)
        await until(lambda: a.leading, "a leading")
        assert duties.events == ["lead 2"]
    finally:
        await a.stop()


async def test_membership_beats_from_the_start_and_reads_stopped_after(
    store: SqlStore, clock: FakeClock
) -> None:
    running = [0]

    def describe() -> NodeBeat:
        return NodeBeat("a", "a:8080", "0.1.0", T0, running[0])

    membership = Membership(store, clock, describe)
    await membership.start()
    (first,) = (await store.list_nodes())[1]
    assert first.last_heartbeat_at == T0

    running[0] = 4
    await tick(clock, 1.0)
    for _ in range(200):
        (later,) = (await store.list_nodes())[1]
        if later.last_heartbeat_at > T0:
            break
        await asyncio.sleep(0.01)
    assert later.last_heartbeat_at == T0 + timedelta(seconds=1)
    assert later.running == 4

    await membership.stop()
    (stopped,) = (await store.list_nodes())[1]
    assert stopped.stopped_at == T0 + timedelta(seconds=1)


async def test_a_scheduler_whose_leadership_was_taken_over_stops_writing(
    store: SqlStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    lease = await store.acquire_lease("a", timedelta(0))  # lapses at once
    assert lease is not None
    scheduler = Scheduler(
        store,
        MemoryQueue(),
        clock,
        Metrics(),
        "a",
        stop_local=lambda run_ids: None,
    )
    assert await store.acquire_lease("b", timedelta(seconds=60)) is not None
    definition = JobDefinition(
        name="due", type=JobType.COMMAND, command="true", schedule="* * * * *"
    )
    job = await store.create_job(definition, T0, T0)  # due now

    scheduler.start(Fence("a", lease.term))
    await until(lambda: not scheduler.running, "the fenced scheduler stopping")

    assert (await store.get_job(job.id)).next_fire_at == T0  # it wrote nothing

    assert any(
        getattr(record, "event", None) == "scheduler.fenced"
        for record in caplog.records
    )
    await scheduler.stop()
