"""Keep jobs, runs and attempts in SQL: SQLite now, PostgreSQL with the same code.

The store's invariants (see `base`) rest on three things here:

- A run for a fire is inserted with ON CONFLICT DO NOTHING on the unique (job,
  scheduled instant) key, in the transaction that checks and moves the job's next
  fire; only the rows that insert returns are reported as created.
- An attempt is claimed by one UPDATE ... WHERE state = 'queued' RETURNING id: only
  the ids it returns were claimed, whoever else tried at the same moment.
- Every write runs in one transaction; a refused write raises inside it, so it rolls
  back whole.

SQLite allows one writer at a time. Write transactions of this process queue on an
asyncio lock and open with BEGIN IMMEDIATE, so a transaction that reads then writes
never meets SQLITE_BUSY_SNAPSHOT; other processes wait on `busy_timeout`. Reads take
no lock: in WAL mode they see a snapshot and never block the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    URL,
    ColumnElement,
    Connection,
    Select,
    bindparam,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from socmeth.errors import ConfigError, ConflictError, NotFoundError, StoreError
from socmeth.models import (
    ACTIVE_RUN_STATES,
    FINAL_RUN_STATES,
    Attempt,
    AttemptState,
    Concurrency,
    Job,
    JobDefinition,
    Run,
    RunState,
)
from socmeth.store.base import (
    AttemptFinish,
    ClaimBatch,
    ClaimedAttempt,
    FireAdvance,
    JobCounts,
    JobFilter,
    NewRun,
    Page,
    QueuedAttempt,
    RunCounts,
    RunFilter,
    RunningAttempt,
    Store,
)
from socmeth.store.codec import (
    AnyRow,
    attempt_from_row,
    decode_cursor,
    encode_cursor,
    first_attempt_values,
    job_from_row,
    job_values,
    run_from_row,
    run_values,
)
from socmeth.store.migrate import migrate, sqlite_file
from socmeth.store.schema import (
    UtcDateTime,
    attempt_outputs,
    attempts,
    job_tags,
    jobs,
    runs,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
# Execution option that marks a write transaction, so SQLite opens it IMMEDIATE.
WRITE_OPTION = "socmeth_write"
# Keeps every IN (...) list far below the bound-parameter limits of SQLite (32766)
# and asyncpg (32767), however large a batch the caller hands over.
_CHUNK = 5000
# Advisory lock that claims take on PostgreSQL; any constant all nodes share works.
_PG_CLAIM_LOCK = 0x736F636D6574_01

_ATTEMPT_QUEUED = AttemptState.QUEUED.value
_ATTEMPT_RUNNING = AttemptState.RUNNING.value
_RUN_QUEUED = RunState.QUEUED.value
_FINAL_RUN_VALUES = sorted(state.value for state in FINAL_RUN_STATES)
_ACTIVE_RUN_VALUES = sorted(state.value for state in ACTIVE_RUN_STATES)


def async_url(url: str) -> URL:
    """Return the async-driver URL of a store URL as configured (sync-style)."""
    parsed = make_url(url)
    if parsed.drivername in _ASYNC_DRIVERS.values():
        return parsed
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            "database.url",
            f"scheme {parsed.drivername!r} is not supported: "
            "use sqlite:////path/to/socmeth.db or postgresql://user@host/db",
        )
    return parsed.set(drivername=driver)


def create_store_engine(url: str) -> AsyncEngine:
    """Return the async engine of a store URL; SQLite connections get its pragmas."""
    target = async_url(url)
    if target.get_backend_name() != "sqlite":
        # Drops connections a database restart left dead instead of failing a call.
        return create_async_engine(target, pool_pre_ping=True)

    sqlite_file(url)  # refuses in-memory databases
    engine = create_async_engine(target)
    event.listen(engine.sync_engine, "connect", _prepare_sqlite_connection)
    event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
    return engine


def _prepare_sqlite_connection(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
    # The driver's own transaction handling skips BEGIN before SELECT; SQLAlchemy
    # emits BEGIN itself instead (see _begin_sqlite_transaction).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    writing = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


async def open_store(url: str, *, migrate_first: bool = True) -> SqlStore:
    """Migrate the store at `url` to the latest schema, then open it."""
    if migrate_first:
        await asyncio.to_thread(migrate, url)
    store = SqlStore(create_store_engine(url))
    logger.info(
        "store opened at %s",
        make_url(url).render_as_string(hide_password=True),
        extra={"event": "store.opened"},
    )
    return store


def due_jobs_statement(now: datetime, limit: int) -> Select[*tuple[Any, ...]]:
    """Build the due-jobs query: a range scan of the next-fire index, cut by LIMIT."""
    return (
        select(jobs)
        .where(jobs.c.next_fire_at <= now, jobs.c.enabled)
        .order_by(jobs.c.next_fire_at)
        .limit(limit)
    )


def next_due_statement() -> Select[*tuple[Any, ...]]:
    """Build the query of the earliest next fire and the earliest pending retry.

    Each is the first entry of an index, read with ORDER BY ... LIMIT 1.
    """
    next_fire = (
        select(jobs.c.next_fire_at)
        .where(jobs.c.next_fire_at.is_not(None), jobs.c.enabled)
        .order_by(jobs.c.next_fire_at)
        .limit(1)
        .scalar_subquery()
    )
    next_retry = (
        select(runs.c.next_attempt_at)
        .where(runs.c.next_attempt_at.is_not(None), runs.c.state == _RUN_QUEUED)
        .order_by(runs.c.next_attempt_at)
        .limit(1)
        .scalar_subquery()
    )
    return select(next_fire.label("next_fire_at"), next_retry.label("next_retry_at"))


def due_retries_statement(now: datetime, limit: int) -> Select[*tuple[Any, ...]]:
    """Build the due-retries query: a range scan of (state, next_attempt_at)."""
    return (
        _runs_select()
        .where(runs.c.state == _RUN_QUEUED, runs.c.next_attempt_at <= now)
        .order_by(runs.c.next_attempt_at)
        .limit(limit)
    )


def prunable_runs_statement(
    finished_before: datetime, limit: int
) -> Select[*tuple[Any, ...]]:
    """Build the query of the oldest ended runs finished before an instant.

    Relies on `finished_at` being set exactly when a run ends (created in a final
    state, settled by its last attempt, cancelled) and unset while the run may still
    execute, so no test of the state is needed and the index alone answers.
    """
    return (
        select(runs.c.id)
        .where(runs.c.finished_at < finished_before)
        .order_by(runs.c.finished_at)
        .limit(limit)
    )


class SqlStore(Store):
    """Implement the store on SQLAlchemy Core over an async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._dialect = engine.dialect.name
        self._write_lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self._dialect == "sqlite" else contextlib.nullcontext()
        )

    @property
    def engine(self) -> AsyncEngine:
        """Return the engine, for diagnostics and tests (pool state, query plans)."""
        return self._engine

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        with _store_errors():
            async with self._engine.connect() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock:
            with _store_errors():
                async with self._write_engine.begin() as conn:
                    yield conn

    def _insert(self, table: Any) -> sqlite.Insert | postgresql.Insert:
        # ON CONFLICT is spelled alike but built by each dialect's own insert().
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # Lifecycle

    async def close(self) -> None:
        await self._engine.dispose()
        logger.info("store closed", extra={"event": "store.closed"})

    async def ping(self) -> None:
        async with self._reading() as conn:
            await conn.execute(select(1))

    # Jobs

    async def create_job(
        self, definition: JobDefinition, next_fire_at: datetime | None, now: datetime
    ) -> Job:
        values = job_values(definition, next_fire_at)
        async with self._writing() as conn:
            try:
                result = await conn.execute(
                    insert(jobs)
                    .values(**values, created_at=now, updated_at=now)
                    .returning(jobs.c.id)
                )
            except IntegrityError as exc:
                raise _name_taken(definition.name) from exc
            job_id = int(result.scalar_one())
            await _replace_tags(conn, job_id, definition.tags)
            return await _fetch_job(conn, job_id)

    async def update_job(
        self,
        job_id: int,
        definition: JobDefinition,
        next_fire_at: datetime | None,
        now: datetime,
    ) -> Job:
        values = job_values(definition, next_fire_at)
        async with self._writing() as conn:
            try:
                result = await conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(**values, updated_at=now)
                )
            except IntegrityError as exc:
                raise _name_taken(definition.name) from exc
            if result.rowcount == 0:
                raise _job_missing(job_id)
            await _replace_tags(conn, job_id, definition.tags)
            return await _fetch_job(conn, job_id)

    async def delete_job(self, job_id: int) -> None:
        async with self._writing() as conn:
            await _fetch_job(conn, job_id)

            # Explicit, child tables first: the outcome must not depend on whether
            # the connection enforces the schema's ON DELETE CASCADE.
            run_ids = select(runs.c.id).where(runs.c.job_id == job_id)
            await _delete_runs(conn, run_ids)
            await conn.execute(delete(job_tags).where(job_tags.c.job_id == job_id))
            await conn.execute(delete(jobs).where(jobs.c.id == job_id))
        logger.debug(
            "job %s deleted with its runs",
            job_id,
            extra={"event": "store.job_deleted", "job_id": job_id},
        )

    async def get_job(self, job_id: int) -> Job:
        async with self._reading() as conn:
            return await _fetch_job(conn, job_id)

    async def get_job_by_name(self, name: str) -> Job:
        async with self._reading() as conn:
            result = await conn.execute(select(jobs).where(jobs.c.name == name))
            row = result.first()
        if row is None:
            raise NotFoundError(f"no job is named {name!r}")
        return job_from_row(row)

    async def list_jobs(
        self, job_filter: JobFilter, limit: int, cursor: str | None
    ) -> Page[Job]:
        _check_limit(limit)
        query = select(jobs).order_by(jobs.c.name).limit(limit + 1)
        if cursor is not None:
            query = query.where(jobs.c.name > decode_cursor(cursor, "job"))
        query = query.where(*_job_conditions(job_filter))

        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()

        items = [job_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor("job", items[-1].name) if more else None)

    async def count_jobs(self) -> JobCounts:
        query = select(jobs.c.enabled, func.count()).group_by(jobs.c.enabled)
        async with self._reading() as conn:
            counts = {bool(row[0]): int(row[1]) for row in await conn.execute(query)}
        return JobCounts(enabled=counts.get(True, 0), paused=counts.get(False, 0))

    async def due_jobs(self, now: datetime, limit: int) -> list[Job]:
        async with self._reading() as conn:
            rows = (await conn.execute(due_jobs_statement(now, limit))).all()
        return [job_from_row(row) for row in rows]

    async def next_due_at(self) -> datetime | None:
        async with self._reading() as conn:
            row = (await conn.execute(next_due_statement())).one()
        instants: list[datetime] = [value for value in row if value is not None]
        return min(instants, default=None)

    # Runs

    async def record_fires(
        self, advances: Sequence[FireAdvance], runs: Sequence[NewRun], now: datetime
    ) -> list[Run]:
        if not advances and not runs:
            return []

        async with self._writing() as conn:
            job_ids = {a.job_id for a in advances} | {r.job_id for r in runs}
            current = await _next_fires(conn, job_ids)
            held_back = await _advance_fires(conn, advances, current)
            wanted = [
                r for r in runs if r.job_id in current and r.job_id not in held_back
            ]
            created = await self._insert_runs(conn, wanted, now)
            recorded = await _load_runs(conn, created)

        logger.debug(
            "recorded %s runs for %s fires, %s jobs held back",
            len(recorded),
            len(runs),
            len(held_back),
            extra={"event": "store.fires_recorded"},
        )
        return recorded

    async def _insert_runs(
        self, conn: AsyncConnection, new_runs: Sequence[NewRun], now: datetime
    ) -> list[int]:
        """Insert runs, leaving out fires that already have one; return new ids.

        One multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING for the runs, one
        executemany for the first attempts of those created queued.
        """
        if not new_runs:
            return []

        statement = (
            self._insert(runs)
            .on_conflict_do_nothing(index_elements=[runs.c.job_id, runs.c.scheduled_at])
            .returning(runs.c.id, runs.c.state)
        )
        result = await conn.execute(statement, [run_values(r, now) for r in new_runs])
        created = result.all()

        queued = [row.id for row in created if row.state == RunState.QUEUED]
        if queued:
            await conn.execute(
                insert(attempts),
                [first_attempt_values(run_id, now) for run_id in queued],
            )
        return sorted(int(row.id) for row in created)

    async def create_run(
        self,
        new_run: NewRun,
        now: datetime,
        *,
        concurrency: Concurrency = Concurrency.ALLOW,
    ) -> Run:
        async with self._writing() as conn:
            job = await _fetch_job(conn, new_run.job_id, for_update=True)
            if concurrency is not Concurrency.ALLOW:
                await _make_room(conn, job, concurrency, now)
            created = await self._insert_runs(conn, [new_run], now)
            if not created:
                raise ConflictError(
                    f"job {new_run.job_id} already has a run for the fire at "
                    f"{new_run.scheduled_at}: a fire gets one run",
                    field="scheduled_at",
                )
            (run,) = await _load_runs(conn, created)
        return run

    async def get_run(self, run_id: int) -> Run:
        async with self._reading() as conn:
            return await _fetch_run(conn, run_id)

    async def list_runs(
        self, run_filter: RunFilter, limit: int, cursor: str | None
    ) -> Page[Run]:
        _check_limit(limit)
        query = _runs_select().order_by(runs.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(runs.c.id < int(decode_cursor(cursor, "run")))
        query = query.where(*_run_conditions(run_filter))

        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
            items = await _with_attempts(conn, rows[:limit])

        more = len(rows) > limit
        return Page(items, encode_cursor("run", str(items[-1].id)) if more else None)

    async def active_runs(self, job_ids: Sequence[int]) -> dict[int, list[Run]]:
        found: dict[int, list[Run]] = {job_id: [] for job_id in job_ids}
        async with self._reading() as conn:
            rows: list[AnyRow] = []
            for chunk in _chunks(found):
                query = _runs_select().where(
                    runs.c.job_id.in_(chunk), runs.c.state.in_(_ACTIVE_RUN_VALUES)
                )
                rows += (await conn.execute(query.order_by(runs.c.id))).all()
            active = await _with_attempts(conn, rows)

        for run in active:
            found[run.job_id].append(run)
        return found

    async def previous_final_run(self, job_id: int, before_run_id: int) -> Run | None:
        query = (
            _runs_select()
            .where(
                runs.c.job_id == job_id,
                runs.c.id < before_run_id,
                runs.c.state.in_(_FINAL_RUN_VALUES),
            )
            .order_by(runs.c.id.desc())
            .limit(1)
        )
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
            found = await _with_attempts(conn, rows)
        return found[0] if found else None

    async def count_runs(self) -> RunCounts:
        query = select(runs.c.state, func.count()).group_by(runs.c.state)
        async with self._reading() as conn:
            stored = {RunState(r[0]): int(r[1]) for r in await conn.execute(query)}
        return RunCounts(by_state={state: stored.get(state, 0) for state in RunState})

    async def cancel_run(self, run_id: int, reason: str, now: datetime) -> Run:
        async with self._writing() as conn:
            run = await _fetch_run(conn, run_id, for_update=True)
            if not run.state.is_active:
                return run

            running = any(a.state is AttemptState.RUNNING for a in run.attempts)
            if running:
                await _request_cancel(conn, run_id, reason, now)
            else:
                await _cancel_now(conn, run_id, reason, now)
            cancelled = await _fetch_run(conn, run_id)

        # DEBUG: the caller logs the state change at INFO, with the job's name.
        logger.debug(
            "run %s %s: %s",
            run_id,
            "asked to stop" if running else "cancelled",
            reason,
            extra={"event": "store.run_cancelled", "run_id": run_id},
        )
        return cancelled

    async def prune_runs(self, finished_before: datetime, limit: int) -> int:
        if limit <= 0:
            return 0

        query = prunable_runs_statement(finished_before, limit)
        async with self._writing() as conn:
            run_ids = list((await conn.execute(query)).scalars())
            for chunk in _chunks(run_ids):
                await _delete_runs(conn, chunk)

        if run_ids:
            logger.info(
                "pruned %s runs finished before %s",
                len(run_ids),
                finished_before.isoformat(),
                extra={"event": "store.runs_pruned"},
            )
        return len(run_ids)

    # Attempts

    async def claim_attempts(
        self,
        attempt_ids: Sequence[int],
        node_id: str,
        now: datetime,
        max_running: int,
    ) -> ClaimBatch:
        wanted = list(dict.fromkeys(attempt_ids))
        if not wanted:
            return ClaimBatch(claimed=[], deferred=[])

        async with self._writing() as conn:
            await self._serialize_claims(conn)
            free = max(0, max_running - await _count_running(conn))
            if len(wanted) <= free:
                # Room for all: the conditional UPDATE alone tells which were queued.
                queued, deferred = wanted, []
            else:
                queued = await _queued_among(conn, wanted)
                queued, deferred = queued[:free], queued[free:]
            run_of = await _mark_running(conn, queued, node_id, now)
            claimed = await _claimed_attempts(conn, run_of)

        logger.debug(
            "node %s claimed %s of %s attempts",
            node_id,
            len(claimed),
            len(wanted),
            extra={"event": "store.attempts_claimed"},
        )
        return ClaimBatch(claimed=claimed, deferred=deferred)

    async def _serialize_claims(self, conn: AsyncConnection) -> None:
        """Make claims of the whole cluster take turns, so capacity holds.

        Under PostgreSQL's read committed, two nodes could each count the running
        attempts, see room for one more, and both claim. SQLite needs nothing: its
        write transactions take turns already.
        """
        if self._dialect == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_CLAIM_LOCK}
            )

    async def finish_attempts(
        self, finishes: Sequence[AttemptFinish], now: datetime
    ) -> list[Run | None]:
        if not finishes:
            return []

        async with self._writing() as conn:
            running = await _running_rows(conn, [f.attempt_id for f in finishes])
            kept = _first_finish_of_running(finishes, running)
            accepted = [finishes[index] for index in kept]
            await _end_attempts(conn, accepted, now)
            # An empty, whole tail is what a missing row reads as already: skipping it
            # saves a statement per batch of silent commands.
            await self._upsert_outputs(
                conn,
                [
                    (f.attempt_id, f.output, f.output_truncated)
                    for f in accepted
                    if f.output is not None and (f.output or f.output_truncated)
                ],
            )
            await _settle_runs(conn, accepted, running, now)
            run_ids = {running[f.attempt_id].run_id for f in accepted}
            settled = {run.id: run for run in await _load_runs(conn, run_ids)}

        return [
            settled[running[f.attempt_id].run_id] if index in kept else None
            for index, f in enumerate(finishes)
        ]

    async def _upsert_outputs(
        self, conn: AsyncConnection, outputs: Sequence[tuple[int, str, bool]]
    ) -> None:
        """Write output tails with one executemany, replacing earlier tails."""
        if not outputs:
            return

        statement = self._insert(attempt_outputs)
        statement = statement.on_conflict_do_update(
            index_elements=[attempt_outputs.c.attempt_id],
            set_={
                "text": statement.excluded.text,
                "truncated": statement.excluded.truncated,
            },
        )
        await conn.execute(
            statement,
            [
                {"attempt_id": attempt_id, "text": text, "truncated": truncated}
                for attempt_id, text, truncated in outputs
            ],
        )

    async def save_outputs(self, outputs: Sequence[tuple[int, str, bool]]) -> None:
        if not outputs:
            return

        async with self._writing() as conn:
            # A tail arriving after its attempt ended must not replace the final one.
            running = await _running_rows(conn, [output[0] for output in outputs])
            await self._upsert_outputs(
                conn, [output for output in outputs if output[0] in running]
            )

    async def get_output(self, run_id: int, number: int) -> tuple[Attempt, str]:
        query = _attempts_select(attempt_outputs.c.text).where(
            attempts.c.run_id == run_id, attempts.c.number == number
        )
        async with self._reading() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFoundError(f"run {run_id} has no attempt number {number}")
        return attempt_from_row(row), row.text or ""

    async def due_retries(self, now: datetime, limit: int) -> list[Run]:
        query = due_retries_statement(now, limit)
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
            return await _with_attempts(conn, rows)

    async def start_retry(self, run_id: int, now: datetime) -> QueuedAttempt | None:
        async with self._writing() as conn:
            run = await _fetch_run(conn, run_id, for_update=True)
            if run.state is not RunState.QUEUED or run.next_attempt_at is None:
                return None

            number = max((a.number for a in run.attempts), default=0) + 1
            result = await conn.execute(
                insert(attempts)
                .values(first_attempt_values(run_id, now) | {"number": number})
                .returning(attempts.c.id)
            )
            attempt_id = int(result.scalar_one())
            await conn.execute(
                update(runs).where(runs.c.id == run_id).values(next_attempt_at=None)
            )
        return QueuedAttempt(
            attempt_id=attempt_id,
            run_id=run_id,
            number=number,
        )

    async def queued_attempts(self, limit: int, after_id: int) -> list[QueuedAttempt]:
        query = (
            select(attempts.c.id, attempts.c.run_id, attempts.c.number)
            .where(attempts.c.state == _ATTEMPT_QUEUED, attempts.c.id > after_id)
            .order_by(attempts.c.id)
            .limit(limit)
        )
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
        return [QueuedAttempt(row.id, row.run_id, row.number) for row in rows]

    async def running_attempts(self, node_id: str | None) -> list[RunningAttempt]:
        query = select(attempts.c.id, attempts.c.run_id).where(
            attempts.c.state == _ATTEMPT_RUNNING
        )
        if node_id is not None:
            query = query.where(attempts.c.node_id == node_id)

        async with self._reading() as conn:
            pairs = [
                (r.id, r.run_id)
                for r in await conn.execute(query.order_by(attempts.c.id))
            ]
            by_id = {
                run.id: run for run in await _load_runs(conn, {p[1] for p in pairs})
            }
            job_of = await _jobs_by_id(conn, {run.job_id for run in by_id.values()})

        return [
            RunningAttempt(
                attempt=_attempt_in(by_id[run_id], attempt_id),
                run=by_id[run_id],
                job=job_of[by_id[run_id].job_id],
            )
            for attempt_id, run_id in pairs
        ]

    async def cancel_requested(self, attempt_ids: Sequence[int]) -> set[int]:
        carry_on: set[int] = set()
        async with self._reading() as conn:
            for chunk in _chunks(attempt_ids):
                query = (
                    select(attempts.c.id)
                    .join(runs, runs.c.id == attempts.c.run_id)
                    .where(
                        attempts.c.id.in_(chunk),
                        attempts.c.state == _ATTEMPT_RUNNING,
                        runs.c.cancel_requested_at.is_(None),
                    )
                )
                carry_on.update((await conn.execute(query)).scalars())
        return set(attempt_ids) - carry_on

    async def running_count(self) -> int:
        async with self._reading() as conn:
            return await _count_running(conn)

    async def queued_count(self) -> int:
        async with self._reading() as conn:
            return await _count_in_state(conn, _ATTEMPT_QUEUED)


