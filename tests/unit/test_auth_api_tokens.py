"""Create, check and revoke API tokens; the token is shown once and stored hashed."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from socmeth.auth.api_tokens import (
    TOKEN_PREFIX,
    TOUCH_INTERVAL,
    authenticate_api_token,
    create_api_token,
    generate_token,
    hash_token,
    looks_like_api_token,
    revoke_api_token,
)
from socmeth.auth.errors import (
    ForbiddenError,
    TokenExpiredError,
    TokenMalformedError,
    TokenRevokedError,
)
from socmeth.auth.memory import MemoryAuthStore
from socmeth.auth.models import Principal, PrincipalKind, Role
from socmeth.errors import ConflictError, ValidationError
from socmeth.store.base import AuditFilter

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ADMIN = Principal(PrincipalKind.USER, "alice", Role.ADMIN)
OPERATOR = Principal(PrincipalKind.USER, "bob", Role.OPERATOR)


def test_tokens_are_prefixed_random_and_of_256_bits() -> None:
    tokens = {generate_token() for _ in range(100)}

    assert len(tokens) == 100
    for token in tokens:
        assert re.fullmatch(r"smt_[A-Za-z0-9_-]{43}", token)
        assert looks_like_api_token(token)
    assert not looks_like_api_token("eyJhbGciOiJIUzI1NiJ9.e30.sig")


def test_the_stored_hash_is_the_sha256_of_the_token() -> None:
    token = generate_token()

    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()


async def test_a_created_token_is_shown_once_and_stored_only_hashed() -> None:
    store = MemoryAuthStore()

    created = await create_api_token(store, "ci-deploy", Role.OPERATOR, ADMIN, NOW)

    assert created.secret.startswith(TOKEN_PREFIX)
    (stored,) = await store.list_api_tokens()
    assert stored == created.token
    assert stored.token_hash == hash_token(created.secret)
    assert created.secret not in repr(stored)
    assert created.secret not in repr(created)
    assert (stored.name, stored.role, stored.created_by) == (
        "ci-deploy",
        Role.OPERATOR,
        "alice",
    )


async def test_creating_a_token_is_audited_without_the_token() -> None:
    store = MemoryAuthStore()

    created = await create_api_token(store, "ci", Role.VIEWER, ADMIN, NOW)

    (entry,) = (await store.list_audit(AuditFilter(), 10, None)).items
    assert (entry.actor, entry.action, entry.target) == ("alice", "token.created", "ci")
    assert entry.detail == {"role": "viewer", "expires_at": None}
    assert created.secret not in str(entry)


async def test_only_an_admin_creates_or_revokes_tokens() -> None:
    store = MemoryAuthStore()
    created = await create_api_token(store, "ci", Role.VIEWER, ADMIN, NOW)

    with pytest.raises(ForbiddenError, match="only an admin"):
        await create_api_token(store, "mine", Role.VIEWER, OPERATOR, NOW)
    with pytest.raises(ForbiddenError, match="only an admin"):
        await revoke_api_token(store, created.token.id, OPERATOR, NOW)

    assert [t.name for t in await store.list_api_tokens()] == ["ci"]


@pytest.mark.parametrize(
    ("name", "expires_at", "field"),
    [
        ("Bad Name", None, "name"),
        ("ok", NOW, "expires_at"),
    ],
    ids=["bad-name", "expiry-not-in-the-future"],
)
async def test_bad_input_is_refused_naming_the_field(
    name: str, expires_at: datetime | None, field: str
) -> None:
    store = MemoryAuthStore()

    with pytest.raises(ValidationError) as raised:
        await create_api_token(
            store, name, Role.VIEWER, ADMIN, NOW, expires_at=expires_at
        )

    assert raised.value.errors[0].field == field
    assert await store.list_api_tokens() == []


async def test_a_taken_token_name_is_a_conflict() -> None:
    store = MemoryAuthStore()
    await create_api_token(store, "ci", Role.VIEWER, ADMIN, NOW)

    with pytest.raises(ConflictError) as raised:
        await create_api_token(store, "ci", Role.ADMIN, ADMIN, NOW)

    assert raised.value.field == "name"


async def test_a_token_authenticates_and_its_use_is_recorded_once_a_minute() -> None:
    store = MemoryAuthStore()
    created = await create_api_token(store, "ci", Role.OPERATOR, ADMIN, NOW)

    used = await authenticate_api_token(store, created.secret, NOW)
    await authenticate_api_token(store, created.secret, NOW + TOUCH_INTERVAL / 2)
    first = await store.get_api_token(used.id)
    await authenticate_api_token(store, created.secret, NOW + TOUCH_INTERVAL)
    second = await store.get_api_token(used.id)

    assert (used.name, used.role) == ("ci", Role.OPERATOR)
    assert first.last_used_at == NOW
    assert second.last_used_at == NOW + TOUCH_INTERVAL


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "smt_",
        "smt_short",
        "xyz_" + "a" * 43,
        "smt_" + "a" * 42 + "!",
        "smt_" + "a" * 44,
    ],
    ids=["empty", "prefix-only", "short", "other-prefix", "bad-character", "long"],
)
async def test_what_is_no_token_is_refused_unlooked_up(presented: str) -> None:
    with pytest.raises(TokenMalformedError, match="43 URL-safe"):
        await authenticate_api_token(MemoryAuthStore(), presented, NOW)


async def test_an_unknown_token_is_refused() -> None:
    with pytest.raises(TokenMalformedError, match="no such API token"):
        await authenticate_api_token(MemoryAuthStore(), generate_token(), NOW)


async def test_a_revoked_token_is_refused_and_revoking_is_audited_once() -> None:
    store = MemoryAuthStore()
    created = await create_api_token(store, "ci", Role.OPERATOR, ADMIN, NOW)

    await revoke_api_token(store, created.token.id, ADMIN, NOW + timedelta(hours=1))
    await revoke_api_token(store, created.token.id, ADMIN, NOW + timedelta(hours=2))

    with pytest.raises(TokenRevokedError, match="ci was revoked"):
        await authenticate_api_token(store, created.secret, NOW + timedelta(hours=3))
    actions = [r.action for r in (await store.list_audit(AuditFilter(), 9, None)).items]
    assert actions == ["token.revoked", "token.created"]


async def test_an_expired_token_is_refused_from_its_expiry_on() -> None:
    store = MemoryAuthStore()
    expiry = NOW + timedelta(days=30)
    created = await create_api_token(
        store, "ci", Role.OPERATOR, ADMIN, NOW, expires_at=expiry
    )

    await authenticate_api_token(store, created.secret, expiry - timedelta(seconds=1))
    with pytest.raises(TokenExpiredError, match="expired at"):
        await authenticate_api_token(store, created.secret, expiry)


async def test_creating_and_using_a_token_never_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = MemoryAuthStore()

    created = await create_api_token(store, "ci", Role.OPERATOR, ADMIN, NOW)
    await authenticate_api_token(store, created.secret, NOW)
    with pytest.raises(TokenMalformedError):
        await authenticate_api_token(store, created.secret[:-1] + "x", NOW)

    assert "auth.token_created" in [getattr(r, "event", "") for r in caplog.records]
    assert created.secret not in caplog.text
    assert created.secret[len(TOKEN_PREFIX) :] not in caplog.text
    assert created.token.token_hash not in caplog.text
