"""Drive the scheduler and the workers over a real SQLite store with a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from socmeth import pruner
from socmeth.clock import FakeClock
from socmeth.config import Config, load_config
from socmeth.errors import StoreError
from socmeth.executors import Executors
from socmeth.fires import next_fire_at
from socmeth.jobs import JobService
from socmeth.metrics import Metrics
from socmeth.models import (
    AttemptState,
    Concurrency,
    JobDefinition,
    JobType,
    Misfire,
    RunState,
    Trigger,
)
from socmeth.queue.base import Delivery, QueueError
from socmeth.queue.memory import MemoryQueue
from socmeth.scheduler import Scheduler
from socmeth.store.base import (
    AttemptFinish,
    AttemptOutcome,
    NewRun,
    QueuedAttempt,
    RunFilter,
)
from socmeth.store.sql import SqlStore, open_store
from socmeth.worker import WorkerPool

T0 = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await open_store(f"sqlite:///{tmp_path / 'socmeth.db'}")
    yield opened
    await opened.close()


def job_definition(name: str = "j", **fields: object) -> JobDefinition:
    values: dict[str, object] = {"command": "true", "schedule": "* * * * *"}
    values.update(fields)
    return JobDefinition(name=name, type=JobType.COMMAND, **values)  # type: ignore[arg-type]


async def add_job(store: SqlStore, definition: JobDefinition, now: datetime) -> int:
    job = await store.create_job(definition, next_fire_at(definition, now, now), now)
    return job.id


def scheduler_at(store: SqlStore, clock: FakeClock) -> tuple[Scheduler, MemoryQueue]:
    queue = MemoryQueue()
    scheduler = Scheduler(
        store, queue, clock, Metrics(), "n1", stop_local=lambda run_ids: None
    )
    scheduler.started_at = clock.now()
    return scheduler, queue


async def runs_of(store: SqlStore, job_id: int) -> list[tuple[datetime | None, str]]:
    page = await store.list_runs(RunFilter(job_id=job_id), 500, None)
    return sorted(
        ((r.scheduled_at, r.state.value) for r in page.items),
        key=lambda pair: pair[0] or T0,
    )


async def test_a_turn_queues_one_run_per_due_fire(store: SqlStore) -> None:
    clock = FakeClock(T0)
    job_id = await add_job(store, job_definition(), T0)
    scheduler, queue = scheduler_at(store, clock)

    assert await scheduler.turn(T0 + timedelta(seconds=61)) == 1
    assert await scheduler.turn(T0 + timedelta(seconds=62)) == 0

    assert await runs_of(store, job_id) == [(T0 + timedelta(minutes=1), "queued")]
    assert await queue.size() == 1


async def test_two_schedulers_racing_on_the_same_fire_make_one_run(
    store: SqlStore,
) -> None:
    clock = FakeClock(T0)
    job_id = await add_job(store, job_definition(concurrency=Concurrency.ALLOW), T0)
    first, _ = scheduler_at(store, clock)
    second, _ = scheduler_at(store, clock)
    now = T0 + timedelta(seconds=61)

    counts = await asyncio.gather(first.turn(now), second.turn(now))

    assert sorted(counts) == [0, 1]
    assert len(await runs_of(store, job_id)) == 1


async def test_a_restarted_scheduler_neither_repeats_fires_nor_loses_them(
    store: SqlStore,
) -> None:
    clock = FakeClock(T0)
    job_id = await add_job(store, job_definition(concurrency=Concurrency.ALLOW), T0)
    before, _ = scheduler_at(store, clock)
    await before.turn(T0 + timedelta(minutes=2, seconds=1))

    clock.set(T0 + timedelta(minutes=10, seconds=30))  # down from 10:02 to 10:10:30
    after, _ = scheduler_at(store, clock)
    await after.turn(clock.now())

    assert await runs_of(store, job_id) == [
        (T0 + timedelta(minutes=1), "queued"),
        (T0 + timedelta(minutes=2), "queued"),
        (T0 + timedelta(minutes=10), "queued"),
    ]
    page = await store.list_runs(RunFilter(job_id=job_id), 10, None)
    late = {r.scheduled_at: r.late for r in page.items}
    assert late[T0 + timedelta(minutes=10)] is True
    assert late[T0 + timedelta(minutes=2)] is False


async def test_misfire_skip_makes_no_run_for_the_outage(store: SqlStore) -> None:
    clock = FakeClock(T0 + timedelta(minutes=30, seconds=30))
    job_id = await add_job(store, job_definition(misfire=Misfire.SKIP), T0)
    scheduler, _ = scheduler_at(store, clock)

    await scheduler.turn(clock.now())

    assert await runs_of(store, job_id) == []
    job = await store.get_job(job_id)
    assert job.next_fire_at == T0 + timedelta(minutes=31)


async def test_a_paused_job_is_never_due(store: SqlStore) -> None:
    clock = FakeClock(T0)
    job_id = await add_job(store, job_definition(enabled=False), T0)
    scheduler, _ = scheduler_at(store, clock)

    await scheduler.turn(T0 + timedelta(hours=1))

    assert await runs_of(store, job_id) == []


class Harness:
    """A scheduler and a worker pool sharing a store, a queue and a fake clock."""

    def __init__(self, store: SqlStore, config: Config, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.queue = MemoryQueue()
        metrics = Metrics()
        self.http = httpx.AsyncClient()
        self.executors = Executors(self.http, clock, store_id="test-store")
        self.scheduler = Scheduler(
            store, self.queue, clock, metrics, "n1", stop_local=self._stop_local
        )
        self.workers = WorkerPool(
            store,
            self.queue,
            clock,
            metrics,
            self.executors,
            node_id="n1",
            config=config,
            rng=random.Random(7),
            wake_scheduler=self.scheduler.wake,
        )
        self.jobs = JobService(
            store,
            self.queue,
            clock,
            max_jobs=100,
            metrics=metrics,
            wake_scheduler=self.scheduler.wake,
            stop_local=self._stop_local,
        )

    def _stop_local(self, run_ids: Collection[int]) -> None:
        self.workers.stop_local(run_ids)

    async def start(self) -> None:
        await self.workers.recover()
        self.workers.start()
        self.scheduler.started_at = self.clock.now()

    async def stop(self) -> None:
        await self.workers.stop(1.0)
        self.executors.close()
        await self.http.aclose()

    async def settle(self, run_id: int, *, timeout_s: float = 10) -> RunState:
        """Let real attempts run, moving the fake clock to each pending retry."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            run = await self.store.get_run(run_id)
            if not run.state.is_active:
                return run.state
            if run.next_attempt_at is not None:
                self.clock.set(max(self.clock.now(), run.next_attempt_at))
                await self.scheduler.turn(self.clock.now())
            await asyncio.sleep(0.02)
        raise AssertionError(f"run {run_id} did not settle")


