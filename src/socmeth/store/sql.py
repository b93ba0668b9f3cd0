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
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    URL,
    ColumnElement,
    Connection,
    Select,
    bindparam,
    case,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    literal,
    make_url,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from socmeth.auth.models import ApiToken, AuditRecord, Role, User
from socmeth.clock import Clock, SystemClock
from socmeth.dependencies import (
    JobView,
    Plan,
    RunView,
    Snapshot,
    WaitingRun,
    find_cycle,
    format_cycle,
    give_up_at,
)
from socmeth.errors import (
    ChangedError,
    ConfigError,
    ConflictError,
    FencedError,
    NotFoundError,
    StoreError,
    ValidationError,
)
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
    Trigger,
    UpstreamLink,
)
from socmeth.store.base import (
    FAILED_RUN_STATES,
    AttemptFinish,
    AuditFilter,
    ClaimBatch,
    ClaimedAttempt,
    DependencyGraph,
    DependencyPass,
    EndedBucket,
    Fence,
    FinishedAttempts,
    FireAdvance,
    GiveUp,
    GraphJob,
    JobCounts,
    JobFilter,
    JobSort,
    Lease,
    NewApiToken,
    NewAuditRecord,
    NewRun,
    NewUser,
    NodeBeat,
    NodeRecord,
    Page,
    Planner,
    QueuedAttempt,
    RunCounts,
    RunFilter,
    RunningAttempt,
    Store,
)
from socmeth.store.codec import (
    AnyRow,
    JobPosition,
    api_token_from_row,
    attempt_from_row,
    audit_from_row,
    decode_audit_detail,
    decode_cursor,
    decode_definition,
    decode_id_cursor,
    decode_job_cursor,
    encode_audit_detail,
    encode_cursor,
    encode_definition,
    encode_job_cursor,
    first_attempt_values,
    job_from_row,
    job_values,
    run_from_row,
    run_values,
    user_from_row,
)
from socmeth.store.migrate import migrate, shown_url, sqlite_file
from socmeth.store.schema import (
    UtcDateTime,
    api_tokens,
    attempt_outputs,
    attempts,
    audit_records,
    dependency_work,
    job_dependencies,
    job_tags,
    jobs,
    leader_lease,
    nodes,
    run_waits,
    runs,
    users,
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
# Advisory locks taken on PostgreSQL; any constants all nodes share work. Claims
# take one so that capacity holds; changes of the dependency graph take the other so
# that two concurrent updates cannot close a cycle between them.
_PG_CLAIM_LOCK = 0x736F636D6574_01
# First key of the two-key advisory locks a leader holds on its term ("socm").
PG_TERM_LOCK = 0x736F636D
_PG_GRAPH_LOCK = 0x736F636D6574_02
# Changes of users' roles and removals take turns on this one, so that the last
# admin stays (see _keep_an_admin).
_PG_USERS_LOCK = 0x736F636D6574_03
# Names of dependents a refused delete lists before "and N more".
_NAMED_DEPENDENTS = 10

_ATTEMPT_QUEUED = AttemptState.QUEUED.value
_ATTEMPT_RUNNING = AttemptState.RUNNING.value
_RUN_QUEUED = RunState.QUEUED.value
_RUN_WAITING = RunState.WAITING.value
_RUN_SUCCEEDED = RunState.SUCCEEDED.value
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


IDLE_IN_TRANSACTION_S = 5.0


def create_store_engine(url: str) -> AsyncEngine:
    """Return the async engine of a store URL; SQLite connections get its pragmas."""
    target = async_url(url)
    if target.get_backend_name() != "sqlite":
        # pool_pre_ping drops connections a database restart left dead instead of
        # failing a call. The idle timeout ends the session of a node that stopped
        # (a machine lost, a process paused) in the middle of a transaction, which
        # would otherwise hold the lease row, and with it every takeover, until
        # TCP gives up on the connection, minutes later.
        return create_async_engine(
            target,
            pool_pre_ping=True,
            connect_args={
                "server_settings": {
                    "idle_in_transaction_session_timeout": str(
                        int(IDLE_IN_TRANSACTION_S * 1000)
                    )
                }
            },
        )

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


async def open_store(
    url: str, *, migrate_first: bool = True, clock: Clock | None = None
) -> SqlStore:
    """Migrate the store at `url` to the latest schema, then open it.

    `clock` is the store's clock on SQLite, the one node's (default: the system's).
    """
    if migrate_first:
        await asyncio.to_thread(migrate, url)
    store = SqlStore(create_store_engine(url), clock)
    logger.info(
        "store opened at %s",
        shown_url(url),
        extra={"event": "store.opened"},
    )
    return store


def job_page_statements(
    job_filter: JobFilter, sort: JobSort, after: JobPosition | None, limit: int
) -> list[Select[*tuple[Any, ...]]]:
    """Build the queries of one page of jobs in `sort` order after `after`.

    They are run in turn until `limit` rows came back. Each reads one index range
    in its order from where the page starts, so a page costs the same however deep
    in the listing it is: the name sorts read the unique index of names, the others
    an index of (sorted column, id), and paused jobs their partial indexes (see
    schema). Jobs without a next fire come last in the next-fire sort, by id, from
    a query of their own: SQLite sorts NULL first and PostgreSQL last, and SQLite
    cannot index NULLS LAST.
    """
    query = select(jobs).where(*_job_conditions(job_filter)).limit(limit)
    if sort in (JobSort.NAME, JobSort.NAME_DESC):
        # Names are unique: the name alone orders and resumes the listing.
        name = jobs.c.name
        descending = sort is JobSort.NAME_DESC
        if after is not None:
            query = query.where(
                name < after.value if descending else name > after.value
            )
        return [query.order_by(name.desc() if descending else name)]

    if sort is not JobSort.NEXT_FIRE:
        column = jobs.c.updated_at if sort is JobSort.UPDATED else jobs.c.created_at
        return _resumed(query, column, after, descending=True)

    next_fire = jobs.c.next_fire_at
    unset = query.where(next_fire.is_(None)).order_by(next_fire, jobs.c.id)
    if after is None:
        scheduled = query.where(next_fire.is_not(None))
        return [*_resumed(scheduled, next_fire, None, descending=False), unset]
    if after.value is None:
        return [unset.where(jobs.c.id > after.job_id)]
    return [*_resumed(query, next_fire, after, descending=False), unset]


def _resumed(
    query: Select[*tuple[Any, ...]],
    column: ColumnElement[Any],
    after: JobPosition | None,
    *,
    descending: bool,
) -> list[Select[*tuple[Any, ...]]]:
    """Order jobs by (column, id) and resume after a position: the rest of its tie
    first, then the values beyond it.

    Two ranges rather than one `(column, id) > (?, ?)`: SQLite seeks that row value
    by its first column only when id is the rowid, and would read the whole tie
    (thousands of jobs share the next fire of an hourly schedule).
    """
    job_id = jobs.c.id
    order = (column.desc(), job_id.desc()) if descending else (column, job_id)
    if after is None:
        return [query.order_by(*order)]

    rest_of_tie = job_id < after.job_id if descending else job_id > after.job_id
    beyond = column < after.value if descending else column > after.value
    return [
        query.where(column == after.value, rest_of_tie).order_by(*order),
        query.where(beyond).order_by(*order),
    ]


def due_jobs_statement(now: datetime, limit: int) -> Select[*tuple[Any, ...]]:
    """Build the due-jobs query: a range scan of the next-fire index, cut by LIMIT."""
    return (
        select(jobs)
        .where(jobs.c.next_fire_at <= now, jobs.c.enabled)
        .order_by(jobs.c.next_fire_at)
        .limit(limit)
    )


def next_due_statement() -> Select[*tuple[Any, ...]]:
    """Build the query of the earliest next fire, pending retry and wait's end.

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
    give_up = (
        select(runs.c.give_up_at)
        .where(runs.c.give_up_at.is_not(None))
        .order_by(runs.c.give_up_at)
        .limit(1)
        .scalar_subquery()
    )
    return select(
        next_fire.label("next_fire_at"),
        next_retry.label("next_retry_at"),
        give_up.label("give_up_at"),
    )


def runs_page_statement(
    run_filter: RunFilter, before_id: int | None, limit: int
) -> Select[*tuple[Any, ...]]:
    """Build the query of a page of runs, newest first, older than `before_id`.

    With states to match, each state is read as its own range of the (state, id)
    index, newest first and cut by LIMIT, and the page is the newest of those few
    rows, whatever the states hold. As one `state IN (...)`, SQLite, which keeps no
    statistics, gathers every run of those states and sorts them (every ended run,
    for the dashboard's recent ones); read by id alone, as PostgreSQL may choose, a
    rare state (the active ones) is found only after the whole history.
    """
    conditions = [] if before_id is None else [runs.c.id < before_id]
    newest_first = runs.c.id.desc()
    if not run_filter.states:
        conditions += _run_conditions(run_filter)
        return _runs_select().where(*conditions).order_by(newest_first).limit(limit)

    conditions += _run_conditions(replace(run_filter, states=None))
    branches = [
        select(runs.c.id)
        .where(*conditions, runs.c.state == state)
        .order_by(newest_first)
        .limit(limit)
        .subquery()
        for state in sorted(run_filter.states)
    ]
    chosen = union_all(*(select(branch.c.id) for branch in branches)).subquery()
    return (
        _runs_select()
        .where(runs.c.id.in_(select(chosen.c.id)))
        .order_by(newest_first)
        .limit(limit)
    )


def due_retries_statement(now: datetime, limit: int) -> Select[*tuple[Any, ...]]:
    """Build the due-retries query: a range scan of (state, next_attempt_at)."""
    return (
        _runs_select()
        .where(runs.c.state == _RUN_QUEUED, runs.c.next_attempt_at <= now)
        .order_by(runs.c.next_attempt_at)
        .limit(limit)
    )


def ended_buckets_statement(
    since: datetime, width: timedelta, count: int
) -> Select[*tuple[Any, ...]]:
    """Build the query counting ended and failed runs per bucket since an instant.

    The bucket is a CASE over the bucket ends rather than date arithmetic, which
    SQLite and PostgreSQL spell differently; the WHERE is a range of the
    `finished_at` index.
    """
    until = since + width * count
    whens = [
        (runs.c.finished_at < since + width * (index + 1), index)
        for index in range(count - 1)
    ]
    # CASE needs one WHEN at least; a single bucket holds everything in range.
    bucket = (case(*whens, else_=count - 1) if whens else literal(0)).label("bucket")
    failed_values = sorted(state.value for state in FAILED_RUN_STATES)
    failed = func.sum(case((runs.c.state.in_(failed_values), 1), else_=0))
    return (
        select(bucket, func.count(), failed)
        .where(runs.c.finished_at >= since, runs.c.finished_at < until)
        .group_by(bucket)
    )


def prunable_runs_statement(
    finished_before: datetime, limit: int
) -> Select[*tuple[Any, ...]]:
    """Build the query of the oldest ended runs finished before an instant.

    Relies on `finished_at` being set exactly when a run ends (created in a final
    state, settled by its last attempt, cancelled) and unset while the run may still
    execute, so no test of the state is needed and the index alone answers. A run
    that a waiting run is linked to is kept until that run stops waiting.
    """
    waiter = runs.alias("waiter")
    linked_by_waiting = (
        select(run_waits.c.run_id)
        .join(waiter, waiter.c.id == run_waits.c.run_id)
        .where(run_waits.c.upstream_run_id == runs.c.id, waiter.c.state == _RUN_WAITING)
        .exists()
    )
    return (
        select(runs.c.id)
        .where(runs.c.finished_at < finished_before, ~linked_by_waiting)
        .order_by(runs.c.finished_at)
        .limit(limit)
    )


class SqlStore(Store):
    """Implement the store on SQLAlchemy Core over an async engine."""

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        """Wrap an engine; `clock` is the store's clock on SQLite (see store_now)."""
        self._engine = engine
        self._clock = clock or SystemClock()
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._dialect = engine.dialect.name
        self._write_lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self._dialect == "sqlite" else contextlib.nullcontext()
        )
        # The term locks (PostgreSQL): a connection of their own, opened lazily.
        self._lock_engine: AsyncEngine | None = None
        self._lock_conn: AsyncConnection | None = None
        self._term_locks: set[int] = set()
        self._term_lock_guard = asyncio.Lock()

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

    # Lifecycle

    async def close(self) -> None:
        await self._drop_lock_connection()
        if self._lock_engine is not None:
            await self._lock_engine.dispose()
        await self._engine.dispose()
        logger.info("store closed", extra={"event": "store.closed"})

    async def ping(self) -> None:
        async with self._reading() as conn:
            await conn.execute(select(1))

    # Cluster

    async def store_now(self) -> datetime:
        async with self._reading() as conn:
            return await self._now(conn)

    async def _now(self, conn: AsyncConnection) -> datetime:
        if self._dialect != "postgresql":
            return self._clock.now()
        # clock_timestamp(), not now(): the latter is the transaction's start.
        now = (await conn.execute(select(func.clock_timestamp()))).scalar_one()
        assert isinstance(now, datetime)
        return now.astimezone(UTC)

    async def heartbeat(self, beat: NodeBeat) -> datetime:
        async with self._writing() as conn:
            now = await self._now(conn)
            values = {
                "address": beat.address,
                "version": beat.version,
                "started_at": beat.started_at,
                "last_heartbeat_at": now,
                "running": beat.running,
                "stopped_at": None,
            }
            statement = _dialect_insert(conn, nodes).values(id=beat.id, **values)
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[nodes.c.id], set_=values
                )
            )
        return now

    async def mark_stopped(self, node_id: str) -> None:
        async with self._writing() as conn:
            now = await self._now(conn)
            await conn.execute(
                update(nodes).where(nodes.c.id == node_id).values(stopped_at=now)
            )

    async def list_nodes(self) -> tuple[datetime, list[NodeRecord]]:
        async with self._reading() as conn:
            now = await self._now(conn)
            rows = (await conn.execute(select(nodes).order_by(nodes.c.id))).all()
        return now, [
            NodeRecord(
                id=row.id,
                address=row.address,
                version=row.version,
                started_at=row.started_at,
                last_heartbeat_at=row.last_heartbeat_at,
                running=row.running,
                stopped_at=row.stopped_at,
            )
            for row in rows
        ]

    async def acquire_lease(
        self, node_id: str, ttl: timedelta, *, gone_term: int | None = None
    ) -> Lease | None:
        async with self._writing() as conn:
            # FOR NO KEY UPDATE does not wait for the fenced writes in progress,
            # which hold the row FOR KEY SHARE: a leader renews while its own long
            # transaction runs, instead of losing the lease to it.
            held, now = await self._read_lease(conn, takeover=False)
            if held.holder == node_id:
                # Renewed; even after it lapsed, while no other node took it, this
                # node led all along, so the term stands.
                term = held.term
            elif _takeable(held, now, gone_term):
                # A takeover waits for every fenced write in progress (FOR UPDATE),
                # then decides again on what it reads once they ended.
                held, now = await self._read_lease(conn, takeover=True)
                if held.holder != node_id and not _takeable(held, now, gone_term):
                    return None
                term = held.term if held.holder == node_id else held.term + 1
            else:
                return None
            lease = Lease(
                node_id,
                term,
                now + ttl,
                previous_expires_at=held.expires_at if term != held.term else None,
            )
            await conn.execute(
                update(leader_lease)
                .where(leader_lease.c.id == 1)
                .values(holder=node_id, term=term, expires_at=lease.expires_at)
            )
        if term != held.term:
            logger.info(
                "node %s took the leader lease in term %s",
                node_id,
                term,
                extra={"event": "store.lease_taken", "term": term},
            )
        return lease

    @property
    def has_term_locks(self) -> bool:
        return self._dialect == "postgresql"

    async def term_lock(self, term: int) -> bool:
        if not self.has_term_locks:
            raise NotImplementedError(f"a {self._dialect} store has no session locks")
        async with self._term_lock_guard:
            with _store_errors():
                try:
                    return await self._take_term_lock(term)
                except Exception:
                    # The session is gone (a database restart), and its locks with
                    # it: try once more on a new one.
                    await self._drop_lock_connection()
                    try:
                        return await self._take_term_lock(term)
                    except BaseException:
                        await self._drop_lock_connection()
                        raise
                except BaseException:
                    await self._drop_lock_connection()
                    raise

    async def _take_term_lock(self, term: int) -> bool:
        conn = await self._lock_connection()
        if term in self._term_locks:
            # Held for as long as the session lives: check it does.
            await conn.execute(text("SELECT 1"))
            return True
        taken = await conn.scalar(
            text("SELECT pg_try_advisory_lock(:kind, :term)"),
            {"kind": PG_TERM_LOCK, "term": _int4(term)},
        )
        if taken:
            self._term_locks.add(term)
        return bool(taken)

    async def release_term_lock(self, term: int) -> None:
        async with self._term_lock_guard:
            if term not in self._term_locks or self._lock_conn is None:
                return
            self._term_locks.discard(term)
            with _store_errors():
                try:
                    await self._lock_conn.execute(
                        text("SELECT pg_advisory_unlock(:kind, :term)"),
                        {"kind": PG_TERM_LOCK, "term": _int4(term)},
                    )
                except BaseException:
                    await self._drop_lock_connection()  # which lets go of it too
                    raise

    async def _lock_connection(self) -> AsyncConnection:
        """Return the connection term locks live on, opened when first needed.

        Its own engine without a pool, in autocommit: the locks are the session's,
        and the session is never idle in a transaction.
        """
        if self._lock_conn is None:
            if self._lock_engine is None:
                self._lock_engine = create_async_engine(
                    self._engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
                )
            self._term_locks.clear()
            self._lock_conn = await self._lock_engine.connect()
        return self._lock_conn

    async def _drop_lock_connection(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        self._term_locks.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _read_lease(
        self, conn: AsyncConnection, *, takeover: bool
    ) -> tuple[Lease, datetime]:
        """Lock and read the lease row, then the store's clock.

        A takeover locks FOR UPDATE, which waits for the fenced writes holding the row
        FOR KEY SHARE; a renewal locks FOR NO KEY UPDATE, which does not.
        """
        query = select(leader_lease).where(leader_lease.c.id == 1)
        row = (await conn.execute(query.with_for_update(key_share=not takeover))).one()
        now = await self._now(conn)
        return Lease(row.holder, row.term, row.expires_at), now

    async def release_lease(self, node_id: str, term: int) -> None:
        async with self._writing() as conn:
            now = await self._now(conn)
            await conn.execute(
                update(leader_lease)
                .where(
                    leader_lease.c.id == 1,
                    leader_lease.c.holder == node_id,
                    leader_lease.c.term == term,
                )
                .values(expires_at=now)
            )

    async def current_lease(self) -> tuple[datetime, Lease]:
        async with self._reading() as conn:
            now = await self._now(conn)
            row = (
                await conn.execute(select(leader_lease).where(leader_lease.c.id == 1))
            ).one()
        return now, Lease(row.holder, row.term, row.expires_at)

    # Jobs

    async def create_job(
        self, definition: JobDefinition, next_fire_at: datetime | None, now: datetime
    ) -> Job:
        values = job_values(definition, next_fire_at)
        async with self._writing() as conn:
            await self._serialize_graph_changes(conn)
            dependency_ids = await _dependency_ids(conn, definition.depends_on)
            try:
                result = await conn.execute(
                    insert(jobs)
                    .values(
                        **values,
                        created_at=now,
                        updated_at=now,
                        deps_consumed_at=now,
                    )
                    .returning(jobs.c.id)
                )
            except IntegrityError as exc:
                raise _name_taken(definition.name) from exc
            job_id = int(result.scalar_one())
            await _replace_tags(conn, job_id, definition.tags)
            await _replace_dependencies(conn, job_id, dependency_ids)
            return await _fetch_job(conn, job_id)

    async def update_job(
        self,
        job_id: int,
        definition: JobDefinition,
        next_fire_at: datetime | None,
        now: datetime,
        *,
        read_at: datetime | None = None,
    ) -> Job:
        values = job_values(definition, next_fire_at)
        async with self._writing() as conn:
            await self._serialize_graph_changes(conn)
            stored = await _fetch_job(conn, job_id, for_update=True)
            if read_at is not None and stored.updated_at != read_at:
                raise ChangedError(
                    f"job {stored.name} changed while this change was made from it; "
                    "read it again and resend the change"
                )
            dependency_ids = await _dependency_ids(conn, definition.depends_on)
            await _refuse_cycle(conn, job_id, definition, dependency_ids)
            before = await _dependencies_of(conn, job_id)
            if set(dependency_ids) - before:
                # A new dependency's earlier successes were not made for this job.
                values["deps_consumed_at"] = now
            if set(dependency_ids) != before:
                await _rewait(conn, job_id, dependency_ids)
            if definition.dependency_timeout != stored.definition.dependency_timeout:
                await _retime_waits(conn, job_id, definition.dependency_timeout)
            try:
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(**values, updated_at=now)
                )
            except IntegrityError as exc:
                raise _name_taken(definition.name) from exc
            await _replace_tags(conn, job_id, definition.tags)
            await _replace_dependencies(conn, job_id, dependency_ids)
            if stored.name != definition.name:
                await _rename_in_dependents(
                    conn, job_id, stored.name, definition.name, now
                )
            return await _fetch_job(conn, job_id)

    async def delete_job(self, job_id: int) -> None:
        async with self._writing() as conn:
            await self._serialize_graph_changes(conn)
            job = await _fetch_job(conn, job_id, for_update=True)
            await _refuse_if_depended_on(conn, job)

            # Explicit, child tables first: the outcome must not depend on whether
            # the connection enforces the schema's ON DELETE CASCADE.
            run_ids = select(runs.c.id).where(runs.c.job_id == job_id)
            await _delete_runs(conn, run_ids)
            await conn.execute(delete(job_tags).where(job_tags.c.job_id == job_id))
            await conn.execute(
                delete(job_dependencies).where(job_dependencies.c.job_id == job_id)
            )
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
        self,
        job_filter: JobFilter,
        limit: int,
        cursor: str | None,
        sort: JobSort = JobSort.NAME,
    ) -> Page[Job]:
        _check_limit(limit)
        after = None if cursor is None else decode_job_cursor(cursor, sort)
        statements = job_page_statements(job_filter, sort, after, limit + 1)

        rows: list[AnyRow] = []
        async with self._reading() as conn:
            for statement in statements:
                wanted = limit + 1 - len(rows)
                rows += (await conn.execute(statement.limit(wanted))).all()
                if len(rows) > limit:
                    break

        items = [job_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_job_cursor(sort, items[-1]) if more else None)

    async def count_jobs(self) -> JobCounts:
        query = select(jobs.c.enabled, func.count()).group_by(jobs.c.enabled)
        async with self._reading() as conn:
            counts = {bool(row[0]): int(row[1]) for row in await conn.execute(query)}
        return JobCounts(enabled=counts.get(True, 0), paused=counts.get(False, 0))

    async def due_jobs(self, now: datetime, limit: int) -> list[Job]:
        async with self._reading() as conn:
            rows = (await conn.execute(due_jobs_statement(now, limit))).all()
        return [job_from_row(row) for row in rows]

    async def dependency_graph(self, job_id: int, limit: int) -> DependencyGraph:
        async with self._reading() as conn:
            await _fetch_job(conn, job_id)
            order, edges, truncated = await _graph_around(conn, job_id, limit)
            rows = {job.id: job for job in (await _jobs_by_id(conn, order)).values()}
            latest = await _latest_runs(conn, order)
        return DependencyGraph(
            job_id=job_id,
            jobs=[
                GraphJob(
                    id=rows[i].id,
                    name=rows[i].name,
                    enabled=rows[i].definition.enabled,
                    schedule=rows[i].definition.schedule,
                    latest_run=latest.get(i),
                )
                for i in order
                if i in rows
            ],
            edges=sorted(edges),
            truncated=truncated,
        )

    async def next_due_at(self) -> datetime | None:
        async with self._reading() as conn:
            row = (await conn.execute(next_due_statement())).one()
        instants: list[datetime] = [value for value in row if value is not None]
        return min(instants, default=None)

    # Runs

    async def record_fires(
        self,
        advances: Sequence[FireAdvance],
        runs: Sequence[NewRun],
        now: datetime,
        give_ups: Sequence[GiveUp] = (),
        *,
        fence: Fence | None = None,
    ) -> list[Run]:
        if not advances and not runs:
            return []

        async with self._writing() as conn:
            await _check_fence(conn, fence)
            job_ids = {a.job_id for a in advances} | {r.job_id for r in runs}
            current = await _next_fires(conn, job_ids)
            held_back = await _advance_fires(conn, advances, current)
            applies = {job_id for job_id in current if job_id not in held_back}
            given_up = await _end_waiting(
                conn,
                [
                    (g.run_id, RunState.SKIPPED, g.reason)
                    for g in give_ups
                    if g.job_id in applies
                ],
                now,
            )
            wanted = [r for r in runs if r.job_id in applies]
            created = await _insert_runs(conn, wanted, now)
            recorded = await _load_runs(conn, [*given_up, *created])

        logger.debug(
            "recorded %s runs for %s fires, %s jobs held back",
            len(recorded),
            len(runs),
            len(held_back),
            extra={"event": "store.fires_recorded"},
        )
        return recorded

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
            created = await _insert_runs(conn, [new_run], now)
            if not created:
                raise ConflictError(
                    f"job {new_run.job_id} already has a run for the fire at "
                    f"{new_run.scheduled_at}: a fire gets one run",
                    field="scheduled_at",
                )
            (run,) = await _load_runs(conn, created)
        return run

    async def resolve_dependencies(
        self,
        now: datetime,
        limit: int,
        planner: Planner,
        *,
        fence: Fence | None = None,
    ) -> DependencyPass:
        if not await self._dependency_work_due(now):
            return DependencyPass()

        async with self._writing() as conn:
            await _check_fence(conn, fence)
            work_ids = list(
                (
                    await conn.execute(
                        select(dependency_work.c.run_id)
                        .order_by(dependency_work.c.run_id)
                        .limit(limit)
                    )
                ).scalars()
            )
            timed_out = list(
                (
                    await conn.execute(
                        select(runs.c.id)
                        .where(runs.c.give_up_at <= now)
                        .order_by(runs.c.give_up_at)
                        .limit(limit)
                    )
                ).scalars()
            )
            if not work_ids and not timed_out:
                return DependencyPass()
            snapshot = await _dependency_snapshot(conn, work_ids, timed_out)
            # What a pass writes is never stamped before what caused it: an end or
            # a creation committed after the caller read its clock (or by a node
            # whose clock runs ahead) may be in the snapshot.
            now = max([now, *_instants_of(snapshot)])
            # Taken off before the plan is written: a run the plan ends goes back
            # on the list for what waits on it, which an entry still there from
            # its creation would otherwise swallow.
            for chunk in _chunks(work_ids):
                await conn.execute(
                    delete(dependency_work).where(dependency_work.c.run_id.in_(chunk))
                )
            outcome = await _apply_plan(conn, planner(snapshot, now), now)

        logger.debug(
            "dependency pass: %s entries, %s queued, %s ended, %s waiting",
            len(work_ids) + len(timed_out),
            len(outcome.queued),
            len(outcome.ended),
            len(outcome.waiting),
            extra={"event": "store.dependencies_resolved"},
        )
        return outcome

    async def _dependency_work_due(self, now: datetime) -> bool:
        """Tell, without taking the write lock, whether a pass has anything to do."""
        work = select(dependency_work.c.run_id).limit(1).exists()
        timed_out = select(runs.c.id).where(runs.c.give_up_at <= now).limit(1).exists()
        async with self._reading() as conn:
            return bool((await conn.execute(select(or_(work, timed_out)))).scalar())

    async def upstream_links(
        self, run_ids: Sequence[int]
    ) -> dict[int, list[UpstreamLink]]:
        found: dict[int, list[UpstreamLink]] = {run_id: [] for run_id in run_ids}
        upstream = runs.alias("upstream")
        async with self._reading() as conn:
            for chunk in _chunks(found):
                query = (
                    select(
                        run_waits.c.run_id,
                        run_waits.c.job_id,
                        jobs.c.name,
                        upstream.c.id.label("upstream_id"),
                        upstream.c.state,
                    )
                    .join(jobs, jobs.c.id == run_waits.c.job_id)
                    .join(upstream, upstream.c.id == run_waits.c.upstream_run_id)
                    .where(run_waits.c.run_id.in_(chunk))
                    .order_by(run_waits.c.run_id, jobs.c.name)
                )
                for row in await conn.execute(query):
                    found[row.run_id].append(
                        UpstreamLink(
                            job_id=row.job_id,
                            job_name=row.name,
                            run_id=row.upstream_id,
                            state=RunState(row.state),
                        )
                    )
        return found

    async def get_run(self, run_id: int) -> Run:
        async with self._reading() as conn:
            return await _fetch_run(conn, run_id)

    async def list_runs(
        self, run_filter: RunFilter, limit: int, cursor: str | None
    ) -> Page[Run]:
        _check_limit(limit)
        before = None if cursor is None else int(decode_cursor(cursor, "run"))
        query = runs_page_statement(run_filter, before, limit + 1)

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

    async def ended_runs_by_bucket(
        self, since: datetime, width: timedelta, count: int
    ) -> list[EndedBucket]:
        if count < 1:
            return []

        starts = [since + width * index for index in range(count)]
        query = ended_buckets_statement(since, width, count)
        async with self._reading() as conn:
            found = {
                int(row[0]): (int(row[1]), int(row[2] or 0))
                for row in await conn.execute(query)
            }
        return [
            EndedBucket(start, *found.get(index, (0, 0)))
            for index, start in enumerate(starts)
        ]

    async def cancel_run(
        self, run_id: int, reason: str, now: datetime, *, fence: Fence | None = None
    ) -> Run:
        async with self._writing() as conn:
            await _check_fence(conn, fence)
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

    async def prune_runs(
        self, finished_before: datetime, limit: int, *, fence: Fence | None = None
    ) -> int:
        if limit <= 0:
            return 0

        query = prunable_runs_statement(finished_before, limit)
        async with self._writing() as conn:
            await _check_fence(conn, fence)
            run_ids = list((await conn.execute(query)).scalars())
            for chunk in _chunks(run_ids):
                await _delete_runs(conn, chunk)

        if run_ids:
            logger.debug(
                "pruned %s runs finished before %s",
                len(run_ids),
                finished_before.isoformat(),
                extra={"event": "store.runs_pruned"},
            )
        return len(run_ids)

    async def forget_nodes(
        self, silent_before: datetime, *, fence: Fence | None = None
    ) -> int:
        running = (
            select(attempts.c.id)
            .where(
                attempts.c.node_id == nodes.c.id, attempts.c.state == _ATTEMPT_RUNNING
            )
            .exists()
        )
        async with self._writing() as conn:
            await _check_fence(conn, fence)
            result = await conn.execute(
                delete(nodes).where(nodes.c.last_heartbeat_at < silent_before, ~running)
            )
        return int(result.rowcount or 0)

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

    async def _serialize_graph_changes(self, conn: AsyncConnection) -> None:
        """Make changes of the dependency graph take turns, so no cycle slips in.

        Two concurrent updates (a to depend on b, b on a) would each find the graph
        acyclic. SQLite's write transactions take turns already.
        """
        if self._dialect == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_GRAPH_LOCK}
            )

    async def finish_attempts(
        self,
        finishes: Sequence[AttemptFinish],
        now: datetime,
        *,
        silent_since: datetime | None = None,
        fence: Fence | None = None,
    ) -> FinishedAttempts:
        if not finishes:
            return FinishedAttempts(runs=[])

        async with self._writing() as conn:
            await _check_fence(conn, fence)
            running = await _running_rows(
                conn, [f.attempt_id for f in finishes], silent_since
            )
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
            ended = await _settle_runs(conn, accepted, running, now)
            # Read with the running rows, so that a batch nothing depends on costs
            # no statement more.
            depended_on = {row.run_id for row in running.values() if row.depended_on}
            work = [run_id for run_id in ended if run_id in depended_on]
            await _add_work(conn, work)
            run_ids = {running[f.attempt_id].run_id for f in accepted}
            settled = {run.id: run for run in await _load_runs(conn, run_ids)}

        return FinishedAttempts(
            runs=[
                settled[running[f.attempt_id].run_id] if index in kept else None
                for index, f in enumerate(finishes)
            ],
            dependency_work=bool(work),
        )

    async def _upsert_outputs(
        self, conn: AsyncConnection, outputs: Sequence[tuple[int, str, bool]]
    ) -> None:
        """Write output tails with one executemany, replacing earlier tails."""
        if not outputs:
            return

        statement = _dialect_insert(conn, attempt_outputs)
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

    async def start_retry(
        self, run_id: int, now: datetime, *, fence: Fence | None = None
    ) -> QueuedAttempt | None:
        async with self._writing() as conn:
            await _check_fence(conn, fence)
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

    async def queued_attempts(
        self, limit: int, after_id: int, queued_before: datetime | None = None
    ) -> list[QueuedAttempt]:
        query = (
            select(attempts.c.id, attempts.c.run_id, attempts.c.number)
            .where(attempts.c.state == _ATTEMPT_QUEUED, attempts.c.id > after_id)
            .order_by(attempts.c.id)
            .limit(limit)
        )
        if queued_before is not None:
            query = query.where(attempts.c.queued_at < queued_before)
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
        return [QueuedAttempt(row.id, row.run_id, row.number) for row in rows]

    async def running_attempts(self, node_id: str | None) -> list[RunningAttempt]:
        query = select(attempts.c.id, attempts.c.run_id).where(
            attempts.c.state == _ATTEMPT_RUNNING
        )
        if node_id is not None:
            query = query.where(attempts.c.node_id == node_id)
        return await self._running_of(query.order_by(attempts.c.id))

    async def orphaned_attempts(
        self, silent_since: datetime, limit: int, *, except_node: str | None = None
    ) -> list[RunningAttempt]:
        query = (
            select(attempts.c.id, attempts.c.run_id)
            .where(attempts.c.state == _ATTEMPT_RUNNING, _node_silent(silent_since))
            .order_by(attempts.c.id)
            .limit(limit)
        )
        if except_node is not None:
            query = query.where(attempts.c.node_id != except_node)
        return await self._running_of(query)

    async def _running_of(
        self, query: Select[*tuple[Any, ...]]
    ) -> list[RunningAttempt]:
        """Load the attempts (id, run_id) a query selects, with runs and jobs."""
        async with self._reading() as conn:
            pairs = [(r.id, r.run_id) for r in await conn.execute(query)]
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

    # Users

    async def create_user(self, user: NewUser, now: datetime) -> User:
        values = {
            "name": user.name,
            "role": user.role.value,
            "password_hash": user.password_hash,
            "created_at": now,
            "updated_at": now,
        }
        async with self._writing() as conn:
            try:
                await conn.execute(insert(users).values(**values))
            except IntegrityError as exc:
                raise _user_name_taken(user.name) from exc
            return await _fetch_user(conn, user.name)

    async def get_user(self, name: str) -> User:
        async with self._reading() as conn:
            return await _fetch_user(conn, name)

    async def list_users(self) -> list[User]:
        async with self._reading() as conn:
            rows = (await conn.execute(select(users).order_by(users.c.name))).all()
        return [user_from_row(row) for row in rows]

    async def update_user(
        self,
        name: str,
        now: datetime,
        *,
        role: Role | None = None,
        password_hash: str | None = None,
    ) -> User:
        values: dict[str, Any] = {"updated_at": now}
        if role is not None:
            values["role"] = role.value
        if password_hash is not None:
            values["password_hash"] = password_hash
        async with self._writing() as conn:
            if role is not None:
                await self._serialize_user_changes(conn)
            stored = await _fetch_user(conn, name, for_update=True)
            if role is not None and role is not Role.ADMIN:
                await _keep_an_admin(conn, stored, "change the role of")
            await conn.execute(
                update(users).where(users.c.id == stored.id).values(**values)
            )
            return await _fetch_user(conn, name)

    async def delete_user(self, name: str) -> None:
        async with self._writing() as conn:
            await self._serialize_user_changes(conn)
            stored = await _fetch_user(conn, name, for_update=True)
            await _keep_an_admin(conn, stored, "remove")
            await conn.execute(delete(users).where(users.c.id == stored.id))

    async def _serialize_user_changes(self, conn: AsyncConnection) -> None:
        """Make removals and role changes of users take turns, so that two of them
        cannot each see another admin and together leave none.

        An advisory lock rather than row locks on the admins: two removals would
        lock their own rows first, then wait for each other's. SQLite's write
        transactions take turns already.
        """
        if self._dialect == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_USERS_LOCK}
            )

    # API tokens

    async def create_api_token(self, token: NewApiToken, now: datetime) -> ApiToken:
        values = {
            "name": token.name,
            "role": token.role.value,
            "token_hash": token.token_hash,
            "created_by": token.created_by,
            "created_at": now,
            "last_used_at": None,
            "expires_at": token.expires_at,
            "revoked_at": None,
        }
        async with self._writing() as conn:
            try:
                result = await conn.execute(
                    insert(api_tokens).values(**values).returning(api_tokens.c.id)
                )
            except IntegrityError as exc:
                # The hash is of 256 random bits: a clash is the name's.
                raise _token_name_taken(token.name) from exc
            token_id = int(result.scalar_one())
            return await _fetch_api_token(conn, token_id)

    async def get_api_token(self, token_id: int) -> ApiToken:
        async with self._reading() as conn:
            return await _fetch_api_token(conn, token_id)

    async def find_api_token(self, token_hash: str) -> ApiToken | None:
        query = select(api_tokens).where(api_tokens.c.token_hash == token_hash)
        async with self._reading() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else api_token_from_row(row)

    async def list_api_tokens(self, *, include_revoked: bool = True) -> list[ApiToken]:
        query = select(api_tokens).order_by(api_tokens.c.name)
        if not include_revoked:
            query = query.where(api_tokens.c.revoked_at.is_(None))
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
        return [api_token_from_row(row) for row in rows]

    async def touch_api_token(
        self, token_id: int, now: datetime, min_interval: timedelta
    ) -> bool:
        last_used = api_tokens.c.last_used_at
        async with self._writing() as conn:
            result = await conn.execute(
                update(api_tokens)
                .where(
                    api_tokens.c.id == token_id,
                    or_(last_used.is_(None), last_used <= now - min_interval),
                )
                .values(last_used_at=now)
            )
        return bool(result.rowcount)

    async def revoke_api_token(self, token_id: int, now: datetime) -> ApiToken:
        async with self._writing() as conn:
            await conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return await _fetch_api_token(conn, token_id)

    # Audit

    async def append_audit(self, record: NewAuditRecord) -> AuditRecord:
        detail = encode_audit_detail(record.detail)
        values = {
            "at": record.at,
            "actor": record.actor,
            "action": record.action.value,
            "target": record.target,
            "detail": detail,
        }
        async with self._writing() as conn:
            result = await conn.execute(
                insert(audit_records).values(**values).returning(audit_records.c.id)
            )
            record_id = int(result.scalar_one())
        return AuditRecord(
            id=record_id,
            at=record.at,
            actor=record.actor,
            action=record.action.value,
            target=record.target,
            detail=decode_audit_detail(detail),
        )

    async def list_audit(
        self, audit_filter: AuditFilter, limit: int, cursor: str | None
    ) -> Page[AuditRecord]:
        _check_limit(limit)
        before = None if cursor is None else decode_id_cursor(cursor, "audit")
        query = audit_page_statement(audit_filter, before, limit + 1)
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()

        items = [audit_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor("audit", str(items[-1].id)) if more else None)


