"""Create, check and revoke long-lived API tokens, for automation.

A token is `smt_` and 43 URL-safe characters: 256 random bits, shown once when it is
made. The prefix lets a secret scanner, or a person, recognise one. The store keeps
only its SHA-256: a secret of 256 random bits needs no slow hash, since nobody can
guess one to test against the digest; so a token is found by an index lookup on the
digest, and the digest found is compared again in constant time.

`last_used_at` is written at most once per `TOUCH_INTERVAL`, so that a script calling
the API in a loop does not cost a write per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from socmeth.auth.audit import record
from socmeth.auth.errors import (
    ForbiddenError,
    TokenExpiredError,
    TokenMalformedError,
    TokenRevokedError,
)
from socmeth.auth.models import ApiToken, AuditAction, Principal, Role
from socmeth.auth.names import check_name
from socmeth.errors import ValidationError
from socmeth.store.base import AuthStore, NewApiToken

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "smt_"
TOKEN_BYTES = 32
TOKEN_SHAPE = re.compile(rf"{TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}")
TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class CreatedApiToken:
    """A token just made: `secret` is the token itself, to show once and forget."""

    token: ApiToken
    secret: str

    def __repr__(self) -> str:
        return f"CreatedApiToken(token={self.token!r}, secret='{TOKEN_PREFIX}...')"


def generate_token() -> str:
    """Return a new random token, `smt_` and 43 URL-safe characters."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_api_token(text: str) -> bool:
    """Tell whether a bearer credential is an API token rather than a JWT (a JWT
    starts with `ey`, the base64 of `{"`)."""
    return text.startswith(TOKEN_PREFIX)


async def create_api_token(
    store: AuthStore,
    name: str,
    role: Role,
    by: Principal,
    now: datetime,
    *,
    expires_at: datetime | None = None,
) -> CreatedApiToken:
    """Make a token named `name` with `role`, on behalf of `by`, an admin.

    ForbiddenError unless `by` is an admin; ValidationError for a bad name or an
    expiry not after `now`; ConflictError (field `name`) for a taken name. Records
    `token.created`.
    """
    if not by.may(Role.ADMIN):
        raise ForbiddenError(
            f"only an admin may create API tokens; {by.actor} is {by.role}"
        )
    check_name(name)
    if expires_at is not None and expires_at <= now:
        raise ValidationError.single(
            "expires_at", f"{expires_at.isoformat()} is not in the future"
        )

    secret = generate_token()
    new = NewApiToken(name, role, hash_token(secret), by.actor, expires_at)
    token = await store.create_api_token(new, now)
    detail = {"role": role.value, "expires_at": _shown(expires_at)}
    await record(store, by, AuditAction.TOKEN_CREATED, name, detail, now)
    logger.info(
        "API token %s created with role %s by %s",
        name,
        role.value,
        by.actor,
        extra={"event": "auth.token_created", "token_id": token.id},
    )
    return CreatedApiToken(token, secret)


async def revoke_api_token(
    store: AuthStore, token_id: int, by: Principal, now: datetime
) -> ApiToken:
    """Revoke a token on behalf of `by`, an admin; records `token.revoked` the first
    time. NotFoundError for an unknown id."""
    if not by.may(Role.ADMIN):
        raise ForbiddenError(
            f"only an admin may revoke API tokens; {by.actor} is {by.role}"
        )
    before = await store.get_api_token(token_id)
    token = await store.revoke_api_token(token_id, now)
    if before.revoked_at is None:
        await record(store, by, AuditAction.TOKEN_REVOKED, token.name, {}, now)
        logger.info(
            "API token %s revoked by %s",
            token.name,
            by.actor,
            extra={"event": "auth.token_revoked", "token_id": token.id},
        )
    return token


async def authenticate_api_token(
    store: AuthStore, presented: str, now: datetime
) -> ApiToken:
    """Return the stored token `presented` is, if it may be used at `now`.

    TokenMalformedError for what is not a token (or no stored one),
    TokenRevokedError and TokenExpiredError as the names say. Moves `last_used_at`
    at most once per TOUCH_INTERVAL.
    """
    if not TOKEN_SHAPE.fullmatch(presented):
        raise TokenMalformedError(
            f"the API token is not {TOKEN_PREFIX} and 43 URL-safe characters"
        )
    digest = hash_token(presented)
    token = await store.find_api_token(digest)
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        raise TokenMalformedError("no such API token: check that it is copied whole")
    if token.revoked_at is not None:
        raise TokenRevokedError(f"the API token {token.name} was revoked")
    if token.expires_at is not None and now >= token.expires_at:
        raise TokenExpiredError(
            f"the API token {token.name} expired at {token.expires_at.isoformat()}"
        )
    if _touch_due(token, now):
        await store.touch_api_token(token.id, now, TOUCH_INTERVAL)
    return token


def _touch_due(token: ApiToken, now: datetime) -> bool:
    last = token.last_used_at
    return last is None or last <= now - TOUCH_INTERVAL


def _shown(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat()
