"""Add cluster membership and the leader lease.

Revision ID: 0003
Revises: 0002

Written by hand to match `socmeth.store.schema`; a test compares the two. The lease
table holds exactly one row, created here with no holder and term 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _instant() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("started_at", _instant(), nullable=False),
        sa.Column("last_heartbeat_at", _instant(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("stopped_at", _instant(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
    )
    lease = op.create_table(
        "leader_lease",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.Text(), nullable=True),
        sa.Column("term", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", _instant(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_leader_lease"),
    )
    op.bulk_insert(lease, [{"id": 1, "holder": None, "term": 0, "expires_at": None}])


def downgrade() -> None:
    op.drop_table("leader_lease")
    op.drop_table("nodes")