# Errors and small values


def _takeable(lease: Lease, now: datetime, gone_term: int | None) -> bool:
    """Tell whether another node may take this lease: it lapsed, or its holder's
    session is known to be gone (`gone_term` is its term)."""
    lapsed = lease.expires_at is None or lease.expires_at <= now
    return lapsed or lease.term == gone_term


def _int4(term: int) -> int:
    """Fold a term into the int4 key of an advisory lock (terms grow by one per
    takeover, so they fit for ever in practice; folding keeps that true)."""
    return (term + 2**31) % 2**32 - 2**31


async def _check_fence(conn: AsyncConnection, fence: Fence | None) -> None:
    """Refuse a leader's write once the lease has another holder or term.

    The lease row is read FOR KEY SHARE (on PostgreSQL): a takeover's FOR UPDATE
    waits until this transaction ends, so the write cannot commit in a term that is
    over, while the holder's own renewal (FOR NO KEY UPDATE) goes through.
    """
    if fence is None:
        return
    query = (
        select(leader_lease.c.holder, leader_lease.c.term)
        .where(leader_lease.c.id == 1)
        .with_for_update(read=True, key_share=True)
    )
    holder, term = (await conn.execute(query)).one()
    if (holder, term) != (fence.holder, fence.term):
        raise FencedError(
            f"node {fence.holder} no longer leads: it led in term {fence.term}, and "
            f"the lease is now {holder or 'nobody'}'s in term {term}"
        )


