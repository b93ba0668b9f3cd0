"""Write audit records: who did what to which thing, and when.

`record` is what the services call after a change succeeded. Its detail is for
context (the fields an update changed, a new role), never for secrets: a key that
names one (`password`, `token`, `secret`, ...) is refused, and so is a detail whose
JSON is over `MAX_DETAIL_BYTES`. Both are programming errors, so they raise
ValueError rather than an error for the caller to see.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from socmeth.auth.models import AuditAction, AuditRecord, Principal
from socmeth.store.base import AuthStore, NewAuditRecord

MAX_DETAIL_BYTES = 4096
# Words of a key that may hold a secret; matched within keys, in any case.
SECRET_WORDS = ("password", "secret", "token", "authorization", "cookie", "hash")


async def record(
    store: AuthStore,
    actor: Principal | str,
    action: AuditAction,
    target: str | None,
    detail: Mapping[str, Any] | None,
    now: datetime,
) -> AuditRecord:
    """Append an audit record of `action` by `actor` on `target` at `now`.

    `actor` is a Principal (its `actor` name is used) or that name already.
    """
    checked = check_detail(detail or {})
    name = actor.actor if isinstance(actor, Principal) else actor
    return await store.append_audit(NewAuditRecord(now, name, action, target, checked))


def check_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """Return the detail as a plain dict if it is small, JSON and free of secret
    keys (at any depth); ValueError otherwise."""
    _refuse_secret_keys(detail, "detail")
    try:
        text = json.dumps(dict(detail), separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"an audit detail must be plain JSON: {exc}") from exc
    if len(text.encode()) > MAX_DETAIL_BYTES:
        raise ValueError(
            f"an audit detail has at most {MAX_DETAIL_BYTES} bytes of JSON, this "
            f"one {len(text.encode())}"
        )
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _refuse_secret_keys(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if any(word in str(key).lower() for word in SECRET_WORDS):
                raise ValueError(
                    f"audit detail key {path}.{key} may hold a secret; audit records "
                    "never do: leave it out, or name the field changed instead"
                )
            _refuse_secret_keys(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_secret_keys(item, f"{path}[{index}]")
