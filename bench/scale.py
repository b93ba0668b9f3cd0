"""Measure how socmeth copes with many jobs, each figure beside a floor of the same run.

For each store size (1,000, 10,000 and 100,000 jobs unless told):

- idle tick: one scheduler turn with nothing due (`Scheduler.turn` plus
  `Store.next_due_at`, what an idle loop turn does), averaged over many turns; the
  baseline is the same at the smallest size (target: ratio <= 1.5), with a
  `SELECT 1` round trip through the same engine for scale;
- due fires: one turn that turns 1,000 fires due at the same instant into 1,000
  queued runs; the floor is a bare insert of 1,000 rows into a scratch table of the
  same database (no target: the ratio shows socmeth's own overhead);
- memory: the resident set of a `socmeth serve` process on that store after a few
  scheduler turns; the floor is the same on an empty store (target: at most 1,024
  bytes more per job).

Once per run:

- 1,000 `true`: a real server with W workers and 1,000 command jobs `true` whose
  fires fall on the same instant, from that instant until the last run ended; the
  floor is the machine's time to spawn 1,000 `/bin/sh -c true` with W threads
  (target: at most 2x), and every run must succeed once: none skipped, none twice.

Usage: python bench/scale.py [--sizes 1000,10000,100000] [--quick] [--workers 50]
The exit code is 1 when a target is missed or a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    text,
)

from socmeth.api.schemas import JobIn, to_definition
from socmeth.clock import FakeClock, SystemClock
from socmeth.config import Config
from socmeth.fires import next_fire_at
from socmeth.metrics import Metrics
from socmeth.models import AttemptState, JobDefinition, RunState, Trigger
from socmeth.queue.memory import MemoryQueue
from socmeth.scheduler import Scheduler
from socmeth.store.base import RunFilter
from socmeth.store.codec import job_values
from socmeth.store.schema import UtcDateTime, attempts, jobs, runs
from socmeth.store.sql import SqlStore, open_store

DUE_COUNT = 1000  # fires due at one instant, and `true` jobs of the spawn scenario
TICK_TARGET = 1.5
MEMORY_TARGET_B = 1024
SPAWN_TARGET = 2.0

# The sized stores live on a fixed, synthetic day: nothing reads the clock there.
# Jobs are created at CREATED_AT with `0 3 * * *` in zones whose 03:00 falls outside
# (CREATED_AT, DUE_AT] in January; DUE_COUNT of them run in UTC and fire at DUE_AT.
SCHEDULE = "0 3 * * *"
OTHER_ZONES = (
    "America/New_York",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Africa/Nairobi",
    "Pacific/Auckland",
)
DUE_ZONE = "UTC"
CREATED_AT = datetime(2030, 1, 15, 2, 30, tzinfo=UTC)
IDLE_AT = datetime(2030, 1, 15, 2, 59, 30, tzinfo=UTC)
DUE_AT = datetime(2030, 1, 15, 3, 0, tzinfo=UTC)

FILL_CHUNK = 5000
TICK_ROUNDS = 13  # the first is a warm-up; the median of the others is kept
TICK_TURNS = 100
DUE_REPEATS = 3
FLOOR_REPEATS = 3
SETTLE_S = 3.0  # scheduler turns a server takes before its memory is read
START_TIMEOUT_S = 60.0
SPAWN_LEAD_S = 10.0  # how far ahead of now the `true` jobs fire
SPAWN_TIMEOUT_S = 120.0
POLL_S = 0.1
SHELL_TRUE = ["/bin/sh", "-c", "true"]


# Results


@dataclass(frozen=True)
class Figure:
    """One row of the table: a measured value beside its floor or baseline."""

    name: str
    jobs: int | None
    value: float
    unit: str
    floor: float | None
    floor_name: str
    target: str = "-"
    passed: bool | None = None  # None: no target, shown for information

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.floor == 0:
            return None
        return self.value / self.floor

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "info"
        return "PASS" if self.passed else "FAIL"


def print_table(figures: Sequence[Figure]) -> None:
    """Print the figures as an aligned table, one row each."""
    header = (
        "figure",
        "jobs",
        "value",
        "floor / baseline",
        "ratio",
        "target",
        "verdict",
    )
    rows = [header]
    for fig in figures:
        floor = "-" if fig.floor is None else f"{_number(fig.floor)} {fig.unit}"
        ratio = "-" if fig.ratio is None else f"{fig.ratio:.2f}"
        rows.append(
            (
                fig.name,
                "-" if fig.jobs is None else f"{fig.jobs:,}",
                f"{_number(fig.value)} {fig.unit}",
                f"{floor} ({fig.floor_name})" if fig.floor_name else floor,
                ratio,
                fig.target,
                fig.verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            )
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def note(message: str) -> None:
    """Say what the bench is doing, on stderr, so stdout holds the results."""
    print(message, file=sys.stderr, flush=True)


# Filling a store


def definition_templates(schedule: str, zones: Sequence[str]) -> list[JobDefinition]:
    """Return one job definition per zone, filled in by the API's own conversion."""
    config = Config()
    return [
        to_definition(
            JobIn(name="template", schedule=schedule, timezone=zone, command="true"),
            config,
        )
        for zone in zones
    ]


