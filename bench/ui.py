"""Measure the server time of the dashboard and the jobs list on a full store.

Issue 5's target: with 10,000 jobs and 200,000 runs in the store, the dashboard
(`/`) and the jobs list (`/jobs`) render in under 300 ms of server time.

For each backend (SQLite in a temporary data dir; PostgreSQL in a throwaway
database that the bench creates and drops):

- a node is started on the empty store with its workers stopped, so that runs stay
  as seeded (its leader duties run, as on any server), and the store is seeded in
  bulk through its own tables (`store.schema`): 10,000 jobs (commands and HTTP
  calls, daily, weekly and interval schedules in several zones, some paused, some
  run only after a dependency; tags, descriptions) and 200,000 runs over the last 7
  days, with their attempts. Most runs succeeded (some after a retry); some failed
  (a few of them lost), timed out, were cancelled, skipped or upstream failed; the
  newest are running, queued (some for a retry) or waiting for a dependency that
  is running. No next fire, retry or end of a wait falls due while the bench runs;
- the seed is read back through the store and checked: counts by state, the
  queue, the ended runs of the chart's 24 hours, and every job and run (with its
  attempts, and a waiting run's link) listed;
- each request is timed in process, through httpx's ASGI transport to the app of
  that node: server time, without a network or a socket. GET /healthz is the
  baseline (routing and the transport, no store); then GET / and each of its
  partials, and GET /jobs: the first page, a search, each sort, paused jobs only,
  the second and the middle page by name and by next fire, the partial. Requests
  take turns, round by round, so that a disturbance of the machine spreads over
  all of them; the first round is a warm-up. Each figure is the median and p95 of
  the rounds, and the median's ratio to /healthz's.

Target: p95 <= 300 ms for every page and partial. The exit code is 1 when one
misses or a check fails, 2 for a usage error.

Usage: python bench/ui.py [--backend both|sqlite|postgresql] [--rounds 40]
       [--quick] [--jobs 10000] [--runs 200000] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from sqlalchemy import func, insert, make_url, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from socmeth.api.app import create_app
from socmeth.api.schemas import JobIn, to_definition
from socmeth.config import Config, load_config
from socmeth.fires import next_fire_at
from socmeth.models import AttemptState, JobDefinition, JobType, RunState, Trigger
from socmeth.node import Node
from socmeth.store.base import JobFilter, JobSort, RunFilter
from socmeth.store.codec import job_values
from socmeth.store.schema import (
    attempts,
    job_dependencies,
    job_tags,
    jobs,
    run_waits,
    runs,
)
from socmeth.store.sql import WRITE_OPTION, SqlStore, async_url
from socmeth.ui import chart

TARGET_MS = 300.0
JOBS = 10_000
RUNS = 200_000
ROUNDS = 40
QUICK_ROUNDS = 12
POSTGRES_URL = os.environ.get(
    "SOCMETH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/postgres"
)
NODE_ID = "bench-ui"
CHUNK = 5000

# The shape of the store. History spans RUN_SPAN up to ACTIVE_SPAN ago; the runs
# still active are the newest, within ACTIVE_SPAN, each of a job of its own (jobs
# are `concurrency: forbid` by default).
RUN_SPAN = timedelta(days=7)
ACTIVE_SPAN = timedelta(minutes=10)
JOB_SPAN = timedelta(days=60)  # jobs were created over the 60 days before now
QUIET = timedelta(hours=1)  # no next fire, retry or end of a wait before this
RUNNING = 40
QUEUED = 130
RETRY_PENDING = 20
WAITING = 30
DEPENDENT_EVERY = 50  # every 50th job runs after the job before it
PAUSED_SHARE = 0.05
HTTP_SHARE = 0.2
NAME_WORDS = (
    "etl",
    "report",
    "backup",
    "sync",
    "billing",
    "notify",
    "cleanup",
    "index",
)
TAGS = ("db", "nightly", "reports", "billing", "etl", "critical", "web", "ops")
ZONES = ("UTC", "UTC", "UTC", "UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
# How runs of the history ended, by share: scheduled and manual runs, then runs
# of jobs that run after a dependency.
ENDS = {
    RunState.SUCCEEDED: 0.925,
    RunState.FAILED: 0.045,
    RunState.TIMED_OUT: 0.01,
    RunState.CANCELLED: 0.005,
    RunState.SKIPPED: 0.015,
}
DEPENDENT_ENDS = {
    RunState.SUCCEEDED: 0.85,
    RunState.UPSTREAM_FAILED: 0.10,
    RunState.FAILED: 0.05,
}
RETRIED_SUCCESS_SHARE = 0.05  # succeeded on the second attempt
LOST_SHARE = 0.05  # of failed runs: their last attempt was lost with its node
SEARCH = "report-01"  # matches 1 job in 80: "report-" is 1 in 8, "01xxx" 1 in 10

DASHBOARD_PARTIALS = ("summary", "active", "failures", "chart", "health", "history")


def note(message: str) -> None:
    """Say what the bench is doing, on stderr, so stdout holds the results."""
    print(message, file=sys.stderr, flush=True)


# Seeding


@dataclass
class Seed:
    """What was written, to check the store's reading of it against."""

    jobs: int = 0
    paused: int = 0
    runs: Counter[RunState] = field(default_factory=Counter)
    queued_attempts: int = 0
    running_attempts: int = 0
    ended_at: list[datetime] = field(default_factory=list)


