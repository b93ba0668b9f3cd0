"""Index runs by state, newest first.

Revision ID: 0005
Revises: 0004

Written by hand to match `socmeth.store.schema`; a test compares the two. Listing
the runs of some states (the dashboard's active, failed and recent runs) reads
each state's newest runs off this index instead of sorting every run of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_runs_state_id", "runs", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_state_id", "runs")