def job_rows(size: int, created_at: datetime) -> Iterator[dict[str, Any]]:
    """Yield the `jobs` rows the API would store for `size` jobs created at once.

    DUE_COUNT of them, spread evenly over the ids, use DUE_ZONE; the others cycle
    through OTHER_ZONES.
    """
    due, others = (
        definition_templates(SCHEDULE, (DUE_ZONE,)),
        definition_templates(SCHEDULE, OTHER_ZONES),
    )
    stride = max(1, size // DUE_COUNT)
    for index in range(size):
        if index % stride == 0 and index // stride < DUE_COUNT:
            template = due[0]
        else:
            template = others[index % len(others)]
        yield _row(template, f"scale-{index:06d}", created_at)


def _row(template: JobDefinition, name: str, created_at: datetime) -> dict[str, Any]:
    definition = dataclasses.replace(template, name=name)
    fire_at = next_fire_at(definition, created_at, created_at)
    values = job_values(definition, fire_at)
    return values | {"created_at": created_at, "updated_at": created_at}


async def insert_jobs(store: SqlStore, rows: Iterator[dict[str, Any]]) -> int:
    """Insert job rows in one transaction, a chunk per statement; return the count."""
    count = 0
    async with store.engine.begin() as conn:
        while chunk := list(itertools.islice(rows, FILL_CHUNK)):
            await conn.execute(insert(jobs), chunk)
            count += len(chunk)
    return count


async def fill_store(path: Path, size: int) -> float:
    """Create a store at `path` holding `size` jobs; return the seconds it took."""
    started = time.perf_counter()
    store = await open_store(sqlite_url(path))
    try:
        inserted = await insert_jobs(store, job_rows(size, CREATED_AT))
        stored = await store.count_jobs()
    finally:
        await store.close()
    if inserted != size or stored.enabled != size:
        raise RuntimeError(f"filled {inserted} jobs, store holds {stored}; want {size}")
    return time.perf_counter() - started


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


async def open_copy(path: Path) -> SqlStore:
    """Open a store file that is already migrated."""
    return await open_store(sqlite_url(path), migrate_first=False)


def _no_local_attempts(run_ids: Collection[int]) -> None:
    """Stop nothing: no worker runs beside the bench's scheduler."""


def bench_scheduler(store: SqlStore) -> Scheduler:
    """Return a scheduler on `store` whose loop is not started; turns are driven."""
    scheduler = Scheduler(
        store,
        MemoryQueue(),
        FakeClock(CREATED_AT),
        Metrics(),
        "bench",
        stop_local=_no_local_attempts,
    )
    scheduler.started_at = CREATED_AT
    return scheduler


# Idle ticks


async def idle_turns(scheduler: Scheduler, store: SqlStore, turns: int) -> float:
    """Return the mean seconds of an idle loop turn: `turn` then `next_due_at`."""
    started = time.perf_counter()
    for _ in range(turns):
        queued = await scheduler.turn(IDLE_AT)
        await store.next_due_at()
        if queued:
            raise RuntimeError(f"an idle turn queued {queued} attempts; want none")
    return (time.perf_counter() - started) / turns


async def select_one(store: SqlStore, turns: int) -> float:
    """Return the mean seconds of a `SELECT 1` round trip through the store's engine."""
    started = time.perf_counter()
    for _ in range(turns):
        async with store.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    return (time.perf_counter() - started) / turns


async def measure_idle(paths: dict[int, Path]) -> tuple[dict[int, float], float]:
    """Return the idle turn cost at each size and a `SELECT 1` round trip.

    The sizes take turns round by round, in an order reversed every round, so a
    drift of the machine (other processes come and go) spreads over all of them
    instead of landing on one; the median of the rounds drops the disturbed ones.
    """
    stores = {size: await open_copy(path) for size, path in paths.items()}
    try:
        schedulers = {size: bench_scheduler(store) for size, store in stores.items()}
        samples: dict[int, list[float]] = {size: [] for size in stores}
        floors: list[float] = []
        smallest = stores[min(stores)]
        order = sorted(stores)
        for _ in range(TICK_ROUNDS):
            for size in order:
                cost = await idle_turns(schedulers[size], stores[size], TICK_TURNS)
                samples[size].append(cost)
            floors.append(await select_one(smallest, TICK_TURNS))
            order.reverse()
    finally:
        for store in stores.values():
            await store.close()
    costs = {size: statistics.median(s[1:]) for size, s in samples.items()}
    return costs, statistics.median(floors[1:])


# Due fires


scratch_metadata = MetaData()
scratch = Table(
    "bench_scratch",
    scratch_metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, nullable=False),
    Column("scheduled_at", UtcDateTime, nullable=False),
    Column("state", String(32), nullable=False),
    Column("late", Boolean, nullable=False),
)