@dataclass(frozen=True)
class JobPlan:
    """One job to store, with what its runs need to know of it."""

    index: int
    definition: JobDefinition
    created_at: datetime
    updated_at: datetime
    upstream: int | None  # the index of the job it runs after


def plan_jobs(count: int, now: datetime, rng: random.Random) -> list[JobPlan]:
    """Plan `count` jobs as the API would store them, created over JOB_SPAN."""
    config = Config()
    plans: list[JobPlan] = []
    for index in range(count):
        dependent = index % DEPENDENT_EVERY == DEPENDENT_EVERY - 1
        body: dict[str, Any] = {
            "name": f"{NAME_WORDS[index % len(NAME_WORDS)]}-{index:05d}",
            "timezone": rng.choice(ZONES),
            "enabled": dependent or rng.random() >= PAUSED_SHARE,
            "tags": rng.sample(TAGS, rng.choice((0, 1, 1, 2))),
            "retries": rng.choice((0, 0, 1, 3)),
        }
        if rng.random() < 0.3:
            body["description"] = f"Keeps {body['name']} in step with the warehouse"
        if rng.random() < HTTP_SHARE:
            body |= {"type": JobType.HTTP, "url": f"https://api.example.test/{index}"}
        else:
            body["command"] = f"/opt/jobs/run.sh {body['name']}"
        if dependent:
            upstream = plans[index - 1].definition.name
            body |= {"depends_on": [upstream], "dependency_timeout": 7200}
        else:
            body["schedule"] = _quiet_schedule(rng)
        definition = to_definition(JobIn(**body), config)
        # Created before the history starts, so no run is older than its job.
        created_at = now - JOB_SPAN + (JOB_SPAN - RUN_SPAN) * (index / count)
        updated_at = created_at
        if rng.random() < 0.1:
            updated_at = now - RUN_SPAN * rng.random()
        plans.append(
            JobPlan(
                index,
                definition,
                created_at,
                updated_at,
                index - 1 if dependent else None,
            )
        )
    return plans


def _quiet_schedule(rng: random.Random) -> str:
    """Return a schedule whose fires come at most a few times a day."""
    minute, hour = rng.randrange(60), rng.randrange(24)
    return rng.choice(
        (
            f"{minute} {hour} * * *",
            f"{minute} {hour} * * *",
            f"{minute} {hour} * * 1-5",
            f"{minute} {hour} * * 0",
            "@every 6h",
            "@every 12h",
        )
    )


def job_row(plan: JobPlan, now: datetime) -> dict[str, Any]:
    """Return the `jobs` row of a plan; its next fire is QUIET ahead at the least."""
    definition = plan.definition
    fire_at = next_fire_at(definition, plan.created_at, now)
    if fire_at is not None and fire_at < now + QUIET:
        # The next fire after the quiet hour is a real fire of the schedule too.
        fire_at = next_fire_at(definition, plan.created_at, now + QUIET)
    return job_values(definition, fire_at) | {
        "created_at": plan.created_at,
        "updated_at": plan.updated_at,
        "deps_consumed_at": plan.created_at,
    }


