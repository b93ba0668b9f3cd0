"""Translate between the store's rows and socmeth's values.

A JobDefinition is kept as JSON text: durations as seconds, enums as their values,
tuples as lists, mappings as objects. Decoding follows the dataclass's type hints, so
a field added to the model is carried without a change here. The document carries a
version: a reader meeting a newer one refuses, since it cannot know what the new
fields mean. Page cursors are opaque to clients: urlsafe base64 of the listing's
kind and the last key of the page; for jobs, the key is a JSON array of the sort,
the last job's sorted value and its id. Audit records keep their detail as a JSON
object.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from sqlalchemy.engine import Row

from socmeth.auth.models import ApiToken, AuditRecord, Role, User
from socmeth.errors import StoreError, ValidationError
from socmeth.models import (
    Attempt,
    AttemptState,
    Job,
    JobDefinition,
    Run,
    RunState,
    Trigger,
)
from socmeth.store.base import JobSort, NewRun

AnyRow = Row[*tuple[Any, ...]]
DEFINITION_VERSION = 1

T = TypeVar("T")


# Cursors


def encode_cursor(kind: str, key: str) -> str:
    """Return an opaque cursor holding the last key of a page of a `kind` listing."""
    raw = f"{kind}:{key}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_ROW_ID = 2**63 - 1  # ids are 64-bit in both stores


def decode_cursor(cursor: str, kind: str) -> str:
    """Return the key inside a cursor this store made for listings of `kind`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    prefix, _, key = raw.partition(":")
    if (
        prefix != kind
        or not key
        or not key.isprintable()
        or (kind == "run" and not _is_row_id(key))
    ):
        raise ValidationError.single(
            "cursor", f"{cursor!r} is not a cursor of a {kind} listing"
        )
    return key


def decode_id_cursor(cursor: str, kind: str) -> int:
    """Return the id inside a cursor of a listing by id, such as `audit`."""
    key = decode_cursor(cursor, kind)
    if not _is_row_id(key):
        raise ValidationError.single(
            "cursor", f"{cursor!r} is not a cursor of a {kind} listing"
        )
    return int(key)


def _is_row_id(key: str) -> bool:
    return key.isascii() and key.isdigit() and len(key) <= 19 and int(key) <= MAX_ROW_ID


@dataclass(frozen=True)
class JobPosition:
    """Where a page of jobs ended: the last job's sorted value and its id.

    The value is a name for the name sorts and an instant for the others; None
    only for a job with no next fire, which the next-fire sort puts last.
    """

    value: str | datetime | None
    job_id: int


def sorted_value(job: Job, sort: JobSort) -> str | datetime | None:
    """Return the value of a job that `sort` orders by."""
    if sort in (JobSort.NAME, JobSort.NAME_DESC):
        return job.name
    if sort is JobSort.NEXT_FIRE:
        return job.next_fire_at
    return job.updated_at if sort is JobSort.UPDATED else job.created_at


_SORT_WORDS = frozenset(sort.value for sort in JobSort)


def encode_job_cursor(sort: JobSort, job: Job) -> str:
    """Return the cursor of the page of jobs that follows `job` in `sort` order."""
    value = sorted_value(job, sort)
    shown = value.isoformat() if isinstance(value, datetime) else value
    return encode_cursor(
        "job", json.dumps([sort.value, shown, job.id], separators=(",", ":"))
    )


