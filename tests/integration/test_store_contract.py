"""Hold every store backend to the contract of socmeth.store.base.Store.

Each test runs once per backend of conftest.BACKENDS. Instants are passed in, never
read from a clock, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Select, Table, event, func, select, text, update

from socmeth.auth.memory import MemoryAuthStore
from socmeth.auth.models import AuditAction, Role
from socmeth.dependencies import Link, Plan, Snapshot, plan_dependencies
from socmeth.errors import (
    ConfigError,
    ConflictError,
    FencedError,
    NotFoundError,
    StoreError,
)
from socmeth.errors import ValidationError as InputError
from socmeth.models import (
    ACTIVE_RUN_STATES,
    FINAL_RUN_STATES,
    Attempt,
    AttemptState,
    Concurrency,
    Job,
    JobDefinition,
    JobType,
    Misfire,
    RetryBackoff,
    Run,
    RunState,
    Trigger,
)
from socmeth.store.base import (
    FAILED_RUN_STATES,
    AttemptFinish,
    AttemptOutcome,
    AuditFilter,
    AuthStore,
    Fence,
    FireAdvance,
    JobFilter,
    JobSort,
    NewApiToken,
    NewAuditRecord,
    NewRun,
    NewUser,
    NodeBeat,
    Page,
    QueuedAttempt,
    RunFilter,
)
from socmeth.store.codec import JobPosition
from socmeth.store.migrate import alembic_config, head_revision, migrate
from socmeth.store.schema import (
    attempt_outputs,
    attempts,
    jobs,
    metadata,
    nodes,
    runs,
)
from socmeth.store.sql import (
    SqlStore,
    async_url,
    audit_page_statement,
    create_store_engine,
    due_jobs_statement,
    due_retries_statement,
    ended_buckets_statement,
    job_page_statements,
    next_due_statement,
    open_store,
    prunable_runs_statement,
    runs_page_statement,
)
from tests.integration.conftest import BACKENDS

T = TypeVar("T")

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

FULL_DEFINITION = JobDefinition(
    name="report.daily-1",
    type=JobType.HTTP,
    schedule="30 6 * * 1-5",
    timezone="Europe/Paris",
    description="Send the daily report",
    tags=("reports", "daily"),
    env={"LANG": "C"},
    url="https://example.test/report",
    method="POST",
    headers={"Authorization": "Bearer s3cret"},
    body='{"full": true}',
    expect_status=(200, 204),
    secret="hush",
    timeout=timedelta(seconds=90.25),
    retries=3,
    retry_backoff=RetryBackoff(
        initial=timedelta(seconds=5),
        factor=3.0,
        max=timedelta(minutes=10),
        jitter=True,
    ),
    concurrency=Concurrency.ALLOW,
    misfire=Misfire.SKIP,
    misfire_grace=timedelta(minutes=5),
    depends_on=("extract", "load"),
    dependency_timeout=timedelta(minutes=30),
)


class StatementCounter:
    """Count the statements a store sends to the database, BEGIN included."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_: object) -> None:
        self.count += 1


@pytest.fixture
def statements(store: SqlStore) -> StatementCounter:
    """Count every statement the store executes (an executemany counts once)."""
    counter = StatementCounter()
    event.listen(store.engine.sync_engine, "before_cursor_execute", counter)
    return counter


def definition(name: str = "backup", **changes: Any) -> JobDefinition:
    return JobDefinition(
        name=name,
        type=JobType.COMMAND,
        schedule="* * * * *",
        command="true",
        **changes,
    )


async def add_job(
    store: SqlStore,
    name: str = "backup",
    *,
    next_fire_at: datetime | None = NOW,
    **changes: Any,
) -> Job:
    return await store.create_job(definition(name, **changes), next_fire_at, NOW)


async def fire(
    store: SqlStore,
    job: Job,
    scheduled_at: datetime | None = NOW,
    *,
    state: RunState = RunState.QUEUED,
    now: datetime = NOW,
) -> Run:
    new_run = NewRun(job.id, Trigger.SCHEDULE, scheduled_at, state=state)
    (run,) = await store.record_fires([], [new_run], now)
    return run


async def claim(store: SqlStore, run: Run, node_id: str = "node-a") -> Attempt:
    attempt = run.attempts[-1]
    batch = await store.claim_attempts([attempt.id], node_id, NOW, max_running=100)
    (claimed,) = batch.claimed
    return claimed.attempt


def ended(
    state: AttemptState = AttemptState.SUCCEEDED,
    run_state: RunState = RunState.SUCCEEDED,
    **fields: Any,
) -> AttemptOutcome:
    return AttemptOutcome(state=state, run_state=run_state, **fields)


def retry_at(instant: datetime) -> AttemptOutcome:
    return AttemptOutcome(
        state=AttemptState.FAILED,
        run_state=RunState.QUEUED,
        exit_code=1,
        next_attempt_at=instant,
    )


async def finish(
    store: SqlStore, attempt: Attempt, outcome: AttemptOutcome, now: datetime = NOW
) -> Run | None:
    (run,) = (
        await store.finish_attempts([AttemptFinish(attempt.id, outcome)], now)
    ).runs
    return run


async def row_count(store: SqlStore, table: Table) -> int:
    async with store.engine.connect() as conn:
        query = select(func.count()).select_from(table)
        return int((await conn.execute(query)).scalar_one())


async def all_pages(
    fetch: Callable[[int, str | None], Awaitable[Page[T]]], limit: int
) -> list[list[T]]:
    pages: list[list[T]] = []
    cursor: str | None = None
    while True:
        page = await fetch(limit, cursor)
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return pages


# Jobs


async def test_create_job_round_trips_every_field(store: SqlStore) -> None:
    for dependency in FULL_DEFINITION.depends_on:
        await add_job(store, dependency)
    created = await store.create_job(FULL_DEFINITION, NOW + MINUTE, NOW)

    assert created.definition == FULL_DEFINITION
    assert (created.created_at, created.updated_at) == (NOW, NOW)
    assert created.next_fire_at == NOW + MINUTE
    assert await store.get_job(created.id) == created
    assert await store.get_job_by_name("report.daily-1") == created


async def test_create_job_refuses_a_taken_name_and_stores_nothing(
    store: SqlStore,
) -> None:
    await add_job(store, "backup")

    with pytest.raises(ConflictError) as raised:
        await add_job(store, "backup", tags=("extra",))

    assert raised.value.field == "name"
    assert (await store.count_jobs()).enabled == 1
    page = await store.list_jobs(JobFilter(tag="extra"), 10, None)
    assert page.items == []


async def test_update_job_replaces_definition_and_next_fire(store: SqlStore) -> None:
    job = await add_job(store, "backup")
    later = NOW + 10 * MINUTE

    updated = await store.update_job(
        job.id, definition("backup-v2", retries=2), NOW + MINUTE, later
    )

    assert updated.definition == definition("backup-v2", retries=2)
    assert (updated.created_at, updated.updated_at) == (NOW, later)
    assert updated.next_fire_at == NOW + MINUTE
    assert await store.get_job_by_name("backup-v2") == updated
    with pytest.raises(NotFoundError):
        await store.get_job_by_name("backup")


async def test_update_job_refuses_a_taken_name(store: SqlStore) -> None:
    await add_job(store, "backup")
    other = await add_job(store, "cleanup")

    with pytest.raises(ConflictError) as raised:
        await store.update_job(other.id, definition("backup"), None, NOW)

    assert raised.value.field == "name"
    assert await store.get_job(other.id) == other


async def test_update_of_a_missing_job_raises_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFoundError):
        await store.update_job(404, definition(), None, NOW)


async def test_a_paused_job_has_no_next_fire_and_is_never_due(
    store: SqlStore,
) -> None:
    job = await add_job(store, "paused", enabled=False, next_fire_at=NOW)

    assert job.next_fire_at is None
    assert await store.due_jobs(NOW, 10) == []
    assert await store.next_due_at() is None


async def test_missing_jobs_raise_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFoundError):
        await store.get_job(404)
    with pytest.raises(NotFoundError):
        await store.get_job_by_name("nothing")
    with pytest.raises(NotFoundError):
        await store.delete_job(404)


async def test_delete_job_deletes_its_runs_attempts_and_outputs(
    store: SqlStore,
) -> None:
    doomed = await add_job(store, "doomed")
    kept = await add_job(store, "kept")
    run = await fire(store, doomed)
    attempt = await claim(store, run)
    await store.save_outputs([(attempt.id, "partial", False)])
    await fire(store, kept)

    await store.delete_job(doomed.id)

    with pytest.raises(NotFoundError):
        await store.get_job(doomed.id)
    with pytest.raises(NotFoundError):
        await store.get_run(run.id)
    assert await row_count(store, runs) == 1
    assert await row_count(store, attempts) == 1
    assert await row_count(store, attempt_outputs) == 0


async def test_list_jobs_pages_by_name_without_gaps(store: SqlStore) -> None:
    names = [f"job-{index:02d}" for index in range(7)]
    for name in reversed(names):
        await add_job(store, name)

    pages = await all_pages(
        lambda limit, cursor: store.list_jobs(JobFilter(), limit, cursor), 3
    )

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [job.name for page in pages for job in page] == names


@pytest.mark.parametrize(
    ("job_filter", "expected"),
    [
        (JobFilter(search="BACK"), ["backup", "backup_db"]),
        (JobFilter(search="p_d"), ["backup_db"]),
        (JobFilter(search="%"), []),
        (JobFilter(enabled=False), ["cleanup"]),
        (JobFilter(enabled=True), ["backup", "backup_db", "report"]),
        (JobFilter(tag="nightly"), ["backup", "cleanup"]),
        (JobFilter(search="back", tag="nightly"), ["backup"]),
    ],
    ids=[
        "search-any-case",
        "search-underscore-literal",
        "search-percent-literal",
        "paused",
        "enabled",
        "tag",
        "search-and-tag",
    ],
)
async def test_list_jobs_filters(
    store: SqlStore, job_filter: JobFilter, expected: list[str]
) -> None:
    await add_job(store, "backup", tags=("nightly", "db"))
    await add_job(store, "backup_db")
    await add_job(store, "cleanup", tags=("nightly",), enabled=False)
    await add_job(store, "report", tags=("daily",))

    page = await store.list_jobs(job_filter, 10, None)

    assert [job.name for job in page.items] == expected
    assert page.next_cursor is None


async def test_list_refuses_a_cursor_it_did_not_make(store: SqlStore) -> None:
    for name in ("a", "b"):
        await add_job(store, name)
    job_cursor = (await store.list_jobs(JobFilter(), 1, None)).next_cursor
    assert job_cursor is not None

    with pytest.raises(InputError) as raised:
        await store.list_runs(RunFilter(), 10, job_cursor)
    assert raised.value.errors[0].field == "cursor"
    with pytest.raises(InputError):
        await store.list_jobs(JobFilter(), 10, "not base64!")


# Sorting jobs. Ten jobs whose creations, updates and next fires tie in groups,
# created out of name order so that no order by id passes for one by name (ids
# follow the order of creation, j06 first).