async def bare_insert(store: SqlStore) -> float:
    """Return the seconds of one transaction inserting 1,000 rows into a scratch
    table of the store's database, through the same engine."""
    rows = [
        {"job_id": i, "scheduled_at": DUE_AT, "state": "queued", "late": False}
        for i in range(DUE_COUNT)
    ]
    async with store.engine.begin() as conn:
        await conn.run_sync(scratch_metadata.create_all)
        await conn.execute(scratch.delete())

    started = time.perf_counter()
    async with store.engine.begin() as conn:
        await conn.execute(insert(scratch), rows)
    return time.perf_counter() - started


async def due_turn(path: Path) -> tuple[float, float, str | None]:
    """Return the seconds of the turn that queues the DUE_COUNT fires at DUE_AT, of
    a bare insert of as many rows, and what the turn got wrong (None: nothing), on a
    fresh copy of a filled store."""
    store = await open_copy(path)
    try:
        floors = [await bare_insert(store)]
        scheduler = bench_scheduler(store)
        started = time.perf_counter()
        queued = await scheduler.turn(DUE_AT)
        elapsed = time.perf_counter() - started
        floors.append(await bare_insert(store))
        problem = await check_due_turn(store, queued)
    finally:
        await store.close()
    return elapsed, min(floors), problem


async def check_due_turn(store: SqlStore, queued: int) -> str | None:
    """Say what is wrong unless the turn made one queued run, with one queued
    attempt, per due job, all for the fire at DUE_AT."""
    async with store.engine.connect() as conn:
        run_count, fires, due_jobs = (
            await conn.execute(
                select(
                    func.count(),
                    func.count(runs.c.scheduled_at.distinct()),
                    func.count(runs.c.job_id.distinct()),
                ).where(runs.c.state == RunState.QUEUED.value)
            )
        ).one()
        queued_attempts = (
            await conn.execute(
                select(func.count())
                .select_from(attempts)
                .where(attempts.c.state == AttemptState.QUEUED.value)
            )
        ).scalar_one()
    found = (queued, run_count, due_jobs, queued_attempts)
    if found == (DUE_COUNT,) * 4 and fires == 1:
        return None
    return (
        f"the due turn queued {queued} attempts, stored {run_count} queued runs "
        f"of {due_jobs} jobs for {fires} fires and {queued_attempts} queued "
        f"attempts; want {DUE_COUNT} of each for 1 fire"
    )


async def measure_due(
    path: Path, copies: Sequence[Path]
) -> tuple[float, float, list[str]]:
    """Return the median turn and floor seconds over fresh copies of a store, and
    what the turns got wrong."""
    turns, floors, problems = [], [], []
    for copy in copies:
        shutil.copyfile(path, copy)
        turn, floor, problem = await due_turn(copy)
        copy.unlink()
        turns.append(turn)
        floors.append(floor)
        problems += [problem] if problem else []
    return statistics.median(turns), statistics.median(floors), problems


# Servers


