"""Recover a node in cluster mode over every store backend and every queue.

A node restarted under its id settles only what its previous life left running and
gives that life's queue messages back; other nodes' attempts are the leader's
reaper's business, and so is what the queue lost.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from socmeth.clock import FakeClock
from socmeth.config import load_config
from socmeth.executors import Executors
from socmeth.metrics import Metrics
from socmeth.models import (
    AttemptState,
    Job,
    JobDefinition,
    JobType,
    Run,
    RunState,
    Trigger,
)
from socmeth.queue.base import Queue
from socmeth.store.base import FinishedAttempts, NewRun, QueuedAttempt
from socmeth.store.sql import SqlStore
from socmeth.worker import WorkerPool, count_finished
from tests.integration.conftest import QueueBackend

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LOST_ERROR = (
    "node n1 stopped before this attempt ended, and settled it when it started again"
)


@dataclass
class Scene:
    """What a crash of node n1 left behind, next to a live node n2."""

    mine: QueuedAttempt  # ran on n1's previous life; its message pending for n1
    theirs: QueuedAttempt  # runs on n2; its message pending for n2
    deferred: QueuedAttempt  # queued; n1 held its message back at capacity
    unpublished: QueuedAttempt  # queued; the queue lost its message


async def queued(store: SqlStore, job: Job) -> QueuedAttempt:
    run = await store.create_run(NewRun(job.id, Trigger.MANUAL, None), T0)
    (attempt,) = run.attempts
    return QueuedAttempt(attempt.id, run.id, attempt.number)


async def taken(
    store: SqlStore, queue: Queue, job: Job, node_id: str, *, claim: bool
) -> QueuedAttempt:
    """Queue an attempt whose message node_id received; claim it if asked."""
    attempt = await queued(store, job)
    await queue.publish([attempt])
    (delivery,) = await queue.receive(node_id, 1, 1.0)
    assert delivery.attempt == attempt
    if claim:
        batch = await store.claim_attempts([attempt.attempt_id], node_id, T0, 100)
        assert len(batch.claimed) == 1
    return attempt


async def crash_scene(store: SqlStore, queue: Queue) -> Scene:
    definition = JobDefinition(
        name="work", type=JobType.COMMAND, command="true", retries=1
    )
    job = await store.create_job(definition, None, T0)
    return Scene(
        mine=await taken(store, queue, job, "n1", claim=True),
        theirs=await taken(store, queue, job, "n2", claim=True),
        deferred=await taken(store, queue, job, "n1", claim=False),
        unpublished=await queued(store, job),
    )


PoolFor = Callable[[Queue], WorkerPool]


@pytest.fixture
async def pool_for(store: SqlStore, tmp_path: Path) -> AsyncIterator[PoolFor]:
    """Yield a maker of node n1's worker pool over the store and a given queue."""
    config = load_config(environ={}, overrides={"server.data_dir": str(tmp_path)})
    clock = FakeClock(T0 + timedelta(minutes=5))
    async with httpx.AsyncClient() as http:
        # A store id of its own: killing leftovers can never hit another's process.
        executors = Executors(http, clock, store_id=uuid.uuid4().hex[:16])

        def make(queue: Queue) -> WorkerPool:
            return WorkerPool(
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

        try:
            yield make
        finally:
            executors.close()


async def states(store: SqlStore, which: QueuedAttempt) -> tuple[Run, AttemptState]:
    run = await store.get_run(which.run_id)
    (attempt,) = [a for a in run.attempts if a.id == which.attempt_id]
    return run, attempt.state


async def test_recover_in_cluster_mode_settles_only_this_nodes_attempts(
    store: SqlStore, queue_backend: QueueBackend, pool_for: PoolFor
) -> None:
    queue = queue_backend.open()
    scene = await crash_scene(store, queue)

    await pool_for(queue).recover(clustered=True)

    mine = await store.get_run(scene.mine.run_id)
    (lost,) = mine.attempts
    assert (lost.state, lost.error) == (AttemptState.LOST, LOST_ERROR)
    assert lost.finished_at == T0 + timedelta(minutes=5)
    assert (mine.state, mine.next_attempt_at) == (
        RunState.QUEUED,
        T0 + timedelta(minutes=5, seconds=10),
    )
    theirs, theirs_state = await states(store, scene.theirs)
    assert (theirs.state, theirs_state) == (RunState.RUNNING, AttemptState.RUNNING)
    for left in (scene.deferred, scene.unpublished):
        run, state = await states(store, left)
        assert (run.state, state) == (RunState.QUEUED, AttemptState.QUEUED)


async def test_recover_in_cluster_mode_releases_this_node_and_republishes_nothing(
    store: SqlStore, queue_backend: QueueBackend, pool_for: PoolFor
) -> None:
    queue = queue_backend.open()
    scene = await crash_scene(store, queue)

    await pool_for(queue).recover(clustered=True)

    # n1's messages are anyone's again; n2's stay n2's, and the lost one stays
    # lost until the leader's reaper republishes it.
    held = {scene.mine.attempt_id, scene.theirs.attempt_id, scene.deferred.attempt_id}
    assert await queue.held() == held
    offered = await queue.receive("n3", 10, 1.0)
    assert sorted(d.attempt.attempt_id for d in offered) == sorted(
        [scene.mine.attempt_id, scene.deferred.attempt_id]
    )
    assert await queue.receive("n3", 10, 0) == []


async def test_recover_in_cluster_mode_releases_even_with_nothing_to_settle(
    store: SqlStore, queue_backend: QueueBackend, pool_for: PoolFor
) -> None:
    queue = queue_backend.open()
    definition = JobDefinition(name="work", type=JobType.COMMAND, command="true")
    job = await store.create_job(definition, None, T0)
    deferred = await taken(store, queue, job, "n1", claim=False)

    await pool_for(queue).recover(clustered=True)

    assert [d.attempt for d in await queue.receive("n3", 10, 1.0)] == [deferred]


async def test_recover_in_embedded_mode_settles_every_node_and_republishes(
    store: SqlStore, queue_backend: QueueBackend, pool_for: PoolFor
) -> None:
    queue = queue_backend.open()
    scene = await crash_scene(store, queue)

    await pool_for(queue).recover()

    _, theirs_state = await states(store, scene.theirs)
    assert theirs_state is AttemptState.LOST
    assert scene.unpublished.attempt_id in await queue.held()


# count_finished: what the worker, recovery and the reaper make of a batch of ends


def run_in(state: RunState, job_name: str = "work") -> Run:
    return Run(
        id=1,
        job_id=1,
        job_name=job_name,
        trigger=Trigger.MANUAL,
        scheduled_at=None,
        created_at=T0,
        state=state,
    )


def runs_ended(metrics: Metrics, job: str, state: str) -> float | None:
    return metrics.registry.get_sample_value(
        "socmeth_runs_total", {"job": job, "state": state}
    )


def test_count_finished_counts_ended_runs_by_job_and_state() -> None:
    metrics = Metrics()
    finished = FinishedAttempts(
        runs=[
            run_in(RunState.FAILED),
            None,  # not running any more: settled elsewhere
            run_in(RunState.FAILED),
            run_in(RunState.SUCCEEDED, "other"),
        ]
    )

    assert count_finished(finished, metrics) is False

    assert runs_ended(metrics, "work", "failed") == 2
    assert runs_ended(metrics, "other", "succeeded") == 1


@pytest.mark.parametrize(
    ("finished", "wake"),
    [
        (FinishedAttempts(runs=[run_in(RunState.QUEUED)]), True),
        (FinishedAttempts(runs=[run_in(RunState.FAILED)], dependency_work=True), True),
        (FinishedAttempts(runs=[None, run_in(RunState.CANCELLED)]), False),
        (FinishedAttempts(runs=[]), False),
    ],
    ids=["retry-pending", "dependency-work", "ended-alone", "nothing"],
)
def test_count_finished_wakes_the_scheduler_when_it_has_work(
    finished: FinishedAttempts, wake: bool
) -> None:
    metrics = Metrics()

    assert count_finished(finished, metrics) is wake

    assert runs_ended(metrics, "work", "queued") is None  # a retry is no end
