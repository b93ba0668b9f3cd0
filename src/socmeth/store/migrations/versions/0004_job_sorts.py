"""Index the sorts of the jobs list: name, next fire, last update, creation.

Revision ID: 0004
Revises: 0003

Written by hand to match `socmeth.store.schema`; a test compares the two. The next
fire index gains the id, so that PostgreSQL reads jobs with the same next fire in
id order off it (SQLite's indexes end with the rowid anyway); it keeps its name.
Paused jobs get partial indexes, which fires never write.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAUSED = sa.column("enabled", sa.Boolean()) == sa.false()
PAUSED_INDEXES = {
    "ix_jobs_paused_name": ["name"],
    "ix_jobs_paused_next_fire_at_id": ["next_fire_at", "id"],
    "ix_jobs_paused_updated_at_id": ["updated_at", "id"],
    "ix_jobs_paused_created_at_id": ["created_at", "id"],
}


def upgrade() -> None:
    op.drop_index("ix_jobs_next_fire_at", "jobs")
    op.create_index("ix_jobs_next_fire_at", "jobs", ["next_fire_at", "id"])
    op.create_index("ix_jobs_updated_at_id", "jobs", ["updated_at", "id"])
    op.create_index("ix_jobs_created_at_id", "jobs", ["created_at", "id"])
    for name, columns in PAUSED_INDEXES.items():
        op.create_index(
            name, "jobs", columns, sqlite_where=PAUSED, postgresql_where=PAUSED
        )


def downgrade() -> None:
    for name in PAUSED_INDEXES:
        op.drop_index(name, "jobs")
    op.drop_index("ix_jobs_created_at_id", "jobs")
    op.drop_index("ix_jobs_updated_at_id", "jobs")
    op.drop_index("ix_jobs_next_fire_at", "jobs")
    op.create_index("ix_jobs_next_fire_at", "jobs", ["next_fire_at"])