@pytest.fixture
async def harness(store: SqlStore, tmp_path: Path) -> AsyncIterator[Harness]:
    config = load_config(environ={}, overrides={"server.data_dir": tmp_path})
    started = Harness(store, config, FakeClock(T0))
    await started.start()
    yield started
    await started.stop()


async def test_retries_wait_the_backoff_counted_from_each_attempts_end(
    harness: Harness,
) -> None:
    definition = job_definition("flaky", command="exit 2", schedule=None, retries=2)
    job = await harness.jobs.create(definition)
    run = await harness.jobs.run_now(job)

    assert await harness.settle(run.id) is RunState.FAILED

    attempts = (await harness.store.get_run(run.id)).attempts
    assert [a.state for a in attempts] == [AttemptState.FAILED] * 3
    gaps = [
        b.queued_at - a.finished_at  # type: ignore[operator]
        for a, b in itertools.pairwise(attempts)
    ]
    assert gaps == [timedelta(seconds=10), timedelta(seconds=20)]


async def test_a_crash_leaves_nothing_active_after_recovery(
    harness: Harness,
) -> None:
    definition = job_definition("crashy", command="sleep 30", schedule=None)
    job = await harness.jobs.create(definition)
    run = await harness.jobs.run_now(job)
    while (await harness.store.get_run(run.id)).state is not RunState.RUNNING:
        await asyncio.sleep(0.02)

    # A second pool over the same store plays the next start after a crash.
    await harness.workers.recover()

    settled = await harness.store.get_run(run.id)
    assert settled.state is RunState.FAILED
    assert settled.attempts[0].state is AttemptState.LOST


async def running(harness: Harness, run_id: int) -> None:
    while (await harness.store.get_run(run_id)).state is not RunState.RUNNING:
        await asyncio.sleep(0.02)


