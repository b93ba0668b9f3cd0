"""Check time zone names against the IANA database that ships with socmeth."""

from __future__ import annotations

import difflib
from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from socmeth.errors import ScheduleError

# Names that load but do not name a place: `localtime` is whatever the host is
# set to, so two nodes could read the same job differently; `Factory` is a
# placeholder zone with no offset of its own.
_REFUSED = frozenset({"localtime", "Factory"})


@lru_cache(maxsize=1024)
def validate_timezone(name: str) -> ZoneInfo:
    """Return the zone for an IANA name, or refuse it naming the field.

    Raises ScheduleError(field="timezone") for an empty or unknown name, with the
    nearest known names as a suggestion.
    """
    if not name.strip():
        raise ScheduleError(
            "the time zone is empty; give an IANA name such as UTC or Europe/Berlin",
            field="timezone",
        )
    if name not in _known_names():
        raise ScheduleError(_unknown_message(name), field="timezone")

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise ScheduleError(
            f"{name!r} is listed but could not be loaded ({error}); "
            "reinstall the tzdata package",
            field="timezone",
        ) from error


def _unknown_message(name: str) -> str:
    message = f"{name!r} is not an IANA time zone name such as UTC or Europe/Berlin"
    suggestions = _suggest(name)
    if not suggestions:
        return message

    return f"{message}; did you mean {' or '.join(suggestions)}?"


def _suggest(name: str) -> list[str]:
    by_case = {known.lower(): known for known in _known_names()}
    exact = by_case.get(name.strip().lower())
    if exact is not None:
        return [exact]

    close = difflib.get_close_matches(name.lower(), list(by_case), n=2, cutoff=0.7)
    return [by_case[match] for match in close]


@cache
def _known_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _REFUSED


@cache
def zone_names() -> tuple[str, ...]:
    """Return every accepted time zone name, sorted: what a form offers."""
    return tuple(sorted(_known_names()))
