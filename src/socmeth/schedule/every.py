"""Read `@every <duration>` and yield fires on a fixed grid from an anchor instant."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from socmeth.errors import ScheduleError
from socmeth.schedule.base import Schedule, as_utc

MIN_INTERVAL = timedelta(seconds=1)
# Longer periods belong to cron expressions (@monthly, @yearly), which follow
# the calendar; the cap also keeps the grid arithmetic far from datetime's limits.
MAX_INTERVAL = timedelta(days=366)

# A Go-style duration restricted to whole h, m and s: "90s", "1h30m".
_DURATION = re.compile(r"(?:[0-9]+[hms])+")
_PART = re.compile(r"([0-9]+)([hms])")
_SUB_SECOND = re.compile(r"[0-9.]+(?:ms|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}
_UNIT_WORDS = {"h": "hour", "m": "minute", "s": "second"}
_HINT = "write whole numbers with the units h, m and s, such as 30s, 5m or 1h30m"


@dataclass(frozen=True)
class IntervalSchedule(Schedule):
    """Fire at `anchor_at` plus every whole multiple (1, 2, ...) of `interval`.

    The grid is fixed by the anchor (the job's creation instant), so a restart or
    a late fire never shifts later fires. The time zone plays no part.
    """

    expression: str
    timezone: str
    interval: timedelta
    anchor_at: datetime

    @property
    def is_interval(self) -> bool:
        """Tell that this is an `@every` schedule."""
        return True

    def next_fire(self, after: datetime) -> datetime | None:
        """Return the first grid instant strictly after `after`, in UTC."""
        elapsed = as_utc(after) - self.anchor_at
        # Floor division rounds towards the past, so an `after` exactly on the
        # grid moves on to the next multiple; fires before the anchor never exist.
        multiple = max(1, elapsed // self.interval + 1)
        try:
            return self.anchor_at + multiple * self.interval
        except OverflowError:
            return None

    def describe(self) -> str:
        """Return the interval and its anchor in plain English."""
        anchor = self.anchor_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"Every {describe_duration(self.expression)}, counted from {anchor}"


def parse_every(expression: str, timezone: str, anchor_at: datetime) -> Schedule:
    """Build the schedule for `@every <duration>`, refusing bad durations."""
    duration = parse_duration(expression.removeprefix("@every").strip())
    return IntervalSchedule(expression, timezone, duration, as_utc(anchor_at))


def parse_duration(text: str) -> timedelta:
    """Read a duration like `1h30m`, at least 1 s and at most 366 days."""
    if not text:
        raise ScheduleError(f"@every needs a duration; {_HINT}")
    if _SUB_SECOND.search(text):
        raise ScheduleError(
            f"@every {text}: units below a second are not supported and the "
            f"shortest interval is 1s; {_HINT}"
        )
    if not _DURATION.fullmatch(text):
        raise ScheduleError(f"@every {text}: {text!r} is not a duration; {_HINT}")

    seconds = sum(_amount(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
    duration = timedelta(seconds=min(seconds, 10**12))
    if duration < MIN_INTERVAL:
        raise ScheduleError(f"@every {text} is shorter than the minimum of 1s")
    if duration > MAX_INTERVAL:
        raise ScheduleError(
            f"@every {text} is longer than the maximum of 366 days (8784h); "
            "use a cron expression such as @monthly or @yearly"
        )

    return duration


def describe_duration(expression: str) -> str:
    """Spell out the duration of an `@every` expression, unit by unit."""
    parts = _PART.findall(expression.removeprefix("@every").strip())
    if len(parts) == 1 and _amount(parts[0][0]) == 1:
        return _UNIT_WORDS[parts[0][1]]

    words = []
    for number, unit in parts:
        value = _amount(number)
        plural = "" if value == 1 else "s"
        words.append(f"{value} {_UNIT_WORDS[unit]}{plural}")

    return " ".join(words)


def _amount(number: str) -> int:
    # Anything past 12 digits is far over the maximum anyway; capping keeps
    # int() away from huge digit strings.
    digits = number.lstrip("0") or "0"
    return int(digits) if len(digits) <= 12 else 10**12


def unix_epoch() -> datetime:
    """Return the default anchor of `@every` schedules, 1970-01-01T00:00:00Z."""
    return datetime(1970, 1, 1, tzinfo=UTC)