async def test_cancel_stops_a_local_attempt_without_waiting_for_the_watcher(
    harness: Harness,
) -> None:
    # The fake clock never moves, so the watcher's once-a-second check never runs:
    # only the direct stop can end the attempt.
    job = await harness.jobs.create(job_definition("long", command="sleep 30"))
    run = await harness.jobs.run_now(job)
    await running(harness, run.id)

    await harness.jobs.cancel(run.id)

    assert await harness.settle(run.id, timeout_s=3) is RunState.CANCELLED


async def test_replace_stops_the_running_attempt_of_the_run_it_replaces(
    harness: Harness,
) -> None:
    definition = job_definition(
        "swap", command="sleep 30", concurrency=Concurrency.REPLACE
    )
    job = await harness.jobs.create(definition)
    first = await harness.jobs.run_now(job)
    await running(harness, first.id)

    second = await harness.jobs.run_now(job)

    assert await harness.settle(first.id, timeout_s=3) is RunState.CANCELLED
    await running(harness, second.id)


async def test_a_failed_claim_keeps_its_messages_and_claims_them_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_claim = harness.store.claim_attempts
    failures = [StoreError("the store went away for a moment")]

    async def flaky_claim(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real_claim(*args, **kwargs)

    monkeypatch.setattr(harness.store, "claim_attempts", flaky_claim)
    job = await harness.jobs.create(job_definition("steady", schedule=None))
    run = await harness.jobs.run_now(job)

    # The worker waits a (fake) second after the failure; move time past it.
    for _ in range(100):
        if failures:
            await asyncio.sleep(0.01)
            continue
        harness.clock.advance(1.0)
        break
    assert await harness.settle(run.id) is RunState.SUCCEEDED


async def test_the_pruner_deletes_runs_past_retention_in_batches(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pruner, "PRUNE_BATCH", 3)
    job_id = await add_job(store, job_definition(concurrency=Concurrency.ALLOW), T0)
    old = [
        NewRun(job_id, Trigger.SCHEDULE, T0 + timedelta(minutes=m), RunState.SKIPPED)
        for m in range(1, 8)
    ]
    await store.record_fires([], old, T0)
    recent = NewRun(job_id, Trigger.MANUAL, None, RunState.SKIPPED)
    await store.record_fires([], [recent], T0 + timedelta(days=29))
    clock = FakeClock(T0 + timedelta(days=30, hours=1))

    deleted = await pruner.Pruner(store, clock, retention_days=30).prune()

    assert deleted == 7
    remaining = await store.list_runs(RunFilter(job_id=job_id), 10, None)
    assert [r.trigger for r in remaining.items] == [Trigger.MANUAL]


async def test_a_stop_during_a_claim_still_starts_and_settles_what_it_claimed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_claim = harness.store.claim_attempts
    committed = asyncio.Event()
    release = asyncio.Event()

    async def slow_answer(*args: Any, **kwargs: Any) -> Any:
        batch = await real_claim(*args, **kwargs)
        committed.set()
        await release.wait()  # the claim is stored; its answer is on its way
        return batch

    monkeypatch.setattr(harness.store, "claim_attempts", slow_answer)
    job = await harness.jobs.create(job_definition("caught", command="sleep 30"))
    run = await harness.jobs.run_now(job)
    await committed.wait()

    stopping = asyncio.create_task(harness.workers.stop(0.1))
    await asyncio.sleep(0.05)
    release.set()
    await stopping

    settled = await harness.store.get_run(run.id)
    assert [a.state for a in settled.attempts] == [AttemptState.LOST]


class RecordingQueue(MemoryQueue):
    """Remember the tokens of every acknowledged delivery."""

    def __init__(self) -> None:
        super().__init__()
        self.acked: list[str] = []

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.acked += [delivery.token for delivery in deliveries]
        await super().ack(deliveries)


def pool_of(
    store: SqlStore, queue: MemoryQueue, clock: FakeClock, http: httpx.AsyncClient
) -> tuple[WorkerPool, Executors]:
    """Build a worker pool, not started, and the executors it needs closed."""
    config = load_config(environ={}, overrides={"server.data_dir": "/nonexistent"})
    executors = Executors(http, clock, store_id="test-store")
    pool = WorkerPool(
        store,
        queue,
        clock,
        Metrics(),
        executors,
        node_id="n1",
        config=config,
        rng=random.Random(7),
        wake_scheduler=lambda: None,
    )
    return pool, executors


async def test_two_messages_of_one_attempt_start_it_once_and_both_are_acked(
    store: SqlStore,
) -> None:
    # A message held back at capacity and a re-published one of the same attempt
    # meet in one claim.
    clock = FakeClock(T0)
    queue = RecordingQueue()
    async with httpx.AsyncClient() as http:
        pool, executors = pool_of(store, queue, clock, http)
        job_id = await add_job(store, job_definition(schedule=None), T0)
        run = await store.create_run(NewRun(job_id, Trigger.MANUAL, None), T0)
        message = QueuedAttempt(run.attempts[0].id, run.id, 1)
        await queue.publish([message])
        (held,) = await queue.receive("n1", 10, 0)
        await queue.publish([message])
        (again,) = await queue.receive("n1", 10, 0)

        await pool._claim([held, again], top_up=False)

        assert pool.active_count == 1
        assert queue.acked == [again.token]  # the repeat, at once
        pool.start()
        while (await store.get_run(run.id)).state.is_active:
            await asyncio.sleep(0.02)
        await pool.stop(0)
        executors.close()
    assert sorted(queue.acked) == sorted([held.token, again.token])


class OutageQueue(MemoryQueue):
    """A queue whose first `outages` receives fail as an unreachable Redis would."""

    def __init__(self, outages: int) -> None:
        super().__init__()
        self.outages = outages

    async def receive(
        self, consumer: str, max_count: int, timeout_s: float
    ) -> list[Delivery]:
        if self.outages:
            self.outages -= 1
            raise QueueError("receiving from redis://queue failed: connection refused")
        return await super().receive(consumer, max_count, timeout_s)


async def test_a_queue_outage_is_one_line_a_time_with_growing_waits(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0)
    async with httpx.AsyncClient() as http:
        pool, executors = pool_of(store, OutageQueue(outages=2), clock, http)
        caplog.set_level(logging.INFO, logger="socmeth.worker")
        pool.start()
        try:
            failed = await _records(caplog, "worker.receive_failed", 1)
            assert "retrying in 1.0s" in failed[0].getMessage()
            assert failed[0].exc_info is None  # an outage, not a bug: no traceback
            clock.advance(1)
            failed = await _records(caplog, "worker.receive_failed", 2)
            assert "retrying in 2.0s" in failed[1].getMessage()
            clock.advance(2)
            await _records(caplog, "worker.receive_recovered", 1)
        finally:
            await pool.stop(0)
            executors.close()


async def _records(
    caplog: pytest.LogCaptureFixture, event: str, count: int
) -> list[logging.LogRecord]:
    for _ in range(200):
        found = [r for r in caplog.records if getattr(r, "event", None) == event]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} log records of {event} did not come")


