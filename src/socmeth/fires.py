"""Plan what due fires become: a pure function of the job, its active runs and `now`.

The scheduler reads due jobs, calls `plan_job_fires` for each, and hands the plans to
`Store.record_fires`, which writes runs and moves next fires on in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from socmeth.dependencies import give_up_at
from socmeth.models import (
    Concurrency,
    Job,
    JobDefinition,
    Misfire,
    Run,
    RunState,
    Trigger,
)
from socmeth.schedule import Schedule, parse_schedule
from socmeth.store.base import FireAdvance, GiveUp, NewRun

# A job that fell far behind (a long pause of the scheduler's own process while it was
# up) gets at most this many runs per turn; the next turn goes on from where it stopped.
MAX_FIRES_PER_TURN = 100


def schedule_of(definition: JobDefinition, anchor_at: datetime) -> Schedule | None:
    """Return the parsed schedule of a job, or None for an unscheduled one."""
    if definition.schedule is None:
        return None
    return parse_schedule(definition.schedule, definition.timezone, anchor_at)


def next_fire_at(
    definition: JobDefinition, anchor_at: datetime, after: datetime
) -> datetime | None:
    """Return the first fire strictly after `after`; None if paused or unscheduled."""
    schedule = schedule_of(definition, anchor_at)
    if schedule is None or not definition.enabled:
        return None
    return schedule.next_fire(after)


@dataclass(frozen=True)
class FirePlan:
    """The runs one due job gets in this turn, and where its next fire moves.

    `give_ups` end the job's waiting runs that a fire after their creation
    overtook: a run waits for its dependencies until the job's next fire at most.
    """

    advance: FireAdvance
    runs: list[NewRun]
    cancel_run_ids: list[int]
    give_ups: list[GiveUp]


def plan_job_fires(
    job: Job,
    active: Sequence[Run],
    now: datetime,
    scheduler_started_at: datetime,
) -> FirePlan:
    """Turn a due job's passed fires into new runs.

    Fires at or after `scheduler_started_at` passed while this scheduler was up: each
    gets a run (or a skipped run under `concurrency: forbid`), however late the turn.
    Fires before it passed while no scheduler was up and follow the misfire policy:
    `run_once` makes one late run for the latest of them, unless it is older than
    `misfire_grace`; `skip` makes none.
    """
    assert job.next_fire_at is not None, "due jobs have a next fire"
    schedule = schedule_of(job.definition, job.created_at)
    assert schedule is not None, "due jobs have a schedule"

    missed, current, following = _passed_fires(
        schedule, job.next_fire_at, now, scheduler_started_at
    )
    fires: list[tuple[datetime, bool]] = []
    catch_up = _catch_up(job.definition, missed, now)
    if catch_up is not None:
        fires.append((catch_up, True))
    fires.extend((fire, False) for fire in current)

    latest = current[-1] if current else missed
    give_ups, active = _overtaken_waits(job, active, latest)
    runs, cancel_ids = _apply_concurrency(job, active, fires, now)
    advance = FireAdvance(job.id, job.next_fire_at, following)
    return FirePlan(advance, runs, cancel_ids, give_ups)


def _overtaken_waits(
    job: Job, active: Sequence[Run], latest_fire: datetime | None
) -> tuple[list[GiveUp], list[Run]]:
    """Split off the waiting runs created before the latest fire that passed.

    Returns their give-ups and the active runs that stay.
    """
    give_ups: list[GiveUp] = []
    staying: list[Run] = []
    for run in active:
        if (
            run.state is RunState.WAITING
            and latest_fire is not None
            and run.created_at < latest_fire
        ):
            reason = (
                "gave up waiting for dependencies: the job's next fire, at "
                f"{latest_fire.isoformat()}, came first"
            )
            give_ups.append(GiveUp(job.id, run.id, reason))
        else:
            staying.append(run)
    return give_ups, staying


def _passed_fires(
    schedule: Schedule, first: datetime, now: datetime, started_at: datetime
) -> tuple[datetime | None, list[datetime], datetime | None]:
    """Split the fires from `first` up to `now` into the latest missed and current ones.

    Returns (latest fire before `started_at`, fires since then up to `now`, the next
    fire after the last one taken).
    """
    fire: datetime | None = first
    latest_missed = None
    if first < started_at:
        latest_missed = _last_fire_before(schedule, first, started_at)
        fire = schedule.next_fire(latest_missed)
    current: list[datetime] = []
    while fire is not None and fire <= now and len(current) < MAX_FIRES_PER_TURN:
        current.append(fire)
        fire = schedule.next_fire(fire)
    return latest_missed, current, fire


def _last_fire_before(
    schedule: Schedule, first: datetime, instant: datetime
) -> datetime:
    """Return the latest fire before `instant`, knowing `first` is one.

    Looks back over a window that doubles until it holds a fire, then walks forward,
    so an outage of a month costs a few steps even for an `@every 1s` job.
    """
    window = timedelta(seconds=1)
    last = None
    while last is None:
        start = max(instant - window, first - timedelta(microseconds=1))
        probe = schedule.next_fire(start)
        if probe is not None and probe < instant:
            last = probe
        window *= 2
    while (probe := schedule.next_fire(last)) is not None and probe < instant:
        last = probe
    return last


def _catch_up(
    definition: JobDefinition, latest: datetime | None, now: datetime
) -> datetime | None:
    if latest is None or definition.misfire is Misfire.SKIP:
        return None
    grace = definition.misfire_grace
    if grace is not None and now - latest > grace:
        return None
    return latest


def _apply_concurrency(
    job: Job, active: Sequence[Run], fires: list[tuple[datetime, bool]], now: datetime
) -> tuple[list[NewRun], list[int]]:
    """Decide each fire's run under the job's concurrency policy."""
    policy = job.definition.concurrency
    busy_reason = f"run {active[0].id} of the job was still active" if active else None
    runs: list[NewRun] = []
    cancel_ids: list[int] = []
    for index, (fire, late) in enumerate(fires):
        is_last = index == len(fires) - 1
        if policy is Concurrency.ALLOW:
            runs.append(fire_run(job.definition, job.id, fire, late, now))
        elif policy is Concurrency.REPLACE:
            # Only the newest fire of the turn survives; older ones would be replaced
            # at once, so they are recorded as skipped instead of started and killed.
            if is_last:
                cancel_ids = [run.id for run in active]
                runs.append(fire_run(job.definition, job.id, fire, late, now))
            else:
                runs.append(_skipped(job, fire, late, "replaced by a newer fire"))
        elif busy_reason is not None:
            runs.append(_skipped(job, fire, late, busy_reason))
        else:
            runs.append(fire_run(job.definition, job.id, fire, late, now))
            busy_reason = f"the run for the fire at {fire.isoformat()} was still active"
    return runs, cancel_ids


def fire_run(
    definition: JobDefinition,
    job_id: int,
    fire: datetime | None,
    late: bool,
    now: datetime,
    trigger: Trigger = Trigger.SCHEDULE,
) -> NewRun:
    """Describe the run a fire (or a request, with `fire` None) makes.

    A job with dependencies gets a `waiting` run, to be resolved by the leader; any
    other job a `queued` one.
    """
    if not definition.depends_on:
        return NewRun(job_id, trigger, fire, late=late)
    return NewRun(
        job_id,
        trigger,
        fire,
        state=RunState.WAITING,
        late=late,
        give_up_at=give_up_at(definition.dependency_timeout, now),
    )


def _skipped(job: Job, fire: datetime, late: bool, reason: str) -> NewRun:
    return NewRun(
        job.id, Trigger.SCHEDULE, fire, state=RunState.SKIPPED, reason=reason, late=late
    )