def decode_job_cursor(cursor: str, sort: JobSort) -> JobPosition:
    """Return where the page before a job cursor ended; the cursor must have been
    made for a listing in `sort` order."""
    refused = ValidationError.single(
        "cursor", f"{cursor!r} is not a cursor of a job listing"
    )
    try:
        decoded = json.loads(decode_cursor(cursor, "job"))
    except ValueError as exc:
        raise refused from exc
    if not isinstance(decoded, list) or len(decoded) != 3:
        raise refused
    made_for, value, job_id = decoded
    if isinstance(made_for, str) and made_for in _SORT_WORDS - {sort.value}:
        raise ValidationError.single(
            "cursor",
            f"the cursor pages jobs sorted by {made_for}, not by {sort.value}: pass "
            f"sort={made_for} with it, or leave the cursor out to start again",
        )
    if made_for != sort.value or not _is_job_id(job_id):
        raise refused
    if sort in (JobSort.NAME, JobSort.NAME_DESC):
        if not isinstance(value, str) or not value or not value.isprintable():
            raise refused
        return JobPosition(value, job_id)
    if value is None and sort is JobSort.NEXT_FIRE:
        return JobPosition(None, job_id)
    return JobPosition(_cursor_instant(value, refused), job_id)


def _is_job_id(value: object) -> bool:
    return type(value) is int and 1 <= value <= MAX_ROW_ID


def _cursor_instant(value: object, refused: ValidationError) -> datetime:
    if not isinstance(value, str):
        raise refused
    try:
        instant = datetime.fromisoformat(value)
        if instant.utcoffset() is None:
            raise refused
        return instant.astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # beyond year 9999 in UTC
        raise refused from exc


# Rows


def job_values(
    definition: JobDefinition, next_fire_at: datetime | None
) -> dict[str, Any]:
    """Return the `jobs` columns of a definition and its next fire."""
    return {
        "name": definition.name,
        "type": definition.type.value,
        "schedule": definition.schedule,
        "timezone": definition.timezone,
        "enabled": definition.enabled,
        "definition": encode_definition(definition),
        # A paused job has no next fire, so the due index only holds runnable jobs.
        "next_fire_at": next_fire_at if definition.enabled else None,
    }


def job_from_row(row: AnyRow) -> Job:
    """Return the job a `jobs` row holds."""
    return Job(
        id=row.id,
        definition=decode_definition(row.definition),
        created_at=row.created_at,
        updated_at=row.updated_at,
        next_fire_at=row.next_fire_at,
    )


def run_values(new_run: NewRun, now: datetime) -> dict[str, Any]:
    """Return the `runs` columns of a run to create; one created ended is finished."""
    if new_run.state is RunState.RUNNING:
        raise ValueError("a run is created waiting, queued or ended, never running")
    ended = not new_run.state.is_active
    return {
        "job_id": new_run.job_id,
        "trigger": new_run.trigger.value,
        "scheduled_at": new_run.scheduled_at,
        "created_at": now,
        "state": new_run.state.value,
        "reason": new_run.reason,
        "late": new_run.late,
        "next_attempt_at": None,
        "finished_at": now if ended else None,
        "cancel_requested_at": None,
        "needed_by_run_id": new_run.needed_by_run_id,
        "give_up_at": new_run.give_up_at if new_run.state is RunState.WAITING else None,
        "awaited": False,
    }


def run_from_row(row: AnyRow, run_attempts: Sequence[Attempt]) -> Run:
    """Return the run a `runs` row (with its job's name) and its attempts hold."""
    return Run(
        id=row.id,
        job_id=row.job_id,
        job_name=row.job_name,
        trigger=Trigger(row.trigger),
        scheduled_at=row.scheduled_at,
        created_at=row.created_at,
        state=RunState(row.state),
        reason=row.reason,
        late=bool(row.late),
        next_attempt_at=row.next_attempt_at,
        finished_at=row.finished_at,
        attempts=tuple(run_attempts),
        needed_by_run_id=row.needed_by_run_id,
    )


def attempt_from_row(row: AnyRow) -> Attempt:
    """Return the attempt an `attempts` row (with `output_truncated`) holds."""
    return Attempt(
        id=row.id,
        run_id=row.run_id,
        number=row.number,
        state=AttemptState(row.state),
        node_id=row.node_id,
        queued_at=row.queued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        exit_code=row.exit_code,
        http_status=row.http_status,
        error=row.error,
        output_truncated=bool(row.output_truncated),
    )