FIRST_FIRE = NOW + 10 * MINUTE
SECOND_FIRE = NOW + 20 * MINUTE
SORTABLE_JOBS = [
    # name, created at, next fire (None: no schedule, or paused), enabled
    ("j06", NOW, SECOND_FIRE, True),
    ("j02", NOW, FIRST_FIRE, True),
    ("j09", NOW, None, False),
    ("j04", NOW + MINUTE, FIRST_FIRE, True),
    ("j00", NOW + MINUTE, None, True),
    ("j07", NOW + MINUTE, SECOND_FIRE, True),
    ("j03", NOW + 2 * MINUTE, FIRST_FIRE, True),
    ("j08", NOW + 2 * MINUTE, None, False),
    ("j01", NOW + 2 * MINUTE, None, True),
    ("j05", NOW + 3 * MINUTE, SECOND_FIRE, True),
]
# Three updates at one instant and a later one, so that updates tie as well.
SORTABLE_UPDATES = {
    "j06": NOW + 5 * MINUTE,
    "j00": NOW + 5 * MINUTE,
    "j08": NOW + 5 * MINUTE,
    "j02": NOW + 6 * MINUTE,
}
PAUSED_SORTABLE = {"j09", "j08"}
# Worked out by hand: ties by id in the sort's direction, no next fire last.
SORTED_NAMES = {
    JobSort.NAME: [f"j0{index}" for index in range(10)],
    JobSort.NAME_DESC: [f"j0{index}" for index in reversed(range(10))],
    JobSort.NEXT_FIRE: [
        *("j02", "j04", "j03"),  # FIRST_FIRE
        *("j06", "j07", "j05"),  # SECOND_FIRE
        *("j09", "j00", "j08", "j01"),  # none
    ],
    JobSort.UPDATED: [
        "j02",
        *("j08", "j00", "j06"),  # updated at NOW + 5 min
        "j05",
        *("j01", "j03"),  # created at NOW + 2 min, never updated
        *("j07", "j04"),
        "j09",
    ],
    JobSort.CREATED: [
        "j05",
        *("j01", "j08", "j03"),  # NOW + 2 min
        *("j07", "j00", "j04"),  # NOW + 1 min
        *("j09", "j02", "j06"),  # NOW
    ],
}


async def add_sortable_jobs(store: SqlStore) -> None:
    for name, created_at, next_fire_at, enabled in SORTABLE_JOBS:
        job = await store.create_job(
            definition(name, enabled=enabled), next_fire_at, created_at
        )
        if name in SORTABLE_UPDATES:
            await store.update_job(
                job.id, job.definition, next_fire_at, SORTABLE_UPDATES[name]
            )


@pytest.mark.parametrize("sort", list(JobSort), ids=[s.value for s in JobSort])
async def test_list_jobs_pages_every_sort_through_its_ties_once_each(
    store: SqlStore, sort: JobSort
) -> None:
    await add_sortable_jobs(store)
    wanted = {
        "all": (JobFilter(), SORTED_NAMES[sort]),
        "enabled": (
            JobFilter(enabled=True),
            [n for n in SORTED_NAMES[sort] if n not in PAUSED_SORTABLE],
        ),
        "paused": (
            JobFilter(enabled=False),
            [n for n in SORTED_NAMES[sort] if n in PAUSED_SORTABLE],
        ),
    }

    for label, (job_filter, expected) in wanted.items():
        # Page ends fall inside ties, on their edges and on the end of the jobs
        # with a next fire.
        for limit in (1, 2, 3, 4, 7, 10):
            pages = await all_pages(
                lambda limit, cursor, f=job_filter: store.list_jobs(
                    f, limit, cursor, sort
                ),
                limit,
            )
            names = [job.name for page in pages for job in page]
            assert names == expected, (label, limit)
            assert all(len(page) == limit for page in pages[:-1]), (label, limit)


async def test_list_jobs_sorts_by_name_unless_told(store: SqlStore) -> None:
    await add_sortable_jobs(store)

    page = await store.list_jobs(JobFilter(), 3, None)
    resumed = await store.list_jobs(JobFilter(), 3, page.next_cursor, JobSort.NAME)

    assert [job.name for job in page.items] == ["j00", "j01", "j02"]
    assert [job.name for job in resumed.items] == ["j03", "j04", "j05"]


async def test_a_job_cursor_made_under_one_sort_is_refused_under_another(
    store: SqlStore,
) -> None:
    await add_sortable_jobs(store)
    cursor = (await store.list_jobs(JobFilter(), 2, None, JobSort.UPDATED)).next_cursor
    assert cursor is not None

    with pytest.raises(InputError) as raised:
        await store.list_jobs(JobFilter(), 2, cursor, JobSort.NEXT_FIRE)

    (error,) = raised.value.errors
    assert error.field == "cursor"
    assert "sorted by -updated_at, not by next_fire_at" in error.message
    assert "sort=-updated_at" in error.message
    resumed = await store.list_jobs(JobFilter(), 2, cursor, JobSort.UPDATED)
    assert [job.name for job in resumed.items] == ["j00", "j06"]


def job_cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(f"job:{raw}".encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "raw"),
    [
        (JobSort.NAME, "backup"),
        (JobSort.NAME, '["name","backup"]'),
        (JobSort.NAME, '{"a":1,"b":2,"c":3}'),
        (JobSort.NAME, '["name","backup",0]'),
        (JobSort.NAME, '["name","backup",true]'),
        (JobSort.NAME, '["name","back\\u0000up",1]'),
        (JobSort.NAME, '["name",null,1]'),
        (JobSort.NAME, '["sideways","backup",1]'),
        (JobSort.UPDATED, '["-updated_at","yesterday",1]'),
        (JobSort.UPDATED, '["-updated_at","2025-03-01T12:00:00",1]'),
        (JobSort.UPDATED, '["-updated_at",null,1]'),
        (JobSort.CREATED, '["-created_at","9999-12-31T23:00:00-14:00",1]'),
        (JobSort.NEXT_FIRE, '["next_fire_at",12,1]'),
    ],
    ids=[
        "not-json",
        "two-items",
        "object",
        "id-zero",
        "id-bool",
        "name-with-nul",
        "name-null",
        "unknown-sort",
        "instant-not-iso",
        "instant-naive",
        "instant-null-outside-next-fire",
        "instant-beyond-9999-in-utc",
        "instant-number",
    ],
)
async def test_a_hand_made_job_cursor_is_refused_naming_the_cursor(
    store: SqlStore, sort: JobSort, raw: str
) -> None:
    with pytest.raises(InputError) as raised:
        await store.list_jobs(JobFilter(), 10, job_cursor(raw), sort)

    (error,) = raised.value.errors
    assert error.field == "cursor"
    assert "is not a cursor of a job listing" in error.message


async def query_plan_of(
    store: SqlStore, statement: Select[*tuple[Any, ...]], *, sorts: bool = False
) -> str:
    """Return the plan of a statement with its parameters.

    PostgreSQL is told to avoid sequential scans, and sorts unless `sorts`, which
    it prefers on tables this small: a sort that remains is one no index can spare.
    """
    async with store.engine.connect() as conn:
        compiled = statement.compile(
            dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
        )
        values = [compiled.params[name] for name in compiled.positiontup or ()]
        if conn.dialect.name == "sqlite":
            values = [
                v.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
                if isinstance(v, datetime)
                else v
                for v in values
            ]
            result = await conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}", tuple(values)
            )
            return "\n".join(str(row[-1]) for row in result)
        avoided = ["enable_seqscan", "enable_bitmapscan"]
        for setting in avoided if sorts else [*avoided, "enable_sort"]:
            await conn.exec_driver_sql(f"SET LOCAL {setting} = off")
        result = await conn.exec_driver_sql(
            f"EXPLAIN (COSTS OFF) {compiled}", tuple(values)
        )
        return "\n".join(str(row[0]) for row in result)


SORT_INDEXES = {
    JobSort.NAME: ("uq_jobs_name", "ix_jobs_paused_name"),
    JobSort.NAME_DESC: ("uq_jobs_name", "ix_jobs_paused_name"),
    JobSort.NEXT_FIRE: ("ix_jobs_next_fire_at", "ix_jobs_paused_next_fire_at_id"),
    JobSort.UPDATED: ("ix_jobs_updated_at_id", "ix_jobs_paused_updated_at_id"),
    JobSort.CREATED: ("ix_jobs_created_at_id", "ix_jobs_paused_created_at_id"),
}


def page_positions(sort: JobSort) -> list[JobPosition | None]:
    """Return where pages of a sort start: the first page, and a later one."""
    if sort in (JobSort.NAME, JobSort.NAME_DESC):
        return [None, JobPosition("m", 5)]
    later = [None, JobPosition(NOW, 5)]
    return [*later, JobPosition(None, 5)] if sort is JobSort.NEXT_FIRE else later


@pytest.mark.parametrize("sort", list(JobSort), ids=[s.value for s in JobSort])
@pytest.mark.parametrize(
    "enabled", [None, True, False], ids=["any-state", "enabled", "paused"]
)
async def test_each_page_of_each_sort_reads_an_index_in_its_order(
    store: SqlStore, sort: JobSort, enabled: bool | None
) -> None:
    full, paused = SORT_INDEXES[sort]
    index = paused if enabled is False else full
    if index == "uq_jobs_name" and store.engine.dialect.name == "sqlite":
        index = "sqlite_autoindex_jobs_1"  # SQLite's name for a UNIQUE constraint

    for after in page_positions(sort):
        statements = job_page_statements(JobFilter(enabled=enabled), sort, after, 51)
        for statement in statements:
            plan = await query_plan_of(store, statement)

            assert re.search(rf"USING INDEX {index}\b|Index Scan.* {index} ", plan), (
                after,
                plan,
            )
            assert "TEMP B-TREE" not in plan, (after, plan)
            assert re.search(r"\bSort\b|\bSeq Scan\b", plan) is None, (after, plan)
            assert re.search(r"\bSCAN jobs\b(?! USING)", plan) is None, (after, plan)


async def test_count_jobs_counts_enabled_and_paused(store: SqlStore) -> None:
    await add_job(store, "a")
    await add_job(store, "b")
    await add_job(store, "c", enabled=False)

    counts = await store.count_jobs()

    assert (counts.enabled, counts.paused) == (2, 1)


async def test_due_jobs_are_the_earliest_at_or_before_now(store: SqlStore) -> None:
    await add_job(store, "later", next_fire_at=NOW + MINUTE)
    await add_job(store, "second", next_fire_at=NOW - MINUTE)
    await add_job(store, "first", next_fire_at=NOW - 2 * MINUTE)
    await add_job(store, "now", next_fire_at=NOW)
    await add_job(store, "unscheduled", next_fire_at=None)

    due = await store.due_jobs(NOW, 2)

    assert [job.name for job in due] == ["first", "second"]
    assert [job.name for job in await store.due_jobs(NOW, 10)] == [
        "first",
        "second",
        "now",
    ]


async def test_next_due_at_is_the_earliest_fire_or_pending_retry(
    store: SqlStore,
) -> None:
    assert await store.next_due_at() is None
    job = await add_job(store, "backup", next_fire_at=NOW + 10 * MINUTE)
    assert await store.next_due_at() == NOW + 10 * MINUTE

    attempt = await claim(store, await fire(store, job, NOW))
    await finish(store, attempt, retry_at(NOW + 3 * MINUTE))

    assert await store.next_due_at() == NOW + 3 * MINUTE