@dataclass
class RunPlan:
    """One run to store, and its attempts (as `attempts` rows without run_id)."""

    job: JobPlan
    values: dict[str, Any]
    attempts: list[dict[str, Any]]
    upstream_of_waiting: int | None = None  # index in the plans of the run waited on


def plan_history(
    job_plans: Sequence[JobPlan], count: int, now: datetime, rng: random.Random
) -> Iterator[RunPlan]:
    """Yield `count` ended runs, oldest first, from RUN_SPAN ago to ACTIVE_SPAN ago."""
    scheduled = [p for p in job_plans if p.upstream is None]
    dependents = [p for p in job_plans if p.upstream is not None]
    start, span = now - RUN_SPAN, RUN_SPAN - ACTIVE_SPAN
    for number in range(count):
        created_at = start + span * ((number + rng.random()) / count)
        if dependents and rng.random() < 0.03:
            job, trigger = rng.choice(dependents), Trigger.DEPENDENCY
            state = _pick(DEPENDENT_ENDS, rng)
        else:
            job = rng.choice(scheduled)
            trigger = Trigger.MANUAL if rng.random() < 0.05 else Trigger.SCHEDULE
            state = _pick(ENDS, rng)
        yield _ended_run(job, trigger, created_at, state, rng)


def _pick(shares: dict[RunState, float], rng: random.Random) -> RunState:
    return rng.choices(list(shares), weights=list(shares.values()))[0]


def _ended_run(
    job: JobPlan,
    trigger: Trigger,
    created_at: datetime,
    state: RunState,
    rng: random.Random,
) -> RunPlan:
    values = _run_values(job, trigger, created_at, state)
    if state in (RunState.SKIPPED, RunState.UPSTREAM_FAILED):
        values["finished_at"] = created_at
        values["reason"] = (
            "the previous run was still active (concurrency: forbid)"
            if state is RunState.SKIPPED
            else f"{job.definition.depends_on[0]} failed"
        )
        return RunPlan(job, values, [])

    outcomes = {
        RunState.SUCCEEDED: [AttemptState.SUCCEEDED],
        RunState.FAILED: [AttemptState.FAILED] * rng.randint(1, 3),
        RunState.TIMED_OUT: [AttemptState.TIMED_OUT],
        RunState.CANCELLED: [AttemptState.CANCELLED],
    }[state]
    if state is RunState.SUCCEEDED and rng.random() < RETRIED_SUCCESS_SHARE:
        outcomes = [AttemptState.FAILED, AttemptState.SUCCEEDED]
    if state is RunState.FAILED and rng.random() < LOST_SHARE:
        outcomes[-1] = AttemptState.LOST
    tried, queued_at = [], created_at
    for number, outcome in enumerate(outcomes, start=1):
        attempt = _ended_attempt(job, number, outcome, queued_at, rng)
        tried.append(attempt)
        queued_at = attempt["finished_at"] + timedelta(seconds=10 * number)
    values["finished_at"] = tried[-1]["finished_at"]
    if state is RunState.CANCELLED:
        values["reason"] = "cancelled by an operator"
    return RunPlan(job, values, tried)


def _run_values(
    job: JobPlan, trigger: Trigger, created_at: datetime, state: RunState
) -> dict[str, Any]:
    return {
        "trigger": trigger.value,
        # Instants are distinct to the microsecond, so the fire key never clashes.
        "scheduled_at": created_at if trigger is Trigger.SCHEDULE else None,
        "created_at": created_at,
        "state": state.value,
        "reason": None,
        "late": False,
        "next_attempt_at": None,
        "finished_at": None,
        "cancel_requested_at": None,
        "needed_by_run_id": None,
        "give_up_at": None,
        "awaited": False,
    }