def _dialect_insert(
    conn: AsyncConnection, table: Any
) -> sqlite.Insert | postgresql.Insert:
    # ON CONFLICT is spelled alike but built by each dialect's own insert().
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


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
        # Spelt as the predicate of the paused jobs' partial indexes, which the
        # databases match by its form.
        conditions.append(jobs.c.enabled == (true() if job_filter.enabled else false()))
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


async def _insert_runs(
    conn: AsyncConnection, new_runs: Sequence[NewRun], now: datetime
) -> list[int]:
    """Insert runs, leaving out fires that already have one; return new ids.

    One multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING for the runs, one
    executemany for the first attempts of those created queued.
    """
    if not new_runs:
        return []

    statement = (
        _dialect_insert(conn, runs)
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
    waiting = [row.id for row in created if row.state == _RUN_WAITING]
    if waiting:
        await conn.execute(
            insert(dependency_work), [{"run_id": run_id} for run_id in waiting]
        )
    return sorted(int(row.id) for row in created)


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
    await conn.execute(
        delete(dependency_work).where(dependency_work.c.run_id.in_(run_ids))
    )
    # Links to a deleted run are dropped too: pruning keeps the runs that a waiting
    # run is linked to, so only the history of runs that ended loses them.
    await conn.execute(
        delete(run_waits).where(
            or_(
                run_waits.c.run_id.in_(run_ids),
                run_waits.c.upstream_run_id.in_(run_ids),
            )
        )
    )
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
            give_up_at=None,
            finished_at=now,
        )
    )
    await _queue_ended_work(conn, [run_id])


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
    conn: AsyncConnection,
    attempt_ids: Sequence[int],
    silent_since: datetime | None = None,
) -> dict[int, AnyRow]:
    """Return the running attempts among these, each with its run's cancel state
    and whether anything depends on the run (`depended_on`); with `silent_since`,
    only those whose node is silent since then."""
    found: dict[int, AnyRow] = {}
    for chunk in _chunks(dict.fromkeys(attempt_ids)):
        query = (
            select(
                attempts.c.id,
                attempts.c.run_id,
                runs.c.reason,
                runs.c.cancel_requested_at,
                _depended_on().label("depended_on"),
            )
            .join(runs, runs.c.id == attempts.c.run_id)
            .where(attempts.c.id.in_(chunk), attempts.c.state == _ATTEMPT_RUNNING)
            .with_for_update()
        )
        if silent_since is not None:
            query = query.where(_node_silent(silent_since))
        found.update({row.id: row for row in await conn.execute(query)})
    return found


