"""Plan due fires into runs: misfire and concurrency policies, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from socmeth.fires import MAX_FIRES_PER_TURN, next_fire_at, plan_job_fires
from socmeth.models import (
    Concurrency,
    Job,
    JobDefinition,
    JobType,
    Misfire,
    Run,
    RunState,
    Trigger,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def make_job(schedule: str = "* * * * *", **fields: object) -> Job:
    definition = JobDefinition(
        name="j", type=JobType.COMMAND, command="true", schedule=schedule, **fields
    )
    first = next_fire_at(definition, T0, T0)
    return Job(1, definition, T0, T0, first)


def active_run(run_id: int = 7) -> Run:
    return Run(run_id, 1, "j", Trigger.SCHEDULE, T0, T0, RunState.RUNNING)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_one_run_for_the_fire_that_is_due() -> None:
    job = make_job()
    plan = plan_job_fires(job, [], at(1), scheduler_started_at=T0)

    assert [r.scheduled_at for r in plan.runs] == [at(1)]
    assert plan.runs[0].state is RunState.QUEUED
    assert not plan.runs[0].late
    assert plan.advance.expected_next_fire_at == at(1)
    assert plan.advance.next_fire_at == at(2)


def test_fires_while_the_scheduler_was_up_each_get_a_run_even_when_late() -> None:
    job = make_job()
    plan = plan_job_fires(job, [], at(3.5), scheduler_started_at=T0)

    assert [r.scheduled_at for r in plan.runs] == [at(1), at(2), at(3)]
    assert not any(r.late for r in plan.runs)
    assert plan.advance.next_fire_at == at(4)


def test_run_once_makes_one_late_run_for_the_latest_missed_fire() -> None:
    job = make_job()
    restart = at(90.5)
    plan = plan_job_fires(job, [], restart, scheduler_started_at=restart)

    assert [(r.scheduled_at, r.late) for r in plan.runs] == [(at(90), True)]
    assert plan.advance.next_fire_at == at(91)


def test_skip_makes_no_run_for_missed_fires() -> None:
    job = make_job(misfire=Misfire.SKIP)
    restart = at(90.5)
    plan = plan_job_fires(job, [], restart, scheduler_started_at=restart)

    assert plan.runs == []
    assert plan.advance.next_fire_at == at(91)


@pytest.mark.parametrize(
    ("grace_s", "runs"),
    [(60, 1), (20, 0)],
    ids=["latest-missed-within-grace", "latest-missed-older-than-grace"],
)
def test_misfire_grace_bounds_how_late_a_catch_up_starts(
    grace_s: int, runs: int
) -> None:
    job = make_job(misfire_grace=timedelta(seconds=grace_s))
    restart = at(90.5)  # the latest missed fire, at(90), is 30 s old
    plan = plan_job_fires(job, [], restart, scheduler_started_at=restart)

    assert len(plan.runs) == runs


def test_missed_and_current_fires_combine_after_a_restart() -> None:
    job = make_job()
    started = at(10.5)
    plan = plan_job_fires(job, [], at(12.2), scheduler_started_at=started)

    assert [(r.scheduled_at, r.late) for r in plan.runs] == [
        (at(10), True),
        (at(11), False),
        (at(12), False),
    ]


def test_a_month_long_outage_of_an_every_second_job_is_planned_quickly() -> None:
    job = make_job("@every 1s")
    restart = T0 + timedelta(days=30, milliseconds=500)
    plan = plan_job_fires(job, [], restart, scheduler_started_at=restart)

    assert [(r.scheduled_at, r.late) for r in plan.runs] == [
        (T0 + timedelta(days=30), True)
    ]


def test_forbid_records_a_skipped_run_while_the_job_is_busy() -> None:
    job = make_job()
    plan = plan_job_fires(job, [active_run(7)], at(1), scheduler_started_at=T0)

    (run,) = plan.runs
    assert run.state is RunState.SKIPPED
    assert "run 7" in str(run.reason)


def test_forbid_skips_later_fires_of_the_same_turn() -> None:
    job = make_job()
    plan = plan_job_fires(job, [], at(2), scheduler_started_at=T0)

    assert [r.state for r in plan.runs] == [RunState.QUEUED, RunState.SKIPPED]


def test_allow_queues_every_fire_even_while_busy() -> None:
    job = make_job(concurrency=Concurrency.ALLOW)
    plan = plan_job_fires(job, [active_run()], at(2), scheduler_started_at=T0)

    assert [r.state for r in plan.runs] == [RunState.QUEUED, RunState.QUEUED]
    assert plan.cancel_run_ids == []


def test_replace_cancels_the_active_run_and_queues_the_newest_fire() -> None:
    job = make_job(concurrency=Concurrency.REPLACE)
    plan = plan_job_fires(job, [active_run(7)], at(2), scheduler_started_at=T0)

    assert plan.cancel_run_ids == [7]
    assert [r.state for r in plan.runs] == [RunState.SKIPPED, RunState.QUEUED]
    assert plan.runs[-1].scheduled_at == at(2)


def test_a_job_far_behind_gets_a_bounded_number_of_runs_per_turn() -> None:
    job = make_job("@every 1s", concurrency=Concurrency.ALLOW)
    plan = plan_job_fires(job, [], T0 + timedelta(hours=1), scheduler_started_at=T0)

    assert len(plan.runs) == MAX_FIRES_PER_TURN
    assert plan.advance.next_fire_at == T0 + timedelta(seconds=MAX_FIRES_PER_TURN + 1)


def test_paused_or_unscheduled_jobs_have_no_next_fire() -> None:
    paused = JobDefinition(
        name="p", type=JobType.COMMAND, schedule="* * * * *", enabled=False
    )
    unscheduled = JobDefinition(name="u", type=JobType.COMMAND)

    assert next_fire_at(paused, T0, T0) is None
    assert next_fire_at(unscheduled, T0, T0) is None


# Jobs with dependencies


def waiting_run(run_id: int, created_at: datetime) -> Run:
    return Run(run_id, 1, "j", Trigger.MANUAL, None, created_at, RunState.WAITING)


def test_a_job_with_dependencies_gets_a_waiting_run_with_its_wait_bound() -> None:
    job = make_job(depends_on=("build",), dependency_timeout=timedelta(minutes=5))
    plan = plan_job_fires(job, [], at(1), scheduler_started_at=T0)

    (run,) = plan.runs
    assert (run.state, run.scheduled_at) == (RunState.WAITING, at(1))
    assert run.give_up_at == at(1) + timedelta(minutes=5)


def test_a_job_without_a_dependency_timeout_waits_without_a_bound() -> None:
    job = make_job(depends_on=("build",))
    plan = plan_job_fires(job, [], at(1), scheduler_started_at=T0)

    assert plan.runs[0].give_up_at is None


def test_the_next_fire_overtakes_a_run_still_waiting_for_dependencies() -> None:
    job = make_job(depends_on=("build",))
    waiting = waiting_run(7, at(0.5))

    plan = plan_job_fires(job, [waiting], at(1), scheduler_started_at=T0)

    (give_up,) = plan.give_ups
    assert give_up.run_id == 7
    assert "next fire, at 2026-03-02T10:01:00+00:00, came first" in give_up.reason
    # The waiting run no longer counts as active: the fire is not skipped.
    assert [r.state for r in plan.runs] == [RunState.WAITING]


def test_a_run_created_after_the_fire_that_is_due_keeps_waiting() -> None:
    job = make_job(depends_on=("build",))
    waiting = waiting_run(7, at(1) + timedelta(seconds=1))

    plan = plan_job_fires(job, [waiting], at(1.1), scheduler_started_at=T0)

    assert plan.give_ups == []
    assert plan.runs[0].state is RunState.SKIPPED
    assert plan.runs[0].reason == "run 7 of the job was still active"


def test_a_missed_fire_overtakes_a_waiting_run_too() -> None:
    job = make_job(depends_on=("build",), misfire=Misfire.SKIP)
    waiting = waiting_run(7, at(0.5))
    restart = at(30.5)

    plan = plan_job_fires(job, [waiting], restart, scheduler_started_at=restart)

    assert [g.run_id for g in plan.give_ups] == [7]
    assert plan.runs == []