def _ended_attempt(
    job: JobPlan,
    number: int,
    outcome: AttemptState,
    queued_at: datetime,
    rng: random.Random,
) -> dict[str, Any]:
    started_at = queued_at + timedelta(seconds=rng.uniform(0.02, 1.5))
    took = timedelta(seconds=min(rng.expovariate(1 / 20), 590))
    is_http = job.definition.type is JobType.HTTP
    failed = outcome is AttemptState.FAILED
    row = _attempt(number, outcome, queued_at, NODE_ID)
    row |= {"started_at": started_at, "finished_at": started_at + took}
    if outcome is AttemptState.SUCCEEDED:
        row |= {"http_status": 200} if is_http else {"exit_code": 0}
    elif failed and is_http:
        row |= {"http_status": rng.choice((500, 502, 503)), "error": None}
    elif failed:
        row |= {"exit_code": rng.choice((1, 1, 2, 127))}
    elif outcome is AttemptState.TIMED_OUT:
        row |= {"finished_at": started_at + job.definition.timeout}
        row["error"] = f"timed out after {job.definition.timeout.total_seconds():.0f}s"
    elif outcome is AttemptState.LOST:
        row |= {"node_id": "bench-gone", "error": "its node bench-gone fell silent"}
    return row


def _attempt(
    number: int, state: AttemptState, queued_at: datetime, node_id: str | None
) -> dict[str, Any]:
    return {
        "number": number,
        "state": state.value,
        "node_id": node_id,
        "queued_at": queued_at,
        "started_at": None,
        "finished_at": None,
        "exit_code": None,
        "http_status": None,
        "error": None,
    }


def plan_active(
    job_plans: Sequence[JobPlan], now: datetime, rng: random.Random
) -> list[RunPlan]:
    """Return the runs still active, one per job: running ones first (among them
    the upstream runs the waiting runs wait for), then queued, then waiting."""
    dependents = [p for p in job_plans if p.upstream is not None]
    waiting_jobs = rng.sample(dependents, WAITING)
    upstream_ids = {p.upstream for p in waiting_jobs}
    others = [
        p
        for p in job_plans
        if p.upstream is None and p.definition.enabled and p.index not in upstream_ids
    ]
    running_jobs = [p for p in job_plans if p.index in upstream_ids]
    running_jobs += rng.sample(others, RUNNING - len(running_jobs))
    busy = {p.index for p in running_jobs}
    free = [p for p in others if p.index not in busy]
    queued_jobs = rng.sample(free, QUEUED + RETRY_PENDING)

    def instant() -> datetime:
        return now - ACTIVE_SPAN * rng.random()

    plans = []
    for job in running_jobs:
        created_at = instant()
        values = _run_values(job, Trigger.SCHEDULE, created_at, RunState.RUNNING)
        attempt = _attempt(1, AttemptState.RUNNING, created_at, NODE_ID)
        attempt["started_at"] = created_at + timedelta(seconds=0.2)
        values["awaited"] = job.index in upstream_ids
        plans.append(RunPlan(job, values, [attempt]))
    for number, job in enumerate(queued_jobs):
        created_at = instant()
        values = _run_values(job, Trigger.SCHEDULE, created_at, RunState.QUEUED)
        if number < RETRY_PENDING:
            failed = _ended_attempt(job, 1, AttemptState.FAILED, created_at, rng)
            values["next_attempt_at"] = now + QUIET
            plans.append(RunPlan(job, values, [failed]))
        else:
            queued = _attempt(1, AttemptState.QUEUED, created_at, None)
            plans.append(RunPlan(job, values, [queued]))
    running_of = {p.job.index: i for i, p in enumerate(plans[:RUNNING])}
    for job in waiting_jobs:
        created_at = instant()
        values = _run_values(job, Trigger.DEPENDENCY, created_at, RunState.WAITING)
        values["give_up_at"] = now + QUIET
        assert job.upstream is not None
        plans.append(RunPlan(job, values, [], running_of[job.upstream]))
    return plans


