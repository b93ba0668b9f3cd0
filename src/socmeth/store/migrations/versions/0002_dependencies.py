"""Add job dependencies: the graph, run waits, the dependency work list.

Revision ID: 0002
Revises: 0001

Written by hand to match `socmeth.store.schema`; a test compares the two. Jobs that
exist already count as fed by nothing before they were created.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _instant() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("deps_consumed_at", _instant(), nullable=True))
    op.execute("UPDATE jobs SET deps_consumed_at = created_at")

    op.add_column("runs", sa.Column("needed_by_run_id", _id(), nullable=True))
    op.add_column("runs", sa.Column("give_up_at", _instant(), nullable=True))
    op.add_column(
        "runs",
        sa.Column("awaited", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # (job, state, finished_at) answers what (state, job) did, and a job's latest
    # success by an index seek.
    op.drop_index("ix_runs_state_job_id", "runs")
    op.create_index(
        "ix_runs_job_id_state_finished_at", "runs", ["job_id", "state", "finished_at"]
    )
    op.create_index(
        "ix_runs_give_up_at",
        "runs",
        ["give_up_at"],
        sqlite_where=sa.text("give_up_at IS NOT NULL"),
        postgresql_where=sa.text("give_up_at IS NOT NULL"),
    )

    op.create_table(
        "job_dependencies",
        sa.Column("job_id", _id(), nullable=False),
        sa.Column("depends_on_id", _id(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "depends_on_id", name="pk_job_dependencies"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name="fk_job_dependencies_job_id",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["depends_on_id"], ["jobs.id"], name="fk_job_dependencies_depends_on_id"
        ),
    )
    op.create_index(
        "ix_job_dependencies_depends_on_id", "job_dependencies", ["depends_on_id"]
    )

    op.create_table(
        "run_waits",
        sa.Column("run_id", _id(), nullable=False),
        sa.Column("job_id", _id(), nullable=False),
        sa.Column("upstream_run_id", _id(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "job_id", name="pk_run_waits"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_waits_run_id", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_run_waits_upstream_run_id", "run_waits", ["upstream_run_id"])

    op.create_table(
        "dependency_work",
        sa.Column("run_id", _id(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_dependency_work"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name="fk_dependency_work_run_id",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("dependency_work")
    op.drop_table("run_waits")
    op.drop_table("job_dependencies")
    op.drop_index("ix_runs_give_up_at", "runs")
    op.drop_index("ix_runs_job_id_state_finished_at", "runs")
    op.create_index("ix_runs_state_job_id", "runs", ["state", "job_id"])
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("awaited")
        batch.drop_column("give_up_at")
        batch.drop_column("needed_by_run_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("deps_consumed_at")