async def test_a_definition_of_a_newer_version_is_refused(store: SqlStore) -> None:
    job = await add_job(store)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(jobs).where(jobs.c.id == job.id).values(definition='{"version": 2}')
        )

    with pytest.raises(StoreError, match="version 2"):
        await store.get_job(job.id)


async def test_instants_in_any_zone_are_kept_as_utc(store: SqlStore) -> None:
    paris = timezone(timedelta(hours=1))
    created = await store.create_job(
        definition(), (NOW - MINUTE).astimezone(paris), NOW.astimezone(paris)
    )

    assert created.created_at == NOW
    assert created.created_at.tzinfo is UTC
    assert created.next_fire_at == NOW - MINUTE
    assert [job.id for job in await store.due_jobs(NOW - MINUTE, 10)] == [created.id]
    assert await store.due_jobs(NOW - 2 * MINUTE, 10) == []

    attempt = await claim(store, await fire(store, created))
    await store.cancel_run(attempt.run_id, "stop", (NOW + MINUTE).astimezone(paris))
    async with store.engine.connect() as conn:
        asked_at = (
            await conn.execute(
                select(runs.c.cancel_requested_at).where(runs.c.id == attempt.run_id)
            )
        ).scalar_one()
    assert asked_at == NOW + MINUTE
    assert asked_at.tzinfo is UTC


async def test_naive_datetimes_are_refused(store: SqlStore) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        await store.create_job(definition(), datetime(2025, 3, 1, 12), NOW)

    assert (await store.count_jobs()).enabled == 0


# Fires and runs


async def test_record_fires_creates_queued_runs_and_moves_the_next_fire(
    store: SqlStore,
) -> None:
    job = await add_job(store, next_fire_at=NOW)
    advance = FireAdvance(job.id, NOW, NOW + MINUTE)
    new_run = NewRun(job.id, Trigger.SCHEDULE, NOW, late=True)

    (run,) = await store.record_fires([advance], [new_run], NOW)

    assert (run.job_name, run.state, run.scheduled_at, run.late) == (
        "backup",
        RunState.QUEUED,
        NOW,
        True,
    )
    (attempt,) = run.attempts
    assert (attempt.number, attempt.state, attempt.queued_at) == (
        1,
        AttemptState.QUEUED,
        NOW,
    )
    assert (await store.get_job(job.id)).next_fire_at == NOW + MINUTE
    assert await store.get_run(run.id) == run


async def test_a_fire_recorded_twice_gets_one_run(store: SqlStore) -> None:
    job = await add_job(store, next_fire_at=NOW)
    new_run = NewRun(job.id, Trigger.SCHEDULE, NOW)
    await store.record_fires([FireAdvance(job.id, NOW, NOW + MINUTE)], [new_run], NOW)

    again = await store.record_fires(
        [FireAdvance(job.id, NOW + MINUTE, NOW + 2 * MINUTE)], [new_run, new_run], NOW
    )

    assert again == []
    assert await row_count(store, runs) == 1
    assert await row_count(store, attempts) == 1
    assert (await store.get_job(job.id)).next_fire_at == NOW + 2 * MINUTE


async def test_a_stale_advance_leaves_out_that_jobs_runs_only(
    store: SqlStore,
) -> None:
    moved = await add_job(store, "moved", next_fire_at=NOW + 5 * MINUTE)
    steady = await add_job(store, "steady", next_fire_at=NOW)

    created = await store.record_fires(
        [
            FireAdvance(moved.id, NOW, NOW + MINUTE),
            FireAdvance(steady.id, NOW, NOW + MINUTE),
        ],
        [
            NewRun(moved.id, Trigger.SCHEDULE, NOW),
            NewRun(steady.id, Trigger.SCHEDULE, NOW),
        ],
        NOW,
    )

    assert [run.job_name for run in created] == ["steady"]
    assert (await store.get_job(moved.id)).next_fire_at == NOW + 5 * MINUTE
    assert (await store.get_job(steady.id)).next_fire_at == NOW + MINUTE


async def test_runs_of_a_deleted_job_are_left_out(store: SqlStore) -> None:
    job = await add_job(store)
    await store.delete_job(job.id)

    created = await store.record_fires(
        [FireAdvance(job.id, NOW, NOW + MINUTE)],
        [NewRun(job.id, Trigger.SCHEDULE, NOW)],
        NOW,
    )

    assert created == []


async def test_a_skipped_run_has_no_attempt_and_is_finished(store: SqlStore) -> None:
    job = await add_job(store)
    new_run = NewRun(
        job.id, Trigger.SCHEDULE, NOW, state=RunState.SKIPPED, reason="still running"
    )

    (run,) = await store.record_fires([], [new_run], NOW)

    assert (run.state, run.reason, run.finished_at, run.attempts) == (
        RunState.SKIPPED,
        "still running",
        NOW,
        (),
    )


async def test_record_fires_of_a_thousand_runs_takes_a_few_statements(
    store: SqlStore, statements: StatementCounter
) -> None:
    job = await add_job(store, next_fire_at=NOW)
    fires = [NewRun(job.id, Trigger.SCHEDULE, NOW - i * MINUTE) for i in range(1000)]
    advance = FireAdvance(job.id, NOW, NOW + MINUTE)
    statements.count = 0

    created = await store.record_fires([advance], fires, NOW)

    assert len(created) == 1000
    assert all(len(run.attempts) == 1 for run in created)
    assert statements.count <= 10


async def test_manual_runs_without_an_instant_never_collide(store: SqlStore) -> None:
    job = await add_job(store)

    first = await store.create_run(NewRun(job.id, Trigger.MANUAL, None), NOW)
    second = await store.create_run(NewRun(job.id, Trigger.MANUAL, None), NOW)

    assert first.id != second.id
    assert (first.trigger, first.scheduled_at, len(first.attempts)) == (
        Trigger.MANUAL,
        None,
        1,
    )


async def test_create_run_refuses_a_missing_job_and_a_recorded_fire(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    await fire(store, job, NOW)

    with pytest.raises(NotFoundError):
        await store.create_run(NewRun(404, Trigger.MANUAL, None), NOW)
    with pytest.raises(ConflictError):
        await store.create_run(NewRun(job.id, Trigger.DEPENDENCY, NOW), NOW)
    assert await row_count(store, runs) == 1


async def test_missing_runs_raise_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFoundError):
        await store.get_run(404)
    with pytest.raises(NotFoundError):
        await store.cancel_run(404, "operator", NOW)
    with pytest.raises(NotFoundError):
        await store.start_retry(404, NOW)


async def test_list_runs_pages_newest_first_without_gaps(store: SqlStore) -> None:
    job = await add_job(store)
    made = [await fire(store, job, NOW + i * MINUTE) for i in range(7)]

    pages = await all_pages(
        lambda limit, cursor: store.list_runs(RunFilter(), limit, cursor), 3
    )

    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [run.id for page in pages for run in page]
    assert listed == [run.id for run in reversed(made)]
    assert all(run.attempts for page in pages for run in page)


@pytest.mark.parametrize(
    ("run_filter", "expected"),
    [
        (RunFilter(job_id=1), ["a0", "a1-skipped"]),
        (RunFilter(states=frozenset({RunState.SKIPPED})), ["a1-skipped"]),
        (RunFilter(trigger=Trigger.MANUAL), ["b-manual"]),
        (RunFilter(created_after=NOW + MINUTE), ["a1-skipped", "b-manual"]),
        (RunFilter(created_before=NOW + MINUTE), ["a0"]),
        (
            RunFilter(job_id=1, states=frozenset({RunState.QUEUED})),
            ["a0"],
        ),
    ],
    ids=["job", "states", "trigger", "created-after", "created-before", "combined"],
)
async def test_list_runs_filters(
    store: SqlStore, run_filter: RunFilter, expected: list[str]
) -> None:
    a = await add_job(store, "a")
    b = await add_job(store, "b")
    assert a.id == 1, "the filters above name job 1"
    made = {
        "a0": await fire(store, a, NOW, now=NOW),
        "a1-skipped": await fire(
            store, a, NOW + MINUTE, state=RunState.SKIPPED, now=NOW + MINUTE
        ),
        "b-manual": await store.create_run(
            NewRun(b.id, Trigger.MANUAL, None), NOW + 2 * MINUTE
        ),
    }
    names = {run.id: name for name, run in made.items()}

    page = await store.list_runs(run_filter, 10, None)

    assert sorted(names[run.id] for run in page.items) == expected


async def test_list_runs_of_some_states_pages_newest_first_without_gaps(
    store: SqlStore,
) -> None:
    a = await add_job(store, "a")
    b = await add_job(store, "b")
    states = [RunState.SKIPPED, RunState.QUEUED, RunState.WAITING, RunState.QUEUED]
    made = [
        await fire(store, a if i % 3 else b, NOW + i * MINUTE, state=states[i % 4])
        for i in range(12)
    ]
    wanted = frozenset({RunState.QUEUED, RunState.WAITING})

    for job_id, limit in ((None, 1), (None, 2), (None, 5), (a.id, 2)):
        run_filter = RunFilter(job_id=job_id, states=wanted)
        pages = await all_pages(
            lambda limit, cursor, f=run_filter: store.list_runs(f, limit, cursor),
            limit,
        )

        assert [run.id for page in pages for run in page] == [
            run.id
            for run in reversed(made)
            if run.state in wanted and job_id in (None, run.job_id)
        ], (job_id, limit)


@pytest.mark.parametrize(
    "states",
    [ACTIVE_RUN_STATES, FAILED_RUN_STATES, FINAL_RUN_STATES],
    ids=["active", "failed", "ended"],
)
async def test_runs_of_some_states_are_read_newest_first_off_the_state_index(
    store: SqlStore, states: frozenset[RunState]
) -> None:
    statement = runs_page_statement(RunFilter(states=states), 1000, 21)

    plan = await query_plan_of(store, statement, sorts=True)

    # One short range of the index per state, newest first; no scan of all runs.
    assert len(re.findall(r"\bix_runs_state_id\b", plan)) == len(states), plan
    assert re.search(r"\bSCAN runs\b(?! USING)|Seq Scan on runs\b", plan) is None, plan


async def test_active_runs_are_the_waiting_queued_and_running_ones(
    store: SqlStore,
) -> None:
    job = await add_job(store, "a")
    idle = await add_job(store, "idle")
    waiting = await fire(store, job, NOW, state=RunState.WAITING)
    running = await fire(store, job, NOW + MINUTE)
    await claim(store, running)
    await fire(store, job, NOW + 2 * MINUTE, state=RunState.SKIPPED)
    queued = await fire(store, job, NOW + 3 * MINUTE)

    active = await store.active_runs([job.id, idle.id])

    assert [run.id for run in active[job.id]] == [waiting.id, running.id, queued.id]
    assert [run.state for run in active[job.id]] == [
        RunState.WAITING,
        RunState.RUNNING,
        RunState.QUEUED,
    ]
    assert active[idle.id] == []


async def test_count_runs_counts_every_state(store: SqlStore) -> None:
    job = await add_job(store)
    await fire(store, job, NOW)
    await fire(store, job, NOW + MINUTE)
    await fire(store, job, NOW + 2 * MINUTE, state=RunState.SKIPPED)

    counts = (await store.count_runs()).by_state

    assert counts[RunState.QUEUED] == 2
    assert counts[RunState.SKIPPED] == 1
    assert counts[RunState.FAILED] == 0
    assert set(counts) == set(RunState)


