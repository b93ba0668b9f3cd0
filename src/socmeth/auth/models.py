"""Define the plain values of authentication: roles, users, API tokens, audit records.

Frozen dataclasses, like socmeth.models. Hashes of passwords and tokens are kept out
of `repr`, so that printing or logging a value never shows one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    """Say what a user or token may do (SPEC "Auth"); each role includes the next.

    `admin` everything; `operator` read, run, cancel, pause and resume; `viewer` read.
    """

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"

    def includes(self, required: Role) -> bool:
        """Tell whether this role may do what `required` may."""
        return _RANK[self] >= _RANK[required]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class User:
    """A person who logs in with a name and a password."""

    id: int
    name: str
    role: Role
    password_hash: str = field(repr=False)
    created_at: datetime
    # Moved by every change of the password or role; access tokens issued before it
    # are refused (socmeth.auth.authenticator).
    updated_at: datetime


@dataclass(frozen=True)
class ApiToken:
    """A long-lived token for automation, as stored: never the token itself."""

    id: int
    name: str
    role: Role
    token_hash: str = field(repr=False)
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable_at(self, now: datetime) -> bool:
        """Tell whether the token is neither revoked nor expired at `now`."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


class AuditAction(StrEnum):
    """Name what an audit record records; `<thing>.<past participle>`."""

    JOB_CREATED = "job.created"
    JOB_UPDATED = "job.updated"
    JOB_DELETED = "job.deleted"
    JOB_RUN = "job.run"
    JOB_PAUSED = "job.paused"
    JOB_RESUMED = "job.resumed"
    RUN_CANCELLED = "run.cancelled"
    USER_CREATED = "user.created"
    USER_PASSWORD_CHANGED = "user.password_changed"
    USER_ROLE_CHANGED = "user.role_changed"
    USER_DELETED = "user.deleted"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"


@dataclass(frozen=True)
class AuditRecord:
    """Say who did what to which thing, and when.

    `action` is kept as the text stored, so that records a newer socmeth wrote with
    actions this one does not know still list.
    """

    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: Mapping[str, Any]


class PrincipalKind(StrEnum):
    """Say how a caller was identified."""

    USER = "user"
    API_TOKEN = "api_token"
    COMMAND_LINE = "command_line"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Principal:
    """Name who makes a request, and with which role."""

    kind: PrincipalKind
    name: str
    role: Role

    @property
    def actor(self) -> str:
        """Return the name audit records give this caller.

        User names hold no ':' and `anonymous` is reserved, so the four kinds never
        read alike: `alice`, `token:ci-deploy`, `cli:root`, `anonymous`.
        """
        if self.kind is PrincipalKind.USER:
            return self.name
        if self.kind is PrincipalKind.API_TOKEN:
            return f"token:{self.name}"
        if self.kind is PrincipalKind.COMMAND_LINE:
            return f"cli:{self.name}"
        return ANONYMOUS_ACTOR

    def may(self, required: Role) -> bool:
        """Tell whether this caller's role includes `required`."""
        return self.role.includes(required)


ANONYMOUS_ACTOR = "anonymous"
# With auth disabled every caller may do everything, and is recorded as this.
ANONYMOUS = Principal(PrincipalKind.ANONYMOUS, ANONYMOUS_ACTOR, Role.ADMIN)