class Server:
    """Run one `socmeth serve` subprocess on a data dir, logging to a file."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = env
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}")

    def start(self) -> None:
        """Start the server and wait until /readyz answers 200."""
        argv = [sys.executable, "-m", "socmeth", "serve", "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.data_dir.parent,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"socmeth serve exited early; see {self.log_path}")
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"socmeth serve was not ready in {START_TIMEOUT_S}s")

    def rss_bytes(self) -> int:
        """Return the server's resident set size, read from /proc."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS line in /proc/{self.process.pid}/status")

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it has not exited in 15 s."""
        self.client.close()
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment of a server: ours without SOCMETH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCMETH_")}
    return env | (extra or {})


@contextlib.contextmanager
def serving(data_dir: Path, env: dict[str, str]) -> Iterator[Server]:
    """Run a server for the duration of the block, stopping it whatever happens."""
    server = Server(data_dir, env)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def serve_rss(data_dir: Path) -> int:
    """Return the RSS of a server on `data_dir` after SETTLE_S of scheduler turns."""
    with serving(data_dir, server_env()) as server:
        time.sleep(SETTLE_S)
        return server.rss_bytes()


# 1,000 `true` commands


def spawn_true() -> None:
    subprocess.run(
        SHELL_TRUE,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=True,
    )


def spawn_sequential(count: int) -> float:
    """Return the seconds to spawn `count` shells one after another."""
    started = time.perf_counter()
    for _ in range(count):
        spawn_true()
    return time.perf_counter() - started


def spawn_pooled(count: int, threads: int) -> float:
    """Return the seconds to spawn `count` shells over a pool of `threads`."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(spawn_true) for _ in range(count)]:
            future.result()
    return time.perf_counter() - started


@dataclass(frozen=True)
class SpawnOutcome:
    """What the server did with the fires of the `true` jobs."""

    total_s: float
    lateness_p50_s: float
    lateness_p99_s: float
    problems: list[str]


async def fill_true_jobs(path: Path, count: int) -> datetime:
    """Store `count` jobs `@every 1h` running `true`, all next firing at one instant
    SPAWN_LEAD_S ahead; return that instant.

    Each job looks created one interval before the instant, so the instant is a
    real fire of its schedule. The only reading of the wall clock in the bench:
    the fires must fall in the server's future. Durations are measured with
    perf_counter or from instants the server recorded.
    """
    now = SystemClock().now()
    due_at = (now + timedelta(seconds=SPAWN_LEAD_S)).replace(microsecond=0)
    created_at = due_at - timedelta(hours=1)
    (template,) = definition_templates("@every 1h", ("UTC",))
    store = await open_store(sqlite_url(path))
    try:
        rows = (_row(template, f"true-{i:04d}", created_at) for i in range(count))
        await insert_jobs(store, rows)
        due = await store.due_jobs(due_at, count + 1)
    finally:
        await store.close()
    if len(due) != count or {job.next_fire_at for job in due} != {due_at}:
        raise RuntimeError(f"want {count} jobs firing at {due_at}, found {len(due)}")
    return due_at


async def wait_for_runs(path: Path, count: int, timeout_s: float) -> None:
    """Poll the store until `count` runs exist and none is active."""
    store = await open_copy(path)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            by_state = (await store.count_runs()).by_state
            active = sum(by_state[state] for state in RunState if state.is_active)
            if sum(by_state.values()) >= count and active == 0:
                return
            await asyncio.sleep(POLL_S)
    finally:
        await store.close()
    raise RuntimeError(f"the {count} runs had not all ended after {timeout_s}s")


async def judge_runs(path: Path, due_at: datetime, count: int) -> SpawnOutcome:
    """Read every run back and check that each job ran once, for its fire, and
    succeeded in its one attempt."""
    store = await open_copy(path)
    try:
        found, cursor = [], None
        while True:
            page = await store.list_runs(RunFilter(), 500, cursor)
            found += page.items
            if (cursor := page.next_cursor) is None:
                break
    finally:
        await store.close()

    problems = _run_problems(found, due_at, count)
    starts = [r.attempts[0].started_at for r in found if r.attempts]
    lateness = sorted((s - due_at).total_seconds() for s in starts if s)
    ends = [r.finished_at for r in found if r.finished_at]
    total = (max(ends) - due_at).total_seconds() if ends else float("inf")
    return SpawnOutcome(
        total_s=total,
        lateness_p50_s=_percentile(lateness, 50),
        lateness_p99_s=_percentile(lateness, 99),
        problems=problems,
    )


