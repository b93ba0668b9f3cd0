"""Add, change and remove users: what `socmeth users` does, and the API will.

Each function checks its input first (name, role, password: ValidationError naming
the field), hashes in a thread (argon2 takes about 0.1 s), writes, and appends an
audit record. Passwords are never logged, never in a message, never in an audit
record; the log names the user and the event only.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
from datetime import datetime

from socmeth.auth.audit import record
from socmeth.auth.models import AuditAction, Principal, Role, User
from socmeth.auth.names import check_name
from socmeth.auth.passwords import Passwords, check_password
from socmeth.errors import NotFoundError, ValidationError
from socmeth.store.base import AuthStore, NewUser

logger = logging.getLogger(__name__)


def parse_role(text: str, field: str = "role") -> Role:
    """Return the role `text` names; ValidationError naming `field` and the roles."""
    try:
        return Role(text)
    except ValueError:
        roles = ", ".join(role.value for role in Role)
        raise ValidationError.single(
            field, f"{text!r} is not a role: use one of {roles}"
        ) from None


async def add_user(
    store: AuthStore,
    passwords: Passwords,
    name: str,
    role: Role,
    password: str,
    by: Principal,
    now: datetime,
) -> User:
    """Create a user; ConflictError (field `name`) when the name is taken."""
    check_name(name)
    check_password(password)
    password_hash = await asyncio.to_thread(passwords.hash, password)
    user = await store.create_user(NewUser(name, role, password_hash), now)
    await record(store, by, AuditAction.USER_CREATED, name, {"role": role.value}, now)
    logger.info(
        "user %s added with role %s by %s",
        name,
        role.value,
        by.actor,
        extra={"event": "auth.user_added"},
    )
    return user


async def change_password(
    store: AuthStore,
    passwords: Passwords,
    name: str,
    password: str,
    by: Principal,
    now: datetime,
) -> User:
    """Set a user's password; the user's access tokens issued before stop working.

    NotFoundError (suggesting near names) for an unknown user.
    """
    check_password(password)
    await _existing(store, name)
    password_hash = await asyncio.to_thread(passwords.hash, password)
    user = await store.update_user(name, now, password_hash=password_hash)
    await record(store, by, AuditAction.USER_PASSWORD_CHANGED, name, {}, now)
    logger.info(
        "password of user %s changed by %s",
        name,
        by.actor,
        extra={"event": "auth.password_changed"},
    )
    return user


async def change_role(
    store: AuthStore, name: str, role: Role, by: Principal, now: datetime
) -> User:
    """Give a user another role; ConflictError (field `role`) for the last admin."""
    before = await _existing(store, name)
    user = await store.update_user(name, now, role=role)
    detail = {"from": before.role.value, "to": role.value}
    await record(store, by, AuditAction.USER_ROLE_CHANGED, name, detail, now)
    logger.info(
        "user %s is now %s (was %s), changed by %s",
        name,
        role.value,
        before.role.value,
        by.actor,
        extra={"event": "auth.role_changed"},
    )
    return user


async def remove_user(
    store: AuthStore, name: str, by: Principal, now: datetime
) -> None:
    """Delete a user; ConflictError (field `role`) for the last admin."""
    await _existing(store, name)
    await store.delete_user(name)
    await record(store, by, AuditAction.USER_DELETED, name, {}, now)
    logger.info(
        "user %s removed by %s",
        name,
        by.actor,
        extra={"event": "auth.user_removed"},
    )


async def _existing(store: AuthStore, name: str) -> User:
    """Return the user of that name, or raise NotFoundError naming near names."""
    try:
        return await store.get_user(name)
    except NotFoundError:
        names = [user.name for user in await store.list_users()]
        near = difflib.get_close_matches(name, names, n=3)
        hint = f": did you mean {' or '.join(near)}?" if near else ""
        raise NotFoundError(f"no user is named {name!r}{hint}") from None
