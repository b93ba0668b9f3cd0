"""Resolve dependencies over a real store (every backend): scheduler turns, fake clock.

The worker is played by hand (claim, then finish with a chosen outcome), so each test
decides when every attempt ends and sees each step of the rule.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import pytest

from socmeth.clock import FakeClock
from socmeth.dependencies import plan_dependencies
from socmeth.errors import ChangedError, ConflictError, ValidationError
from socmeth.jobs import JobService
from socmeth.metrics import Metrics
from socmeth.models import (
    AttemptState,
    Concurrency,
    Job,
    JobDefinition,
    JobType,
    Run,
    RunState,
    Trigger,
)
from socmeth.queue.memory import MemoryQueue
from socmeth.retry import settle_attempt
from socmeth.scheduler import Scheduler
from socmeth.store.base import AttemptFinish, RunFilter
from socmeth.store.sql import SqlStore, open_store

T0 = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


class Harness:
    """A store, a scheduler and the job service, with a worker played by hand."""

    def __init__(self, store: SqlStore, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.metrics = Metrics()
        self.queue = MemoryQueue()
        self.scheduler = Scheduler(
            store, self.queue, clock, self.metrics, "n1", stop_local=_ignore
        )
        self.scheduler.started_at = clock.now()
        self.jobs = JobService(
            store,
            self.queue,
            clock,
            max_jobs=1000,
            metrics=self.metrics,
            wake_scheduler=lambda: None,
            stop_local=_ignore,
        )

    async def add(self, name: str, *depends_on: str, **fields: object) -> Job:
        values: dict[str, object] = {"command": "true"}
        values.update(fields)
        definition = JobDefinition(
            name=name,
            type=JobType.COMMAND,
            depends_on=depends_on,
            **values,  # type: ignore[arg-type]
        )
        return await self.jobs.create(definition)

    async def trigger(self, name: str) -> Run:
        return await self.jobs.run_now(await self.store.get_job_by_name(name))

    async def turn(self, seconds: float = 1) -> None:
        self.clock.advance(seconds)
        await self.scheduler.turn(self.clock.now())

    async def finish(
        self, name: str, state: AttemptState = AttemptState.SUCCEEDED
    ) -> Run:
        """Claim and end the one queued attempt of a job, a second after now."""
        job = await self.store.get_job_by_name(name)
        (run,) = [
            r
            for r in (await self.store.active_runs([job.id]))[job.id]
            if r.state is RunState.QUEUED and r.next_attempt_at is None
        ]
        attempt = run.attempts[-1]
        claimed = await self.store.claim_attempts(
            [attempt.id], "n1", self.clock.now(), 100
        )
        assert [c.attempt.id for c in claimed.claimed] == [attempt.id]
        self.clock.advance(1)
        outcome = settle_attempt(
            job.definition, attempt.number, state, self.clock.now(), random.Random(1)
        )
        (ended,) = (
            await self.store.finish_attempts(
                [AttemptFinish(attempt.id, outcome)], self.clock.now()
            )
        ).runs
        assert ended is not None
        return ended

    async def runs(self, name: str) -> list[Run]:
        job = await self.store.get_job_by_name(name)
        page = await self.store.list_runs(RunFilter(job_id=job.id), 500, None)
        return page.items[::-1]  # oldest first

    async def states(self, *names: str) -> dict[str, list[str]]:
        return {name: [r.state.value for r in await self.runs(name)] for name in names}


def _ignore(_: Collection[int]) -> None:
    return None


@pytest.fixture
def harness(store: SqlStore) -> Harness:
    return Harness(store, FakeClock(T0))


async def readme_jobs(h: Harness) -> None:
    await h.add("run-tests")
    await h.add("build-docker")
    await h.add("deploy-app", "run-tests", "build-docker", schedule="0 3 * * *")


# The README's example


async def test_a_trigger_runs_stale_dependencies_first_then_the_job(
    harness: Harness,
) -> None:
    h = harness
    await readme_jobs(h)

    waiting = await h.trigger("deploy-app")
    assert waiting.state is RunState.WAITING
    assert waiting.attempts == ()

    await h.turn()
    tests, build = (await h.runs("run-tests"))[0], (await h.runs("build-docker"))[0]
    for run in (tests, build):
        # Demanded together: both queued at once, each linked to the waiting run.
        assert (run.trigger, run.state) == (Trigger.DEPENDENCY, RunState.QUEUED)
        assert run.needed_by_run_id == waiting.id
    links = (await h.store.upstream_links([waiting.id]))[waiting.id]
    assert [(link.job_name, link.run_id) for link in links] == [
        ("build-docker", build.id),
        ("run-tests", tests.id),
    ]

    await h.finish("run-tests")
    await h.turn()
    assert (await h.store.get_run(waiting.id)).state is RunState.WAITING

    await h.finish("build-docker")
    await h.turn()
    released = await h.store.get_run(waiting.id)
    assert released.state is RunState.QUEUED
    assert [a.number for a in released.attempts] == [1]
    await h.finish("deploy-app")
    assert await h.states("run-tests", "build-docker", "deploy-app") == {
        "run-tests": ["succeeded"],
        "build-docker": ["succeeded"],
        "deploy-app": ["succeeded"],
    }


async def test_a_second_trigger_runs_the_dependencies_again(harness: Harness) -> None:
    h = harness
    await readme_jobs(h)
    for _ in range(2):
        await h.trigger("deploy-app")
        await h.turn()
        await h.finish("run-tests")
        await h.finish("build-docker")
        await h.turn()
        await h.finish("deploy-app")
        await h.turn()

    assert await h.states("run-tests", "build-docker", "deploy-app") == {
        "run-tests": ["succeeded", "succeeded"],
        "build-docker": ["succeeded", "succeeded"],
        "deploy-app": ["succeeded", "succeeded"],
    }


async def test_a_fresh_success_feeds_the_job_without_running_again(
    harness: Harness,
) -> None:
    h = harness
    await readme_jobs(h)
    await h.trigger("run-tests")  # by hand, after deploy-app was created
    await h.finish("run-tests")

    waiting = await h.trigger("deploy-app")
    await h.turn()

    assert len(await h.runs("run-tests")) == 1
    assert [r.trigger for r in await h.runs("build-docker")] == [Trigger.DEPENDENCY]
    await h.finish("build-docker")
    await h.turn()
    assert (await h.store.get_run(waiting.id)).state is RunState.QUEUED


async def test_a_failed_dependency_ends_the_job_upstream_failed_without_an_attempt(
    harness: Harness,
) -> None:
    h = harness
    await readme_jobs(h)
    await h.add("notify", "deploy-app")
    notify = await h.trigger("notify")
    await h.turn()  # notify demands deploy-app
    await h.turn()  # deploy-app demands its two dependencies

    await h.finish("run-tests")
    failed = await h.finish("build-docker", AttemptState.FAILED)
    await h.turn()

    (deploy,) = await h.runs("deploy-app")
    assert deploy.state is RunState.UPSTREAM_FAILED
    assert deploy.attempts == ()
    assert deploy.reason == (
        f"dependency build-docker failed: its run {failed.id} ended failed"
    )
    # Whatever waited on deploy-app ends the same way, naming the first failure.
    ended = await h.store.get_run(notify.id)
    assert ended.state is RunState.UPSTREAM_FAILED
    assert ended.reason is not None
    assert f"its run {deploy.id} ended upstream_failed" in ended.reason
    assert "build-docker" in ended.reason
    counted = h.metrics.runs_ended.labels(job="deploy-app", state="upstream_failed")
    assert counted._value.get() == 1


async def test_a_dependency_that_fails_then_succeeds_on_retry_feeds_the_job(
    harness: Harness,
) -> None:
    h = harness
    await h.add("flaky", retries=1)
    await h.add("after", "flaky")
    waiting = await h.trigger("after")
    await h.turn()

    retrying = await h.finish("flaky", AttemptState.FAILED)
    assert retrying.next_attempt_at is not None
    await h.turn(10)  # the default first backoff
    assert (await h.store.get_run(waiting.id)).state is RunState.WAITING

    await h.finish("flaky")
    await h.turn()
    assert (await h.store.get_run(waiting.id)).state is RunState.QUEUED


async def test_cancelling_a_dependency_run_ends_the_job_upstream_failed(
    harness: Harness,
) -> None:
    h = harness
    await h.add("a")
    await h.add("b", "a")
    waiting = await h.trigger("b")
    await h.turn()
    (a_run,) = await h.runs("a")

    await h.jobs.cancel(a_run.id)
    await h.turn()

    ended = await h.store.get_run(waiting.id)
    assert ended.state is RunState.UPSTREAM_FAILED
    assert f"its run {a_run.id} ended cancelled" in (ended.reason or "")


async def test_cancelling_a_waiting_run_ends_what_waits_on_it(harness: Harness) -> None:
    h = harness
    await h.add("a")
    await h.add("b", "a")
    await h.add("c", "b")
    c_run = await h.trigger("c")
    await h.turn()
    (b_run,) = await h.runs("b")
    assert b_run.state is RunState.WAITING

    await h.jobs.cancel(b_run.id)
    await h.turn()

    assert (await h.store.get_run(c_run.id)).state is RunState.UPSTREAM_FAILED


# Shapes of graphs


async def test_a_diamond_runs_every_job_once_per_demand(harness: Harness) -> None:
    h = harness
    await h.add("a")
    await h.add("b", "a")
    await h.add("c", "a")
    await h.add("d", "b", "c")
    d_run = await h.trigger("d")
    for _ in range(3):
        await h.turn()

    assert await h.states("a", "b", "c", "d") == {
        "a": ["queued"],
        "b": ["waiting"],
        "c": ["waiting"],
        "d": ["waiting"],
    }
    await h.finish("a")
    await h.turn()
    await h.finish("b")
    await h.finish("c")
    await h.turn()
    await h.finish("d")

    assert await h.states("a", "b", "c", "d") == {
        name: ["succeeded"] for name in "abcd"
    }
    (b_run,), (c_run,) = await h.runs("b"), await h.runs("c")
    assert {b_run.needed_by_run_id, c_run.needed_by_run_id} == {d_run.id}


async def test_a_chain_of_five_runs_in_order_each_once(harness: Harness) -> None:
    h = harness
    await h.add("j1")
    for level in range(2, 6):
        await h.add(f"j{level}", f"j{level - 1}")
    await h.trigger("j5")
    await h.turn()  # one turn resolves every level of demand

    assert [r.trigger for r in await h.runs("j1")] == [Trigger.DEPENDENCY]
    order = []
    for level in range(1, 6):
        ended = await h.finish(f"j{level}")
        order.append(ended.job_name)
        await h.turn()
    assert order == ["j1", "j2", "j3", "j4", "j5"]
    assert await h.states(*order) == {name: ["succeeded"] for name in order}


async def test_an_unscheduled_dependent_is_pushed_by_a_success(
    harness: Harness,
) -> None:
    h = harness
    await h.add("extract", schedule="*/5 * * * *")
    await h.add("load", "extract")  # no schedule

    await h.trigger("extract")
    await h.finish("extract")
    await h.turn()

    (load,) = await h.runs("load")
    assert (load.trigger, load.state, load.needed_by_run_id) == (
        Trigger.DEPENDENCY,
        RunState.QUEUED,
        None,
    )
    # A second success while the pushed run is active pushes nothing more...
    await h.trigger("extract")
    await h.finish("extract")
    await h.turn()
    assert len(await h.runs("load")) == 1
    # ... and, being fresh, feeds the next push once load is idle again.
    await h.finish("load")
    await h.turn()
    assert len(await h.runs("load")) == 1  # that success finished before load began


async def test_pushes_run_a_diamond_once_from_a_manual_run_of_its_top(
    harness: Harness,
) -> None:
    h = harness
    await h.add("a")
    await h.add("b", "a")
    await h.add("c", "a")
    await h.add("d", "b", "c")

    await h.trigger("a")
    await h.finish("a")
    await h.turn()
    await h.finish("b")
    await h.turn()
    assert await h.runs("d") == []  # c has not succeeded yet
    await h.finish("c")
    await h.turn()
    await h.finish("d")
    await h.turn()

    assert await h.states("a", "b", "c", "d") == {
        name: ["succeeded"] for name in "abcd"
    }


async def test_a_scheduled_dependent_is_not_pushed(harness: Harness) -> None:
    h = harness
    await readme_jobs(h)
    await h.trigger("run-tests")
    await h.finish("run-tests")
    await h.trigger("build-docker")
    await h.finish("build-docker")
    await h.turn()

    assert await h.runs("deploy-app") == []


async def test_one_success_feeds_one_run_of_a_job_that_allows_overlaps(
    harness: Harness,
) -> None:
    h = harness
    await h.add("a")
    await h.add("b", "a", concurrency=Concurrency.ALLOW)
    first, second = await h.trigger("b"), await h.trigger("b")
    await h.turn()
    assert len(await h.runs("a")) == 1  # both wait for the one demanded run

    await h.finish("a")
    await h.turn()
    # The success fed the first; the second demands a new run of a.
    assert (await h.store.get_run(first.id)).state is RunState.QUEUED
    assert (await h.store.get_run(second.id)).state is RunState.WAITING
    assert [r.state for r in await h.runs("a")] == [
        RunState.SUCCEEDED,
        RunState.QUEUED,
    ]
    await h.finish("a")
    await h.turn()
    assert (await h.store.get_run(second.id)).state is RunState.QUEUED


# Giving up


async def test_a_paused_dependency_is_not_run_on_demand(harness: Harness) -> None:
    h = harness
    await readme_jobs(h)
    await h.jobs.set_enabled(await h.store.get_job_by_name("build-docker"), False)

    waiting = await h.trigger("deploy-app")
    await h.turn()

    ended = await h.store.get_run(waiting.id)
    assert ended.state is RunState.SKIPPED
    assert ended.reason is not None
    assert "dependency build-docker is paused" in ended.reason
    assert await h.runs("build-docker") == []
    assert await h.runs("run-tests") == []  # nothing started for a run that won't go


async def test_a_skip_deep_in_the_chain_reaches_the_run_that_demanded_it(
    harness: Harness,
) -> None:
    # b's run is created and skipped in consecutive passes of one turn; its end
    # must still reach c's run, which waits on it.
    h = harness
    await h.add("a", enabled=False)
    await h.add("b", "a")
    await h.add("c", "b")

    waiting = await h.trigger("c")
    await h.turn()

    (b_run,) = await h.runs("b")
    assert b_run.state is RunState.SKIPPED
    ended = await h.store.get_run(waiting.id)
    assert ended.state is RunState.SKIPPED
    assert f"dependency b was skipped: its run {b_run.id} ended skipped" in (
        ended.reason or ""
    )
    assert "dependency a is paused" in (ended.reason or "")


async def test_changing_the_list_resolves_waiting_runs_against_it(
    harness: Harness,
) -> None:
    h = harness
    await h.add("slow")
    await h.add("quick")
    after = await h.add("after", "slow")
    waiting = await h.trigger("after")
    await h.turn()

    await h.jobs.update(after, _with(after, depends_on=("quick",)))
    await h.turn()
    assert [r.trigger for r in await h.runs("quick")] == [Trigger.DEPENDENCY]
    await h.finish("quick")
    await h.turn()

    assert (await h.store.get_run(waiting.id)).state is RunState.QUEUED


async def test_a_pushed_run_names_the_successes_that_fed_it(harness: Harness) -> None:
    h = harness
    await h.add("extract")
    await h.add("load", "extract")
    await h.trigger("extract")
    fed_by = await h.finish("extract")
    await h.turn()

    (load,) = await h.runs("load")
    (link,) = (await h.store.upstream_links([load.id]))[load.id]
    assert (link.job_name, link.run_id, link.state) == (
        "extract",
        fed_by.id,
        RunState.SUCCEEDED,
    )


async def test_a_waiting_run_gives_up_after_its_dependency_timeout(
    harness: Harness,
) -> None:
    h = harness
    await h.add("slow")
    await h.add("after", "slow", dependency_timeout=timedelta(seconds=30))
    waiting = await h.trigger("after")
    await h.turn()
    assert await h.store.next_due_at() == waiting.created_at + timedelta(seconds=30)

    await h.turn(28)
    assert (await h.store.get_run(waiting.id)).state is RunState.WAITING
    await h.turn(2)
    ended = await h.store.get_run(waiting.id)
    assert ended.state is RunState.SKIPPED
    assert "dependency_timeout" in (ended.reason or "")
    assert await h.store.next_due_at() is None


async def test_the_next_fire_replaces_a_run_still_waiting(harness: Harness) -> None:
    h = harness
    await h.add("slow")
    await h.add("report", "slow", schedule="* * * * *")

    await h.turn(60)  # 10:01: the fire makes a waiting run, slow is demanded
    first = (await h.runs("report"))[0]
    assert first.state is RunState.WAITING
    await h.turn(60)  # 10:02: slow still runs

    first, second = await h.runs("report")
    assert first.state is RunState.SKIPPED
    assert "the job's next fire, at 2026-03-02T10:02:00+00:00, came first" in (
        first.reason or ""
    )
    assert second.state is RunState.WAITING
    # The new run waits for the same run of slow instead of demanding another.
    assert len(await h.runs("slow")) == 1
    await h.finish("slow")
    await h.turn()
    assert (await h.store.get_run(second.id)).state is RunState.QUEUED


# Restarts


async def test_waiting_runs_survive_a_restart_and_run_once(store_url: str) -> None:
    url = store_url
    clock = FakeClock(T0)
    first = Harness(await open_store(url), clock)
    await readme_jobs(first)
    waiting = await first.trigger("deploy-app")
    await first.store.close()  # down before any turn resolved it

    second = Harness(await open_store(url), clock)
    await second.turn()
    await second.finish("run-tests")
    await second.store.close()  # down again, a dependency still running

    third = Harness(await open_store(url), clock)
    try:
        await third.turn()
        await third.finish("build-docker")
        await third.turn()
        await third.turn()
        assert (await third.store.get_run(waiting.id)).state is RunState.QUEUED
        assert await third.states("run-tests", "build-docker", "deploy-app") == {
            "run-tests": ["succeeded"],
            "build-docker": ["succeeded"],
            "deploy-app": ["queued"],
        }
    finally:
        await third.store.close()


# The graph


async def test_cycles_unknown_names_and_self_references_are_refused(
    harness: Harness,
) -> None:
    h = harness
    await readme_jobs(h)
    tests = await h.store.get_job_by_name("run-tests")

    with pytest.raises(ValidationError) as cycle:
        await h.jobs.update(tests, _with(tests, depends_on=("deploy-app",)))
    assert "run-tests -> deploy-app -> run-tests" in str(cycle.value)
    with pytest.raises(ValidationError) as own:
        await h.jobs.update(tests, _with(tests, depends_on=("run-tests",)))
    assert "run-tests -> run-tests" in str(own.value)
    with pytest.raises(ValidationError) as unknown:
        await h.add("x", "nope", "run-tests")
    assert "no job is named nope" in str(unknown.value)

    # Nothing refused was written.
    assert (await h.store.get_job(tests.id)).definition.depends_on == ()
    assert (await h.jobs.dependencies(tests, 10)).edges == [
        (tests.id, (await h.store.get_job_by_name("deploy-app")).id)
    ]


async def test_a_longer_cycle_is_named_whole(harness: Harness) -> None:
    h = harness
    await h.add("a")
    await h.add("b", "a")
    await h.add("c", "b")
    a = await h.store.get_job_by_name("a")

    with pytest.raises(ValidationError) as refused:
        await h.jobs.update(a, _with(a, depends_on=("c",)))
    assert "a -> c -> b -> a" in str(refused.value)


async def test_a_job_others_depend_on_is_not_deleted(harness: Harness) -> None:
    h = harness
    await readme_jobs(h)
    await h.add("smoke-test", "run-tests")
    tests = await h.store.get_job_by_name("run-tests")

    with pytest.raises(ConflictError) as refused:
        await h.jobs.delete(tests)
    assert "deploy-app, smoke-test depend on it" in str(refused.value)
    assert await h.store.get_job(tests.id) == tests

    # Once nothing depends on it, it goes.
    deploy = await h.store.get_job_by_name("deploy-app")
    await h.jobs.delete(deploy)
    await h.jobs.delete(await h.store.get_job_by_name("smoke-test"))
    await h.jobs.delete(tests)


async def test_a_rename_rewrites_the_jobs_that_depend_on_it(harness: Harness) -> None:
    h = harness
    await readme_jobs(h)
    tests = await h.store.get_job_by_name("run-tests")

    await h.jobs.update(tests, _with(tests, name="unit-tests"))

    deploy = await h.store.get_job_by_name("deploy-app")
    assert deploy.definition.depends_on == ("unit-tests", "build-docker")


async def test_a_new_dependency_counts_only_successes_from_then_on(
    harness: Harness,
) -> None:
    h = harness
    await h.add("a")
    await h.add("b")
    await h.trigger("b")
    await h.finish("b")
    await h.add("c", "a")
    c = await h.store.get_job_by_name("c")
    h.clock.advance(1)
    await h.jobs.update(c, _with(c, depends_on=("a", "b")))

    await h.trigger("c")
    await h.turn()

    assert [r.trigger for r in await h.runs("b")] == [
        Trigger.MANUAL,
        Trigger.DEPENDENCY,
    ]


async def test_the_graph_names_upstream_and_downstream_jobs(harness: Harness) -> None:
    h = harness
    await h.add("a")
    await h.add("b", "a")
    await h.add("c", "a")
    await h.add("d", "b", "c")
    await h.add("e", "d")
    await h.add("lonely")
    await h.trigger("a")
    ids = {name: (await h.store.get_job_by_name(name)).id for name in "abcde"}

    graph = await h.jobs.dependencies(await h.store.get_job_by_name("b"), 100)

    assert {job.name for job in graph.jobs} == {"a", "b", "d", "e"}
    assert graph.jobs[0].name == "b"
    assert set(graph.edges) == {
        (ids["a"], ids["b"]),
        (ids["b"], ids["d"]),
        (ids["d"], ids["e"]),
    }
    latest = {job.name: job.latest_run for job in graph.jobs}
    assert latest["a"] is not None
    assert latest["a"].state is RunState.QUEUED
    assert latest["e"] is None
    assert not graph.truncated

    cut = await h.jobs.dependencies(await h.store.get_job_by_name("d"), 3)
    assert cut.truncated
    assert len(cut.jobs) == 3


async def test_pruning_keeps_a_success_a_waiting_run_is_linked_to(
    harness: Harness,
) -> None:
    h = harness
    await h.add("a")
    await h.add("slow")
    await h.add("b", "a", "slow")
    await h.trigger("b")
    await h.turn()
    await h.finish("a")
    await h.turn()

    assert await h.store.prune_runs(h.clock.now() + timedelta(days=1), 100) == 0
    await h.finish("slow")
    await h.turn()
    await h.finish("b")
    assert await h.store.prune_runs(h.clock.now() + timedelta(days=1), 100) == 3


def _with(job: Job, **changes: object) -> JobDefinition:
    from dataclasses import replace

    return replace(job.definition, **changes)  # type: ignore[arg-type]


# Changes while runs wait


async def test_removing_the_timeout_of_a_waiting_run_lets_it_wait(
    harness: Harness,
) -> None:
    h = harness
    await h.add("slow")
    after = await h.add("after", "slow", dependency_timeout=timedelta(seconds=3))
    waiting = await h.trigger("after")
    await h.turn()

    await h.jobs.update(after, _with(after, dependency_timeout=None))
    await h.turn(10)

    assert (await h.store.get_run(waiting.id)).state is RunState.WAITING
    await h.finish("slow")
    await h.turn()
    assert (await h.store.get_run(waiting.id)).state is RunState.QUEUED


async def test_a_new_timeout_bounds_runs_already_waiting_from_their_creation(
    harness: Harness,
) -> None:
    h = harness
    await h.add("slow")
    after = await h.add("after", "slow", dependency_timeout=timedelta(seconds=100))
    waiting = await h.trigger("after")
    await h.turn()

    await h.jobs.update(after, _with(after, dependency_timeout=timedelta(seconds=5)))
    await h.turn(2)
    assert (await h.store.get_run(waiting.id)).state is RunState.WAITING
    await h.turn(3)

    ended = await h.store.get_run(waiting.id)
    assert ended.state is RunState.SKIPPED
    # Created at 10:00:00, seen by the turn at 10:00:06.
    assert (ended.reason or "").startswith(
        "gave up after waiting 6 s for dependencies (dependency_timeout 5 s)"
    )


async def test_a_removed_dependency_is_no_longer_shown_as_waited_for(
    harness: Harness,
) -> None:
    h = harness
    await h.add("gone")
    await h.add("kept")
    after = await h.add("after", "gone", "kept")
    waiting = await h.trigger("after")
    await h.turn()

    await h.jobs.update(after, _with(after, depends_on=("kept",)))
    await h.turn()

    links = (await h.store.upstream_links([waiting.id]))[waiting.id]
    assert [link.job_name for link in links] == ["kept"]


async def test_a_rename_to_a_taken_name_is_a_conflict_not_a_self_reference(
    harness: Harness,
) -> None:
    h = harness
    await h.add("base")
    child = await h.add("child", "base")

    with pytest.raises(ConflictError) as refused:
        await h.jobs.update(child, _with(child, name="base"))
    assert "a job named 'base' already exists" in str(refused.value)


# A failing step


async def test_a_failing_dependency_pass_keeps_the_fires_of_its_turn_queued(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    await h.add("minutely", schedule="* * * * *")

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("the dependency pass broke")

    monkeypatch.setattr(h.store, "resolve_dependencies", broken)
    with pytest.raises(RuntimeError):
        await h.turn(60)

    (run,) = await h.runs("minutely")
    assert run.state is RunState.QUEUED
    assert await h.queue.size() == 1  # published although the turn failed


async def test_a_scheduler_failing_turn_after_turn_says_so(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("the dependency pass broke")

    monkeypatch.setattr(h.store, "resolve_dependencies", broken)
    h.scheduler.start()
    try:
        for _ in range(10):
            await asyncio.sleep(0)
            h.clock.advance(5)
            await asyncio.sleep(0.01)
            if h.scheduler.failing:
                break
        assert h.scheduler.failing is not None
        assert "the dependency pass broke" in h.scheduler.failing
    finally:
        await h.scheduler.stop()


async def test_a_pass_never_stamps_runs_before_the_run_that_caused_them(
    harness: Harness,
) -> None:
    h = harness
    await h.add("extract")
    await h.add("load", "extract")
    await h.trigger("extract")
    fed_by = await h.finish("extract")  # finished a second after the clock read
    assert fed_by.finished_at is not None

    late_read = fed_by.finished_at - timedelta(milliseconds=2)
    await h.store.resolve_dependencies(late_read, 100, plan_dependencies)

    (pushed,) = await h.runs("load")
    assert pushed.created_at >= fed_by.finished_at
    assert pushed.attempts[0].queued_at >= fed_by.finished_at


async def test_an_update_made_from_a_stale_read_is_refused_and_changes_nothing(
    harness: Harness,
) -> None:
    h = harness
    parent = await h.add("parent")
    stale_child = await h.add("child", "parent")
    h.clock.advance(1)
    await h.jobs.update(parent, _with(parent, name="renamed"))  # rewrites child

    with pytest.raises(ChangedError):
        await h.jobs.update(stale_child, _with(stale_child, retries=3))

    child = await h.store.get_job(stale_child.id)
    assert child.definition.depends_on == ("renamed",)
    assert child.definition.retries == 0


async def test_pausing_a_job_that_changed_meanwhile_keeps_the_change(
    harness: Harness,
) -> None:
    h = harness
    parent = await h.add("parent")
    stale_child = await h.add("child", "parent")
    h.clock.advance(1)
    await h.jobs.update(parent, _with(parent, name="renamed"))

    paused = await h.jobs.set_enabled(stale_child, False)

    assert not paused.definition.enabled
    assert paused.definition.depends_on == ("renamed",)


async def test_a_success_with_many_dependents_pushes_them_over_several_passes(
    harness: Harness,
) -> None:
    h = harness
    await h.add("root")
    for index in range(450):
        await h.add(f"leaf-{index}", "root")
    await h.trigger("root")
    await h.finish("root")

    created = []
    while (
        done := await h.store.resolve_dependencies(
            h.clock.now(), 1000, plan_dependencies
        )
    ).worked:
        created.append(len(done.queued))

    assert created == [200, 200, 50]  # each pass a short transaction
    counts = await h.store.count_runs()
    assert counts.by_state[RunState.QUEUED] == 450  # each leaf once
