"""Add, change and remove users: checked input, hashed passwords, audit records, and
no password in any log line."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import profiles

from socmeth.auth.memory import MemoryAuthStore
from socmeth.auth.models import Principal, PrincipalKind, Role
from socmeth.auth.names import check_name
from socmeth.auth.passwords import Passwords
from socmeth.auth.users import (
    add_user,
    change_password,
    change_role,
    parse_role,
    remove_user,
)
from socmeth.errors import ConflictError, NotFoundError, ValidationError
from socmeth.store.base import AuditFilter

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
BY = Principal(PrincipalKind.COMMAND_LINE, "root", Role.ADMIN)
PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "tr0ub4dor & three more words"


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(profiles.CHEAPEST)


async def actions(store: MemoryAuthStore) -> list[tuple[str, str, str | None]]:
    page = await store.list_audit(AuditFilter(), 50, None)
    return [(r.actor, r.action, r.target) for r in reversed(page.items)]


async def test_an_added_user_has_a_hash_of_its_password_and_an_audit_record(
    passwords: Passwords,
) -> None:
    store = MemoryAuthStore()

    user = await add_user(store, passwords, "alice", Role.ADMIN, PASSWORD, BY, NOW)

    assert (user.name, user.role, user.created_at) == ("alice", Role.ADMIN, NOW)
    assert user.password_hash.startswith("$argon2id$")
    assert passwords.verify(user.password_hash, PASSWORD)
    assert await actions(store) == [("cli:root", "user.created", "alice")]
    (entry,) = (await store.list_audit(AuditFilter(), 1, None)).items
    assert entry.detail == {"role": "admin"}


@pytest.mark.parametrize(
    ("name", "password", "field"),
    [
        ("Alice", PASSWORD, "name"),
        ("", PASSWORD, "name"),
        ("a" * 65, PASSWORD, "name"),
        ("has:colon", PASSWORD, "name"),
        ("anonymous", PASSWORD, "name"),
        ("alice", "too short", "password"),
    ],
    ids=["upper-case", "empty", "too-long", "colon", "reserved", "weak-password"],
)
async def test_bad_input_is_refused_naming_the_field_and_stores_nothing(
    passwords: Passwords, name: str, password: str, field: str
) -> None:
    store = MemoryAuthStore()

    with pytest.raises(ValidationError) as raised:
        await add_user(store, passwords, name, Role.VIEWER, password, BY, NOW)

    assert raised.value.errors[0].field == field
    assert await store.list_users() == []
    assert await actions(store) == []


@pytest.mark.parametrize(
    "name",
    ["a", "alice", "ops.team-1", "x_y", "0day", "a" * 64],
    ids=["one-letter", "word", "dots-and-dashes", "underscore", "digit-first", "64"],
)
def test_names_follow_the_rule(name: str) -> None:
    assert check_name(name) == name


def test_a_role_is_parsed_or_refused_listing_the_roles() -> None:
    assert parse_role("operator") is Role.OPERATOR

    with pytest.raises(ValidationError, match="'boss' is not a role: use one of admin"):
        parse_role("boss")


async def test_a_taken_name_is_a_conflict(passwords: Passwords) -> None:
    store = MemoryAuthStore()
    await add_user(store, passwords, "alice", Role.ADMIN, PASSWORD, BY, NOW)

    with pytest.raises(ConflictError) as raised:
        await add_user(store, passwords, "alice", Role.VIEWER, PASSWORD, BY, NOW)

    assert raised.value.field == "name"


async def test_changing_a_password_replaces_the_hash(passwords: Passwords) -> None:
    store = MemoryAuthStore()
    await add_user(store, passwords, "alice", Role.ADMIN, PASSWORD, BY, NOW)

    user = await change_password(store, passwords, "alice", OTHER_PASSWORD, BY, LATER)

    assert passwords.verify(user.password_hash, OTHER_PASSWORD)
    assert not passwords.verify(user.password_hash, PASSWORD)
    assert user.updated_at == LATER
    assert (await actions(store))[-1] == ("cli:root", "user.password_changed", "alice")


async def test_an_unknown_name_is_not_found_with_near_names_suggested(
    passwords: Passwords,
) -> None:
    store = MemoryAuthStore()
    await add_user(store, passwords, "alice", Role.ADMIN, PASSWORD, BY, NOW)

    with pytest.raises(NotFoundError, match="'alicia': did you mean alice"):
        await change_password(store, passwords, "alicia", PASSWORD, BY, NOW)
    with pytest.raises(NotFoundError, match=r"no user is named 'zed'$"):
        await remove_user(store, "zed", BY, NOW)


async def test_a_role_change_and_a_removal_are_audited(passwords: Passwords) -> None:
    store = MemoryAuthStore()
    await add_user(store, passwords, "alice", Role.ADMIN, PASSWORD, BY, NOW)
    await add_user(store, passwords, "bob", Role.VIEWER, PASSWORD, BY, NOW)

    changed = await change_role(store, "bob", Role.OPERATOR, BY, LATER)
    await remove_user(store, "bob", BY, LATER)

    assert changed.role is Role.OPERATOR
    assert [user.name for user in await store.list_users()] == ["alice"]
    assert (await actions(store))[-2:] == [
        ("cli:root", "user.role_changed", "bob"),
        ("cli:root", "user.deleted", "bob"),
    ]
    entry = await store.list_audit(AuditFilter(action="user.role_changed"), 1, None)
    assert entry.items[0].detail == {"from": "viewer", "to": "operator"}


async def test_the_last_admin_stays(passwords: Passwords) -> None:
    store = MemoryAuthStore()
    await add_user(store, passwords, "alice", Role.ADMIN, PASSWORD, BY, NOW)

    with pytest.raises(ConflictError, match="only admin"):
        await remove_user(store, "alice", BY, LATER)

    assert [r[1] for r in await actions(store)] == ["user.created"]


async def test_no_password_is_ever_logged(
    passwords: Passwords, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = MemoryAuthStore()

    user = await add_user(store, passwords, "alice", Role.ADMIN, PASSWORD, BY, NOW)
    await change_password(store, passwords, "alice", OTHER_PASSWORD, BY, LATER)
    with pytest.raises(ValidationError):
        await change_password(store, passwords, "alice", "weak-secret", BY, LATER)

    events = [getattr(r, "event", "") for r in caplog.records]
    assert events == ["auth.user_added", "auth.password_changed"]
    for secret in (PASSWORD, OTHER_PASSWORD, "weak-secret", user.password_hash):
        assert secret not in caplog.text