async def test_previous_final_run_is_the_latest_ended_before(store: SqlStore) -> None:
    job = await add_job(store)
    other = await add_job(store, "other")
    first = await fire(store, job, NOW, state=RunState.SKIPPED)
    await fire(store, other, NOW, state=RunState.SKIPPED)
    second = await fire(store, job, NOW + MINUTE, state=RunState.SKIPPED)
    active = await fire(store, job, NOW + 2 * MINUTE)
    latest = await fire(store, job, NOW + 3 * MINUTE)

    assert await store.previous_final_run(job.id, latest.id) == second
    assert await store.previous_final_run(job.id, second.id) == first
    assert await store.previous_final_run(job.id, first.id) is None
    assert active.state is RunState.QUEUED


async def test_cancel_of_a_queued_run_ends_it_at_once(store: SqlStore) -> None:
    run = await fire(store, await add_job(store))

    cancelled = await store.cancel_run(run.id, "by operator", NOW + MINUTE)

    assert (cancelled.state, cancelled.reason, cancelled.finished_at) == (
        RunState.CANCELLED,
        "by operator",
        NOW + MINUTE,
    )
    (attempt,) = cancelled.attempts
    assert (attempt.state, attempt.finished_at) == (
        AttemptState.CANCELLED,
        NOW + MINUTE,
    )
    assert await store.queued_attempts(10, 0) == []


async def test_cancel_of_a_pending_retry_clears_it(store: SqlStore) -> None:
    run = await fire(store, await add_job(store))
    await finish(store, await claim(store, run), retry_at(NOW + 5 * MINUTE))

    cancelled = await store.cancel_run(run.id, "not needed", NOW + MINUTE)

    assert (cancelled.state, cancelled.next_attempt_at) == (RunState.CANCELLED, None)
    assert await store.due_retries(NOW + 10 * MINUTE, 10) == []
    assert await store.start_retry(run.id, NOW + 10 * MINUTE) is None


async def test_cancel_of_a_running_run_asks_its_worker_to_stop(
    store: SqlStore,
) -> None:
    run = await fire(store, await add_job(store))
    attempt = await claim(store, run)
    other = await claim(store, await fire(store, await add_job(store, "other")))
    assert await store.cancel_requested([attempt.id, other.id]) == set()

    asked = await store.cancel_run(run.id, "too slow", NOW + MINUTE)

    assert (asked.state, asked.reason) == (RunState.RUNNING, "too slow")
    assert asked.attempts[0].state is AttemptState.RUNNING
    assert await store.cancel_requested([attempt.id, other.id]) == {attempt.id}

    stopped = await finish(
        store,
        attempt,
        ended(AttemptState.CANCELLED, RunState.CANCELLED),
        NOW + 2 * MINUTE,
    )
    assert stopped is not None
    assert (stopped.state, stopped.reason) == (RunState.CANCELLED, "too slow")
    # No longer running: nothing would record a further end, so it should stop too.
    assert await store.cancel_requested([attempt.id]) == {attempt.id}


async def test_attempts_of_a_deleted_job_are_asked_to_stop(store: SqlStore) -> None:
    job = await add_job(store)
    attempt = await claim(store, await fire(store, job))

    await store.delete_job(job.id)

    assert await store.cancel_requested([attempt.id]) == {attempt.id}


async def test_a_run_asked_to_stop_is_not_retried(store: SqlStore) -> None:
    run = await fire(store, await add_job(store))
    attempt = await claim(store, run)
    await store.cancel_run(run.id, "stop it", NOW)

    settled = await finish(store, attempt, retry_at(NOW + MINUTE))

    assert settled is not None
    assert (settled.state, settled.next_attempt_at, settled.reason) == (
        RunState.CANCELLED,
        None,
        "stop it",
    )


async def test_cancel_of_an_ended_run_changes_nothing(store: SqlStore) -> None:
    run = await fire(store, await add_job(store), state=RunState.SKIPPED)

    again = await store.cancel_run(run.id, "late request", NOW + MINUTE)

    assert again == run


