"""Fire 10,000 jobs in the same second on a three-node cluster; check each runs once
and measure how fast the burst reaches the queue and ends.

A real cluster (tests/e2e/cluster.py: three `socmeth serve` processes on a scratch
PostgreSQL database and Redis prefix), each node with `workers.count` W (default 50)
and `scheduler.max_concurrent_jobs` 3W (the cap is cluster-wide), gets N command jobs
`true` (default 10,000) whose fires fall on one instant: they are `@every 1h` jobs
stored as if created one hour before that instant, which lies a few seconds after
the store is filled. The rows are what the API would store (the API's own conversion,
`api.schemas.to_definition`, and the store's codec), inserted in bulk straight into
the store: 10,000 POSTs would take longer than the burst itself.

- exactly once (target 0 failed checks): N runs, one per job, all for that instant,
  triggered by the schedule, not late, succeeded, one attempt each, started once.
- queue lateness (target p99 <= 1 s): when the run's first attempt reached the
  queue minus the fire's `scheduled_at`. "Reached the queue" is the XADD of its
  message: a plain XREAD of the stream (no consumer group, so the workers' group is
  untouched) notes every entry as it is added, and an entry id is Redis's clock in
  milliseconds, on this machine. The attempt's `queued_at` is shown beside it: the
  store stamps it with the instant the scheduler's turn began, not when the attempt
  was stored or published.
- start lateness: the first attempt's `started_at` (its claim) minus `scheduled_at`.
- fire to last end, and runs per second over that span.

Floors of the same run, measured on the idle cluster before the fill: a bare insert
of N rows into each of two scratch tables of the same database (one transaction,
through SQLAlchemy and asyncpg like the store) plus an XADD of N messages to a
scratch stream in one pipeline; and the machine's rate of spawning `/bin/sh -c true`
with 3W threads. For scale, the issue notes that APScheduler needs 1.3 s on this
machine just to start 10,000 in-process no-ops.

Usage: python bench/burst.py [--jobs 10000] [--workers 50] [--quick]
The exit code is 1 when a target is missed, 2 when the services are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, insert

from _cluster import (
    REDIS_URL,
    Cluster,
    Figure,
    ServicesMissing,
    check_services,
    connect,
    install_signal_handlers,
    note,
    number,
    percentile,
    print_table,
    running_cluster,
    verdict_line,
    wait_until_settled,
)
from socmeth.api.schemas import JobIn, to_definition
from socmeth.config import Config
from socmeth.fires import next_fire_at
from socmeth.models import JobDefinition
from socmeth.queue.base import decode_message, encode_message
from socmeth.store.base import QueuedAttempt
from socmeth.store.codec import job_values
from socmeth.store.schema import UtcDateTime, jobs
from socmeth.store.sql import SqlStore, open_store

NODES = 3
QUEUE_TARGET_S = 1.0
FILL_CHUNK = 2000
LEAD_S = 6.0  # from the end of the fill to the fire, at least
SETTLE_TIMEOUT_S = 600.0
SPAWN_SAMPLE = 2000  # `sh -c true` spawned for the machine's rate
STREAM = "attempts"  # the queue's stream, under the cluster's prefix


# Filling the store


def true_template() -> JobDefinition:
    """Return the definition the API makes of an `@every 1h` job running `true`."""
    body = JobIn(name="template", schedule="@every 1h", command="true")
    return to_definition(body, Config())


def job_rows(count: int, due_at: datetime) -> Iterator[dict[str, Any]]:
    """Yield the `jobs` rows of `count` jobs created one hour before `due_at`."""
    template = true_template()
    created_at = due_at - timedelta(hours=1)
    for index in range(count):
        definition = dataclasses.replace(template, name=f"burst-{index:05d}")
        fire_at = next_fire_at(definition, created_at, created_at)
        if fire_at != due_at:
            raise RuntimeError(f"the first fire is {fire_at}, want {due_at}")
        yield job_values(definition, fire_at) | {
            "created_at": created_at,
            "updated_at": created_at,
        }


async def fill(store: SqlStore, count: int, due_at: datetime) -> float:
    """Insert the jobs in one transaction; return the seconds it took."""
    started = time.perf_counter()
    rows = job_rows(count, due_at)
    async with store.engine.begin() as conn:
        while chunk := list(itertools.islice(rows, FILL_CHUNK)):
            await conn.execute(insert(jobs), chunk)
    return time.perf_counter() - started


# Floors


scratch_metadata = MetaData()
scratch_runs = Table(
    "bench_burst_runs",
    scratch_metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, nullable=False),
    Column("scheduled_at", UtcDateTime, nullable=False),
    Column("state", String(32), nullable=False),
    Column("late", Boolean, nullable=False),
)
scratch_attempts = Table(
    "bench_burst_attempts",
    scratch_metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, nullable=False),
    Column("state", String(32), nullable=False),
    Column("queued_at", UtcDateTime, nullable=False),
)


async def queue_floor(store: SqlStore, cluster: Cluster, count: int) -> float:
    """Return the seconds to store `count` run and attempt rows in scratch tables
    and XADD as many messages to a scratch stream: the least a burst costs."""
    async with store.engine.begin() as conn:
        await conn.run_sync(scratch_metadata.create_all)
    now = datetime.now(UTC)
    run_rows = [
        {"id": i, "job_id": i, "scheduled_at": now, "state": "queued", "late": False}
        for i in range(count)
    ]
    attempt_rows = [
        {"id": i, "run_id": i, "state": "queued", "queued_at": now}
        for i in range(count)
    ]
    client = aioredis.Redis.from_url(cluster.redis_url)
    key = f"{cluster.prefix}:bench-floor"
    try:
        started = time.perf_counter()
        async with store.engine.begin() as conn:
            await conn.execute(insert(scratch_runs), run_rows)
            await conn.execute(insert(scratch_attempts), attempt_rows)
        async with client.pipeline(transaction=False) as pipe:
            for i in range(count):
                pipe.xadd(key, {"message": encode_message(QueuedAttempt(i, i, 1))})
            await pipe.execute()
        elapsed = time.perf_counter() - started
        await client.delete(key)
    finally:
        await client.aclose()
    return elapsed


def spawn_rate(count: int, threads: int) -> float:
    """Return how many `/bin/sh -c true` this machine spawns a second on `threads`."""

    def spawn() -> None:
        subprocess.run(
            ["/bin/sh", "-c", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=True,
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(spawn) for _ in range(count)]:
            future.result()
    return count / (time.perf_counter() - started)


# Watching the queue


class StreamWatcher:
    """Note when each attempt's message was added to the queue's stream.

    A plain XREAD, outside the workers' consumer group, so that it changes nothing
    the nodes see. An entry acknowledged (and so deleted) before this read it is
    missed; the coverage is reported.
    """

    def __init__(self, url: str, key: str) -> None:
        self._redis = aioredis.Redis.from_url(url, decode_responses=True)
        self._key = key
        self.published: dict[int, datetime] = {}
        self.entries = 0

    async def start_id(self) -> str:
        info = await self._redis.xinfo_stream(self._key)
        return str(info["last-generated-id"])

    async def run(self, last_id: str) -> None:
        while True:
            # Protocol 2, decoded: [[stream, [[entry id, {field: value}], ...]]].
            reply: Any = await self._redis.xread(
                {self._key: last_id}, count=5000, block=500
            )
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    self.entries += 1
                    added_ms = int(entry_id.split("-")[0])
                    attempt = decode_message(fields["message"]).attempt_id
                    self.published.setdefault(
                        attempt, datetime.fromtimestamp(added_ms / 1000, UTC)
                    )

    async def close(self) -> None:
        await self._redis.aclose()


# Where the CPU goes


def cpu_seconds(pid: int) -> float:
    """Return the CPU a process and its reaped children used (utime, stime,
    cutime, cstime of /proc/PID/stat); 0 for a process that is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    """Return the ids of the processes whose command name is `name`."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == name:
                found.append(int(comm.parent.name))
    return found


def cpu_snapshot(cluster: Cluster) -> dict[str, float]:
    """Return the CPU seconds used so far by each node, PostgreSQL, Redis and us."""
    snapshot = {
        node.node_id: cpu_seconds(node.process.pid)
        for node in cluster.nodes
        if node.process is not None
    }
    snapshot["postgres"] = sum(cpu_seconds(pid) for pid in pids_named("postgres"))
    snapshot["redis"] = sum(cpu_seconds(pid) for pid in pids_named("redis-server"))
    snapshot["bench"] = cpu_seconds(os.getpid())
    return snapshot


def cpu_figures(
    before: dict[str, float], after: dict[str, float], wall_s: float, leader: str
) -> list[Figure]:
    """Show the CPU each part used over the burst, beside what two cores give."""
    used = {key: after[key] - before.get(key, 0.0) for key in after}
    names = {leader: f"leader {leader}"} | {
        key: f"node {key}" for key in used if key.startswith("n") and key != leader
    }
    cores = os.cpu_count() or 1
    total = sum(used.values())
    return [
        Figure(
            f"CPU over the burst, {names.get(key, key)}",
            seconds,
            "s",
            f"{seconds / total:.0%} of {number(total)} s used; {cores} cores x "
            f"{number(wall_s)} s = {number(cores * wall_s)} s",
        )
        for key, seconds in sorted(used.items(), key=lambda kv: -kv[1])
    ]


# Judging the runs


@dataclass(frozen=True)
class BurstRun:
    """One run of the burst and its first attempt."""

    job_id: int
    scheduled_at: datetime | None
    trigger: str
    state: str
    late: bool
    attempts: int
    attempts_started: int
    attempt_id: int | None
    node_id: str | None
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


async def read_runs(conn: asyncpg.Connection) -> list[BurstRun]:
    rows = await conn.fetch(
        """
        SELECT r.job_id, r.scheduled_at, r.trigger, r.state, r.late,
               (SELECT count(*) FROM attempts x WHERE x.run_id = r.id) AS attempts,
               (SELECT count(*) FROM attempts x
                 WHERE x.run_id = r.id AND x.started_at IS NOT NULL) AS started,
               a.id AS attempt_id, a.node_id, a.queued_at, a.started_at,
               r.finished_at
        FROM runs r LEFT JOIN attempts a ON a.run_id = r.id AND a.number = 1
        """
    )
    return [
        BurstRun(
            int(r["job_id"]),
            r["scheduled_at"],
            r["trigger"],
            r["state"],
            bool(r["late"]),
            int(r["attempts"]),
            int(r["started"]),
            r["attempt_id"],
            r["node_id"],
            r["queued_at"],
            r["started_at"],
            r["finished_at"],
        )
        for r in rows
    ]


def run_problems(found: Sequence[BurstRun], due_at: datetime, count: int) -> list[str]:
    """Say what is wrong unless every job ran exactly once, for its fire."""
    jobs_seen = {run.job_id for run in found}
    states: dict[str, int] = {}
    for run in found:
        states[run.state] = states.get(run.state, 0) + 1
    checks = {
        f"{len(found)} runs, want {count}": len(found) == count,
        f"{len(jobs_seen)} jobs ran, want {count}": len(jobs_seen) == count,
        f"run states {states}, want all succeeded": states == {"succeeded": count},
        "a run is for another instant than the fire": all(
            run.scheduled_at == due_at for run in found
        ),
        "a run was not triggered by the schedule, or was late": all(
            run.trigger == "schedule" and not run.late for run in found
        ),
        "a run has other than one attempt, started once": all(
            run.attempts == 1 and run.attempts_started == 1 for run in found
        ),
    }
    return [problem for problem, ok in checks.items() if not ok]


def seconds_after(instants: Sequence[datetime | None], origin: datetime) -> list[float]:
    return [(at - origin).total_seconds() for at in instants if at is not None]


def spread(values: Sequence[float]) -> str:
    return ", ".join(
        f"{name} {number(percentile(values, pct) * 1000)} ms"
        for name, pct in (("p50", 50), ("p99", 99), ("max", 100))
    )


@dataclass(frozen=True)
class Floors:
    queue_s: float
    spawn_per_s: float


def figures_of(
    found: Sequence[BurstRun],
    watcher: StreamWatcher,
    due_at: datetime,
    count: int,
    floors: Floors,
) -> list[Figure]:
    problems = run_problems(found, due_at, count)
    for problem in problems:
        note(f"CHECK FAILED: {problem}")
    published = seconds_after(
        [watcher.published.get(r.attempt_id or -1) for r in found], due_at
    )
    queued = seconds_after([r.queued_at for r in found], due_at)
    started = seconds_after([r.started_at for r in found], due_at)
    ended = seconds_after([r.finished_at for r in found], due_at)
    last_end = max(ended, default=float("nan"))
    p99 = percentile(published, 99)
    nodes: dict[str, int] = {}
    for run in found:
        nodes[run.node_id or "-"] = nodes.get(run.node_id or "-", 0) + 1
    floor_end = count / floors.spawn_per_s
    return [
        Figure(
            f"{count:,} jobs: each ran exactly once",
            len(problems),
            "failed checks",
            f"{len(found):,} runs; by node "
            + ", ".join(f"{n} {c:,}" for n, c in sorted(nodes.items())),
            "0",
            not problems,
        ),
        Figure(
            "queue lateness p50 (XADD - scheduled_at)",
            percentile(published, 50) * 1000,
            "ms",
            f"{len(published):,} of {count:,} messages seen",
        ),
        Figure(
            "queue lateness p99 (XADD - scheduled_at)",
            p99 * 1000,
            "ms",
            f"floor {number(floors.queue_s * 1000)} ms (bare insert + XADD of "
            f"{count:,})",
            f"<= {QUEUE_TARGET_S * 1000:,.0f} ms",
            len(published) == count and p99 <= QUEUE_TARGET_S,
        ),
        Figure(
            "queue lateness max (XADD - scheduled_at)",
            max(published, default=float("nan")) * 1000,
            "ms",
            f"first message at {number(min(published, default=math.nan) * 1000)} ms",
        ),
        Figure(
            "queued_at - scheduled_at p99 (store stamp)",
            percentile(queued, 99) * 1000,
            "ms",
            f"{spread(queued)}; the turn's start instant",
        ),
        Figure(
            "start lateness p50 (claim)",
            percentile(started, 50) * 1000,
            "ms",
            spread(started),
        ),
        Figure(
            "fire to last end",
            last_end,
            "s",
            f"spawn floor {number(floor_end)} s ({count:,} at "
            f"{number(floors.spawn_per_s)}/s)",
        ),
        Figure(
            "runs per second (fire to last end)",
            count / last_end,
            "/s",
            f"spawn floor {number(floors.spawn_per_s)}/s",
        ),
        Figure("queue entries seen", watcher.entries, "", "1 per attempt expected"),
    ]


# The run


@dataclass(frozen=True)
class Settings:
    jobs: int
    workers: int
    keep: bool

    @property
    def cap(self) -> int:
        return NODES * self.workers


async def run(settings: Settings) -> list[Figure]:
    env = {
        "SOCMETH_WORKERS_COUNT": str(settings.workers),
        "SOCMETH_SCHEDULER_MAX_CONCURRENT_JOBS": str(settings.cap),
    }
    with running_cluster("socmeth-burst-", NODES, env, settings.keep) as cluster:
        store = await open_store(cluster.database_url, migrate_first=False)
        conn = await connect(cluster)
        watcher = StreamWatcher(cluster.redis_url, f"{cluster.prefix}:{STREAM}")
        try:
            note(f"floors: bare insert + XADD of {settings.jobs:,}; spawn rate")
            floors = Floors(
                queue_s=await queue_floor(store, cluster, settings.jobs),
                spawn_per_s=await asyncio.to_thread(
                    spawn_rate, min(settings.jobs, SPAWN_SAMPLE), settings.cap
                ),
            )
            estimate = 2.0 + settings.jobs / 5000  # seconds the fill may take
            due_at = (datetime.now(UTC) + timedelta(seconds=LEAD_S + estimate)).replace(
                microsecond=0
            ) + timedelta(seconds=1)
            took = await fill(store, settings.jobs, due_at)
            left = (due_at - datetime.now(UTC)).total_seconds()
            note(f"filled {settings.jobs:,} jobs in {took:.1f}s; fire in {left:.1f}s")
            if left < 2:
                raise RuntimeError(f"the fill ended {left:.1f}s before the fire")
            watching = asyncio.create_task(watcher.run(await watcher.start_id()))
            try:
                await asyncio.sleep(max(0.0, left))
                cpu_before = cpu_snapshot(cluster)
                waited = await wait_until_settled(
                    conn, settings.jobs, SETTLE_TIMEOUT_S, poll_s=0.25
                )
                cpu_after = cpu_snapshot(cluster)
                note(f"all runs ended {waited:.1f}s after the fire")
                await asyncio.sleep(0.5)  # the watcher reads the last entries
            finally:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
            found = await read_runs(conn)
            leader = str(
                await conn.fetchval("SELECT holder FROM leader_lease WHERE id = 1")
            )
        finally:
            await watcher.close()
            await conn.close()
            await store.close()
    figures = figures_of(found, watcher, due_at, settings.jobs, floors)
    return figures + cpu_figures(cpu_before, cpu_after, waited, leader)


# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fire N jobs in one second on three nodes; check each runs once, "
        "measure queue lateness and throughput."
    )
    parser.add_argument("--jobs", type=int, default=None, help="default 10000")
    parser.add_argument(
        "--workers",
        type=int,
        default=50,
        help="workers.count per node; max_concurrent_jobs is 3x that (default 50)",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 jobs")
    parser.add_argument(
        "--keep", action="store_true", help="keep the nodes' logs (path on stderr)"
    )
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (1000 if args.quick else 10_000)
    if not 1 <= args.jobs <= 100_000:
        parser.error("--jobs: 1 to 100,000 (limits.max_jobs)")
    if args.workers < 1:
        parser.error("--workers: at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    settings = Settings(jobs=args.jobs, workers=args.workers, keep=args.keep)
    try:
        check_services()
    except ServicesMissing as exc:
        note(f"burst bench: {exc}")
        return 2
    started = time.monotonic()
    figures = asyncio.run(run(settings))
    print(
        f"socmeth burst bench: {settings.jobs:,} `true` jobs due in one second on "
        f"{NODES} nodes, workers.count {settings.workers} per node, "
        f"max_concurrent_jobs {settings.cap}; Redis {REDIS_URL}; {os.cpu_count()} "
        f"cores, Python {sys.version.split()[0]}, {time.monotonic() - started:.0f}s"
    )
    print_table(figures)
    line, code = verdict_line("burst", figures)
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