# Errors and small values


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """Turn a database failure into StoreError, naming the driver's error only.

    The statement and its parameters are left out: they may hold secrets.
    """
    try:
        yield
    except DBAPIError as exc:
        cause = exc.orig if exc.orig is not None else exc
        raise StoreError(f"the store failed: {type(cause).__name__}: {cause}") from exc
    except OSError as exc:
        raise StoreError(f"the store cannot be reached: {exc}") from exc


def _name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"a job named {name!r} already exists: choose another name", field="name"
    )


def _job_missing(job_id: int) -> NotFoundError:
    return NotFoundError(f"no job has id {job_id}")


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"page limit must be at least 1, got {limit}")


def _chunks(values: Iterable[T]) -> Iterator[list[T]]:
    items = list(values)
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# Jobs


def _job_conditions(job_filter: JobFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if job_filter.search:
        # Names are lower case, so this matches alike on SQLite and PostgreSQL.
        needle = job_filter.search.lower()
        conditions.append(jobs.c.name.contains(needle, autoescape=True))
    if job_filter.enabled is not None:
        conditions.append(jobs.c.enabled.is_(job_filter.enabled))
    if job_filter.tag is not None:
        conditions.append(
            exists().where(
                job_tags.c.job_id == jobs.c.id, job_tags.c.tag == job_filter.tag
            )
        )
    return conditions


async def _fetch_job(
    conn: AsyncConnection, job_id: int, *, for_update: bool = False
) -> Job:
    query = select(jobs).where(jobs.c.id == job_id)
    if for_update:
        query = query.with_for_update()  # PostgreSQL: one run-now of a job at a time
    row = (await conn.execute(query)).first()
    if row is None:
        raise _job_missing(job_id)
    return job_from_row(row)


async def _make_room(
    conn: AsyncConnection, job: Job, concurrency: Concurrency, now: datetime
) -> None:
    """Apply `forbid` or `replace` to a job's active runs, inside the run's insert.

    Done in the inserting transaction, so concurrent requests cannot both see the
    job idle: under `forbid` all but one get a ConflictError.
    """
    query = (
        select(runs.c.id, runs.c.state)
        .where(runs.c.job_id == job.id, runs.c.state.in_(_ACTIVE_RUN_VALUES))
        .order_by(runs.c.id)
    )
    active = (await conn.execute(query)).all()
    if not active:
        return
    if concurrency is Concurrency.FORBID:
        run_id, state = active[0]
        raise ConflictError(
            f"job {job.name} already has an active run ({run_id}, {state}) and its "
            "concurrency is forbid; wait for it, cancel it, or set concurrency to "
            "allow or replace"
        )
    running = set(
        (
            await conn.execute(
                select(attempts.c.run_id).where(
                    attempts.c.run_id.in_([row.id for row in active]),
                    attempts.c.state == _ATTEMPT_RUNNING,
                )
            )
        ).scalars()
    )
    for run_id, _ in active:
        cancel = _request_cancel if run_id in running else _cancel_now
        await cancel(conn, run_id, "replaced by a newer run", now)


async def _jobs_by_id(conn: AsyncConnection, job_ids: Iterable[int]) -> dict[int, Job]:
    found: dict[int, Job] = {}
    for chunk in _chunks(job_ids):
        for row in await conn.execute(select(jobs).where(jobs.c.id.in_(chunk))):
            found[row.id] = job_from_row(row)
    return found


async def _replace_tags(
    conn: AsyncConnection, job_id: int, tags: Iterable[str]
) -> None:
    await conn.execute(delete(job_tags).where(job_tags.c.job_id == job_id))
    rows = [{"job_id": job_id, "tag": tag} for tag in dict.fromkeys(tags)]
    if rows:
        await conn.execute(insert(job_tags), rows)


async def _next_fires(
    conn: AsyncConnection, job_ids: Iterable[int]
) -> dict[int, datetime | None]:
    """Return the stored next fire of each job that still exists, locking its row."""
    found: dict[int, datetime | None] = {}
    for chunk in _chunks(job_ids):
        query = (
            select(jobs.c.id, jobs.c.next_fire_at)
            .where(jobs.c.id.in_(chunk))
            .with_for_update()
        )
        found.update({row.id: row.next_fire_at for row in await conn.execute(query)})
    return found


async def _advance_fires(
    conn: AsyncConnection,
    advances: Sequence[FireAdvance],
    current: dict[int, datetime | None],
) -> set[int]:
    """Move next fires whose stored value is still the expected one; return the
    ids of jobs where an advance did not match."""
    moves: list[dict[str, Any]] = []
    held_back: set[int] = set()
    for advance in advances:
        if current.get(advance.job_id) != advance.expected_next_fire_at:
            held_back.add(advance.job_id)
            continue
        current[advance.job_id] = advance.next_fire_at
        moves.append(
            {
                "b_id": advance.job_id,
                "b_expected": advance.expected_next_fire_at,
                "b_next": advance.next_fire_at,
            }
        )

    if moves:
        statement = (
            update(jobs)
            .where(
                jobs.c.id == bindparam("b_id"),
                jobs.c.next_fire_at == bindparam("b_expected"),
            )
            .values(next_fire_at=bindparam("b_next"))
        )
        await conn.execute(statement, moves)
    return held_back


# Runs


def _runs_select() -> Select[*tuple[Any, ...]]:
    return select(runs, jobs.c.name.label("job_name")).join(
        jobs, jobs.c.id == runs.c.job_id
    )


def _run_conditions(run_filter: RunFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if run_filter.job_id is not None:
        conditions.append(runs.c.job_id == run_filter.job_id)
    if run_filter.states is not None:
        conditions.append(runs.c.state.in_(sorted(s.value for s in run_filter.states)))
    if run_filter.trigger is not None:
        conditions.append(runs.c.trigger == run_filter.trigger.value)
    if run_filter.created_after is not None:
        conditions.append(runs.c.created_at >= run_filter.created_after)
    if run_filter.created_before is not None:
        conditions.append(runs.c.created_at < run_filter.created_before)
    return conditions


async def _with_attempts(conn: AsyncConnection, rows: Sequence[AnyRow]) -> list[Run]:
    """Build runs from their rows, reading all their attempts in one query a chunk."""
    by_run: defaultdict[int, list[Attempt]] = defaultdict(list)
    for chunk in _chunks(row.id for row in rows):
        query = (
            _attempts_select()
            .where(attempts.c.run_id.in_(chunk))
            .order_by(attempts.c.run_id, attempts.c.number)
        )
        for attempt_row in await conn.execute(query):
            by_run[attempt_row.run_id].append(attempt_from_row(attempt_row))
    return [run_from_row(row, by_run[row.id]) for row in rows]


async def _load_runs(conn: AsyncConnection, run_ids: Iterable[int]) -> list[Run]:
    """Return the runs with these ids, oldest first, with their attempts."""
    rows: list[AnyRow] = []
    for chunk in _chunks(sorted(set(run_ids))):
        query = _runs_select().where(runs.c.id.in_(chunk)).order_by(runs.c.id)
        rows += (await conn.execute(query)).all()
    return await _with_attempts(conn, rows)


async def _fetch_run(
    conn: AsyncConnection, run_id: int, *, for_update: bool = False
) -> Run:
    query = _runs_select().where(runs.c.id == run_id)
    if for_update:
        query = query.with_for_update(of=runs)
    rows = (await conn.execute(query)).all()
    if not rows:
        raise NotFoundError(f"no run has id {run_id}")
    (run,) = await _with_attempts(conn, rows)
    return run


async def _delete_runs(
    conn: AsyncConnection, run_ids: Sequence[int] | Select[*tuple[Any, ...]]
) -> None:
    """Delete runs (a list of ids or an id subquery) with attempts and outputs."""
    attempt_ids = select(attempts.c.id).where(attempts.c.run_id.in_(run_ids))
    await conn.execute(
        delete(attempt_outputs).where(attempt_outputs.c.attempt_id.in_(attempt_ids))
    )
    await conn.execute(delete(attempts).where(attempts.c.run_id.in_(run_ids)))
    await conn.execute(delete(runs).where(runs.c.id.in_(run_ids)))


async def _request_cancel(
    conn: AsyncConnection, run_id: int, reason: str, now: datetime
) -> None:
    # The first request's instant stands; a repeated request only updates the reason.
    await conn.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(
            cancel_requested_at=func.coalesce(
                runs.c.cancel_requested_at, literal(now, UtcDateTime())
            ),
            reason=reason,
        )
    )


async def _cancel_now(
    conn: AsyncConnection, run_id: int, reason: str, now: datetime
) -> None:
    await conn.execute(
        update(attempts)
        .where(attempts.c.run_id == run_id, attempts.c.state == _ATTEMPT_QUEUED)
        .values(state=AttemptState.CANCELLED.value, finished_at=now)
    )
    await conn.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(
            state=RunState.CANCELLED.value,
            reason=reason,
            next_attempt_at=None,
            finished_at=now,
        )
    )