async def test_prune_deletes_ended_runs_finished_before_the_instant(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    old = [
        await fire(store, job, NOW + i * MINUTE, state=RunState.SKIPPED, now=NOW)
        for i in range(3)
    ]
    finished = await fire(store, job, NOW + 3 * MINUTE)
    attempt = await claim(store, finished)
    await store.finish_attempts(
        [AttemptFinish(attempt.id, ended(), output="done")], NOW
    )
    recent = await fire(
        store, job, NOW + 4 * MINUTE, state=RunState.SKIPPED, now=NOW + 10 * MINUTE
    )
    active = await fire(store, job, NOW + 5 * MINUTE)

    assert await store.prune_runs(NOW + MINUTE, 2) == 2
    assert await store.prune_runs(NOW + MINUTE, 10) == 2
    assert await store.prune_runs(NOW + MINUTE, 10) == 0

    left = {run.id for run in (await store.list_runs(RunFilter(), 10, None)).items}
    assert left == {recent.id, active.id}
    assert all(run.id not in left for run in old)
    assert await row_count(store, attempt_outputs) == 0
    assert await row_count(store, attempts) == 1


# Attempts


async def test_claim_moves_the_attempt_and_its_run_to_running(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    run = await fire(store, job)
    attempt_id = run.attempts[0].id

    batch = await store.claim_attempts([attempt_id], "node-a", NOW + MINUTE, 10)

    (claimed,) = batch.claimed
    assert batch.deferred == []
    assert (claimed.attempt.state, claimed.attempt.node_id) == (
        AttemptState.RUNNING,
        "node-a",
    )
    assert claimed.attempt.started_at == NOW + MINUTE
    assert claimed.run.state is RunState.RUNNING
    assert claimed.job == job
    assert claimed.previous_run is None
    assert await store.get_run(run.id) == claimed.run
    assert await store.running_count() == 1


async def test_an_attempt_is_claimed_once(store: SqlStore) -> None:
    run = await fire(store, await add_job(store))
    attempt_id = run.attempts[0].id

    first = await store.claim_attempts([attempt_id, attempt_id], "node-a", NOW, 10)
    second = await store.claim_attempts([attempt_id], "node-b", NOW, 10)

    assert [c.attempt.id for c in first.claimed] == [attempt_id]
    assert (second.claimed, second.deferred) == ([], [])
    assert (await store.get_run(run.id)).attempts[0].node_id == "node-a"


async def test_claims_beyond_capacity_are_deferred(store: SqlStore) -> None:
    job = await add_job(store)
    made = [await fire(store, job, NOW + i * MINUTE) for i in range(4)]
    ids = [run.attempts[0].id for run in made]
    await store.claim_attempts(ids[:1], "node-a", NOW, 3)

    batch = await store.claim_attempts(ids[1:], "node-b", NOW, 3)

    assert [c.attempt.id for c in batch.claimed] == ids[1:3]
    assert batch.deferred == ids[3:]
    full = await store.claim_attempts(ids[3:], "node-b", NOW, 3)
    assert (full.claimed, full.deferred) == ([], ids[3:])


async def test_claims_of_cancelled_or_missing_attempts_are_dropped(
    store: SqlStore,
) -> None:
    run = await fire(store, await add_job(store))
    await store.cancel_run(run.id, "operator", NOW)

    batch = await store.claim_attempts([run.attempts[0].id, 404], "node-a", NOW, 10)

    assert (batch.claimed, batch.deferred) == ([], [])


async def test_a_claim_carries_the_previous_ended_run(store: SqlStore) -> None:
    job = await add_job(store)
    first = await fire(store, job, NOW)
    settled = await finish(store, await claim(store, first), ended())
    second = await fire(store, job, NOW + MINUTE)

    batch = await store.claim_attempts([second.attempts[0].id], "node-a", NOW, 10)

    assert batch.claimed[0].previous_run == settled


async def test_claim_and_finish_of_a_batch_take_a_few_statements(
    store: SqlStore, statements: StatementCounter
) -> None:
    job = await add_job(store)
    fires = [NewRun(job.id, Trigger.SCHEDULE, NOW + i * MINUTE) for i in range(200)]
    made = await store.record_fires([], fires, NOW)
    for run in made[:50]:  # so that previous runs exist to be looked up
        await finish(store, await claim(store, run), ended())
    ids = [run.attempts[0].id for run in made[50:]]

    statements.count = 0
    batch = await store.claim_attempts(ids, "node-a", NOW, 1000)
    assert len(batch.claimed) == 150
    assert statements.count <= 12

    statements.count = 0
    finishes = [AttemptFinish(i, ended(), output=f"out {i}") for i in ids]
    settled = (await store.finish_attempts(finishes, NOW + MINUTE)).runs
    assert all(run is not None and run.state is RunState.SUCCEEDED for run in settled)
    assert statements.count <= 8


async def test_an_ended_run_others_depend_on_is_dependency_work(
    store: SqlStore,
) -> None:
    upstream = await add_job(store, "extract")
    alone = await add_job(store, "alone")
    await add_job(store, "load", depends_on=("extract",))
    depended = await claim(store, await fire(store, upstream, NOW))
    lonely = await claim(store, await fire(store, alone, NOW))

    quiet = await store.finish_attempts([AttemptFinish(lonely.id, ended())], NOW)
    assert not quiet.dependency_work
    noted = await store.finish_attempts([AttemptFinish(depended.id, ended())], NOW)
    assert noted.dependency_work

    seen: list[list[int]] = []

    def planner(snapshot: Snapshot, now: datetime) -> Plan:
        seen.append([run.id for run in snapshot.successes])
        return Plan()

    passed = await store.resolve_dependencies(NOW, 100, planner)
    assert passed.worked
    assert seen == [[depended.run_id]]
    # Taken off the list by the pass: the next one finds nothing.
    assert not (await store.resolve_dependencies(NOW, 100, planner)).worked


async def test_a_linked_run_ending_after_the_link_is_dependency_work(
    store: SqlStore,
) -> None:
    upstream = await add_job(store, "extract")
    downstream = await add_job(store, "load", depends_on=("extract",))
    waiting = await fire(store, downstream, NOW, state=RunState.WAITING)
    running = await claim(store, await fire(store, upstream, NOW))
    # Nothing depends on extract's job any more, as far as the graph says...
    await store.update_job(
        downstream.id, replace(downstream.definition, depends_on=()), None, NOW
    )

    def link(snapshot: Snapshot, now: datetime) -> Plan:
        return Plan(links=[Link(waiting.id, upstream.id, running.run_id)])

    assert (await store.resolve_dependencies(NOW, 100, link)).worked
    # ... but the link marks the run: its end goes on the work list.
    finished = await store.finish_attempts([AttemptFinish(running.id, ended())], NOW)
    assert finished.dependency_work


async def test_a_link_to_a_run_that_already_ended_looks_at_the_waiting_run_again(
    store: SqlStore,
) -> None:
    upstream = await add_job(store, "extract")
    downstream = await add_job(store, "load", depends_on=("extract",))
    waiting = await fire(store, downstream, NOW, state=RunState.WAITING)
    done = await claim(store, await fire(store, upstream, NOW))
    await store.finish_attempts([AttemptFinish(done.id, ended())], NOW)
    # A pass that read the run as active links to it after it ended.
    seen: list[list[int]] = []

    def link_then_look(snapshot: Snapshot, now: datetime) -> Plan:
        seen.append([w.run.id for w in snapshot.waiting])
        if len(seen) == 1:
            return Plan(links=[Link(waiting.id, upstream.id, done.run_id)])
        return Plan()

    while (await store.resolve_dependencies(NOW, 100, link_then_look)).worked:
        pass
    # The first pass saw the new waiting run; a second one sees it again.
    assert seen == [[waiting.id], [waiting.id]]


async def test_a_retry_outcome_queues_the_run_again(store: SqlStore) -> None:
    run = await fire(store, await add_job(store))
    attempt = await claim(store, run)

    settled = await finish(store, attempt, retry_at(NOW + 5 * MINUTE), NOW + MINUTE)

    assert settled is not None
    assert (settled.state, settled.next_attempt_at, settled.finished_at) == (
        RunState.QUEUED,
        NOW + 5 * MINUTE,
        None,
    )
    (ended_attempt,) = settled.attempts
    assert (ended_attempt.state, ended_attempt.exit_code) == (AttemptState.FAILED, 1)
    assert ended_attempt.finished_at == NOW + MINUTE


async def test_a_final_outcome_ends_the_run_and_keeps_the_output(
    store: SqlStore,
) -> None:
    run = await fire(store, await add_job(store))
    attempt = await claim(store, run)
    outcome = ended(
        AttemptState.TIMED_OUT,
        RunState.TIMED_OUT,
        error="timed out after 90 s",
        reason="no retry left",
    )

    (settled,) = (
        await store.finish_attempts(
            [AttemptFinish(attempt.id, outcome, "...last lines", True)], NOW + MINUTE
        )
    ).runs

    assert settled is not None
    assert (settled.state, settled.reason, settled.finished_at) == (
        RunState.TIMED_OUT,
        "no retry left",
        NOW + MINUTE,
    )
    stored, output = await store.get_output(run.id, 1)
    assert (stored.state, stored.error, stored.output_truncated) == (
        AttemptState.TIMED_OUT,
        "timed out after 90 s",
        True,
    )
    assert output == "...last lines"


async def test_only_running_attempts_can_finish(store: SqlStore) -> None:
    job = await add_job(store)
    queued = await fire(store, job, NOW)
    running = await claim(store, await fire(store, job, NOW + MINUTE))

    finished = await store.finish_attempts(
        [
            AttemptFinish(queued.attempts[0].id, ended()),
            AttemptFinish(running.id, ended()),
            AttemptFinish(running.id, ended(AttemptState.FAILED, RunState.FAILED)),
            AttemptFinish(404, ended()),
        ],
        NOW,
    )
    results = finished.runs

    assert results[0] is None
    assert results[1] is not None
    assert results[1].state is RunState.SUCCEEDED
    assert results[2:] == [None, None]
    assert await finish(store, running, ended()) is None
    assert (await store.get_run(queued.id)).state is RunState.QUEUED


async def test_retries_get_the_next_attempt_number(store: SqlStore) -> None:
    run = await fire(store, await add_job(store))
    await finish(store, await claim(store, run), retry_at(NOW + MINUTE))
    assert await store.due_retries(NOW, 10) == []

    (due,) = await store.due_retries(NOW + MINUTE, 10)
    queued = await store.start_retry(due.id, NOW + MINUTE)

    assert queued is not None
    assert (queued.run_id, queued.number) == (run.id, 2)
    assert await store.start_retry(due.id, NOW + MINUTE) is None
    assert await store.queued_attempts(10, 0) == [queued]
    after = await store.get_run(run.id)
    assert (after.state, after.next_attempt_at) == (RunState.QUEUED, None)
    assert [a.number for a in after.attempts] == [1, 2]


async def test_queued_attempts_page_by_id(store: SqlStore) -> None:
    job = await add_job(store)
    made = [await fire(store, job, NOW + i * MINUTE) for i in range(5)]
    await claim(store, made[1])
    ids = [run.attempts[0].id for run in made]

    first = await store.queued_attempts(2, 0)
    rest = await store.queued_attempts(10, first[-1].attempt_id)

    assert [q.attempt_id for q in first] == [ids[0], ids[2]]
    assert [q.attempt_id for q in rest] == ids[3:]
    assert (rest[0].run_id, rest[0].number) == (made[3].id, 1)


async def test_running_attempts_of_one_node_or_all(store: SqlStore) -> None:
    job = await add_job(store)
    on_a = await claim(store, await fire(store, job, NOW), "node-a")
    on_b = await claim(store, await fire(store, job, NOW + MINUTE), "node-b")
    await fire(store, job, NOW + 2 * MINUTE)

    of_a = await store.running_attempts("node-a")
    everywhere = await store.running_attempts(None)

    assert [(r.attempt.id, r.run.id, r.job.id) for r in of_a] == [
        (on_a.id, on_a.run_id, job.id)
    ]
    assert [r.attempt.id for r in everywhere] == [on_a.id, on_b.id]
    assert await store.running_count() == 2


async def test_saved_output_is_the_live_tail_until_the_attempt_ends(
    store: SqlStore,
) -> None:
    run = await fire(store, await add_job(store))
    attempt = await claim(store, run)
    assert await store.get_output(run.id, 1) == (attempt, "")

    await store.save_outputs([(attempt.id, "line 1", False)])
    await store.save_outputs([(attempt.id, "line 1\nline 2", False)])
    assert (await store.get_output(run.id, 1))[1] == "line 1\nline 2"

    await store.finish_attempts([AttemptFinish(attempt.id, ended(), "all")], NOW)
    await store.save_outputs([(attempt.id, "stale tail", False), (404, "x", False)])
    assert (await store.get_output(run.id, 1))[1] == "all"
    with pytest.raises(NotFoundError):
        await store.get_output(run.id, 2)


async def test_ping_answers(store: SqlStore) -> None:
    await store.ping()


async def test_writers_in_one_process_take_turns(store: SqlStore) -> None:
    await asyncio.gather(*(add_job(store, f"job-{i}") for i in range(30)))

    assert (await store.count_jobs()).enabled == 30


# SQLite and migrations


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    """Yield a migrated SQLite store, for the checks of SQLite's own settings."""
    opened = await open_store(f"sqlite:///{tmp_path / 'data' / 'socmeth.db'}")
    try:
        yield opened
    finally:
        await opened.close()


async def test_reads_do_not_wait_for_the_write_lock(sqlite_store: SqlStore) -> None:
    store = sqlite_store
    job = await add_job(store)

    async with store._write_lock:
        assert await asyncio.wait_for(store.get_job(job.id), timeout=5) == job


async def test_sqlite_writes_take_the_write_lock_at_begin(
    sqlite_store: SqlStore,
) -> None:
    store = sqlite_store
    sent: list[str] = []
    event.listen(
        store.engine.sync_engine,
        "before_cursor_execute",
        lambda _conn, _cursor, sql, *_: sent.append(sql),
    )

    job = await add_job(store)
    await store.get_job(job.id)

    assert [sql for sql in sent if sql.startswith("BEGIN")] == [
        "BEGIN IMMEDIATE",
        "BEGIN",
    ]


async def test_two_stores_on_one_file_write_without_busy_errors(
    sqlite_store: SqlStore,
) -> None:
    store = sqlite_store
    url = store.engine.url.render_as_string(hide_password=False)
    other = await open_store(url, migrate_first=False)
    made = [await add_job(s, f"job-{i}") for i, s in enumerate((store, other) * 5)]

    async def fire_all(on: SqlStore, offset: int) -> None:
        for job in made[offset::2]:
            for minute in range(5):
                scheduled_at = NOW + minute * MINUTE
                advance = FireAdvance(job.id, scheduled_at, scheduled_at + MINUTE)
                fires = [NewRun(job.id, Trigger.SCHEDULE, scheduled_at)]
                await on.record_fires([advance], fires, NOW)

    try:
        await asyncio.gather(fire_all(store, 0), fire_all(other, 1))
    finally:
        await other.close()

    assert await row_count(store, runs) == 50


async def test_sqlite_connections_use_wal_and_the_store_pragmas(
    sqlite_store: SqlStore,
) -> None:
    store = sqlite_store
    async with store.engine.connect() as conn:
        values = [
            (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
            for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
        ]

    # synchronous: 1 is NORMAL.
    assert values == ["wal", 1, 1, 5000]


async def query_plan(store: SqlStore, statement: Select[*tuple[Any, ...]]) -> str:
    async with store.engine.connect() as conn:
        compiled = statement.compile(
            dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
        )
        nulls = tuple(None for _ in compiled.positiontup or ())
        result = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", nulls)
        return "\n".join(str(row[-1]) for row in result)


def assert_no_table_scan(plan: str) -> None:
    assert re.search(r"\bSCAN (jobs|runs|attempts)\b", plan) is None, plan
    assert "TEMP B-TREE" not in plan, plan


async def test_the_due_query_is_a_range_scan_of_the_next_fire_index(
    sqlite_store: SqlStore,
) -> None:
    store = sqlite_store

    plan = await query_plan(store, due_jobs_statement(NOW, 100))

    assert "SEARCH jobs USING INDEX ix_jobs_next_fire_at (next_fire_at<?)" in plan
    assert_no_table_scan(plan)


@pytest.mark.parametrize(
    ("statement", "indexes"),
    [
        (
            next_due_statement(),
            ["ix_jobs_next_fire_at", "ix_runs_state_next_attempt_at"],
        ),
        (due_retries_statement(NOW, 100), ["ix_runs_state_next_attempt_at"]),
        (prunable_runs_statement(NOW, 100), ["ix_runs_finished_at"]),
    ],
    ids=["next-due", "due-retries", "prune"],
)
async def test_scheduler_queries_read_indexes_only(
    sqlite_store: SqlStore, statement: Select[*tuple[Any, ...]], indexes: list[str]
) -> None:
    store = sqlite_store

    plan = await query_plan(store, statement)

    for index in indexes:
        assert re.search(rf"SEARCH \w+ USING (COVERING )?INDEX {index} ", plan), plan
    assert_no_table_scan(plan)


async def test_ping_raises_store_error_when_the_file_is_no_database(
    tmp_path: Path,
) -> None:
    # A file that cannot be opened at all is not used here: aiosqlite then stops
    # its thread after the test's event loop closed, which pytest reports.
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not an SQLite database, " * 100)
    store = SqlStore(create_store_engine(f"sqlite:///{garbage}"))
    try:
        with pytest.raises(StoreError, match="file is not a database"):
            await store.ping()
    finally:
        await store.close()


def test_migrate_raises_store_error_when_the_file_is_no_database(
    tmp_path: Path,
) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not an SQLite database, " * 100)

    with pytest.raises(StoreError, match="migrating the store failed"):
        migrate(f"sqlite:///{garbage}")


async def test_migrations_build_the_schema_on_an_empty_database_once(
    store_url: str,
) -> None:
    migrate(store_url)
    migrate(store_url)

    store = await open_store(store_url)
    try:
        async with store.engine.connect() as conn:
            version = (
                await conn.execute(text("SELECT version_num FROM alembic_version"))
            ).all()
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync), metadata
                )
            )
    finally:
        await store.close()

    assert version == [(head_revision(),)]
    assert diff == []