def _node_silent(since: datetime) -> ColumnElement[bool]:
    """Say that an attempt's node has not beaten since `since`, stopped, or never
    wrote its row: nothing of it is left to record the attempt's end."""
    beating = (
        select(nodes.c.id)
        .where(
            nodes.c.id == attempts.c.node_id,
            nodes.c.stopped_at.is_(None),
            nodes.c.last_heartbeat_at >= since,
        )
        .exists()
    )
    return ~beating


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
) -> list[int]:
    """Settle the runs of ended attempts; return the ids of those that ended."""
    if not accepted:
        return []

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
    return [row["b_id"] for row in settlements if row["b_finished_at"] is not None]


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


# Dependencies: the graph


async def _dependency_ids(conn: AsyncConnection, names: Sequence[str]) -> list[int]:
    """Return the ids of the jobs a `depends_on` names, in its order.

    Refuses names of no stored job, naming them all.
    """
    if not names:
        return []
    found: dict[str, int] = {}
    for chunk in _chunks(names):
        query = select(jobs.c.id, jobs.c.name).where(jobs.c.name.in_(chunk))
        found.update({row.name: row.id for row in await conn.execute(query)})
    unknown = [name for name in names if name not in found]
    if unknown:
        listed = ", ".join(unknown)
        raise ValidationError.single(
            "depends_on",
            f"no job is named {listed}: create {'it' if len(unknown) == 1 else 'them'}"
            " first, or correct the name",
        )
    return [found[name] for name in names]


