"""Keep users, API tokens and audit records in memory, for tests of any layer.

`MemoryAuthStore` implements `AuthStore` only (not the whole `Store`), and is held
to the same contract suite as the SQL store. Each method runs without awaiting in
between, so it is as atomic in one event loop as a transaction.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

from socmeth.auth.models import ApiToken, AuditRecord, Role, User
from socmeth.errors import ConflictError, NotFoundError
from socmeth.store.base import (
    AuditFilter,
    AuthStore,
    NewApiToken,
    NewAuditRecord,
    NewUser,
    Page,
)
from socmeth.store.codec import decode_id_cursor, encode_cursor


class MemoryAuthStore(AuthStore):
    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._tokens: dict[int, ApiToken] = {}
        self._audit: list[AuditRecord] = []
        self._last_id = 0

    def _next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    # Users

    async def create_user(self, user: NewUser, now: datetime) -> User:
        if user.name in self._users:
            raise ConflictError(
                f"a user named {user.name!r} already exists: choose another name, "
                "or change that user's password",
                field="name",
            )
        stored = User(
            id=self._next_id(),
            name=user.name,
            role=user.role,
            password_hash=user.password_hash,
            created_at=now,
            updated_at=now,
        )
        self._users[user.name] = stored
        return stored

    async def get_user(self, name: str) -> User:
        return self._user(name)

    def _user(self, name: str) -> User:
        if name not in self._users:
            raise NotFoundError(f"no user is named {name!r}")
        return self._users[name]

    async def list_users(self) -> list[User]:
        return [self._users[name] for name in sorted(self._users)]

    async def update_user(
        self,
        name: str,
        now: datetime,
        *,
        role: Role | None = None,
        password_hash: str | None = None,
    ) -> User:
        stored = self._user(name)
        if role is not None and role is not Role.ADMIN:
            self._keep_an_admin(stored, "change the role of")
        changed = replace(
            stored,
            role=stored.role if role is None else role,
            password_hash=(
                stored.password_hash if password_hash is None else password_hash
            ),
            updated_at=now,
        )
        self._users[name] = changed
        return changed

    async def delete_user(self, name: str) -> None:
        stored = self._user(name)
        self._keep_an_admin(stored, "remove")
        del self._users[name]

    def _keep_an_admin(self, user: User, doing: str) -> None:
        if user.role is not Role.ADMIN:
            return
        if any(u.role is Role.ADMIN and u.id != user.id for u in self._users.values()):
            return
        raise ConflictError(
            f"cannot {doing} {user.name!r}: it is the only admin, and socmeth must "
            "keep one; add another admin first",
            field="role",
        )

    # API tokens

    async def create_api_token(self, token: NewApiToken, now: datetime) -> ApiToken:
        if any(t.name == token.name for t in self._tokens.values()):
            raise ConflictError(
                f"an API token named {token.name!r} already exists (token names are "
                "never reused, revoked ones included): choose another name",
                field="name",
            )
        stored = ApiToken(
            id=self._next_id(),
            name=token.name,
            role=token.role,
            token_hash=token.token_hash,
            created_by=token.created_by,
            created_at=now,
            last_used_at=None,
            expires_at=token.expires_at,
            revoked_at=None,
        )
        self._tokens[stored.id] = stored
        return stored

    async def get_api_token(self, token_id: int) -> ApiToken:
        if token_id not in self._tokens:
            raise NotFoundError(f"no API token has id {token_id}")
        return self._tokens[token_id]

    async def find_api_token(self, token_hash: str) -> ApiToken | None:
        found = (t for t in self._tokens.values() if t.token_hash == token_hash)
        return next(found, None)

    async def list_api_tokens(self, *, include_revoked: bool = True) -> list[ApiToken]:
        listed = sorted(self._tokens.values(), key=lambda token: token.name)
        return [t for t in listed if include_revoked or t.revoked_at is None]

    async def touch_api_token(
        self, token_id: int, now: datetime, min_interval: timedelta
    ) -> bool:
        token = self._tokens.get(token_id)
        if token is None:
            return False
        if token.last_used_at is not None and token.last_used_at > now - min_interval:
            return False
        self._tokens[token_id] = replace(token, last_used_at=now)
        return True

    async def revoke_api_token(self, token_id: int, now: datetime) -> ApiToken:
        token = await self.get_api_token(token_id)
        if token.revoked_at is None:
            token = replace(token, revoked_at=now)
            self._tokens[token_id] = token
        return token

    # Audit

    async def append_audit(self, record: NewAuditRecord) -> AuditRecord:
        stored = AuditRecord(
            id=self._next_id(),
            at=record.at,
            actor=record.actor,
            action=record.action.value,
            target=record.target,
            # Through JSON, as the SQL store keeps it: the caller's dict is not shared.
            detail=json.loads(json.dumps(dict(record.detail))),
        )
        self._audit.append(stored)
        return stored

    async def list_audit(
        self, audit_filter: AuditFilter, limit: int, cursor: str | None
    ) -> Page[AuditRecord]:
        if limit < 1:
            raise ValueError(f"page limit must be at least 1, got {limit}")
        before = None if cursor is None else decode_id_cursor(cursor, "audit")
        matching = [
            record
            for record in reversed(self._audit)
            if (before is None or record.id < before) and _matches(record, audit_filter)
        ]
        items = matching[:limit]
        more = len(matching) > limit
        return Page(items, encode_cursor("audit", str(items[-1].id)) if more else None)


def _matches(record: AuditRecord, audit_filter: AuditFilter) -> bool:
    return all(
        wanted is None or getattr(record, column) == wanted
        for column, wanted in (
            ("action", audit_filter.action),
            ("actor", audit_filter.actor),
            ("target", audit_filter.target),
        )
    )