def first_attempt_values(run_id: int, now: datetime) -> dict[str, Any]:
    """Return the `attempts` columns of a run's first attempt, queued."""
    return {
        "run_id": run_id,
        "number": 1,
        "state": AttemptState.QUEUED.value,
        "queued_at": now,
    }


def user_from_row(row: AnyRow) -> User:
    """Return the user a `users` row holds."""
    return User(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        password_hash=row.password_hash,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def api_token_from_row(row: AnyRow) -> ApiToken:
    """Return the API token an `api_tokens` row holds."""
    return ApiToken(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        token_hash=row.token_hash,
        created_by=row.created_by,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def audit_from_row(row: AnyRow) -> AuditRecord:
    """Return the audit record an `audit_records` row holds."""
    return AuditRecord(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        detail=decode_audit_detail(row.detail),
    )


def encode_audit_detail(detail: Mapping[str, Any]) -> str:
    """Return the JSON text of an audit record's detail."""
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"))


def decode_audit_detail(text: str) -> dict[str, Any]:
    """Return the detail `encode_audit_detail` wrote; {} for anything but an object."""
    try:
        detail = json.loads(text)
    except ValueError:
        return {}
    return detail if isinstance(detail, dict) else {}


# Job definitions


def encode_definition(definition: JobDefinition) -> str:
    """Return the JSON text of a job definition."""
    document = {"version": DEFINITION_VERSION, **_to_json(definition)}
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


# A due job's definition is decoded by the scheduler's turn and again by the claim of
# its attempt, at about 0.2 ms each; the same text gives the same frozen definition.
# Bounded, so memory does not grow with the number of jobs.
DECODED_DEFINITIONS_CACHED = 2048


@functools.lru_cache(maxsize=DECODED_DEFINITIONS_CACHED)
def decode_definition(text: str) -> JobDefinition:
    """Return the job definition that `encode_definition` wrote as `text`.

    Cached by text, so callers share the returned value: its `env` and `headers`
    mappings must be treated as read-only, as the frozen dataclass intends.
    """
    document = json.loads(text)
    version = document.pop("version", None)
    if version != DEFINITION_VERSION:
        raise StoreError(
            f"stored job definition has version {version!r}, this socmeth reads "
            f"version {DEFINITION_VERSION}: upgrade socmeth to read this store"
        )
    return _dataclass_from_json(JobDefinition, document)


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _to_json(item) for key, item in value.items()}
    raise TypeError(f"cannot encode {type(value).__name__} in a job definition")


@functools.cache
def _decoder_of(hint: Any) -> Callable[[Any], Any]:
    """Return the function that decodes a JSON value of this type, built once.

    Working the hint out for every field of every definition (`get_origin`,
    `get_args`, `get_type_hints`) cost about 0.1 ms per definition; a scheduler turn
    over 10,000 due jobs spent a second on it.
    """
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        (inner,) = (arg for arg in get_args(hint) if arg is not type(None))
        return _optional(_decoder_of(inner))
    if origin is tuple:
        item = _decoder_of(get_args(hint)[0])
        return _optional(lambda value: tuple(item(v) for v in value))
    if origin is Mapping or origin is dict:
        item = _decoder_of(get_args(hint)[1])
        return _optional(lambda value: {k: item(v) for k, v in value.items()})
    if hint is timedelta:
        return _optional(lambda value: timedelta(seconds=value))
    if hint is float:
        return _optional(float)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _optional(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _optional(functools.partial(_dataclass_from_json, hint))
    return lambda value: value


def _optional(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else decode(value)


@functools.cache
def _field_decoders(cls: type) -> dict[str, Callable[[Any], Any]]:
    """Return each field's decoder of a dataclass, by field name, once per class."""
    hints = get_type_hints(cls)
    return {f.name: _decoder_of(hints[f.name]) for f in dataclasses.fields(cls)}


def _dataclass_from_json(cls: type[T], document: Mapping[str, Any]) -> T:
    decoders = _field_decoders(cls)  # type: ignore[arg-type]
    values = {
        name: decoders[name](item)
        for name, item in document.items()
        if name in decoders
    }
    return cls(**values)