async def seed_store(store: SqlStore, jobs_count: int, runs_count: int) -> Seed:
    """Fill an empty store with `jobs_count` jobs and `runs_count` runs.

    Rows get their ids from the seeder, counting on from the highest stored one,
    so that each insert of a chunk is one executemany (SQLite would take one
    statement a row to return generated ids); PostgreSQL's sequences are moved past
    them at the end, so the store's own inserts go on from there.
    """
    rng = random.Random(5)
    now = datetime.now(UTC)
    job_plans = plan_jobs(jobs_count, now, rng)
    active = plan_active(job_plans, now, rng)
    history = plan_history(job_plans, runs_count - len(active), now, rng)
    seed = Seed(jobs=jobs_count)
    seed.paused = sum(not p.definition.enabled for p in job_plans)

    writer = store.engine.execution_options(**{WRITE_OPTION: True})
    async with writer.connect() as conn:
        ids = {table.name: await _next_id(conn, table) for table in SEEDED_TABLES}
    job_ids = [ids["jobs"] + plan.index for plan in job_plans]
    await _insert_jobs(writer, job_plans, job_ids, now)
    for chunk in _chunks(itertools.chain(history, active)):
        ids["runs"], ids["attempts"] = await _insert_runs(
            writer, job_ids, chunk, ids["runs"], ids["attempts"], seed
        )
    active_ids = range(ids["runs"] - len(active), ids["runs"])
    await _link_waiting(writer, job_ids, active, active_ids)

    if store.engine.dialect.name == "postgresql":
        async with writer.begin() as conn:
            for table in SEEDED_TABLES:
                await conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"(SELECT max(id) FROM {table.name}))"
                )
        # What autovacuum does within a minute of such a load.
        vacuuming = store.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with vacuuming.connect() as conn:
            await conn.exec_driver_sql("VACUUM ANALYZE")
    return seed


SEEDED_TABLES = (jobs, runs, attempts)


async def _next_id(conn: AsyncConnection, table: Any) -> int:
    highest = (await conn.execute(select(func.max(table.c.id)))).scalar()
    return int(highest or 0) + 1


def _chunks(plans: Iterable[RunPlan]) -> Iterator[list[RunPlan]]:
    iterator = iter(plans)
    while chunk := list(itertools.islice(iterator, CHUNK)):
        yield chunk


async def _insert_jobs(
    writer: Any, job_plans: Sequence[JobPlan], job_ids: Sequence[int], now: datetime
) -> None:
    rows = [
        job_row(plan, now) | {"id": job_id}
        for plan, job_id in zip(job_plans, job_ids, strict=True)
    ]
    tags = [
        {"job_id": job_ids[p.index], "tag": tag}
        for p in job_plans
        for tag in p.definition.tags
    ]
    edges = [
        {"job_id": job_ids[p.index], "depends_on_id": job_ids[p.upstream]}
        for p in job_plans
        if p.upstream is not None
    ]
    async with writer.begin() as conn:
        await _insert_all(conn, jobs, rows)
        await _insert_all(conn, job_tags, tags)
        await _insert_all(conn, job_dependencies, edges)


async def _insert_all(conn: AsyncConnection, table: Any, rows: list[Any]) -> None:
    for start in range(0, len(rows), CHUNK):
        await conn.execute(insert(table), rows[start : start + CHUNK])


async def _insert_runs(
    writer: Any,
    job_ids: Sequence[int],
    plans: Sequence[RunPlan],
    run_id: int,
    attempt_id: int,
    seed: Seed,
) -> tuple[int, int]:
    """Insert a chunk of runs and their attempts in one transaction, from the ids
    given; return the next free ids."""
    rows, tried = [], []
    for plan in plans:
        rows.append(plan.values | {"id": run_id, "job_id": job_ids[plan.job.index]})
        for attempt in plan.attempts:
            tried.append(attempt | {"id": attempt_id, "run_id": run_id})
            attempt_id += 1
        run_id += 1
    async with writer.begin() as conn:
        await _insert_all(conn, runs, rows)
        await _insert_all(conn, attempts, tried)

    for plan in plans:
        seed.runs[RunState(plan.values["state"])] += 1
        if plan.values["finished_at"] is not None:
            seed.ended_at.append(plan.values["finished_at"])
        states = [attempt["state"] for attempt in plan.attempts]
        seed.queued_attempts += states.count(AttemptState.QUEUED.value)
        seed.running_attempts += states.count(AttemptState.RUNNING.value)
    return run_id, attempt_id