def test_offline_migration_renders_the_schema_as_sql(tmp_path: Path) -> None:
    config = alembic_config(f"sqlite:///{tmp_path / 'unused.db'}")
    config.output_buffer = io.StringIO()

    command.upgrade(config, "head", sql=True)

    rendered = config.output_buffer.getvalue()
    assert "CREATE TABLE runs" in rendered
    assert "CONSTRAINT uq_runs_job_id_scheduled_at UNIQUE (job_id, scheduled_at)" in (
        rendered
    )
    assert not (tmp_path / "unused.db").exists()


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("sqlite:////var/lib/socmeth/db", "sqlite+aiosqlite:////var/lib/socmeth/db"),
        ("postgresql://u:p@db/socmeth", "postgresql+asyncpg://u:p@db/socmeth"),
        ("postgres://u@db/socmeth", "postgresql+asyncpg://u@db/socmeth"),
        ("postgresql+asyncpg://db/socmeth", "postgresql+asyncpg://db/socmeth"),
    ],
    ids=["sqlite", "postgresql", "postgres-alias", "already-async"],
)
def test_store_urls_map_to_async_drivers(configured: str, expected: str) -> None:
    rendered = async_url(configured).render_as_string(hide_password=False)

    assert rendered == expected


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///:memory:", "mysql://db/socmeth"],
    ids=["sqlite-default", "sqlite-memory", "unknown-scheme"],
)
async def test_unsupported_store_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        await open_store(url)

    assert raised.value.key == "database.url"


