"""Drive the leader's reaper over a real store (every backend) and a queue.

The store's clock is the test's FakeClock on every backend. SQLite's is by design
(`open_store(clock=)`); PostgreSQL reads clock_timestamp(), which no test can move,
so here it reads the fake clock instead (`pin_store_clock`). The reaper's rules are
about durations of the store's clock, and the queries that apply them still run on
the real backend. Tests call `pass_once`, `reap` or `republish` between moves of the
clock; the tests of the loop itself count its passes.

Nodes are played by hand: a heartbeat is a row, a running attempt is a claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from socmeth import reaper as reaper_module
from socmeth.clock import FakeClock
from socmeth.cluster import DOWN_AFTER, LEASE_TTL
from socmeth.metrics import Metrics
from socmeth.models import (
    Attempt,
    AttemptState,
    Job,
    JobDefinition,
    JobType,
    Run,
    RunState,
    Trigger,
)
from socmeth.queue.base import Delivery, Queue, QueueError
from socmeth.queue.memory import MemoryQueue
from socmeth.reaper import REPUBLISH_EVERY_S, REPUBLISH_GRACE, WATCH_GAP, Reaper
from socmeth.store.base import (
    AttemptFinish,
    AttemptOutcome,
    Fence,
    NewRun,
    NodeBeat,
    QueuedAttempt,
)
from socmeth.store.sql import SqlStore, open_store
from tests.integration.conftest import QueueBackend

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
LEADER = "leader"
LOST_REASON = "the attempt was lost (its node died or stopped) and no retry is left"


def pin_store_clock(
    store: SqlStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make the store read `clock` as its own, on PostgreSQL as on SQLite."""
    if store.engine.dialect.name != "postgresql":
        return  # opened with clock=: SQLite's store clock is the node's already

    async def now(_: AsyncConnection) -> datetime:
        return clock.now()

    monkeypatch.setattr(store, "_now", now)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(
    store_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SqlStore]:
    opened = await open_store(store_url, clock=clock)
    pin_store_clock(opened, clock, monkeypatch)
    yield opened
    await opened.close()


class Recorder(Queue):
    """Pass every call on to a queue; remember releases, publishes and scans."""

    def __init__(self, inner: Queue) -> None:
        self.inner = inner
        self.released: list[str] = []
        self.published: list[int] = []
        self.scans = 0
        self.scanning = asyncio.Event()  # set once a scan started

    async def publish(self, attempts: Sequence[QueuedAttempt]) -> None:
        self.published += [a.attempt_id for a in attempts]
        await self.inner.publish(attempts)

    async def receive(
        self, consumer: str, max_count: int, timeout_s: float
    ) -> list[Delivery]:
        return await self.inner.receive(consumer, max_count, timeout_s)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.ack(deliveries)

    async def release(self, consumer: str) -> None:
        self.released.append(consumer)
        await self.inner.release(consumer)

    async def held(self) -> set[int]:
        self.scans += 1
        self.scanning.set()
        return await self.inner.held()

    async def holders(self) -> set[str]:
        return await self.inner.holders()

    async def size(self) -> int:
        return await self.inner.size()

    async def close(self) -> None:
        await self.inner.close()


class QueueDown(MemoryQueue):
    """A queue whose backend does not answer, as Redis during an outage."""

    async def publish(self, attempts: Sequence[QueuedAttempt]) -> None:
        raise QueueError("Redis does not answer")

    async def release(self, consumer: str) -> None:
        raise QueueError("Redis does not answer")

    async def held(self) -> set[int]:
        raise QueueError("Redis does not answer")

    async def holders(self) -> set[str]:
        raise QueueError("Redis does not answer")