# Attempts


def _attempts_select(*extra: Any) -> Select[*tuple[Any, ...]]:
    truncated = func.coalesce(attempt_outputs.c.truncated, False)
    return select(attempts, truncated.label("output_truncated"), *extra).outerjoin(
        attempt_outputs, attempt_outputs.c.attempt_id == attempts.c.id
    )


def _attempt_in(run: Run, attempt_id: int) -> Attempt:
    return next(a for a in run.attempts if a.id == attempt_id)


async def _count_running(conn: AsyncConnection) -> int:
    return await _count_in_state(conn, _ATTEMPT_RUNNING)


async def _count_in_state(conn: AsyncConnection, state: str) -> int:
    query = select(func.count()).select_from(attempts).where(attempts.c.state == state)
    return int((await conn.execute(query)).scalar_one())


async def _queued_among(conn: AsyncConnection, attempt_ids: list[int]) -> list[int]:
    """Return which of the attempts are queued, in the order given."""
    queued: set[int] = set()
    for chunk in _chunks(attempt_ids):
        query = (
            select(attempts.c.id)
            .where(attempts.c.id.in_(chunk), attempts.c.state == _ATTEMPT_QUEUED)
            .with_for_update()
        )
        queued.update((await conn.execute(query)).scalars())
    return [attempt_id for attempt_id in attempt_ids if attempt_id in queued]