async def _link_waiting(
    writer: Any,
    job_ids: Sequence[int],
    active: Sequence[RunPlan],
    active_ids: Sequence[int],
) -> None:
    """Link each waiting run to the running run of its dependency, as a dependency
    pass that found the dependency running leaves them."""
    links = [
        {
            "run_id": run_id,
            "job_id": job_ids[active[plan.upstream_of_waiting].job.index],
            "upstream_run_id": active_ids[plan.upstream_of_waiting],
        }
        for run_id, plan in zip(active_ids, active, strict=True)
        if plan.upstream_of_waiting is not None
    ]
    async with writer.begin() as conn:
        await _insert_all(conn, run_waits, links)


async def check_seed(store: SqlStore, seed: Seed, now: datetime) -> list[str]:
    """Say what the store reads differently from what was seeded."""
    problems = []
    counts = await store.count_jobs()
    if (counts.enabled, counts.paused) != (seed.jobs - seed.paused, seed.paused):
        problems.append(
            f"jobs read {counts}, seeded {seed.jobs} ({seed.paused} paused)"
        )
    by_state = (await store.count_runs()).by_state
    if {s: n for s, n in by_state.items() if n} != dict(seed.runs):
        problems.append(f"runs by state read {by_state}, seeded {dict(seed.runs)}")
    queued, running = await store.queued_count(), await store.running_count()
    if (queued, running) != (seed.queued_attempts, seed.running_attempts):
        problems.append(
            f"{queued} queued and {running} running attempts read, seeded "
            f"{seed.queued_attempts} and {seed.running_attempts}"
        )
    since = chart.chart_since(now)
    buckets = await store.ended_runs_by_bucket(since, chart.HOUR, chart.HOURS)
    until = since + chart.HOUR * chart.HOURS
    wanted = sum(since <= at < until for at in seed.ended_at)
    if sum(b.ended for b in buckets) != wanted:
        problems.append(
            f"the chart counts {sum(b.ended for b in buckets)} ended runs, "
            f"seeded {wanted}"
        )
    return problems + await read_everything(store, seed)


async def read_everything(store: SqlStore, seed: Seed) -> list[str]:
    """Read every job and every run, with its attempts and links, as the store
    gives them out: a row it could not read would raise here."""
    jobs_read, cursor = 0, None
    while True:
        job_page = await store.list_jobs(JobFilter(), 200, cursor)
        jobs_read += len(job_page.items)
        if (cursor := job_page.next_cursor) is None:
            break
    runs_read, waiting, cursor = 0, [], None
    while True:
        run_page = await store.list_runs(RunFilter(), 500, cursor)
        runs_read += len(run_page.items)
        waiting += [r.id for r in run_page.items if r.state is RunState.WAITING]
        if (cursor := run_page.next_cursor) is None:
            break
    links = await store.upstream_links(waiting)

    problems = []
    if (jobs_read, runs_read) != (seed.jobs, sum(seed.runs.values())):
        problems.append(
            f"{jobs_read} jobs and {runs_read} runs listed, seeded {seed.jobs} "
            f"and {sum(seed.runs.values())}"
        )
    unlinked = [run_id for run_id, found in links.items() if not found]
    if unlinked:
        problems.append(f"{len(unlinked)} waiting runs wait for nothing")
    return problems


# Backends


@contextlib.asynccontextmanager
async def sqlite_backend(root: Path) -> AsyncIterator[tuple[Path, str | None]]:
    """Yield a data dir for an embedded node (SQLite in it)."""
    data_dir = root / "sqlite"
    data_dir.mkdir()
    yield data_dir, None


@contextlib.asynccontextmanager
async def postgresql_backend(
    root: Path, admin_url: str
) -> AsyncIterator[tuple[Path, str | None]]:
    """Yield a data dir and the URL of a database of the bench's own, dropped after."""
    name = f"socmeth_bench_ui_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(async_url(admin_url), isolation_level="AUTOCOMMIT")
    data_dir = root / "postgresql"
    data_dir.mkdir()
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield (
                data_dir,
                make_url(admin_url).set(database=name).render_as_string(False),
            )
        finally:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


@contextlib.asynccontextmanager
async def started_node(data_dir: Path, database_url: str | None) -> AsyncIterator[Node]:
    """Run a node on the store, workers stopped, for the duration of the block."""
    overrides: dict[str, Any] = {
        "server.data_dir": str(data_dir),
        "workers.shutdown_grace": 0,
        "database.url": database_url,
    }
    node = Node(load_config(environ={}, overrides=overrides), node_id=NODE_ID)
    await node.start()
    try:
        assert node.workers is not None
        await node.workers.stop(0)
        yield node
    finally:
        await node.stop()