def _run_problems(found: Sequence[Any], due_at: datetime, count: int) -> list[str]:
    states: dict[str, int] = {}
    for run in found:
        states[run.state.value] = states.get(run.state.value, 0) + 1
    keys = {(run.job_id, run.scheduled_at) for run in found}
    checks = {
        f"{len(found)} runs, want {count}": len(found) == count,
        f"run states {states}, want all succeeded": states
        == {RunState.SUCCEEDED.value: count},
        f"{len(keys)} distinct (job, fire) pairs, want {count}": len(keys) == count,
        "a run has another fire than the due instant": all(
            run.scheduled_at == due_at for run in found
        ),
        "a run was not triggered by its schedule, or was late": all(
            run.trigger is Trigger.SCHEDULE and not run.late for run in found
        ),
        "a run has other than one succeeded attempt": all(
            len(run.attempts) == 1 and run.attempts[0].state is AttemptState.SUCCEEDED
            for run in found
        ),
    }
    return [problem for problem, ok in checks.items() if not ok]


def _percentile(values: Sequence[float], percent: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, round(percent / 100 * (len(values) - 1)))
    return values[index]


def run_true_jobs(root: Path, workers: int) -> SpawnOutcome:
    """Fire DUE_COUNT `true` jobs in one second on a real server; judge the runs."""
    data_dir = root / "spawn"
    data_dir.mkdir()
    db = data_dir / "socmeth.db"
    due_at = asyncio.run(fill_true_jobs(db, DUE_COUNT))
    env = server_env(
        {
            "SOCMETH_WORKERS_COUNT": str(workers),
            "SOCMETH_SCHEDULER_MAX_CONCURRENT_JOBS": str(workers),
        }
    )
    with serving(data_dir, env):
        asyncio.run(wait_for_runs(db, DUE_COUNT, SPAWN_LEAD_S + SPAWN_TIMEOUT_S))
    return asyncio.run(judge_runs(db, due_at, DUE_COUNT))


def spawn_figures(root: Path, workers: int) -> list[Figure]:
    """Measure the spawn floors, then the server's 1,000 `true` runs."""
    note(f"spawn floor: {DUE_COUNT:,} x /bin/sh -c true, {workers} threads")
    sequential = spawn_sequential(DUE_COUNT)
    floor = statistics.median(
        spawn_pooled(DUE_COUNT, workers) for _ in range(FLOOR_REPEATS)
    )
    note(f"server: {DUE_COUNT:,} `true` jobs due in one second, {workers} workers")
    outcome = run_true_jobs(root, workers)
    for problem in outcome.problems:
        note(f"CHECK FAILED: {problem}")
    label = f"{workers} threads"
    return [
        Figure(
            f"{DUE_COUNT:,} true, W={workers}: fire to last end",
            None,
            outcome.total_s,
            "s",
            floor,
            f"spawn {DUE_COUNT:,}, {label}",
            f"<= {SPAWN_TARGET}x",
            outcome.total_s <= SPAWN_TARGET * floor and not outcome.problems,
        ),
        Figure(
            f"{DUE_COUNT:,} true: each ran once, succeeded",
            None,
            float(len(outcome.problems)),
            "failed checks",
            None,
            "",
            "0",
            not outcome.problems,
        ),
        Figure("spawn 1,000, sequential", None, sequential, "s", floor, label),
        Figure(
            "schedule lateness p50", None, outcome.lateness_p50_s * 1000, "ms", None, ""
        ),
        Figure(
            "schedule lateness p99", None, outcome.lateness_p99_s * 1000, "ms", None, ""
        ),
    ]


# Sizes


async def fill_all(root: Path, sizes: Sequence[int]) -> dict[int, Path]:
    """Fill one store per size; return the store file of each."""
    paths = {}
    for size in sizes:
        data_dir = root / f"jobs-{size}"
        data_dir.mkdir()
        paths[size] = data_dir / "socmeth.db"
        took = await fill_store(paths[size], size)
        note(f"filled {size:,} jobs in {took:.1f}s")
    return paths


def idle_figures(costs: dict[int, float], select_s: float) -> list[Figure]:
    baseline_size = min(costs)
    baseline = costs[baseline_size]
    figures = [
        Figure(
            "idle tick",
            size,
            cost * 1e6,
            "µs",
            baseline * 1e6,
            f"idle tick at {baseline_size:,}",
            f"<= {TICK_TARGET}",
            cost <= TICK_TARGET * baseline,
        )
        for size, cost in sorted(costs.items())
    ]
    figures.append(
        Figure(
            "SELECT 1 round trip",
            baseline_size,
            select_s * 1e6,
            "µs",
            None,
            "raw floor of a tick's reads",
        )
    )
    return figures