async def _dependencies_of(conn: AsyncConnection, job_id: int) -> set[int]:
    query = select(job_dependencies.c.depends_on_id).where(
        job_dependencies.c.job_id == job_id
    )
    return set((await conn.execute(query)).scalars())


async def _replace_dependencies(
    conn: AsyncConnection, job_id: int, dependency_ids: Sequence[int]
) -> None:
    await conn.execute(
        delete(job_dependencies).where(job_dependencies.c.job_id == job_id)
    )
    rows = [
        {"job_id": job_id, "depends_on_id": i} for i in dict.fromkeys(dependency_ids)
    ]
    if rows:
        await conn.execute(insert(job_dependencies), rows)


async def _refuse_cycle(
    conn: AsyncConnection,
    job_id: int,
    definition: JobDefinition,
    dependency_ids: Sequence[int],
) -> None:
    """Refuse dependencies that would lead back to the job, naming the cycle."""
    if job_id in dependency_ids:
        raise ValidationError.single(
            "depends_on",
            f"job {definition.name} cannot depend on itself "
            f"({definition.name} -> {definition.name})",
        )
    upstream = await _upstream_closure(conn, dependency_ids)
    cycle = find_cycle(upstream, job_id, dependency_ids)
    if cycle is None:
        return
    names = {job.id: job.name for job in (await _jobs_by_id(conn, cycle)).values()}
    names[job_id] = definition.name
    raise ValidationError.single(
        "depends_on",
        "these dependencies would make a cycle, "
        f"{format_cycle([names[i] for i in cycle])}: a job cannot run after itself",
    )


