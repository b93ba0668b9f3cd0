"""Add users, API tokens and audit records (authentication, issue 6).

Revision ID: 0006
Revises: 0005

Written by hand to match `socmeth.store.schema`; a test compares the two. Users keep
an argon2id hash of their password, API tokens the SHA-256 of the token: neither
table ever holds a secret itself. Audit records are appended only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    # INTEGER PRIMARY KEY is SQLite's rowid alias; BIGINT everywhere else.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _instant() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", _id(), autoincrement=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("updated_at", _instant(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
        sqlite_autoincrement=True,
    )

    op.create_table(
        "api_tokens",
        sa.Column("id", _id(), autoincrement=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("last_used_at", _instant(), nullable=True),
        sa.Column("expires_at", _instant(), nullable=True),
        sa.Column("revoked_at", _instant(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
        sqlite_autoincrement=True,
    )

    op.create_table(
        "audit_records",
        sa.Column("id", _id(), autoincrement=True),
        sa.Column("at", _instant(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_records"),
        sqlite_autoincrement=True,
    )
    for column in ("action", "actor", "target"):
        op.create_index(
            f"ix_audit_records_{column}_id", "audit_records", [column, "id"]
        )


def downgrade() -> None:
    op.drop_table("audit_records")
    op.drop_table("api_tokens")
    op.drop_table("users")
