"""Declare the SQL tables of the store, one schema for SQLite and PostgreSQL.

`migrations/versions` creates exactly these tables; a test compares the two. Every
instant goes through `UtcDateTime`, so code only ever sees aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

# Deterministic names, so that later migrations can drop or alter constraints on
# PostgreSQL, where unnamed ones get server-chosen names.
NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """Store an aware instant as UTC and read it back as an aware UTC datetime.

    SQLite keeps naive UTC text (its fixed-width format sorts like the instants it
    holds); PostgreSQL keeps `timestamptz`. A naive datetime is refused on write: it
    is a programming error, since nothing could tell which zone it meant.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: pass UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _id_type() -> TypeEngine[int]:
    # On SQLite only an INTEGER PRIMARY KEY aliases the rowid and autoincrements.
    return BigInteger().with_variant(Integer(), "sqlite")


# sqlite_autoincrement: AUTOINCREMENT keeps SQLite from reusing the id of a deleted
# newest row, so an id in a bookmark, a log line or a stale queue message never names
# a different row.
jobs = Table(
    "jobs",
    metadata,
    Column("id", _id_type(), primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("type", String(32), nullable=False),
    Column("schedule", Text, nullable=True),
    Column("timezone", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("definition", Text, nullable=False),
    Column("next_fire_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Successes of the job's dependencies that finished at or before this instant
    # have fed it (socmeth.dependencies); set when it is created or gains one.
    Column("deps_consumed_at", UtcDateTime, nullable=True),
    UniqueConstraint("name"),
    # The due lookup, and the next-fire sort of the jobs list (ties by id). Named
    # for its leading column, as it was before it gained the id (0004).
    Index("ix_jobs_next_fire_at", "next_fire_at", "id"),
    # The jobs list's other sorts (see "Sorting jobs" below).
    Index(None, "updated_at", "id"),
    Index(None, "created_at", "id"),
    sqlite_autoincrement=True,
)

# Sorting jobs. Every sort of the jobs list is one range scan of an index in its
# order, the name sorts reading the unique index of `name`; listing enabled jobs
# reads the same indexes and skips the paused ones. Paused jobs get partial indexes
# of their own, so that listing them never reads past the enabled ones: they are
# few, and a fire, which moves an enabled job's next fire, writes none of them.
PAUSED = jobs.c.enabled == false()


def _paused_index(name: str, *columns: str) -> Index:
    return Index(
        name,
        *(jobs.c[column] for column in columns),
        sqlite_where=PAUSED,
        postgresql_where=PAUSED,
    )


_paused_index("ix_jobs_paused_name", "name")
_paused_index("ix_jobs_paused_next_fire_at_id", "next_fire_at", "id")
_paused_index("ix_jobs_paused_updated_at_id", "updated_at", "id")
_paused_index("ix_jobs_paused_created_at_id", "created_at", "id")

# Tags live in their own rows so that filtering jobs by tag is an index lookup in
# any dialect, without JSON functions.
job_tags = Table(
    "job_tags",
    metadata,
    Column(
        "job_id",
        _id_type(),
        ForeignKey("jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tag", Text, primary_key=True),
    Index(None, "tag", "job_id"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", _id_type(), primary_key=True, autoincrement=True),
    Column(
        "job_id", _id_type(), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    ),
    Column("trigger", String(32), nullable=False),
    Column("scheduled_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("state", String(32), nullable=False),
    Column("reason", Text, nullable=True),
    Column("late", Boolean, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("cancel_requested_at", UtcDateTime, nullable=True),
    # A dependency run: the run whose demand made it. No foreign key: either run
    # may be pruned first.
    Column("needed_by_run_id", _id_type(), nullable=True),
    # A waiting run: when its dependency_timeout ends the wait.
    Column("give_up_at", UtcDateTime, nullable=True),
    # A waiting run is linked to this one while it is active: its end is dependency
    # work. On the row itself, so that the finisher's lock of the row fences it.
    Column("awaited", Boolean, nullable=False, server_default=false()),
    # The fire key. NULLs are distinct in a unique constraint on both dialects, so
    # runs without a scheduled instant (manual, dependency) never collide.
    UniqueConstraint("job_id", "scheduled_at"),
    # A job's runs newest first; a job's previous ended run.
    Index(None, "job_id", "id"),
    # Active runs of given jobs; a job's latest success (by finish).
    Index(None, "job_id", "state", "finished_at"),
    # Due retries and the earliest pending one, in due order.
    Index(None, "state", "next_attempt_at"),
    # Runs of a state, newest first: the dashboard's active, failed and recent runs.
    Index(None, "state", "id"),
    # Pruning, oldest first.
    Index(None, "finished_at"),
    # Waits that time out, earliest first; only waiting runs have the column set.
    Index(
        None,
        "give_up_at",
        sqlite_where=text("give_up_at IS NOT NULL"),
        postgresql_where=text("give_up_at IS NOT NULL"),
    ),
    sqlite_autoincrement=True,
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", _id_type(), primary_key=True, autoincrement=True),
    Column(
        "run_id", _id_type(), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    Column("number", Integer, nullable=False),
    Column("state", String(32), nullable=False),
    Column("node_id", Text, nullable=True),
    Column("queued_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("http_status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    UniqueConstraint("run_id", "number"),
    # (state, id): queued attempts are re-published in id order, straight off it.
    Index(None, "state", "id"),
    sqlite_autoincrement=True,
)

attempt_outputs = Table(
    "attempt_outputs",
    metadata,
    Column(
        "attempt_id",
        _id_type(),
        ForeignKey("attempts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("text", Text, nullable=False),
    Column("truncated", Boolean, nullable=False),
)

# The dependency graph by id: (job, a job it depends on). The names are in the
# job's definition; this table answers "who depends on X" by an index lookup.
job_dependencies = Table(
    "job_dependencies",
    metadata,
    Column(
        "job_id",
        _id_type(),
        ForeignKey("jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "depends_on_id",
        _id_type(),
        ForeignKey("jobs.id"),
        primary_key=True,
    ),
    Index(None, "depends_on_id"),
)

# What a run of a job with dependencies waits for, or was fed by: one row per
# dependency, naming the run of that dependency.
run_waits = Table(
    "run_waits",
    metadata,
    Column(
        "run_id",
        _id_type(),
        ForeignKey("runs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("job_id", _id_type(), primary_key=True),
    Column("upstream_run_id", _id_type(), nullable=False),
    Index(None, "upstream_run_id"),
)

# The dependency work list: runs the leader must look at (a waiting run to resolve,
# an ended run others depend on), written in the transaction that made the work.
dependency_work = Table(
    "dependency_work",
    metadata,
    Column(
        "run_id",
        _id_type(),
        ForeignKey("runs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
)

# Cluster membership: one row per node that ever heartbeated. A node is up while
# its heartbeats are fresh by the store's clock (socmeth.cluster).
nodes = Table(
    "nodes",
    metadata,
    Column("id", Text, primary_key=True),
    Column("address", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("last_heartbeat_at", UtcDateTime, nullable=False),
    Column("running", Integer, nullable=False),
    # Set when the node stopped cleanly, so that it reads down at once.
    Column("stopped_at", UtcDateTime, nullable=True),
)

# The leader lease: one row (id 1). Its holder leads until `expires_at` by the
# store's clock; each new holder raises `term`, which fences the writes of a leader
# that lost the lease.
leader_lease = Table(
    "leader_lease",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("holder", Text, nullable=True),
    Column("term", BigInteger, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
)

# Authentication (socmeth.auth). Users log in with a name and a password, of which
# only the argon2id hash is kept.
users = Table(
    "users",
    metadata,
    Column("id", _id_type(), primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("name"),
    sqlite_autoincrement=True,
)

# Long-lived tokens for automation, found by the SHA-256 of the token. `created_by`
# is the actor that created it, as text: the user may be removed, the token stays.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", _id_type(), primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime, nullable=True),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    UniqueConstraint("name"),
    UniqueConstraint("token_hash"),
    sqlite_autoincrement=True,
)

# Who did what, appended and never changed. Newest first is by id; each filter has
# an index of (column, id), so a filtered page is one range scan.
audit_records = Table(
    "audit_records",
    metadata,
    Column("id", _id_type(), primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=True),
    Column("detail", Text, nullable=False),
    Index(None, "action", "id"),
    Index(None, "actor", "id"),
    Index(None, "target", "id"),
    sqlite_autoincrement=True,
)