async def _upstream_closure(
    conn: AsyncConnection, start: Iterable[int]
) -> dict[int, list[int]]:
    """Map every job reachable along dependencies from `start` to its dependencies."""
    graph: dict[int, list[int]] = {}
    frontier = list(dict.fromkeys(start))
    while frontier:
        for job_id in frontier:
            graph.setdefault(job_id, [])
        found: list[int] = []
        for chunk in _chunks(frontier):
            query = select(
                job_dependencies.c.job_id, job_dependencies.c.depends_on_id
            ).where(job_dependencies.c.job_id.in_(chunk))
            for row in await conn.execute(query):
                graph[row.job_id].append(row.depends_on_id)
                found.append(row.depends_on_id)
        frontier = [i for i in dict.fromkeys(found) if i not in graph]
    return graph


async def _rewait(
    conn: AsyncConnection, job_id: int, dependency_ids: Sequence[int]
) -> None:
    """Have a job's waiting runs resolved again against its new dependencies.

    Their links to jobs it no longer depends on go: they waited for, and say they
    wait for, only what the job lists.
    """
    waiting = select(runs.c.id).where(
        runs.c.job_id == job_id, runs.c.state == _RUN_WAITING
    )
    await conn.execute(
        delete(run_waits).where(
            run_waits.c.run_id.in_(waiting),
            run_waits.c.job_id.not_in(list(dependency_ids)),
        )
    )
    await _add_work(conn, (await conn.execute(waiting)).scalars())


async def _retime_waits(
    conn: AsyncConnection, job_id: int, timeout: timedelta | None
) -> None:
    """Bound the waits of a job's waiting runs by its new `dependency_timeout`,
    still counted from each run's creation."""
    query = select(runs.c.id, runs.c.created_at).where(
        runs.c.job_id == job_id, runs.c.state == _RUN_WAITING
    )
    changes = [
        {"b_id": row.id, "b_at": give_up_at(timeout, row.created_at)}
        for row in await conn.execute(query)
    ]
    if changes:
        await conn.execute(
            update(runs)
            .where(runs.c.id == bindparam("b_id"), runs.c.state == _RUN_WAITING)
            .values(give_up_at=bindparam("b_at")),
            changes,
        )


async def _rename_in_dependents(
    conn: AsyncConnection, job_id: int, old: str, new: str, now: datetime
) -> None:
    """Write a job's new name into the `depends_on` of the jobs that depend on it."""
    query = (
        select(jobs.c.id, jobs.c.definition)
        .join(job_dependencies, job_dependencies.c.job_id == jobs.c.id)
        .where(job_dependencies.c.depends_on_id == job_id)
    )
    changes = []
    for row in await conn.execute(query):
        definition = decode_definition(row.definition)
        renamed = tuple(new if name == old else name for name in definition.depends_on)
        changes.append(
            {
                "b_id": row.id,
                "b_definition": encode_definition(
                    replace(definition, depends_on=renamed)
                ),
            }
        )
    if changes:
        await conn.execute(
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(definition=bindparam("b_definition"), updated_at=now),
            changes,
        )


async def _refuse_if_depended_on(conn: AsyncConnection, job: Job) -> None:
    query = (
        select(jobs.c.name)
        .join(job_dependencies, job_dependencies.c.job_id == jobs.c.id)
        .where(job_dependencies.c.depends_on_id == job.id)
        .order_by(jobs.c.name)
    )
    names = list((await conn.execute(query.limit(_NAMED_DEPENDENTS + 1))).scalars())
    if not names:
        return
    listed = ", ".join(names[:_NAMED_DEPENDENTS])
    if len(names) > _NAMED_DEPENDENTS:
        count = (
            await conn.execute(
                select(func.count())
                .select_from(job_dependencies)
                .where(job_dependencies.c.depends_on_id == job.id)
            )
        ).scalar_one()
        listed += f" and {count - _NAMED_DEPENDENTS} more"
    one = len(names) == 1
    raise ConflictError(
        f"job {job.name} cannot be deleted: {listed} "
        f"{'depends' if one else 'depend'} on it; remove it from "
        f"{'its' if one else 'their'} depends_on first",
        field="depends_on",
    )


