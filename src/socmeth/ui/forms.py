"""Read the job form into the API's job fields, and write a job back into the form.

The form's inputs are named by the API's field paths (`schedule`,
`retry_backoff.initial`), so that an error the API's validation names lands beside
the input it is about. Text the API takes as a list or a map is typed the way
people write it: tags and dependencies separated by commas or spaces, one
`NAME=value` per line for the environment, one `Name: value` per line for headers.

An input left empty means the field's default, as a field left out of the API's
JSON does. Inputs of the job types other than the chosen one are dropped, so that
switching the type in the form never leaves a stray field behind.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from socmeth.api.schemas import TYPE_FIELDS, JobOut
from socmeth.errors import FieldError
from socmeth.models import JobDefinition


@dataclass(frozen=True)
class Input:
    """One input of the job form: its name (the API's field path) and its label."""

    name: str
    label: str


# In the order the form shows them, which is the order of the error summary.
INPUTS = (
    Input("name", "Name"),
    Input("type", "Type"),
    Input("description", "Description"),
    Input("enabled", "Enabled"),
    Input("tags", "Tags"),
    Input("schedule", "Schedule"),
    Input("timezone", "Time zone"),
    Input("command", "Command"),
    Input("url", "URL"),
    Input("method", "Method"),
    Input("headers", "Headers"),
    Input("body", "Body"),
    Input("expect_status", "Expected status"),
    Input("secret", "Secret"),
    Input("timeout", "Timeout"),
    Input("concurrency", "Concurrency"),
    Input("env", "Environment"),
    Input("retries", "Retries"),
    Input("retry_backoff.initial", "First retry delay"),
    Input("retry_backoff.factor", "Delay factor"),
    Input("retry_backoff.max", "Longest delay"),
    Input("retry_backoff.jitter", "Jitter"),
    Input("misfire", "Misfire"),
    Input("misfire_grace", "Misfire grace"),
    Input("depends_on", "Depends on"),
    Input("dependency_timeout", "Dependency timeout"),
)
LABELS = {i.name: i.label for i in INPUTS}
CHECKBOXES = frozenset({"enabled", "retry_backoff.jitter"})
SECONDS = frozenset({"timeout", "misfire_grace", "dependency_timeout"})
BACKOFF_SECONDS = frozenset({"retry_backoff.initial", "retry_backoff.max"})
WORD_LISTS = frozenset({"tags", "depends_on"})
MAPS = {"env": "=", "headers": ":"}
# Values typed one per line (CRLF from browsers becomes LF, as a shell expects).
MULTILINE = frozenset({"command", "body", "description", "env", "headers"})
_WORDS = re.compile(r"[\s,]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass
class JobForm:
    """What the job form shows: the inputs' text, and the errors beside each input.

    `general` holds errors that no single input is the cause of. `version` is the
    stored job's `updated_at` that an edit form was filled from, so that saving
    over someone else's change is refused.
    """

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    version: str = ""

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def checked(self, name: str) -> bool:
        return self.values.get(name, "") == "on"

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.general)

    def summary(self) -> list[tuple[str | None, str]]:
        """List every error as (input name or None, text), in the form's order."""
        listed: list[tuple[str | None, str]] = [(None, text) for text in self.general]
        for spec in INPUTS:
            for message in self.errors.get(spec.name, ()):
                listed.append((spec.name, f"{spec.label}: {message}"))
        return listed

    def add(self, errors: Iterable[FieldError], fields: Mapping[str, Any]) -> None:
        """Place API field errors beside their inputs."""
        for error in errors:
            name, message = place(error, fields)
            shown = self.general if name is None else self.errors.setdefault(name, [])
            if name == "name" and message == "is required":
                continue  # the form said so already, in its own words
            if message not in shown:
                shown.append(message)


def place(error: FieldError, fields: Mapping[str, Any]) -> tuple[str | None, str]:
    """Return the input an API field error belongs beside, and its text there.

    A key of a map is named in the text (`FOO: ...`) unless the message names it
    already; an item of a list is named by its value in the API's messages.
    """
    if error.field in LABELS:
        return error.field, error.message
    head = re.split(r"[.\[]", error.field, maxsplit=1)[0]
    if head not in LABELS:
        where = f"{error.field}: " if error.field else ""
        return None, f"{where}{error.message}"
    if head in MAPS and error.field.startswith(f"{head}."):
        key = error.field[len(head) + 1 :]
        if key in (fields.get(head) or {}) and not error.message.startswith(repr(key)):
            return head, f"{key}: {error.message}"
    return head, error.message


def read_form(
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, str], dict[str, Any], list[FieldError]]:
    """Read submitted inputs into the API's job fields.

    Returns the inputs' text (to show again), the fields as the API's JSON would
    carry them, and the errors of text that is not what its input takes (a timeout
    that is not a number). Fields with such errors are left out of the JSON.
    """
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in LABELS and name not in values:
            values[name] = line_feeds(value) if name in MULTILINE else value
    fields: dict[str, Any] = {}
    errors: list[FieldError] = []
    for spec in INPUTS:
        name = spec.name
        if name.startswith("retry_backoff."):
            continue
        text = values.get(name, "")
        try:
            fields[name] = _field(name, text)
        except ValueError as exc:
            errors.append(FieldError(name, str(exc)))
    if fields.get("name") is None:
        # Left out, the model says "is required"; on an edit it would keep the
        # stored name instead, which is not what an emptied input asks for.
        del fields["name"]
        errors.append(FieldError("name", "is required: give the job a name"))
    backoff, backoff_errors = _backoff(values)
    fields["retry_backoff"] = backoff
    errors += backoff_errors
    _drop_other_types(fields)
    return values, fields, errors