# Timing


@dataclass(frozen=True)
class Timing:
    """The server times of one request over the rounds."""

    name: str
    path: str
    seconds: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000


async def requests_to_time(store: SqlStore, jobs_count: int) -> dict[str, str]:
    """Name each request timed, baseline first."""
    paths = {"GET /healthz (baseline)": "/healthz", "GET /": "/"}
    paths |= {
        f"GET /?partial={name}": f"/?partial={name}" for name in DASHBOARD_PARTIALS
    }
    paths |= {
        "GET /jobs": "/jobs",
        "GET /jobs?partial=jobs": "/jobs?partial=jobs",
        f"GET /jobs?search={SEARCH}": f"/jobs?search={SEARCH}",
        "GET /jobs?state=paused": "/jobs?state=paused",
    }
    paths |= {f"GET /jobs?sort={s}": f"/jobs?sort={s}" for s in JobSort}
    for sort in (JobSort.NAME, JobSort.NEXT_FIRE):
        query = "/jobs?" if sort is JobSort.NAME else f"/jobs?sort={sort}&"
        shown = query.rstrip("?&")
        for label, skipped in (("page 2", 50), ("the middle page", jobs_count // 2)):
            cursor = await cursor_after(store, sort, skipped)
            paths[f"GET {shown}, {label}"] = f"{query}cursor={cursor}"
    return paths


async def cursor_after(store: SqlStore, sort: JobSort, skipped: int) -> str:
    """Return the cursor of the page that starts after the first `skipped` jobs."""
    cursor: str | None = None
    while skipped:
        step = min(skipped, 200)
        cursor = (await store.list_jobs(JobFilter(), step, cursor, sort)).next_cursor
        skipped -= step
    assert cursor is not None, "the store holds fewer jobs than were skipped"
    return cursor


async def time_requests(
    client: httpx.AsyncClient, paths: dict[str, str], rounds: int
) -> tuple[list[Timing], list[str]]:
    """Time every request once a round, in an order reversed every round; the
    first round is a warm-up. Return the timings and what the pages got wrong."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    problems: set[str] = set()
    order = list(paths)
    for round_number in range(rounds + 1):
        for name in order:
            started = time.perf_counter()
            response = await client.get(paths[name])
            elapsed = time.perf_counter() - started
            if round_number:
                samples[name].append(elapsed)
            problems.update(_page_problems(name, response))
        order.reverse()
    timings = [Timing(name, paths[name], samples[name]) for name in paths]
    return timings, sorted(problems)


def _page_problems(name: str, response: httpx.Response) -> list[str]:
    if response.status_code != 200:
        return [f"{name} answered {response.status_code}: {response.text[:200]}"]
    rows = len(re.findall(r'<tr id="job-', response.text))
    # Every listing timed has more than a page to show: a search for 1 in 80.
    if response.request.url.path == "/jobs" and rows != 50:
        return [f"{name} shows {rows} jobs, want a page of 50"]
    if name == "GET /" and response.text.count('<g class="bar">') != chart.HOURS:
        return [f"{name} has no chart of {chart.HOURS} bars"]
    return []


# Figures


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    name: str
    median_ms: float | None
    p95_ms: float | None
    ratio: float | None
    passed: bool | None  # None: no target (the baseline, a check)
    target: str = f"p95 <= {TARGET_MS:.0f} ms"

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "info"
        return "PASS" if self.passed else "FAIL"


def rows_of(
    backend: str, timings: Sequence[Timing], problems: Sequence[str]
) -> list[Row]:
    """Turn one backend's timings and checks into rows of the table."""
    baseline = timings[0].median_ms
    rows = [
        Row(
            f"{backend}: {t.name}",
            t.median_ms,
            t.p95_ms,
            t.median_ms / baseline,
            None if index == 0 else t.p95_ms <= TARGET_MS,
            "-" if index == 0 else f"p95 <= {TARGET_MS:.0f} ms",
        )
        for index, t in enumerate(timings)
    ]
    rows.append(
        Row(
            f"{backend}: seed read back, pages answered",
            None,
            None,
            None,
            not problems,
            "0 problems",
        )
    )
    return rows


def print_table(rows: Sequence[Row]) -> None:
    """Print the rows as an aligned table on stdout."""
    header = ("request", "median", "p95", "median / healthz", "target", "verdict")
    lines = [header] + [
        (
            row.name,
            _ms(row.median_ms),
            _ms(row.p95_ms),
            "-" if row.ratio is None else f"{row.ratio:.1f}",
            row.target,
            row.verdict,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for index, line in enumerate(lines):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


# Running


async def bench_backend(
    backend: str, root: Path, args: argparse.Namespace
) -> list[Row]:
    """Seed one backend, time its pages and return its rows."""
    chosen = (
        sqlite_backend(root)
        if backend == "sqlite"
        else postgresql_backend(root, args.postgres_url)
    )
    async with (
        chosen as (data_dir, database_url),
        started_node(data_dir, database_url) as node,
    ):
        store = node.store
        assert isinstance(store, SqlStore)
        note(f"{backend}: seeding {args.jobs:,} jobs and {args.runs:,} runs ...")
        started = time.perf_counter()
        seed = await seed_store(store, args.jobs, args.runs)
        note(f"{backend}: seeded in {time.perf_counter() - started:.1f}s")
        problems = await check_seed(store, seed, node.clock.now())
        paths = await requests_to_time(store, args.jobs)
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
            note(f"{backend}: timing {len(paths)} requests x {args.rounds} rounds ...")
            timings, page_problems = await time_requests(c, paths, args.rounds)
        problems += page_problems
    for problem in problems:
        note(f"{backend}: CHECK FAILED: {problem}")
    return rows_of(backend, timings, problems)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the dashboard and the jobs list on a store of 10,000 "
        "jobs and 200,000 runs, against GET /healthz."
    )
    parser.add_argument(
        "--backend",
        choices=("both", "sqlite", "postgresql"),
        default="both",
        help="the store to seed and serve from (default both)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"timed rounds of every request (default {ROUNDS}, "
        f"{QUICK_ROUNDS} with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"time {QUICK_ROUNDS} rounds only"
    )
    parser.add_argument("--jobs", type=int, default=JOBS, help=f"default {JOBS:,}")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"default {RUNS:,}")
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_URL,
        help="a PostgreSQL where the user may create databases (default "
        "$SOCMETH_TEST_POSTGRES_URL or postgresql://postgres@127.0.0.1/postgres)",
    )
    args = parser.parse_args(argv)
    if args.quick and args.rounds is not None:
        parser.error("--quick chooses the rounds; leave out --rounds or --quick")
    args.rounds = QUICK_ROUNDS if args.quick else args.rounds or ROUNDS
    if args.rounds < 2:
        parser.error(f"--rounds {args.rounds}: give at least 2")
    smallest = DEPENDENT_EVERY * WAITING * 2
    if args.jobs < smallest:
        parser.error(f"--jobs {args.jobs}: give at least {smallest:,}")
    active = RUNNING + QUEUED + RETRY_PENDING + WAITING
    if args.runs < 10 * active:
        parser.error(f"--runs {args.runs}: give at least {10 * active:,}")
    return args


def _stop_on_signal(signum: int, _: FrameType | None) -> None:
    """Raise where the bench is, so that its database and temp dir are removed."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop_on_signal)
    # The node's INFO lines would bury the bench's own progress.
    logging.getLogger("socmeth").setLevel(logging.WARNING)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    rows: list[Row] = []
    root = Path(tempfile.mkdtemp(prefix="socmeth-bench-ui-"))
    try:
        for backend in backends:
            rows += asyncio.run(bench_backend(backend, root, args))
    except (OSError, DBAPIError) as exc:
        note(f"the bench could not run: {exc}")
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)

    cores = os.cpu_count()
    print(
        f"socmeth UI bench: {args.jobs:,} jobs, {args.runs:,} runs, "
        f"{args.rounds} rounds; {cores} cores, Python {sys.version.split()[0]}"
    )
    print_table(rows)
    judged = [row for row in rows if row.passed is not None]
    failed = [row for row in judged if not row.passed]
    print(f"\n{len(failed)} of {len(judged)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
