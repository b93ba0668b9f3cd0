"""Create the store: jobs and their tags, runs, attempts and attempt output.

Revision ID: 0001
Revises:

Written by hand to match `socmeth.store.schema`; a test compares the two. Instants
are `DateTime(timezone=True)`: TIMESTAMPTZ on PostgreSQL, UTC text on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    # INTEGER PRIMARY KEY is SQLite's rowid alias; BIGINT everywhere else.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _instant() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", _id(), autoincrement=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("schedule", sa.Text(), nullable=True),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("next_fire_at", _instant(), nullable=True),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("updated_at", _instant(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("name", name="uq_jobs_name"),
        sqlite_autoincrement=True,
    )
    # The due-jobs lookup and the scheduler's next wake-up read this index only.
    op.create_index("ix_jobs_next_fire_at", "jobs", ["next_fire_at"])

    op.create_table(
        "job_tags",
        sa.Column("job_id", _id(), nullable=False),
        sa.Column("tag", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "tag", name="pk_job_tags"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_tags_job_id", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_job_tags_tag_job_id", "job_tags", ["tag", "job_id"])

    op.create_table(
        "runs",
        sa.Column("id", _id(), autoincrement=True),
        sa.Column("job_id", _id(), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("scheduled_at", _instant(), nullable=True),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("next_attempt_at", _instant(), nullable=True),
        sa.Column("finished_at", _instant(), nullable=True),
        sa.Column("cancel_requested_at", _instant(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_runs_job_id", ondelete="CASCADE"
        ),
        # The fire key: one run per (job, scheduled instant). NULL instants (manual
        # and dependency runs) are distinct, so they never collide.
        sa.UniqueConstraint(
            "job_id", "scheduled_at", name="uq_runs_job_id_scheduled_at"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_runs_job_id_id", "runs", ["job_id", "id"])
    op.create_index("ix_runs_state_job_id", "runs", ["state", "job_id"])
    op.create_index(
        "ix_runs_state_next_attempt_at", "runs", ["state", "next_attempt_at"]
    )
    op.create_index("ix_runs_finished_at", "runs", ["finished_at"])

    op.create_table(
        "attempts",
        sa.Column("id", _id(), autoincrement=True),
        sa.Column("run_id", _id(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("node_id", sa.Text(), nullable=True),
        sa.Column("queued_at", _instant(), nullable=False),
        sa.Column("started_at", _instant(), nullable=True),
        sa.Column("finished_at", _instant(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_attempts_run_id", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "number", name="uq_attempts_run_id_number"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_attempts_state_id", "attempts", ["state", "id"])

    op.create_table(
        "attempt_outputs",
        sa.Column("attempt_id", _id(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id", name="pk_attempt_outputs"),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["attempts.id"],
            name="fk_attempt_outputs_attempt_id",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("attempt_outputs")
    op.drop_table("attempts")
    op.drop_table("runs")
    op.drop_table("job_tags")
    op.drop_table("jobs")