async def due_figures(paths: dict[int, Path]) -> list[Figure]:
    figures = []
    for size, path in sorted(paths.items()):
        copies = [path.with_name(f"due-{i}.db") for i in range(DUE_REPEATS)]
        turn, floor, problems = await measure_due(path, copies)
        note(f"due fires at {size:,} jobs: {turn * 1000:.0f} ms")
        for problem in problems:
            note(f"CHECK FAILED: {problem}")
        figures.append(
            Figure(
                f"{DUE_COUNT:,} due fires -> queued runs",
                size,
                turn * 1000,
                "ms",
                floor * 1000,
                f"bare insert of {DUE_COUNT:,} rows",
                f"{DUE_COUNT:,} runs + attempts",
                not problems,
            )
        )
    return figures


def memory_figures(root: Path, paths: dict[int, Path]) -> list[Figure]:
    empty_dir = root / "empty"
    empty_dir.mkdir()
    # Migrated beforehand like the filled stores, so that no server of the
    # comparison runs the migrations (which import and keep more code).
    asyncio.run(fill_store(empty_dir / "socmeth.db", 0))
    empty = serve_rss(empty_dir)
    note(f"memory, empty store: {empty / 2**20:.1f} MiB")
    figures = [
        Figure("server RSS", 0, empty / 2**20, "MiB", None, "empty store"),
    ]
    for size, path in sorted(paths.items()):
        rss = serve_rss(path.parent)
        per_job = (rss - empty) / size
        note(f"memory, {size:,} jobs: {rss / 2**20:.1f} MiB")
        figures.append(
            Figure("server RSS", size, rss / 2**20, "MiB", empty / 2**20, "empty")
        )
        figures.append(
            Figure(
                "RSS growth per job",
                size,
                per_job,
                "B",
                None,
                "",
                f"<= {MEMORY_TARGET_B} B",
                per_job <= MEMORY_TARGET_B,
            )
        )
    return figures


def run(root: Path, sizes: Sequence[int], workers: int) -> list[Figure]:
    """Take every measurement; return the figures in table order."""
    paths = asyncio.run(fill_all(root, sizes))
    note("idle ticks ...")
    costs, select_s = asyncio.run(measure_idle(paths))
    figures = idle_figures(costs, select_s)
    note("due fires ...")
    figures += asyncio.run(due_figures(paths))
    note("memory ...")
    figures += memory_figures(root, paths)
    figures += spawn_figures(root, workers)
    return figures


# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure socmeth at 1,000 to 100,000 jobs against floors."
    )
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated job counts, each at least 1000 (default "
        "1000,10000,100000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="measure only 1,000 and 10,000 jobs"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=50,
        help="workers.count (and scheduler.max_concurrent_jobs) of the server that "
        "runs the 1,000 `true` jobs, and threads of its spawn floor (default 50)",
    )
    args = parser.parse_args(argv)
    if args.quick and args.sizes:
        parser.error("--quick chooses the sizes; leave out --sizes or --quick")
    text_sizes = "1000,10000" if args.quick else args.sizes or "1000,10000,100000"
    try:
        args.sizes = sorted({int(part) for part in text_sizes.split(",")})
    except ValueError:
        parser.error(f"--sizes {text_sizes!r}: give whole numbers such as 1000,10000")
    if args.sizes[0] < DUE_COUNT:
        parser.error(f"--sizes: each size must be at least {DUE_COUNT}")
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: give at least 1")
    return args


def _stop_on_signal(signum: int, _: FrameType | None) -> None:
    """Raise where the bench is, so the servers and temp dirs are cleaned up.

    Installed for SIGINT too: asyncio.run's own handler only cancels the running
    coroutine, and a cancellation swallowed below (closing a store) would let the
    bench carry on.
    """
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop_on_signal)
    cores = os.cpu_count()
    note(f"sizes {args.sizes}, {cores} cores, W={args.workers}")
    with tempfile.TemporaryDirectory(prefix="socmeth-scale-") as root:
        figures = run(Path(root), args.sizes, args.workers)

    print(f"socmeth scale bench: {cores} cores, Python {sys.version.split()[0]}")
    print_table(figures)
    failed = [fig for fig in figures if fig.passed is False]
    print(f"\n{len(failed)} of {sum(f.passed is not None for f in figures)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