async def _graph_around(
    conn: AsyncConnection, job_id: int, limit: int
) -> tuple[list[int], set[tuple[int, int]], bool]:
    """Walk upstream, then downstream, from a job, keeping at most `limit` jobs.

    Returns the job ids in the order found, the edges (dependency, dependent) among
    them, and whether the walk was cut.
    """
    order = [job_id]
    seen = {job_id}
    edges: set[tuple[int, int]] = set()
    truncated = False
    walks = (
        (job_dependencies.c.job_id, job_dependencies.c.depends_on_id, False),
        (job_dependencies.c.depends_on_id, job_dependencies.c.job_id, True),
    )
    for near, far, downstream in walks:
        frontier = [job_id]
        while frontier:
            found: list[int] = []
            for chunk in _chunks(frontier):
                query = select(near, far).where(near.in_(chunk)).order_by(near, far)
                for here, there in await conn.execute(query):
                    if there not in seen:
                        if len(order) >= limit:
                            truncated = True
                            continue
                        seen.add(there)
                        order.append(there)
                        found.append(there)
                    edges.add((here, there) if downstream else (there, here))
            frontier = found
    return order, edges, truncated


async def _latest_runs(conn: AsyncConnection, job_ids: Sequence[int]) -> dict[int, Run]:
    """Return each job's newest run, by the (job, id) index."""
    newest = (
        select(runs.c.id)
        .where(runs.c.job_id == jobs.c.id)
        .order_by(runs.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    run_ids: list[int] = []
    for chunk in _chunks(job_ids):
        query = select(newest).where(jobs.c.id.in_(chunk))
        run_ids += [i for i in (await conn.execute(query)).scalars() if i is not None]
    return {run.job_id: run for run in await _load_runs(conn, run_ids)}


# Dependencies: the work list and its passes


async def _queue_ended_work(conn: AsyncConnection, run_ids: Sequence[int]) -> None:
    """Put ended runs on the dependency work list, if anything may depend on them:
    a job lists their job in `depends_on`, or a run is linked to them."""
    if not run_ids:
        return
    for chunk in _chunks(run_ids):
        ended = select(runs.c.id).where(
            runs.c.id.in_(chunk), runs.c.finished_at.is_not(None), _depended_on()
        )
        await conn.execute(
            _dialect_insert(conn, dependency_work)
            .from_select(["run_id"], ended)
            .on_conflict_do_nothing()
        )


def _depended_on() -> ColumnElement[bool]:
    """Tell, of a `runs` row, whether its end is dependency work: a job depends on
    its job, or a waiting run was linked to it (`awaited`, see `_mark_awaited`)."""
    job_depended_on = (
        select(job_dependencies.c.job_id)
        .where(job_dependencies.c.depends_on_id == runs.c.job_id)
        .exists()
    )
    return or_(runs.c.awaited, job_depended_on)


async def _mark_awaited(conn: AsyncConnection, run_ids: Iterable[int]) -> set[int]:
    """Mark runs that waiting runs were just linked to; return those still active.

    A conditional UPDATE of the run's own row, so that on PostgreSQL it and the
    transaction ending the run take turns on the row lock: either the end sees the
    mark and puts itself on the work list, or this finds the run ended already and
    the caller looks at its waiting runs again.
    """
    marked: set[int] = set()
    for chunk in _chunks(sorted(set(run_ids))):
        result = await conn.execute(
            update(runs)
            .where(runs.c.id.in_(chunk), runs.c.state.in_(_ACTIVE_RUN_VALUES))
            .values(awaited=True)
            .returning(runs.c.id)
        )
        marked.update(result.scalars())
    return marked


async def _add_work(conn: AsyncConnection, run_ids: Iterable[int]) -> None:
    rows = [{"run_id": run_id} for run_id in dict.fromkeys(run_ids)]
    if rows:
        await conn.execute(
            _dialect_insert(conn, dependency_work).on_conflict_do_nothing(), rows
        )


async def _end_waiting(
    conn: AsyncConnection,
    ends: Sequence[tuple[int, RunState, str]],
    now: datetime,
) -> list[int]:
    """End the runs (id, final state, reason) that still wait; return their ids."""
    ended: list[int] = []
    for run_id, state, reason in ends:
        result = await conn.execute(
            update(runs)
            .where(runs.c.id == run_id, runs.c.state == _RUN_WAITING)
            .values(state=state.value, reason=reason, finished_at=now, give_up_at=None)
            .returning(runs.c.id)
        )
        ended += result.scalars()
    await _queue_ended_work(conn, ended)
    return ended


async def _dependency_snapshot(
    conn: AsyncConnection, work_ids: Sequence[int], timed_out: Sequence[int]
) -> Snapshot:
    """Read what a pass decides on: see `socmeth.dependencies.Snapshot`."""
    work = await _run_views(conn, work_ids)
    ended = [run.id for run in work.values() if not run.state.is_active]
    waiting_ids = {run.id for run in work.values() if run.state is RunState.WAITING}
    waiting_ids |= set(timed_out)
    for chunk in _chunks(ended):
        query = (
            select(run_waits.c.run_id)
            .join(runs, runs.c.id == run_waits.c.run_id)
            .where(run_waits.c.upstream_run_id.in_(chunk), runs.c.state == _RUN_WAITING)
        )
        waiting_ids.update((await conn.execute(query)).scalars())

    waiting_rows: list[AnyRow] = []
    for chunk in _chunks(sorted(waiting_ids)):
        query = (
            select(runs)
            .where(runs.c.id.in_(chunk), runs.c.state == _RUN_WAITING)
            .order_by(runs.c.id)
        )
        waiting_rows += (await conn.execute(query)).all()
    links: defaultdict[int, dict[int, int]] = defaultdict(dict)
    for chunk in _chunks([row.id for row in waiting_rows]):
        query = select(run_waits).where(run_waits.c.run_id.in_(chunk))
        for row in await conn.execute(query):
            links[row.run_id][row.job_id] = row.upstream_run_id
    upstream = await _run_views(
        conn, {i for by_job in links.values() for i in by_job.values()}
    )

    successes = [run for run in work.values() if run.state is RunState.SUCCEEDED]
    downstream: defaultdict[int, list[int]] = defaultdict(list)
    for chunk in _chunks({run.job_id for run in successes}):
        query = (
            select(job_dependencies.c.depends_on_id, job_dependencies.c.job_id)
            .where(job_dependencies.c.depends_on_id.in_(chunk))
            .order_by(job_dependencies.c.job_id)
        )
        for dep_id, job_id in await conn.execute(query):
            downstream[dep_id].append(job_id)

    deciding = {row.job_id for row in waiting_rows}
    deciding.update(i for ids in downstream.values() for i in ids)
    job_views = await _job_views(conn, deciding)
    return Snapshot(
        jobs=job_views,
        waiting=[
            WaitingRun(
                run=RunView(row.id, row.job_id, RunState(row.state)),
                created_at=row.created_at,
                links={
                    job_id: upstream.get(upstream_id)
                    for job_id, upstream_id in links[row.id].items()
                },
                give_up_at=row.give_up_at,
            )
            for row in waiting_rows
        ],
        successes=successes,
        downstream=dict(downstream),
    )


def _instants_of(snapshot: Snapshot) -> list[datetime]:
    """Return the instants a snapshot's runs were made or ended at."""
    instants = [w.created_at for w in snapshot.waiting]
    instants += [run.finished_at for run in snapshot.successes if run.finished_at]
    for waiting in snapshot.waiting:
        instants += [
            link.finished_at
            for link in waiting.links.values()
            if link is not None and link.finished_at is not None
        ]
    return instants


async def _run_views(
    conn: AsyncConnection, run_ids: Iterable[int]
) -> dict[int, RunView]:
    found: dict[int, RunView] = {}
    for chunk in _chunks(sorted(set(run_ids))):
        query = select(
            runs.c.id, runs.c.job_id, runs.c.state, runs.c.finished_at, runs.c.reason
        ).where(runs.c.id.in_(chunk))
        for row in await conn.execute(query):
            found[row.id] = RunView(
                row.id, row.job_id, RunState(row.state), row.finished_at, row.reason
            )
    return found


async def _job_views(conn: AsyncConnection, deciding: set[int]) -> dict[int, JobView]:
    """Return the jobs that decide and their dependencies, locking their rows.

    Locked (on PostgreSQL) before their active runs are read, so that a manual run
    created meanwhile cannot make a demanded run a second active one.
    """
    # Edges of the deciding jobs, then of their dependencies: whether a demanded
    # run waits depends on the dependency's own dependencies.
    dependencies: defaultdict[int, set[int]] = defaultdict(set)
    deciding = set(deciding)
    await _add_edges(conn, deciding, dependencies)
    upstream = {i for ids in dependencies.values() for i in ids} - deciding
    await _add_edges(conn, upstream, dependencies)
    wanted = sorted(deciding | upstream)

    latest_success = (
        select(runs.c.id)
        .where(runs.c.job_id == jobs.c.id, runs.c.state == _RUN_SUCCEEDED)
        .order_by(runs.c.finished_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows: dict[int, AnyRow] = {}
    for chunk in _chunks(wanted):
        query = (
            select(jobs, latest_success.label("latest_success_id"))
            .where(jobs.c.id.in_(chunk))
            .order_by(jobs.c.id)
            .with_for_update(of=jobs)
        )
        rows.update({row.id: row for row in await conn.execute(query)})
    successes = await _run_views(
        conn, [row.latest_success_id for row in rows.values() if row.latest_success_id]
    )
    active: defaultdict[int, list[int]] = defaultdict(list)
    for chunk in _chunks(list(rows)):
        query = (
            select(runs.c.id, runs.c.job_id)
            .where(runs.c.job_id.in_(chunk), runs.c.state.in_(_ACTIVE_RUN_VALUES))
            .order_by(runs.c.id)
        )
        for run_id, job_id in await conn.execute(query):
            active[job_id].append(run_id)

    names = await _job_names(conn, {i for ids in dependencies.values() for i in ids})
    views: dict[int, JobView] = {}
    for row in rows.values():
        definition = decode_definition(row.definition)
        # The edges are the truth; the names in the definition give their order.
        listed = {name: index for index, name in enumerate(definition.depends_on)}
        views[row.id] = JobView(
            id=row.id,
            name=row.name,
            enabled=bool(row.enabled),
            scheduled=row.schedule is not None,
            depends_on=tuple(
                sorted(
                    dependencies[row.id],
                    key=lambda i: (listed.get(names.get(i, ""), len(listed)), i),
                )
            ),
            consumed_at=row.deps_consumed_at or row.created_at,
            dependency_timeout=definition.dependency_timeout,
            latest_success=successes.get(row.latest_success_id),
            active_run_ids=tuple(active[row.id]),
        )
    return views


async def _job_names(conn: AsyncConnection, job_ids: Iterable[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for chunk in _chunks(job_ids):
        query = select(jobs.c.id, jobs.c.name).where(jobs.c.id.in_(chunk))
        found.update({row.id: row.name for row in await conn.execute(query)})
    return found


async def _add_edges(
    conn: AsyncConnection, job_ids: Iterable[int], into: defaultdict[int, set[int]]
) -> None:
    for chunk in _chunks(job_ids):
        query = select(
            job_dependencies.c.job_id, job_dependencies.c.depends_on_id
        ).where(job_dependencies.c.job_id.in_(chunk))
        for job_id, dep_id in await conn.execute(query):
            into[job_id].add(dep_id)


async def _apply_plan(
    conn: AsyncConnection, plan: Plan, now: datetime
) -> DependencyPass:
    """Write a pass's plan; runs change only where they are still as read."""
    run_of: dict[int, int] = {}  # plan key -> stored id
    for demand in plan.demanded:
        (run_of[demand.key],) = await _insert_runs(
            conn,
            [
                NewRun(
                    demand.job_id,
                    Trigger.DEPENDENCY,
                    None,
                    state=RunState.WAITING if demand.waiting else RunState.QUEUED,
                    needed_by_run_id=demand.needed_by_run_id,
                    give_up_at=demand.give_up_at,
                )
            ],
            now,
        )
    for push in plan.pushed:
        (run_of[push.key],) = await _insert_runs(
            conn, [NewRun(push.job_id, Trigger.DEPENDENCY, None)], now
        )

    links = [
        (
            run_of.get(link.run_id, link.run_id),
            link.job_id,
            run_of.get(link.upstream_run_id, link.upstream_run_id),
        )
        for link in plan.links
    ]
    if links:
        statement = _dialect_insert(conn, run_waits)
        statement = statement.on_conflict_do_update(
            index_elements=[run_waits.c.run_id, run_waits.c.job_id],
            set_={"upstream_run_id": statement.excluded.upstream_run_id},
        )
        await conn.execute(
            statement,
            [
                {"run_id": run_id, "job_id": job_id, "upstream_run_id": upstream_id}
                for run_id, job_id, upstream_id in links
            ],
        )

    released: list[int] = []
    moved = {push.job_id for push in plan.pushed}  # jobs whose consumed_at moves
    for chunk in _chunks(plan.released):
        result = await conn.execute(
            update(runs)
            .where(runs.c.id.in_(chunk), runs.c.state == _RUN_WAITING)
            .values(state=_RUN_QUEUED, give_up_at=None)
            .returning(runs.c.id, runs.c.job_id)
        )
        for run_id, job_id in result:
            released.append(run_id)
            moved.add(job_id)
    if released:
        await conn.execute(
            insert(attempts), [first_attempt_values(i, now) for i in released]
        )
    ended = await _end_waiting(
        conn, [(end.run_id, end.state, end.reason) for end in plan.ended], now
    )
    await _add_work(conn, plan.leftover)
    # A waiting run linked to an upstream that is no longer active (a success that
    # feeds it, or a run that ended since the snapshot) is looked at again next
    # pass; released, ended and pushed runs are done with.
    active = await _mark_awaited(conn, {upstream for _, _, upstream in links})
    settled = set(released) | set(ended) | {run_of[push.key] for push in plan.pushed}
    await _add_work(
        conn,
        [
            run_id
            for run_id, _, upstream in links
            if upstream not in active and run_id not in settled
        ],
    )
    consumed = [
        {"b_id": job_id, "b_at": at}
        for job_id, at in plan.consumed.items()
        if job_id in moved  # not for a release that found the run changed
    ]
    if consumed:
        await conn.execute(
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(deps_consumed_at=bindparam("b_at")),
            consumed,
        )

    changed = await _load_runs(conn, [*run_of.values(), *released, *ended])
    return DependencyPass(
        worked=True,
        queued=[run for run in changed if run.state is RunState.QUEUED],
        ended=[run for run in changed if not run.state.is_active],
        waiting=[run for run in changed if run.state is RunState.WAITING],
    )


# Users, API tokens and audit


def audit_page_statement(
    audit_filter: AuditFilter, before_id: int | None, limit: int
) -> Select[*tuple[Any, ...]]:
    """Build the query of a page of audit records, newest first, older than
    `before_id`: a range scan of the id, or of the (column, id) index of a filter."""
    conditions: list[ColumnElement[bool]] = []
    if before_id is not None:
        conditions.append(audit_records.c.id < before_id)
    for column in ("action", "actor", "target"):
        wanted = getattr(audit_filter, column)
        if wanted is not None:
            conditions.append(audit_records.c[column] == wanted)
    return (
        select(audit_records)
        .where(*conditions)
        .order_by(audit_records.c.id.desc())
        .limit(limit)
    )


async def _fetch_user(
    conn: AsyncConnection, name: str, *, for_update: bool = False
) -> User:
    query = select(users).where(users.c.name == name)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFoundError(f"no user is named {name!r}")
    return user_from_row(row)


async def _keep_an_admin(conn: AsyncConnection, user: User, doing: str) -> None:
    """Refuse a change that would leave no admin.

    Callers hold the users lock (PostgreSQL), so that of two transactions each
    removing one of the last two admins, the second counts after the first ended.
    """
    if user.role is not Role.ADMIN:
        return
    query = select(users.c.id).where(users.c.role == Role.ADMIN.value)
    admins = (await conn.execute(query)).scalars().all()
    if set(admins) - {user.id}:
        return
    raise ConflictError(
        f"cannot {doing} {user.name!r}: it is the only admin, and socmeth must keep "
        "one; add another admin first",
        field="role",
    )


def _user_name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"a user named {name!r} already exists: choose another name, or change "
        "that user's password",
        field="name",
    )


def _token_name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"an API token named {name!r} already exists (token names are never "
        "reused, revoked ones included): choose another name",
        field="name",
    )


async def _fetch_api_token(conn: AsyncConnection, token_id: int) -> ApiToken:
    query = select(api_tokens).where(api_tokens.c.id == token_id)
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFoundError(f"no API token has id {token_id}")
    return api_token_from_row(row)