def job_service(store: SqlStore, queue: MemoryQueue, clock: FakeClock) -> JobService:
    return JobService(
        store,
        queue,
        clock,
        max_jobs=10,
        metrics=Metrics(),
        wake_scheduler=lambda: None,
        stop_local=lambda run_ids: None,
    )


class DownQueue(MemoryQueue):
    """A queue that refuses every publish, as a stopped Redis does."""

    async def publish(self, attempts: Sequence[QueuedAttempt]) -> None:
        raise QueueError("publishing to redis://queue failed: connection refused")


async def test_a_queue_that_refuses_publishes_fails_no_turn_and_keeps_the_runs(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0)
    job_id = await add_job(store, job_definition(), T0)
    scheduler = Scheduler(
        store, DownQueue(), clock, Metrics(), "n1", stop_local=lambda run_ids: None
    )
    scheduler.started_at = T0
    clock.advance(60)
    caplog.set_level(logging.WARNING, logger="socmeth.scheduler")

    await scheduler.turn(clock.now())

    assert await runs_of(store, job_id) == [(T0 + timedelta(minutes=1), "queued")]
    queued = await store.queued_attempts(10, 0)
    assert len(queued) == 1  # stored: the reaper publishes it once the queue answers
    warned = [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "scheduler.publish_failed"
    ]
    assert len(warned) == 1
    assert warned[0].exc_info is None


async def test_run_now_answers_with_the_stored_run_when_the_queue_is_down(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0)
    await add_job(store, job_definition(schedule=None), T0)
    service = job_service(store, DownQueue(), clock)
    caplog.set_level(logging.WARNING, logger="socmeth.jobs")

    run = await service.run_now(await store.get_job_by_name("j"))

    assert run.state is RunState.QUEUED
    assert (await store.get_run(run.id)).state is RunState.QUEUED
    assert any(
        getattr(r, "event", None) == "run.publish_failed" for r in caplog.records
    )