def line_feeds(text: str) -> str:
    """Turn the CRLF (or CR) line breaks a browser sends into LF, as a shell wants."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def keep_stored_text(fields: dict[str, Any], stored: JobDefinition) -> None:
    """Keep the stored text of a field the edit form sent back unchanged but for
    its line breaks (a browser sends CRLF), so that a save changes nothing it was
    not asked to."""
    for name in ("command", "body", "description"):
        kept = getattr(stored, name)
        if isinstance(kept, str) and fields.get(name) == line_feeds(kept):
            fields[name] = kept


def _field(name: str, text: str) -> Any:
    if name in CHECKBOXES:
        return text == "on"
    if name == "description":
        return text
    stripped = text.strip()
    if name == "body":
        return text if text else None  # blank lines are a body too
    if name == "command":
        return text if stripped else None
    if not stripped:
        return None
    if name in SECONDS:
        return _seconds(stripped)
    if name == "retries":
        return _whole(stripped)
    if name in WORD_LISTS:
        return [word for word in _WORDS.split(stripped) if word]
    if name == "expect_status":
        return [_whole(word) for word in _WORDS.split(stripped) if word]
    if name in MAPS:
        return _lines_map(text, MAPS[name])
    if name == "secret":
        return text
    return stripped


def _backoff(
    values: Mapping[str, str],
) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """Read the four backoff inputs into `retry_backoff`; None when all are empty."""
    given: dict[str, Any] = {}
    errors = []
    for name in ("retry_backoff.initial", "retry_backoff.factor", "retry_backoff.max"):
        text = values.get(name, "").strip()
        if not text:
            continue
        try:
            given[name.split(".")[1]] = _seconds(text, unit=name in BACKOFF_SECONDS)
        except ValueError as exc:
            errors.append(FieldError(name, str(exc)))
    jitter = values.get("retry_backoff.jitter", "") == "on"
    if jitter:
        given["jitter"] = True
    return (given or None), errors


def _seconds(text: str, *, unit: bool = True) -> float:
    """Read a decimal number written with ASCII digits, as JSON would carry it."""
    what = "a number of seconds" if unit else "a number"
    value = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(value):
        raise ValueError(f"{_shown(text)} is not {what}")
    return value


def _whole(text: str) -> int:
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 18:
        raise ValueError(f"{_shown(text)} is not a whole number")
    return int(text)


def _lines_map(text: str, separator: str) -> dict[str, str]:
    """Read one `key<separator>value` per line; blank lines are skipped.

    An environment value that starts with a double quote is a JSON string, which
    is how a value with a line break is written on one line: `NAME="a\\nb"`.
    """
    result: dict[str, str] = {}
    example = "NAME=value" if separator == "=" else "Name: value"
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        key, found, value = line.partition(separator)
        key = key.strip()
        if not found:
            raise ValueError(f"line {number} has no {separator!r}: write {example}")
        if separator == ":":
            value = value.strip()
        elif value.startswith('"'):
            value = _json_string(value, number)
        if key in result:
            raise ValueError(f"line {number} gives {key!r} again; give it once")
        result[key] = value
    return result


def _json_string(text: str, number: int) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, str):
        raise ValueError(
            f"line {number}: a value that starts with a double quote is a JSON "
            'string, such as "line 1\\nline 2"; end it with a double quote'
        )
    return value


def env_text(value: str) -> str:
    """Write an environment value for the form: as it is, or as a JSON string
    when it holds a line break or starts with a double quote."""
    if "\n" in value or "\r" in value or value.startswith('"'):
        return json.dumps(value, ensure_ascii=False)
    return value


def _drop_other_types(fields: dict[str, Any]) -> None:
    """Leave out the inputs of the job types other than the chosen one."""
    chosen = fields.get("type") or "command"
    for name, types in TYPE_FIELDS.items():
        if chosen in {t.value for t in types}:
            continue
        fields.pop(name, None)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else f"{text[:40]}...")


def job_values(job: JobOut) -> dict[str, str]:
    """Write a stored job (secrets masked, as the API shows it) into the form."""
    backoff = job.retry_backoff
    values = {
        "name": job.name,
        "type": job.type.value,
        "description": job.description,
        "enabled": "on" if job.enabled else "",
        "schedule": job.schedule or "",
        "timezone": job.timezone,
        "command": job.command or "",
        "url": job.url or "",
        "method": job.method or "",
        "headers": "\n".join(f"{k}: {v}" for k, v in job.headers.items()),
        "body": job.body or "",
        "expect_status": ", ".join(str(s) for s in job.expect_status or ()),
        "secret": job.secret or "",
        "env": "\n".join(f"{k}={env_text(v)}" for k, v in job.env.items()),
        "timeout": _number(job.timeout),
        "retries": str(job.retries),
        "retry_backoff.initial": _number(backoff.initial),
        "retry_backoff.factor": _number(backoff.factor),
        "retry_backoff.max": _number(backoff.max),
        "retry_backoff.jitter": "on" if backoff.jitter else "",
        "concurrency": job.concurrency.value,
        "misfire": job.misfire.value,
        "misfire_grace": _number(job.misfire_grace),
        "depends_on": ", ".join(job.depends_on),
        "dependency_timeout": _number(job.dependency_timeout),
        "tags": ", ".join(job.tags),
    }
    return values


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(value)