class Cluster:
    """The leader's reaper over a store and a queue; other nodes played by hand."""

    def __init__(self, store: SqlStore, clock: FakeClock, queue: Queue) -> None:
        self.store = store
        self.clock = clock
        self.queue = Recorder(queue)
        self.metrics = Metrics()
        self.wakes = 0
        self.reaper = Reaper(
            store,
            self.queue,
            clock,
            self.metrics,
            random.Random(1),
            LEADER,
            wake_scheduler=self._wake,
        )

    def _wake(self) -> None:
        self.wakes += 1

    async def beat(self, *node_ids: str) -> None:
        for node_id in node_ids:
            beat = NodeBeat(node_id, f"{node_id}:8080", "0.1.0", T0, 1)
            await self.store.heartbeat(beat)

    async def job(self, name: str = "work", **fields: Any) -> Job:
        definition = JobDefinition(
            name=name, type=JobType.COMMAND, command="true", **fields
        )
        return await self.store.create_job(definition, None, self.clock.now())

    async def queued(self, job: Job) -> QueuedAttempt:
        """Create a run of the job now; return its first attempt, queued."""
        run = await self.store.create_run(
            NewRun(job.id, Trigger.MANUAL, None), self.clock.now()
        )
        (attempt,) = run.attempts
        return QueuedAttempt(attempt.id, run.id, attempt.number)

    async def claim(self, queued: QueuedAttempt, node_id: str) -> QueuedAttempt:
        batch = await self.store.claim_attempts(
            [queued.attempt_id], node_id, self.clock.now(), 100
        )
        assert [c.attempt.id for c in batch.claimed] == [queued.attempt_id]
        return queued

    async def running_on(self, node_id: str, job: Job) -> QueuedAttempt:
        """Queue an attempt and let the node take its message and claim it: its
        message stays pending for the node while the attempt runs."""
        queued = await self.queued(job)
        with contextlib.suppress(QueueError):  # a queue that is down holds nothing
            await self.queue.inner.publish([queued])
            assert len(await self.queue.inner.receive(node_id, 1, 0)) == 1
        return await self.claim(queued, node_id)

    async def attempt(self, which: QueuedAttempt) -> tuple[Run, Attempt]:
        run = await self.store.get_run(which.run_id)
        (attempt,) = [a for a in run.attempts if a.id == which.attempt_id]
        return run, attempt

    async def states(self, which: QueuedAttempt) -> tuple[RunState, AttemptState]:
        run, attempt = await self.attempt(which)
        return run.state, attempt.state

    async def step(self, seconds: float = 1.0, *beating: str) -> None:
        """Move the clock, let the beating nodes beat, and take one reaper pass."""
        self.clock.advance(seconds)
        await self.beat(*beating)
        await self.reaper.pass_once()


@pytest.fixture
def cluster(store: SqlStore, clock: FakeClock) -> Cluster:
    return Cluster(store, clock, MemoryQueue())