async def test_create_run_under_forbid_refuses_while_the_job_is_busy(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    busy = await store.create_run(NewRun(job.id, Trigger.MANUAL, None), NOW)

    with pytest.raises(ConflictError, match=f"active run \\({busy.id}"):
        await store.create_run(
            NewRun(job.id, Trigger.MANUAL, None), NOW, concurrency=Concurrency.FORBID
        )

    assert len((await store.active_runs([job.id]))[job.id]) == 1


async def test_concurrent_create_runs_under_forbid_make_exactly_one(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    attempts = [
        store.create_run(
            NewRun(job.id, Trigger.MANUAL, None), NOW, concurrency=Concurrency.FORBID
        )
        for _ in range(20)
    ]

    results = await asyncio.gather(*attempts, return_exceptions=True)

    assert sum(isinstance(r, Run) for r in results) == 1
    assert all(isinstance(r, Run | ConflictError) for r in results)


async def test_create_run_under_replace_cancels_queued_and_stops_running_runs(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    queued = await store.create_run(NewRun(job.id, Trigger.MANUAL, None), NOW)
    running = await store.create_run(NewRun(job.id, Trigger.MANUAL, None), NOW)
    attempt = await claim(store, running)

    newest = await store.create_run(
        NewRun(job.id, Trigger.MANUAL, None), NOW, concurrency=Concurrency.REPLACE
    )

    assert (await store.get_run(queued.id)).state is RunState.CANCELLED
    assert await store.cancel_requested([attempt.id]) == {attempt.id}
    active = {r.id for r in (await store.active_runs([job.id]))[job.id]}
    assert active == {running.id, newest.id}


async def test_queued_count_counts_attempts_waiting_for_a_worker(
    store: SqlStore,
) -> None:
    first = await fire(store, await add_job(store, "one"))
    await fire(store, await add_job(store, "two"))
    assert await store.queued_count() == 2

    await claim(store, first)

    assert await store.queued_count() == 1


# Cluster: heartbeats and the leader lease (zero TTLs stand in for lapsed leases)


def beat(node_id: str, running: int = 0) -> NodeBeat:
    return NodeBeat(node_id, f"{node_id}:8080", "0.1.0", NOW, running)


async def test_heartbeats_record_each_node_at_the_store_clock(store: SqlStore) -> None:
    first = await store.heartbeat(beat("b"))
    await store.heartbeat(beat("a", running=3))
    later = await store.heartbeat(beat("b", running=1))

    now, records = await store.list_nodes()
    assert [r.id for r in records] == ["a", "b"]
    b = records[1]
    assert (b.address, b.running, b.stopped_at) == ("b:8080", 1, None)
    assert b.last_heartbeat_at == later
    assert first <= later <= now


async def test_a_node_that_stopped_reads_stopped_until_it_beats_again(
    store: SqlStore,
) -> None:
    await store.heartbeat(beat("a"))
    await store.mark_stopped("a")
    (stopped,) = (await store.list_nodes())[1]
    assert stopped.stopped_at is not None

    await store.heartbeat(beat("a"))
    (again,) = (await store.list_nodes())[1]
    assert again.stopped_at is None


async def test_the_lease_is_taken_renewed_and_refused_to_others(
    store: SqlStore,
) -> None:
    _, empty = await store.current_lease()
    assert (empty.holder, empty.term) == (None, 0)

    taken = await store.acquire_lease("a", timedelta(seconds=60))
    assert taken is not None
    assert (taken.holder, taken.term) == ("a", 1)
    renewed = await store.acquire_lease("a", timedelta(seconds=90))
    assert renewed is not None
    assert renewed.term == 1
    assert renewed.expires_at is not None
    assert taken.expires_at is not None
    assert renewed.expires_at > taken.expires_at

    assert await store.acquire_lease("b", timedelta(seconds=60)) is None
    now, stored = await store.current_lease()
    assert stored == renewed
    assert stored.held_by("a", now)
    assert not stored.held_by("b", now)


async def test_a_lapsed_lease_goes_to_the_next_node_in_a_new_term(
    store: SqlStore,
) -> None:
    assert await store.acquire_lease("a", timedelta(0)) is not None  # lapses at once

    taken = await store.acquire_lease("b", timedelta(seconds=60))
    assert taken is not None
    assert (taken.holder, taken.term) == ("b", 2)
    # The old holder cannot renew what it lost.
    assert await store.acquire_lease("a", timedelta(seconds=60)) is None


async def test_releasing_the_lease_hands_it_over_at_once_but_only_in_its_term(
    store: SqlStore,
) -> None:
    first = await store.acquire_lease("a", timedelta(seconds=60))
    assert first is not None
    await store.release_lease("a", first.term + 1)  # a stale term: nothing
    assert await store.acquire_lease("b", timedelta(seconds=60)) is None

    await store.release_lease("a", first.term)
    taken = await store.acquire_lease("b", timedelta(seconds=60))
    assert taken is not None
    assert taken.term == first.term + 1


async def test_a_holder_renews_its_lapsed_lease_in_its_term_if_nobody_took_it(
    store: SqlStore,
) -> None:
    first = await store.acquire_lease("a", timedelta(0))  # lapses at once
    assert first is not None

    renewed = await store.acquire_lease("a", timedelta(seconds=60))

    assert renewed is not None
    assert renewed.term == first.term


async def _lost_lease(store: SqlStore) -> tuple[Fence, Fence]:
    """Let "a" lead in a lease that lapses at once and "b" take it over."""
    first = await store.acquire_lease("a", timedelta(0))
    assert first is not None
    second = await store.acquire_lease("b", timedelta(seconds=60))
    assert second is not None
    return Fence("a", first.term), Fence("b", second.term)


async def test_fires_are_written_only_under_the_lease_they_were_planned_in(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    stale, current = await _lost_lease(store)
    advance = [FireAdvance(job.id, NOW, NOW + MINUTE)]
    fire_run = [NewRun(job.id, Trigger.SCHEDULE, NOW)]

    with pytest.raises(FencedError) as refused:
        await store.record_fires(advance, fire_run, NOW, fence=stale)
    assert "lease is now b's in term 2" in str(refused.value)
    assert (await store.get_job(job.id)).next_fire_at == NOW  # nothing written

    assert len(await store.record_fires(advance, fire_run, NOW, fence=current)) == 1


async def test_every_leader_write_refuses_a_stale_fence(store: SqlStore) -> None:
    job = await add_job(store, retries=1)
    await add_job(store, "after", depends_on=("backup",))
    run = await fire(store, job, NOW)
    attempt = await claim(store, run)
    await finish(store, attempt, retry_at(NOW))
    stale, _ = await _lost_lease(store)

    with pytest.raises(FencedError):
        await store.start_retry(run.id, NOW, fence=stale)
    with pytest.raises(FencedError):
        await store.cancel_run(run.id, "replaced by a newer fire", NOW, fence=stale)
    with pytest.raises(FencedError):
        await store.prune_runs(NOW + timedelta(days=1), 10, fence=stale)
    after = await store.get_job_by_name("after")
    waiting = await fire(store, after, NOW, state=RunState.WAITING)
    with pytest.raises(FencedError):
        await store.resolve_dependencies(NOW, 10, plan_dependencies, fence=stale)

    assert (await store.get_run(run.id)).state is RunState.QUEUED
    assert len((await store.get_run(run.id)).attempts) == 1
    assert (await store.get_run(waiting.id)).state is RunState.WAITING


# Cluster: orphaned attempts and the reaper's conditional finish. Heartbeats are
# dated back by hand where a test needs a node that fell silent: the store's clock
# is PostgreSQL's own on that backend, and no test can move it.


def lost(error: str = "node gone stopped answering") -> AttemptOutcome:
    return ended(AttemptState.LOST, RunState.FAILED, error=error)


async def date_last_heartbeat(store: SqlStore, node_id: str, at: datetime) -> None:
    """Move a node's last heartbeat back to `at`, as if it had fallen silent then."""
    async with store.engine.begin() as conn:
        await conn.execute(
            update(nodes).where(nodes.c.id == node_id).values(last_heartbeat_at=at)
        )


async def test_orphaned_attempts_are_those_of_silent_stopped_and_unknown_nodes(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    alive_at = await store.heartbeat(beat("alive"))
    await store.heartbeat(beat("silent"))
    await date_last_heartbeat(store, "silent", alive_at - MINUTE)
    await store.heartbeat(beat("stopped"))  # beat last, so only its stop counts
    await store.mark_stopped("stopped")
    made = [await fire(store, job, NOW + i * MINUTE) for i in range(6)]
    # Claimed out of id order: the order returned is the attempts', not the claims'.
    on_silent = await claim(store, made[3], "silent")
    await claim(store, made[0], "alive")
    on_unknown = await claim(store, made[2], "never-beat")
    on_stopped = await claim(store, made[1], "stopped")
    await finish(store, await claim(store, made[4], "silent"), ended())
    # made[5] stays queued: it has no node

    orphans = await store.orphaned_attempts(alive_at, 10)

    assert [o.attempt.id for o in orphans] == [
        on_stopped.id,
        on_unknown.id,
        on_silent.id,
    ]
    first = orphans[0]
    assert (first.attempt.node_id, first.attempt.state) == (
        "stopped",
        AttemptState.RUNNING,
    )
    assert (first.run.id, first.run.state, first.job.id) == (
        made[1].id,
        RunState.RUNNING,
        job.id,
    )


async def test_orphaned_attempts_come_oldest_first_up_to_the_limit(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    made = [await fire(store, job, NOW + i * MINUTE) for i in range(4)]
    for run in reversed(made):
        await claim(store, run, "never-beat")
    ids = [run.attempts[0].id for run in made]
    since = await store.store_now()

    assert [o.attempt.id for o in await store.orphaned_attempts(since, 3)] == ids[:3]
    assert [o.attempt.id for o in await store.orphaned_attempts(since, 1)] == ids[:1]


async def test_orphaned_attempts_leave_out_those_of_the_node_named(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    await claim(store, await fire(store, job, NOW), "leader")
    other = await claim(store, await fire(store, job, NOW + MINUTE), "other")
    since = await store.store_now()

    orphans = await store.orphaned_attempts(since, 10, except_node="leader")

    assert [o.attempt.id for o in orphans] == [other.id]
    assert len(await store.orphaned_attempts(since, 10)) == 2


async def test_a_node_is_silent_only_once_its_last_heartbeat_is_before_the_instant(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    beaten_at = await store.heartbeat(beat("a"))
    attempt = await claim(store, await fire(store, job), "a")

    assert await store.orphaned_attempts(beaten_at, 10) == []
    (orphan,) = await store.orphaned_attempts(beaten_at + timedelta(microseconds=1), 10)
    assert orphan.attempt.id == attempt.id


async def test_a_reaping_finish_is_refused_for_a_node_that_beat_after_silent_since(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    await store.heartbeat(beat("gone"))
    await store.heartbeat(beat("back"))
    on_gone = await claim(store, await fire(store, job, NOW), "gone")
    on_back = await claim(store, await fire(store, job, NOW + MINUTE), "back")
    silent_since = await store.store_now()
    for node_id in ("gone", "back"):
        await date_last_heartbeat(store, node_id, silent_since - MINUTE)
    assert len(await store.orphaned_attempts(silent_since, 10)) == 2
    await store.heartbeat(beat("back"))  # between the reaper's read and its write

    finished = await store.finish_attempts(
        [AttemptFinish(on_back.id, lost()), AttemptFinish(on_gone.id, lost())],
        NOW + MINUTE,
        silent_since=silent_since,
    )

    refused, kept = finished.runs
    assert refused is None
    assert kept is not None
    assert (kept.id, kept.state) == (on_gone.run_id, RunState.FAILED)
    assert kept.attempts[0].error == "node gone stopped answering"
    untouched = await store.get_run(on_back.run_id)
    assert untouched.state is RunState.RUNNING
    assert [(a.state, a.error, a.finished_at) for a in untouched.attempts] == [
        (AttemptState.RUNNING, None, None)
    ]


async def test_a_finish_without_silent_since_ignores_the_nodes_heartbeats(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    await store.heartbeat(beat("a"))
    attempt = await claim(store, await fire(store, job), "a")

    assert await finish(store, attempt, ended()) is not None


async def test_a_reaping_finish_under_a_stale_fence_raises_and_writes_nothing(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    attempt = await claim(store, await fire(store, job), "never-beat")
    stale, current = await _lost_lease(store)
    reaping = [AttemptFinish(attempt.id, lost(), "tail")]
    silent_since = await store.store_now()

    with pytest.raises(FencedError):
        await store.finish_attempts(
            reaping, NOW, silent_since=silent_since, fence=stale
        )

    run = await store.get_run(attempt.run_id)
    assert (run.state, run.attempts[0].state) == (
        RunState.RUNNING,
        AttemptState.RUNNING,
    )
    assert (await store.get_output(run.id, 1))[1] == ""
    (settled,) = (
        await store.finish_attempts(
            reaping, NOW, silent_since=silent_since, fence=current
        )
    ).runs
    assert settled is not None
    assert settled.state is RunState.FAILED


async def test_queued_attempts_before_an_instant_leave_out_those_queued_since(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    made = [
        await fire(store, job, NOW + i * MINUTE, now=NOW + i * MINUTE) for i in range(3)
    ]
    ids = [run.attempts[0].id for run in made]

    def attempt_ids(queued: list[QueuedAttempt]) -> list[int]:
        return [q.attempt_id for q in queued]

    assert await store.queued_attempts(10, 0, NOW) == []
    # Queued at the instant itself is not before it.
    assert attempt_ids(await store.queued_attempts(10, 0, NOW + MINUTE)) == ids[:1]
    everything = NOW + 2 * MINUTE + timedelta(microseconds=1)
    assert attempt_ids(await store.queued_attempts(10, 0, everything)) == ids
    assert attempt_ids(await store.queued_attempts(1, ids[0], everything)) == ids[1:2]
    assert attempt_ids(await store.queued_attempts(10, 0)) == ids


async def test_queued_before_reads_when_the_attempt_was_queued_not_its_run(
    store: SqlStore,
) -> None:
    run = await fire(store, await add_job(store), NOW, now=NOW)
    await finish(store, await claim(store, run), retry_at(NOW + MINUTE))
    retried = await store.start_retry(run.id, NOW + 5 * MINUTE)
    assert retried is not None

    assert await store.queued_attempts(10, 0, NOW + 5 * MINUTE) == []
    assert await store.queued_attempts(
        10, 0, NOW + 5 * MINUTE + timedelta(microseconds=1)
    ) == [retried]


async def test_forget_nodes_deletes_silent_rows_but_not_those_running_attempts(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    await store.heartbeat(beat("gone"))
    await store.heartbeat(beat("busy"))
    await claim(store, await fire(store, job), "busy")
    store_now = await store.store_now()

    assert await store.forget_nodes(store_now - timedelta(hours=1)) == 0
    assert await store.forget_nodes(store_now + timedelta(seconds=1)) == 1

    _, records = await store.list_nodes()
    assert [r.id for r in records] == ["busy"]


async def test_forget_nodes_refuses_a_stale_fence(store: SqlStore) -> None:
    await store.heartbeat(beat("gone"))
    lease = await store.acquire_lease("leader", timedelta(seconds=60))
    assert lease is not None

    with pytest.raises(FencedError):
        await store.forget_nodes(
            await store.store_now() + timedelta(seconds=1),
            fence=Fence("leader", lease.term - 1),
        )

    _, records = await store.list_nodes()
    assert [r.id for r in records] == ["gone"]


async def end_run_at(
    store: SqlStore, job: Job, finished_at: datetime, state: RunState
) -> None:
    """Fire, claim and end a run of `job` at `finished_at` in `state`."""
    attempt_state = {
        RunState.SUCCEEDED: AttemptState.SUCCEEDED,
        RunState.TIMED_OUT: AttemptState.TIMED_OUT,
    }.get(state, AttemptState.FAILED)
    run = await fire(store, job, finished_at, now=finished_at)
    await finish(
        store, await claim(store, run), ended(attempt_state, state), finished_at
    )


async def test_ended_runs_by_bucket_counts_ends_and_failures_per_bucket(
    store: SqlStore,
) -> None:
    job = await add_job(store)
    hour = timedelta(hours=1)
    since = NOW - 3 * hour
    await end_run_at(store, job, since - MINUTE, RunState.FAILED)  # before the range
    await end_run_at(store, job, since, RunState.SUCCEEDED)
    await end_run_at(store, job, since + 59 * MINUTE, RunState.FAILED)
    await end_run_at(store, job, since + 2 * hour, RunState.TIMED_OUT)
    await end_run_at(store, job, since + 2 * hour + MINUTE, RunState.SUCCEEDED)
    await end_run_at(store, job, NOW, RunState.FAILED)  # the range's end, left out
    await fire(store, job, NOW + MINUTE)  # queued: not ended

    buckets = await store.ended_runs_by_bucket(since, hour, 3)

    assert [(b.start_at, b.ended, b.failed) for b in buckets] == [
        (since, 2, 1),
        (since + hour, 0, 0),
        (since + 2 * hour, 2, 1),
    ]


async def test_ended_runs_by_bucket_with_one_bucket_or_none(store: SqlStore) -> None:
    job = await add_job(store)
    await end_run_at(store, job, NOW, RunState.UPSTREAM_FAILED)

    (single,) = await store.ended_runs_by_bucket(NOW - MINUTE, 2 * MINUTE, 1)

    assert (single.ended, single.failed) == (1, 1)
    assert await store.ended_runs_by_bucket(NOW, MINUTE, 0) == []


async def test_the_ended_buckets_query_is_a_range_scan_of_the_finish_index(
    sqlite_store: SqlStore,
) -> None:
    statement = ended_buckets_statement(
        NOW - timedelta(hours=24), timedelta(hours=1), 24
    )

    plan = await query_plan(sqlite_store, statement)

    assert (
        "SEARCH runs USING INDEX ix_runs_finished_at (finished_at>? AND finished_at<?)"
        in plan
    )
    assert re.search(r"\bSCAN runs\b", plan) is None, plan


# Users, API tokens and audit records (AuthStore). These run on the SQL backends
# and on the in-process MemoryAuthStore that unit tests use, so that the fake keeps
# the contract too.


@pytest.fixture(params=["memory", *sorted(BACKENDS)])
async def auth_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AuthStore]:
    """Yield an empty AuthStore of every kind; a SQL one must give back every
    connection."""
    if request.param == "memory":
        yield MemoryAuthStore()
        return
    async with BACKENDS[request.param](tmp_path) as url:
        opened = await open_store(url)
        try:
            yield opened
        finally:
            checked_out = opened.engine.pool.checkedout()  # type: ignore[attr-defined]
            await opened.close()
        assert checked_out == 0, f"{checked_out} connections were never given back"


def new_user(name: str = "alice", role: Role = Role.ADMIN) -> NewUser:
    return NewUser(name, role, f"$argon2id$v=19$m=8,t=1,p=1$salt${name}")


def new_token(name: str = "ci-deploy", role: Role = Role.OPERATOR) -> NewApiToken:
    return NewApiToken(name, role, f"{name:0>64}"[-64:], "alice")


async def test_a_user_is_stored_and_read_back_by_name(auth_store: AuthStore) -> None:
    created = await auth_store.create_user(new_user("alice", Role.OPERATOR), NOW)

    read = await auth_store.get_user("alice")

    assert read == created
    assert (read.name, read.role) == ("alice", Role.OPERATOR)
    assert read.password_hash == new_user("alice").password_hash
    assert read.created_at == read.updated_at == NOW
    assert read.created_at.tzinfo is UTC


async def test_users_are_listed_by_name(auth_store: AuthStore) -> None:
    for name in ("carol", "alice", "bob"):
        await auth_store.create_user(new_user(name), NOW)

    listed = await auth_store.list_users()

    assert [user.name for user in listed] == ["alice", "bob", "carol"]
    assert len({user.id for user in listed}) == 3


async def test_a_taken_user_name_is_a_conflict_naming_the_field(
    auth_store: AuthStore,
) -> None:
    await auth_store.create_user(new_user("alice", Role.ADMIN), NOW)

    with pytest.raises(ConflictError, match="alice") as raised:
        await auth_store.create_user(new_user("alice", Role.VIEWER), NOW + MINUTE)

    assert raised.value.field == "name"
    (kept,) = await auth_store.list_users()
    assert (kept.role, kept.created_at) == (Role.ADMIN, NOW)


async def test_an_unknown_user_is_not_found_naming_it(auth_store: AuthStore) -> None:
    with pytest.raises(NotFoundError, match="'nobody'"):
        await auth_store.get_user("nobody")
    with pytest.raises(NotFoundError, match="'nobody'"):
        await auth_store.update_user("nobody", NOW, role=Role.VIEWER)
    with pytest.raises(NotFoundError, match="'nobody'"):
        await auth_store.delete_user("nobody")


async def test_updating_a_user_changes_what_is_given_and_moves_updated_at(
    auth_store: AuthStore,
) -> None:
    await auth_store.create_user(new_user("admin"), NOW)
    await auth_store.create_user(new_user("bob", Role.VIEWER), NOW)

    by_role = await auth_store.update_user("bob", NOW + MINUTE, role=Role.OPERATOR)
    by_hash = await auth_store.update_user("bob", NOW + 2 * MINUTE, password_hash="h2")
    touched = await auth_store.update_user("bob", NOW + 3 * MINUTE)

    assert (by_role.role, by_role.password_hash) == (
        Role.OPERATOR,
        new_user("bob").password_hash,
    )
    assert (by_hash.role, by_hash.password_hash) == (Role.OPERATOR, "h2")
    assert touched.updated_at == NOW + 3 * MINUTE
    assert touched.created_at == NOW
    assert await auth_store.get_user("bob") == touched


async def test_a_deleted_user_is_gone(auth_store: AuthStore) -> None:
    await auth_store.create_user(new_user("admin"), NOW)
    await auth_store.create_user(new_user("bob", Role.VIEWER), NOW)

    await auth_store.delete_user("bob")

    assert [user.name for user in await auth_store.list_users()] == ["admin"]
    with pytest.raises(NotFoundError):
        await auth_store.get_user("bob")


async def test_the_last_admin_can_be_neither_removed_nor_demoted(
    auth_store: AuthStore,
) -> None:
    await auth_store.create_user(new_user("root", Role.ADMIN), NOW)
    await auth_store.create_user(new_user("bob", Role.VIEWER), NOW)

    with pytest.raises(ConflictError, match="only admin") as removed:
        await auth_store.delete_user("root")
    with pytest.raises(ConflictError, match="only admin") as demoted:
        await auth_store.update_user("root", NOW + MINUTE, role=Role.OPERATOR)

    assert removed.value.field == demoted.value.field == "role"
    root = await auth_store.get_user("root")
    assert (root.role, root.updated_at) == (Role.ADMIN, NOW)
    await auth_store.update_user("root", NOW + MINUTE, role=Role.ADMIN)  # stays admin


async def test_an_admin_may_go_while_another_remains(auth_store: AuthStore) -> None:
    await auth_store.create_user(new_user("root", Role.ADMIN), NOW)
    await auth_store.create_user(new_user("second", Role.ADMIN), NOW)

    await auth_store.update_user("second", NOW + MINUTE, role=Role.VIEWER)
    await auth_store.update_user("second", NOW + MINUTE, role=Role.ADMIN)
    await auth_store.delete_user("second")

    assert [user.name for user in await auth_store.list_users()] == ["root"]


async def test_concurrent_removals_of_the_last_two_admins_leave_one(
    auth_store: AuthStore,
) -> None:
    await auth_store.create_user(new_user("one", Role.ADMIN), NOW)
    await auth_store.create_user(new_user("two", Role.ADMIN), NOW)

    results = await asyncio.gather(
        auth_store.delete_user("one"),
        auth_store.delete_user("two"),
        return_exceptions=True,
    )

    refused = [r for r in results if isinstance(r, ConflictError)]
    assert len(refused) == 1, results
    (left,) = await auth_store.list_users()
    assert left.role is Role.ADMIN


async def test_hashes_stay_out_of_the_repr_of_users_and_tokens(
    auth_store: AuthStore,
) -> None:
    user = await auth_store.create_user(new_user("alice"), NOW)
    token = await auth_store.create_api_token(new_token(), NOW)

    assert user.password_hash not in repr(user)
    assert token.token_hash not in repr(token)
    assert "salt" not in repr(new_user("alice"))


async def test_an_api_token_is_stored_and_found_by_its_hash(
    auth_store: AuthStore,
) -> None:
    wanted = NewApiToken("ci", Role.VIEWER, "a" * 64, "alice", NOW + MINUTE)
    created = await auth_store.create_api_token(wanted, NOW)

    found = await auth_store.find_api_token("a" * 64)

    assert found == created == await auth_store.get_api_token(created.id)
    assert (created.name, created.role, created.created_by) == (
        "ci",
        Role.VIEWER,
        "alice",
    )
    assert (created.created_at, created.expires_at) == (NOW, NOW + MINUTE)
    assert created.last_used_at is None
    assert created.revoked_at is None
    assert await auth_store.find_api_token("b" * 64) is None


async def test_an_unknown_api_token_id_is_not_found(auth_store: AuthStore) -> None:
    with pytest.raises(NotFoundError, match="12345"):
        await auth_store.get_api_token(12345)
    with pytest.raises(NotFoundError, match="12345"):
        await auth_store.revoke_api_token(12345, NOW)


async def test_api_tokens_are_listed_by_name_with_or_without_revoked_ones(
    auth_store: AuthStore,
) -> None:
    for name in ("zeta", "alpha", "mid"):
        await auth_store.create_api_token(new_token(name), NOW)
    mid = next(t for t in await auth_store.list_api_tokens() if t.name == "mid")
    await auth_store.revoke_api_token(mid.id, NOW + MINUTE)

    every = await auth_store.list_api_tokens()
    usable = await auth_store.list_api_tokens(include_revoked=False)

    assert [t.name for t in every] == ["alpha", "mid", "zeta"]
    assert [t.name for t in usable] == ["alpha", "zeta"]


async def test_a_token_name_is_never_reused_even_after_revoking(
    auth_store: AuthStore,
) -> None:
    first = await auth_store.create_api_token(new_token("ci"), NOW)
    await auth_store.revoke_api_token(first.id, NOW)

    with pytest.raises(ConflictError, match="'ci'") as raised:
        await auth_store.create_api_token(
            NewApiToken("ci", Role.ADMIN, "c" * 64, "alice"), NOW
        )

    assert raised.value.field == "name"
    assert len(await auth_store.list_api_tokens()) == 1


async def test_last_use_is_written_at_most_once_per_interval(
    auth_store: AuthStore,
) -> None:
    token = await auth_store.create_api_token(new_token(), NOW)

    first = await auth_store.touch_api_token(token.id, NOW, MINUTE)
    soon = await auth_store.touch_api_token(token.id, NOW + MINUTE / 2, MINUTE)
    after = await auth_store.touch_api_token(token.id, NOW + MINUTE, MINUTE)

    assert (first, soon, after) == (True, False, True)
    stored = await auth_store.get_api_token(token.id)
    assert stored.last_used_at == NOW + MINUTE


async def test_revoking_a_token_sets_revoked_at_once(auth_store: AuthStore) -> None:
    token = await auth_store.create_api_token(new_token(), NOW)

    revoked = await auth_store.revoke_api_token(token.id, NOW + MINUTE)
    again = await auth_store.revoke_api_token(token.id, NOW + 2 * MINUTE)

    assert revoked.revoked_at == again.revoked_at == NOW + MINUTE
    assert not revoked.usable_at(NOW + MINUTE)
    found = await auth_store.find_api_token(token.token_hash)
    assert found is not None
    assert found.revoked_at == NOW + MINUTE


def audit(
    action: AuditAction = AuditAction.JOB_CREATED,
    actor: str = "alice",
    target: str | None = "backup",
    at: datetime = NOW,
) -> NewAuditRecord:
    return NewAuditRecord(at, actor, action, target, {"fields": ["schedule"]})


async def test_an_audit_record_is_appended_and_read_back(
    auth_store: AuthStore,
) -> None:
    appended = await auth_store.append_audit(audit())

    page = await auth_store.list_audit(AuditFilter(), 10, None)

    assert page.items == [appended]
    assert page.next_cursor is None
    assert (appended.at, appended.actor, appended.action, appended.target) == (
        NOW,
        "alice",
        "job.created",
        "backup",
    )
    assert appended.detail == {"fields": ["schedule"]}


async def test_audit_records_list_newest_first_in_pages(auth_store: AuthStore) -> None:
    appended = [
        await auth_store.append_audit(audit(at=NOW + index * MINUTE))
        for index in range(5)
    ]

    seen: list[int] = []
    cursor: str | None = None
    while True:
        page = await auth_store.list_audit(AuditFilter(), 2, cursor)
        seen += [record.id for record in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break

    assert seen == [record.id for record in reversed(appended)]
    assert len(set(seen)) == 5


@pytest.mark.parametrize(
    ("audit_filter", "expected"),
    [
        (AuditFilter(action="job.deleted"), [("bob", "job.deleted", "backup")]),
        (AuditFilter(actor="token:ci"), [("token:ci", "job.run", "report")]),
        (
            AuditFilter(target="backup"),
            [("bob", "job.deleted", "backup"), ("alice", "job.created", "backup")],
        ),
        (AuditFilter(actor="alice", target="report"), []),
        (AuditFilter(action="job.nope"), []),
    ],
    ids=["by-action", "by-actor", "by-target", "combined", "unknown-action"],
)
async def test_audit_records_filter_by_action_actor_and_target(
    auth_store: AuthStore,
    audit_filter: AuditFilter,
    expected: list[tuple[str, str, str]],
) -> None:
    await auth_store.append_audit(audit(AuditAction.JOB_CREATED, "alice", "backup"))
    await auth_store.append_audit(audit(AuditAction.JOB_RUN, "token:ci", "report"))
    await auth_store.append_audit(audit(AuditAction.JOB_DELETED, "bob", "backup"))

    page = await auth_store.list_audit(audit_filter, 10, None)

    assert [(r.actor, r.action, r.target) for r in page.items] == expected


async def test_a_filtered_audit_listing_pages_within_the_filter(
    auth_store: AuthStore,
) -> None:
    for index in range(6):
        actor = "alice" if index % 2 else "bob"
        await auth_store.append_audit(audit(actor=actor, at=NOW + index * MINUTE))

    first = await auth_store.list_audit(AuditFilter(actor="alice"), 2, None)
    second = await auth_store.list_audit(
        AuditFilter(actor="alice"), 2, first.next_cursor
    )

    assert [r.at for r in first.items] == [NOW + 5 * MINUTE, NOW + 3 * MINUTE]
    assert [r.at for r in second.items] == [NOW + MINUTE]
    assert second.next_cursor is None


@pytest.mark.parametrize(
    "cursor",
    ["garbage", base64.urlsafe_b64encode(b"run:5").decode(), "YXVkaXQ6eA"],
    ids=["garbage", "a-run-cursor", "not-an-id"],
)
async def test_a_foreign_audit_cursor_is_refused_naming_the_field(
    auth_store: AuthStore, cursor: str
) -> None:
    with pytest.raises(InputError) as raised:
        await auth_store.list_audit(AuditFilter(), 10, cursor)

    assert raised.value.errors[0].field == "cursor"


async def test_a_filtered_audit_page_reads_the_filter_index(
    sqlite_store: SqlStore,
) -> None:
    statement = audit_page_statement(AuditFilter(actor="alice"), 100, 51)

    plan = await query_plan(sqlite_store, statement)

    assert "USING INDEX ix_audit_records_actor_id" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