async def _mark_running(
    conn: AsyncConnection, attempt_ids: list[int], node_id: str, now: datetime
) -> dict[int, int]:
    """Claim the attempts still queued; map each id this UPDATE changed to its run."""
    claimed: dict[int, int] = {}
    for chunk in _chunks(attempt_ids):
        statement = (
            update(attempts)
            .where(attempts.c.id.in_(chunk), attempts.c.state == _ATTEMPT_QUEUED)
            .values(state=_ATTEMPT_RUNNING, node_id=node_id, started_at=now)
            .returning(attempts.c.id, attempts.c.run_id)
        )
        claimed.update({row.id: row.run_id for row in await conn.execute(statement)})

    for chunk in _chunks(set(claimed.values())):
        await conn.execute(
            update(runs)
            .where(runs.c.id.in_(chunk), runs.c.state == _RUN_QUEUED)
            .values(state=RunState.RUNNING.value)
        )
    return {a: claimed[a] for a in attempt_ids if a in claimed}


async def _claimed_attempts(
    conn: AsyncConnection, run_of: dict[int, int]
) -> list[ClaimedAttempt]:
    """Gather what workers need for claimed attempts (attempt id -> run id): runs,
    jobs and each job's previous ended run."""
    if not run_of:
        return []

    by_id = {run.id: run for run in await _load_runs(conn, run_of.values())}
    job_of = await _jobs_by_id(conn, {run.job_id for run in by_id.values()})
    previous = await _previous_final_runs(conn, by_id.keys())
    return [
        ClaimedAttempt(
            attempt=_attempt_in(by_id[run_id], attempt_id),
            run=by_id[run_id],
            job=job_of[by_id[run_id].job_id],
            previous_run=previous.get(run_id),
        )
        for attempt_id, run_id in run_of.items()
    ]


