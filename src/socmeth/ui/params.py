"""Read the query parameters of the dashboard's pages, refusing bad ones by name.

Pages read their parameters here rather than through FastAPI's validation so that a
bad value gets an HTML page naming the parameter, not the API's JSON error.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from socmeth.errors import NotFoundError, ValidationError
from socmeth.store.base import fits_id

MAX_TEXT = 200


def choice(
    query: Mapping[str, str], name: str, choices: Collection[str], default: str
) -> str:
    """Return the parameter when it is one of `choices`, `default` when absent."""
    value = query.get(name) or default
    if value not in choices:
        allowed = ", ".join(sorted(c for c in choices if c))
        raise ValidationError.single(name, f"{value!r} is not one of {allowed}")
    return value


def optional_choice(
    query: Mapping[str, str], name: str, choices: Collection[str]
) -> str | None:
    """Return the parameter when it is one of `choices`; None when absent or empty."""
    value = query.get(name) or None
    if value is not None and value not in choices:
        allowed = ", ".join(sorted(choices))
        raise ValidationError.single(name, f"{value!r} is not one of {allowed}")
    return value


def whole_number(
    query: Mapping[str, str], name: str, low: int, high: int, default: int
) -> int:
    """Return the parameter as an integer from `low` to `high`."""
    raw = query.get(name)
    if not raw:
        return default
    shown = raw if len(raw) <= 20 else f"{raw[:20]}..."
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ValidationError.single(
            name, f"{shown!r} is not a whole number from {low} to {high}"
        )
    return int(raw)


def text(query: Mapping[str, str], name: str, max_length: int = MAX_TEXT) -> str | None:
    """Return the parameter as printable text of at most `max_length` characters."""
    value = query.get(name) or None
    if value is None:
        return None
    if len(value) > max_length:
        raise ValidationError.single(
            name, f"is {len(value)} characters long; give at most {max_length}"
        )
    if not value.isprintable():
        raise ValidationError.single(name, "contains a control character; remove it")
    return value


def run_id(raw: str) -> int:
    """Return the run id a path names; NotFoundError when no store can hold it."""
    if not (raw.isascii() and raw.isdigit() and fits_id(raw)) or int(raw) == 0:
        shown = raw if len(raw) <= 30 else f"{raw[:20]}..."
        raise NotFoundError(f"there is no run {shown!r}: run ids are whole numbers")
    return int(raw)