async def until(holds: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if holds():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not happen")


class Loop:
    """Run the reaper's loop and count its passes, one per second of the clock."""

    def __init__(self, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cluster = cluster
        self.passes = 0
        take_pass = cluster.reaper.pass_once

        async def counted() -> None:
            try:
                await take_pass()
            finally:
                self.passes += 1

        monkeypatch.setattr(cluster.reaper, "pass_once", counted)

    async def start(self, fence: Fence | None) -> None:
        self.cluster.reaper.start(fence)
        await until(lambda: self.passes == 1, "the first reaper pass")

    async def second(self, *beating: str) -> None:
        """Let the beating nodes beat, move the clock a second, await the pass."""
        await self.cluster.beat(*beating)
        passes = self.passes
        self.cluster.clock.advance(1)
        await until(lambda: self.passes > passes, "a reaper pass")


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


# Reaping


async def test_a_silent_nodes_attempt_is_lost_naming_the_node_and_retried(
    cluster: Cluster,
) -> None:
    c = cluster
    job = await c.job(retries=1)
    await c.beat("b", "c")
    on_b = await c.running_on("b", job)
    on_c = await c.running_on("c", job)
    await c.reaper.pass_once()  # watching starts at T0

    for _ in range(4):
        await c.step(1.0, "c")  # b's last beat is T0: down once silent over 3 s

    run, attempt = await c.attempt(on_b)
    reaped_at = T0 + 4 * SECOND
    assert (attempt.state, attempt.finished_at) == (AttemptState.LOST, reaped_at)
    assert attempt.error == "node b stopped answering while it ran this attempt"
    # The job's backoff: 10 s after the first attempt's end.
    assert (run.state, run.next_attempt_at, run.finished_at) == (
        RunState.QUEUED,
        reaped_at + 10 * SECOND,
        None,
    )
    assert await c.states(on_c) == (RunState.RUNNING, AttemptState.RUNNING)


async def test_a_silent_nodes_last_allowed_attempt_ends_the_run(
    cluster: Cluster,
) -> None:
    c = cluster
    job = await c.job(retries=1)
    first = await c.running_on("b", job)
    retry = AttemptOutcome(
        AttemptState.FAILED, RunState.QUEUED, exit_code=1, next_attempt_at=T0
    )
    await c.store.finish_attempts([AttemptFinish(first.attempt_id, retry)], T0)
    second = await c.store.start_retry(first.run_id, T0)
    assert second is not None
    await c.claim(second, "b")
    c.clock.advance(10)

    assert await c.reaper.reap(c.clock.now() - DOWN_AFTER) == 1

    run, attempt = await c.attempt(second)
    assert (attempt.number, attempt.state) == (2, AttemptState.LOST)
    assert attempt.error == "node b stopped answering while it ran this attempt"
    assert (run.state, run.reason, run.finished_at, run.next_attempt_at) == (
        RunState.FAILED,
        LOST_REASON,
        T0 + 10 * SECOND,
        None,
    )
    ended = {"job": "work", "state": "failed"}
    assert c.metrics.registry.get_sample_value("socmeth_runs_total", ended) == 1


@pytest.mark.parametrize(
    ("retries", "depended_on", "woken"),
    [(1, False, True), (0, True, True), (0, False, False)],
    ids=["retry-pending", "others-depend-on-it", "ended-alone"],
)
async def test_the_scheduler_is_woken_when_a_reaped_run_leaves_it_work(
    cluster: Cluster, retries: int, depended_on: bool, woken: bool
) -> None:
    c = cluster
    job = await c.job(retries=retries)
    if depended_on:
        await c.job("after", depends_on=("work",))
    await c.running_on("never-beat", job)  # a node with no row is silent too

    assert await c.reaper.reap(c.clock.now()) == 1

    assert c.wakes == (1 if woken else 0)


async def test_nothing_is_reaped_or_released_before_the_reaper_watched_the_store(
    cluster: Cluster,
) -> None:
    c = cluster
    job = await c.job()
    await c.beat("b")
    on_b = await c.running_on("b", job)
    # A new leader, or a store back from a restart: b's last beat is a minute old,
    # though nobody could tell whether it beat meanwhile.
    c.clock.advance(60)
    await c.reaper.pass_once()
    await c.step(DOWN_AFTER.total_seconds() - 0.5)

    assert await c.states(on_b) == (RunState.RUNNING, AttemptState.RUNNING)
    assert c.queue.released == []

    await c.step(0.5)  # watched for DOWN_AFTER: b did not beat all along

    assert await c.states(on_b) == (RunState.FAILED, AttemptState.LOST)
    assert c.queue.released == ["b"]


async def test_a_node_that_beats_again_before_the_reap_keeps_its_attempt(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cluster
    job = await c.job(retries=1)
    await c.beat("b")
    on_b = await c.running_on("b", job)
    c.clock.advance(10)
    read = c.store.orphaned_attempts
    seen: list[int] = []

    async def read_then_b_beats(*args: Any, **kwargs: Any) -> Any:
        orphans = await read(*args, **kwargs)
        seen.append(len(orphans))
        await c.beat("b")  # b was only slow: it beats before the reaper writes
        return orphans

    monkeypatch.setattr(c.store, "orphaned_attempts", read_then_b_beats)

    assert await c.reaper.reap(c.clock.now() - DOWN_AFTER) == 0

    assert seen == [1]  # the reaper did read b's attempt as orphaned
    run, attempt = await c.attempt(on_b)
    assert (run.state, run.next_attempt_at) == (RunState.RUNNING, None)
    assert (attempt.state, attempt.error) == (AttemptState.RUNNING, None)
    assert c.wakes == 0


async def test_a_stopped_nodes_attempts_are_reaped_though_it_beat_just_now(
    cluster: Cluster,
) -> None:
    c = cluster
    job = await c.job()
    await c.beat("b")
    on_b = await c.running_on("b", job)
    await c.reaper.pass_once()
    c.clock.advance(DOWN_AFTER.total_seconds())
    await c.beat("b")
    await c.store.mark_stopped("b")  # its stop did not get to record the end

    await c.reaper.pass_once()

    run, attempt = await c.attempt(on_b)
    assert (run.state, attempt.state) == (RunState.FAILED, AttemptState.LOST)
    assert attempt.error == "node b stopped answering while it ran this attempt"
    assert c.queue.released == ["b"]


async def test_the_leaders_own_attempts_are_never_reaped_nor_released(
    cluster: Cluster,
) -> None:
    c = cluster
    job = await c.job()
    await c.beat(LEADER, "b")  # the leader's own heartbeats fail from now on
    mine = await c.running_on(LEADER, job)
    on_b = await c.running_on("b", job)
    c.clock.advance(60)
    await c.reaper.pass_once()

    for _ in range(3):
        await c.step(1.0)

    assert await c.states(mine) == (RunState.RUNNING, AttemptState.RUNNING)
    assert await c.states(on_b) == (RunState.FAILED, AttemptState.LOST)
    assert c.queue.released == ["b"]


async def test_a_pass_after_a_gap_longer_than_watch_gap_watches_again(
    cluster: Cluster,
) -> None:
    c = cluster
    job = await c.job()
    await c.beat("b")
    on_b = await c.running_on("b", job)
    await c.reaper.pass_once()
    await c.step(1.0)
    # The leader's process was held up: b's beats may have waited on the same
    # cause, so 5 s of silence prove nothing yet.
    await c.step((WATCH_GAP + SECOND).total_seconds())

    assert await c.states(on_b) == (RunState.RUNNING, AttemptState.RUNNING)
    assert c.queue.released == []

    for _ in range(3):
        await c.step(1.0)

    assert await c.states(on_b) == (RunState.FAILED, AttemptState.LOST)


# Releasing


async def test_consumers_that_are_not_live_nodes_are_released_live_ones_never(
    cluster: Cluster,
) -> None:
    c = cluster
    job = await c.job()
    await c.beat("b", "c", "d")
    await c.store.mark_stopped("d")
    for consumer in ("b", "c", "d", "never-beat"):
        await c.queue.publish([await c.queued(job)])
        assert len(await c.queue.receive(consumer, 1, 0)) == 1
    await c.reaper.pass_once()
    for _ in range(3):
        await c.step(1.0, "c")
    assert c.queue.released == ["d", "never-beat"]  # at 3 s of watching

    await c.step(1.0, "c")
    assert c.queue.released == ["d", "never-beat", "b"]  # b silent over 3 s

    for _ in range(3):
        await c.step(1.0, "c")
    # Released consumers hold nothing any more; c beats throughout.
    assert c.queue.released == ["d", "never-beat", "b"]
    assert await c.queue.holders() == {"c"}


async def test_a_silent_nodes_messages_go_back_to_the_other_consumers(
    store: SqlStore, clock: FakeClock, queue_backend: QueueBackend
) -> None:
    c = Cluster(store, clock, queue_backend.open())
    job = await c.job()
    await c.beat("b", "c")
    deferred = await c.queued(job)  # b took it, then held it back at capacity
    await c.queue.publish([deferred])
    assert [d.attempt for d in await c.queue.receive("b", 10, 1.0)] == [deferred]
    assert await c.queue.receive("c", 10, 0) == []

    await c.reaper.pass_once()
    for _ in range(4):
        await c.step(1.0, "c")

    assert [d.attempt for d in await c.queue.receive("c", 10, 1.0)] == [deferred]


async def test_a_message_a_released_node_took_afterwards_is_delivered_again(
    store: SqlStore, clock: FakeClock, queue_backend: QueueBackend
) -> None:
    c = Cluster(store, clock, queue_backend.open())
    job = await c.job()
    await c.beat("b", "c")
    await c.reaper.pass_once()
    for _ in range(4):
        await c.step(1.0, "c")
    assert c.queue.released == []  # silent, but holding nothing
    # b lost the store but not the queue: it takes a message it cannot claim (its
    # claim fails), then dies. It never beats again.
    late = await c.queued(job)
    await c.queue.publish([late])
    assert [d.attempt for d in await c.queue.receive("b", 10, 1.0)] == [late]

    for _ in range(10):  # two republish intervals
        await c.step(1.0, "c")

    assert [d.attempt for d in await c.queue.receive("c", 10, 0)] == [late]


# Republishing


async def test_republish_publishes_the_queued_attempts_the_queue_lost(
    store: SqlStore,
    clock: FakeClock,
    queue_backend: QueueBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reaper_module, "REPUBLISH_BATCH", 2)  # page through them
    c = Cluster(store, clock, queue_backend.open())
    job = await c.job()
    pending = await c.queued(job)
    waiting = await c.queued(job)
    await c.queue.publish([pending, waiting])
    assert [d.attempt for d in await c.queue.receive("b", 1, 1.0)] == [pending]
    running = await c.running_on("b", job)  # no longer queued; its message held
    lost = [await c.queued(job), await c.queued(job)]  # committed, never published
    clock.advance(10)
    recent = await c.queued(job)  # its publish may be on its way
    clock.advance((REPUBLISH_GRACE - 0.5 * SECOND).total_seconds())
    c.queue.published.clear()

    assert await c.reaper.republish() == 2

    assert c.queue.published == [q.attempt_id for q in lost]
    held = {q.attempt_id for q in (pending, waiting, running, *lost)}
    assert await c.queue.held() == held
    assert recent.attempt_id not in held


async def test_republish_publishes_nothing_when_the_queue_holds_every_attempt(
    store: SqlStore, clock: FakeClock, queue_backend: QueueBackend
) -> None:
    c = Cluster(store, clock, queue_backend.open())
    job = await c.job()
    pending = await c.queued(job)
    waiting = await c.queued(job)
    await c.queue.publish([pending, waiting])
    await c.queue.receive("b", 1, 1.0)
    clock.advance(60)
    c.queue.published.clear()

    assert await c.reaper.republish() == 0

    assert c.queue.published == []
    assert await c.queue.size() == 1


async def test_what_a_dead_leader_queued_last_is_republished_once_the_grace_passed(
    cluster: Cluster,
) -> None:
    c = cluster
    job = await c.job()
    unpublished = await c.queued(job)  # the previous leader died before publishing
    await c.reaper.pass_once()  # a new leadership starts
    await c.step(1.0)
    await c.step(1.0)  # the grace has not passed yet: its publish may be on its way
    assert c.queue.published == []

    await c.step(1.0)

    assert c.queue.published == [unpublished.attempt_id]


async def test_republish_then_runs_every_interval(cluster: Cluster) -> None:
    c = cluster
    scanned_at: list[float] = []
    for second in range(14):
        scans = c.queue.scans
        if second:
            await c.step(1.0)
        else:
            await c.reaper.pass_once()
        if c.queue.scans > scans:
            scanned_at.append(second)

    # At the start, once the grace passed, then every REPUBLISH_EVERY_S.
    assert scanned_at == [0, 3, 3 + REPUBLISH_EVERY_S, 3 + 2 * REPUBLISH_EVERY_S]


# Fencing


async def test_a_fenced_reaper_stops_and_writes_nothing(
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = cluster
    job = await c.job(retries=1)
    await c.beat("b")
    on_b = await c.running_on("b", job)
    lease = await c.store.acquire_lease(LEADER, LEASE_TTL)
    assert lease is not None
    loop = Loop(c, monkeypatch)
    await loop.start(Fence(LEADER, lease.term))
    try:
        await loop.second()
        await loop.second()  # the leader's lease lapsed unnoticed...
        assert await c.store.acquire_lease("other", 60 * SECOND) is not None
        await loop.second()
        await loop.second()  # ... and b is down: the reap is fenced
        await until(lambda: bool(events(caplog, "reaper.fenced")), "the fence")
        passes = loop.passes

        for _ in range(5):
            c.clock.advance(1)
            await asyncio.sleep(0.02)

        assert loop.passes == passes  # the loop stopped
    finally:
        await c.reaper.stop()
    run, attempt = await c.attempt(on_b)
    assert (run.state, run.next_attempt_at) == (RunState.RUNNING, None)
    assert (attempt.state, attempt.error) == (AttemptState.RUNNING, None)
    assert c.wakes == 0
    assert events(caplog, "attempt.lost") == []


async def test_a_queue_outage_does_not_stop_reaping_while_the_store_answers(
    store: SqlStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = Cluster(store, clock, QueueDown())
    job = await c.job()
    await c.beat("b")
    on_b = await c.running_on("b", job)
    loop = Loop(c, monkeypatch)
    await loop.start(None)
    try:
        for _ in range(10):
            await loop.second()
    finally:
        await c.reaper.stop()

    assert await c.states(on_b) == (RunState.FAILED, AttemptState.LOST)


async def test_a_reaper_stopped_while_it_reads_redis_stops(
    store: SqlStore, clock: FakeClock, redis_backend: QueueBackend
) -> None:
    c = Cluster(store, clock, redis_backend.open())
    await c.queue.held()  # connected, with its consumer group
    kept_on: list[int] = []
    for turns in range(6):  # cancel at each point of the scan's first command
        c.queue.scanning.clear()
        c.reaper.start(None)
        loop_task = next(t for t in asyncio.all_tasks() if t.get_name() == "reaper")
        await c.queue.scanning.wait()
        for _ in range(turns):
            await asyncio.sleep(0)
        stopping = asyncio.create_task(c.reaper.stop())
        done, _ = await asyncio.wait({stopping}, timeout=0.25)
        if not done:
            kept_on.append(turns)
            loop_task.cancel()  # once more: the first cancel was lost
            await stopping

    assert kept_on == []