async def _previous_final_runs(
    conn: AsyncConnection, run_ids: Iterable[int]
) -> dict[int, Run]:
    """Map each run to its job's latest ended run created before it, if any."""
    earlier = runs.alias("earlier")
    previous_id = (
        select(earlier.c.id)
        .where(
            earlier.c.job_id == runs.c.job_id,
            earlier.c.id < runs.c.id,
            earlier.c.state.in_(_FINAL_RUN_VALUES),
        )
        .order_by(earlier.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    pairs: dict[int, int] = {}
    for chunk in _chunks(run_ids):
        query = select(runs.c.id, previous_id.label("previous_id")).where(
            runs.c.id.in_(chunk)
        )
        for row in await conn.execute(query):
            if row.previous_id is not None:
                pairs[row.id] = row.previous_id

    loaded = {run.id: run for run in await _load_runs(conn, pairs.values())}
    return {run_id: loaded[previous] for run_id, previous in pairs.items()}


async def _running_rows(
    conn: AsyncConnection, attempt_ids: Sequence[int]
) -> dict[int, AnyRow]:
    """Return the running attempts among these, each with its run's cancel state."""
    found: dict[int, AnyRow] = {}
    for chunk in _chunks(dict.fromkeys(attempt_ids)):
        query = (
            select(
                attempts.c.id,
                attempts.c.run_id,
                runs.c.reason,
                runs.c.cancel_requested_at,
            )
            .join(runs, runs.c.id == attempts.c.run_id)
            .where(attempts.c.id.in_(chunk), attempts.c.state == _ATTEMPT_RUNNING)
            .with_for_update()
        )
        found.update({row.id: row for row in await conn.execute(query)})
    return found


def _first_finish_of_running(
    finishes: Sequence[AttemptFinish], running: dict[int, AnyRow]
) -> set[int]:
    """Return the positions of each running attempt's first finish; a repeat
    finds the attempt ended already."""
    seen: set[int] = set()
    kept: set[int] = set()
    for index, finish in enumerate(finishes):
        if finish.attempt_id in running and finish.attempt_id not in seen:
            seen.add(finish.attempt_id)
            kept.add(index)
    return kept


async def _end_attempts(
    conn: AsyncConnection, accepted: Sequence[AttemptFinish], now: datetime
) -> None:
    if not accepted:
        return

    statement = (
        update(attempts)
        .where(attempts.c.id == bindparam("b_id"), attempts.c.state == _ATTEMPT_RUNNING)
        .values(
            state=bindparam("b_state"),
            finished_at=now,
            exit_code=bindparam("b_exit_code"),
            http_status=bindparam("b_http_status"),
            error=bindparam("b_error"),
        )
    )
    await conn.execute(
        statement,
        [
            {
                "b_id": f.attempt_id,
                "b_state": f.outcome.state.value,
                "b_exit_code": f.outcome.exit_code,
                "b_http_status": f.outcome.http_status,
                "b_error": f.outcome.error,
            }
            for f in accepted
        ],
    )


async def _settle_runs(
    conn: AsyncConnection,
    accepted: Sequence[AttemptFinish],
    running: dict[int, AnyRow],
    now: datetime,
) -> None:
    if not accepted:
        return

    statement = (
        update(runs)
        .where(runs.c.id == bindparam("b_id"))
        .values(
            state=bindparam("b_state"),
            reason=bindparam("b_reason"),
            next_attempt_at=bindparam("b_next_attempt_at"),
            finished_at=bindparam("b_finished_at"),
        )
    )
    settlements = [_settlement(f, running[f.attempt_id], now) for f in accepted]
    await conn.execute(statement, settlements)


def _settlement(finish: AttemptFinish, row: AnyRow, now: datetime) -> dict[str, Any]:
    """Decide a run's row after its attempt ended.

    A run asked to stop is not retried: it ends `cancelled` with the reason given
    when the stop was asked, which a cancelled attempt's outcome rarely repeats.
    """
    outcome = finish.outcome
    asked_to_stop = row.cancel_requested_at is not None
    if outcome.next_attempt_at is not None and not asked_to_stop:
        return {
            "b_id": row.run_id,
            "b_state": RunState.QUEUED.value,
            "b_reason": outcome.reason,
            "b_next_attempt_at": outcome.next_attempt_at,
            "b_finished_at": None,
        }

    state = outcome.run_state
    if outcome.next_attempt_at is not None or state is RunState.CANCELLED:
        state = RunState.CANCELLED
        reason = outcome.reason or row.reason
    else:
        reason = outcome.reason
    return {
        "b_id": row.run_id,
        "b_state": state.value,
        "b_reason": reason,
        "b_next_attempt_at": None,
        "b_finished_at": now,
    }
