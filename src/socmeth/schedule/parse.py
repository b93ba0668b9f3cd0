"""Turn a job's schedule text into a Schedule: five cron fields, a macro, or @every."""

from __future__ import annotations

import difflib
from datetime import datetime
from functools import lru_cache

from socmeth.errors import ScheduleError
from socmeth.schedule.base import Schedule
from socmeth.schedule.cron import CronSchedule
from socmeth.schedule.every import parse_every, unix_epoch
from socmeth.schedule.fields import CronFields, parse_fields
from socmeth.schedule.timezones import validate_timezone

# cronie's expansions (entry.c); @hourly keeps its hour field starred, which
# makes it a wildcard job across DST changes, exactly as cronie flags it.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_NAMES = "minute hour day-of-month month day-of-week"
_TZ_PREFIXES = ("CRON_TZ=", "TZ=")
_PARSED_CACHE_SIZE = 8192


def parse_schedule(
    expression: str, timezone: str = "UTC", anchor_at: datetime | None = None
) -> Schedule:
    """Parse a schedule and its time zone, refusing what cronie would not run.

    `anchor_at` is the job's creation instant (aware); an `@every` schedule fires
    at it plus whole multiples of its interval. Without one, `@every` counts
    from the Unix epoch, which keeps previews and validation usable before a job
    exists. Cron schedules ignore it. Raises ScheduleError naming the field
    ("schedule" or "timezone") and the value.
    """
    text = expression.strip()
    if _is_every(text):
        schedule = parse_every(text, timezone, anchor_at or unix_epoch())
    else:
        schedule = _parse_cron(text, timezone)

    validate_timezone(timezone)
    return schedule


@lru_cache(maxsize=_PARSED_CACHE_SIZE)
def _parse_cron(text: str, timezone: str) -> CronSchedule:
    return CronSchedule(text, timezone, _cron_fields(text))


def _cron_fields(text: str) -> CronFields:
    if not text:
        raise ScheduleError(
            f"the expression is empty; give 5 fields ({_FIELD_NAMES}) such as "
            "'0 * * * *', or a macro such as @daily"
        )

    first = text.split()[0]
    if first.upper().startswith(_TZ_PREFIXES):
        raise _time_zone_prefix(first)

    fields_text = _expand_macro(text) if text.startswith("@") else text
    parts = fields_text.split()
    if len(parts) != 5:
        raise _field_count(text, len(parts))

    return parse_fields(parts)


def _is_every(text: str) -> bool:
    return text == "@every" or text.startswith(("@every ", "@every\t"))


def _expand_macro(text: str) -> str:
    name, *rest = text.split()
    if name == "@reboot":
        raise ScheduleError(
            "@reboot is not supported: a cluster has no single boot to run at; "
            "use a cron schedule, or run the job by hand after a deploy"
        )
    if name not in MACROS:
        raise _unknown_macro(name)
    if rest:
        raise ScheduleError(
            f"{name} takes nothing after it, but {' '.join(rest)!r} follows; "
            "remove it (the command belongs in the job, not the schedule)"
        )

    return MACROS[name]


def _unknown_macro(name: str) -> ScheduleError:
    known = [*MACROS, "@every"]
    if name.startswith("@every"):
        hint = f"did you mean @every {name.removeprefix('@every')}?"
    else:
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else ""

    listed = ", ".join(known[:-1]) + " and @every <duration>"
    sentence = f"{name} is not a known macro; the macros are {listed}"
    return ScheduleError(f"{sentence}; {hint}" if hint else sentence)


def _time_zone_prefix(prefix: str) -> ScheduleError:
    zone = prefix.partition("=")[2] or "the zone"
    return ScheduleError(
        f"{prefix}: a time zone prefix is not supported in the schedule; remove it "
        f"and set the job's timezone field to {zone} instead"
    )


def _field_count(text: str, count: int) -> ScheduleError:
    noun = "field" if count == 1 else "fields"
    message = f"{text!r} has {count} {noun}, but 5 are expected ({_FIELD_NAMES})"
    if count > 5:
        message += (
            "; seconds and year fields are not supported (use @every for "
            "intervals under a minute), and the command belongs in the job"
        )
    else:
        message += ", such as '0 * * * *' for every hour"

    return ScheduleError(message)
