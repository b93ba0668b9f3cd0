"""Write audit records with small details that never hold a secret."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from socmeth.auth.audit import MAX_DETAIL_BYTES, check_detail, record
from socmeth.auth.memory import MemoryAuthStore
from socmeth.auth.models import (
    ANONYMOUS,
    AuditAction,
    Principal,
    PrincipalKind,
    Role,
)
from socmeth.store.base import AuditFilter

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("actor", "name"),
    [
        (Principal(PrincipalKind.USER, "alice", Role.ADMIN), "alice"),
        (Principal(PrincipalKind.API_TOKEN, "ci", Role.OPERATOR), "token:ci"),
        (Principal(PrincipalKind.COMMAND_LINE, "root", Role.ADMIN), "cli:root"),
        (ANONYMOUS, "anonymous"),
        ("scheduler", "scheduler"),
    ],
    ids=["user", "api-token", "command-line", "anonymous", "plain-name"],
)
async def test_a_record_names_its_actor_by_kind(
    actor: Principal | str, name: str
) -> None:
    store = MemoryAuthStore()

    written = await record(
        store, actor, AuditAction.JOB_PAUSED, "backup", {"reason": "db upgrade"}, NOW
    )

    assert (written.actor, written.action, written.target) == (
        name,
        "job.paused",
        "backup",
    )
    assert written.detail == {"reason": "db upgrade"}
    assert (await store.list_audit(AuditFilter(), 5, None)).items == [written]


async def test_a_record_may_have_no_target_or_detail() -> None:
    written = await record(
        MemoryAuthStore(), ANONYMOUS, AuditAction.RUN_CANCELLED, None, None, NOW
    )

    assert (written.target, written.detail) == (None, {})


@pytest.mark.parametrize(
    "detail",
    [
        {"password": "x"},
        {"headers": {"Authorization": "Bearer x"}},
        {"changes": [{"new_secret": "x"}]},
        {"api_token": "smt_x"},
        {"password_hash": "$argon2id$"},
    ],
    ids=["password", "nested-authorization", "in-a-list", "token", "hash"],
)
def test_a_detail_with_a_secret_key_is_refused(detail: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="may hold a secret"):
        check_detail(detail)


def test_a_detail_must_be_small_plain_json() -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_DETAIL_BYTES} bytes"):
        check_detail({"fields": ["x" * MAX_DETAIL_BYTES]})
    with pytest.raises(ValueError, match="plain JSON"):
        check_detail({"at": NOW})


def test_a_detail_naming_the_fields_changed_is_fine() -> None:
    detail = {"fields": ["headers", "secret", "schedule"], "from": 1}

    assert check_detail(detail) == detail


@pytest.mark.parametrize(
    ("role", "required", "allowed"),
    [
        (Role.ADMIN, Role.ADMIN, True),
        (Role.ADMIN, Role.VIEWER, True),
        (Role.OPERATOR, Role.OPERATOR, True),
        (Role.OPERATOR, Role.ADMIN, False),
        (Role.VIEWER, Role.VIEWER, True),
        (Role.VIEWER, Role.OPERATOR, False),
    ],
    ids=[
        "admin-admin",
        "admin-viewer",
        "operator-operator",
        "operator-admin",
        "viewer-viewer",
        "viewer-operator",
    ],
)
def test_each_role_includes_the_ones_below_it(
    role: Role, required: Role, allowed: bool
) -> None:
    assert role.includes(required) is allowed
    assert Principal(PrincipalKind.USER, "u", role).may(required) is allowed