class AckRefusingQueue(MemoryQueue):
    """A queue that delivers but cannot acknowledge, as Redis going away mid-attempt."""

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            raise QueueError("acknowledging on redis://queue failed: no answer")


async def test_an_attempt_whose_ack_fails_still_gives_its_slot_back(
    store: SqlStore,
) -> None:
    clock = FakeClock(T0)
    queue = AckRefusingQueue()
    async with httpx.AsyncClient() as http:
        pool, executors = pool_of(store, queue, clock, http)
        job_id = await add_job(store, job_definition(schedule=None), T0)
        runs = [
            await store.create_run(NewRun(job_id, Trigger.MANUAL, None), T0)
            for _ in range(3)
        ]
        await queue.publish([QueuedAttempt(r.attempts[0].id, r.id, 1) for r in runs])
        pool.start()
        try:
            for _ in range(500):
                states = [(await store.get_run(r.id)).state for r in runs]
                if not any(state.is_active for state in states):
                    break
                await asyncio.sleep(0.02)
        finally:
            await pool.stop(0)
            executors.close()

    assert states == [RunState.SUCCEEDED] * 3
    assert pool.active_count == 0


class HangingQueue(MemoryQueue):
    """A queue whose publishes never answer, as a Redis frozen mid-command."""

    async def publish(self, attempts: Sequence[QueuedAttempt]) -> None:
        await asyncio.Event().wait()


async def test_run_now_answers_even_when_the_queue_hangs(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("socmeth.jobs.PUBLISH_TIMEOUT_S", 0.05)
    clock = FakeClock(T0)
    await add_job(store, job_definition(schedule=None), T0)
    service = job_service(store, HangingQueue(), clock)

    run = await asyncio.wait_for(service.run_now(await store.get_job_by_name("j")), 5)

    assert (await store.get_run(run.id)).state is RunState.QUEUED


async def test_a_scheduler_taking_over_makes_the_fires_of_the_handover(
    store: SqlStore,
) -> None:
    # Every second; the old leader made the 10:00:01 fire, then died. The new
    # one starts at 10:00:04.2 with the handover since 10:00:01.5: the fires of
    # 02, 03 and 04 are made, none missed.
    clock = FakeClock(T0)
    definition = job_definition(schedule="@every 1s")
    job_id = await add_job(store, definition, T0)
    old, _ = scheduler_at(store, clock)
    await old.turn(T0 + timedelta(seconds=1.2))
    clock.advance(4.2)
    new = Scheduler(
        store, MemoryQueue(), clock, Metrics(), "n2", stop_local=lambda run_ids: None
    )
    new.start(since=T0 + timedelta(seconds=1.5))
    await new.stop()

    await new.turn(clock.now())

    fires = [at for at, _ in await runs_of(store, job_id)]
    assert fires == [T0 + timedelta(seconds=s) for s in (1, 2, 3, 4)]


async def test_a_result_the_store_no_longer_wants_is_dropped_and_said_so(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    # The leader took this node for gone (it was paused) and settled its attempt
    # as lost; the command then ended here.
    clock = FakeClock(T0)
    queue = MemoryQueue()
    caplog.set_level(logging.INFO, logger="socmeth.worker")
    async with httpx.AsyncClient() as http:
        pool, executors = pool_of(store, queue, clock, http)
        job_id = await add_job(
            store, job_definition(schedule=None, command="sleep 0.5"), T0
        )
        run = await store.create_run(NewRun(job_id, Trigger.MANUAL, None), T0)
        await queue.publish([QueuedAttempt(run.attempts[0].id, run.id, 1)])
        pool.start()
        try:
            while pool.active_count == 0:
                await asyncio.sleep(0.01)
            lost = AttemptOutcome(AttemptState.LOST, RunState.FAILED, error="reaped")
            await store.finish_attempts([AttemptFinish(run.attempts[0].id, lost)], T0)
            dropped = await _records(caplog, "attempt.result_dropped", 1)
        finally:
            await pool.stop(0)
            executors.close()

    assert "settled as lost already" in dropped[0].getMessage()
    assert not [r for r in caplog.records if getattr(r, "event", "") == "attempt.ended"]
    (attempt,) = (await store.get_run(run.id)).attempts
    assert (attempt.state, attempt.error) == (AttemptState.LOST, "reaped")
