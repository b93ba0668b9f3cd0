"""Put a parsed cron expression into plain English, for the UI and the API.

The reading follows what the expression does under cronie's rules rather than
how it is spelled: `*/90` in minutes reads as minute 0, and a day-of-month and
day-of-week that combine with OR read as "... and every ...".
"""

from __future__ import annotations

from collections.abc import Callable

from socmeth.schedule.fields import (
    DAY_WORDS,
    MONTH_WORDS,
    CronField,
    CronFields,
    Term,
)

_UTC_NAMES = frozenset({"UTC", "Etc/UTC"})
# Up to this many times of day are listed one by one ("At 08:00, 12:00 and 18:00").
_MAX_LISTED_TIMES = 8
# A stepped term with more values reads as "every 2nd hour from 0 through 22".
_MAX_LISTED_STEP_VALUES = 6
# Only these fields have enough values for a step to leave more than six.
_STEP_NOUNS = {"minute": "minute", "hour": "hour", "day-of-month": "day"}
_WEEKDAYS = frozenset(range(1, 6))
_WEEKEND = frozenset({0, 6})

_Namer = Callable[[int], str]


def describe_cron(fields: CronFields, timezone: str) -> str:
    """Return the expression as one English sentence, naming a zone other than UTC."""
    time_phrase, at_clock_times = _time_phrase(fields)
    days = _days(fields)
    if not days and at_clock_times:
        days = "every day"

    months = _months(fields)
    day_phrase = " ".join(part for part in (days, months) if part)
    separator = ", " if time_phrase.startswith("Every") else " "
    sentence = separator.join(part for part in (time_phrase, day_phrase) if part)
    if timezone not in _UTC_NAMES:
        sentence += f" ({timezone} time)"

    return sentence


def _time_phrase(fields: CronFields) -> tuple[str, bool]:
    """Return the time-of-day phrase and whether it names clock times."""
    minute, hour = fields.minute, fields.hour
    listed = _listed_times(minute, hour)
    if listed:
        return f"At {listed}", True

    if hour.is_every:
        return _within_every_hour(minute), False

    every_hours = _hour_cadence(hour)
    if every_hours and len(minute.values) == 1:
        return f"{every_hours}{_at_minute(min(minute.values))}", False

    span = _hour_span(hour)
    if span is not None:
        return _within_hours(minute, *span)

    hours = _words(hour, "hour", "hours", str)
    return f"{_minute_phrase(minute)} during {hours}", False


def _listed_times(minute: CronField, hour: CronField) -> str | None:
    singles = all(term.is_single for term in minute.terms + hour.terms)
    count = len(minute.values) * len(hour.values)
    if not singles or count > _MAX_LISTED_TIMES:
        return None

    times = [(h, m) for h in sorted(hour.values) for m in sorted(minute.values)]
    if times == [(0, 0)]:
        return "midnight (00:00)"
    if times == [(12, 0)]:
        return "noon (12:00)"

    return _join([_clock(h, m) for h, m in times])


def _within_every_hour(minute: CronField) -> str:
    cadence = _minute_cadence(minute)
    if cadence is not None:
        return cadence
    if len(minute.values) == 1:
        return f"Every hour{_at_minute(min(minute.values))}"

    return f"At {_words(minute, 'minute', 'minutes', str)} past every hour"


def _within_hours(minute: CronField, first: int, last: int) -> tuple[str, bool]:
    low, high = min(minute.values), max(minute.values)
    if low == high and first == last:
        return f"At {_clock(first, low)}", True

    window = f"from {_clock(first, low)} through {_clock(last, high)}"
    cadence = _minute_cadence(minute)
    if cadence is not None:
        return f"{cadence} {window}", False
    if low == high:
        return f"Every hour {window}", False

    minutes = _words(minute, "minute", "minutes", str)
    if first == last:
        return f"At {minutes} past hour {first}", False

    hours = f"from {_clock(first, 0)} through {_clock(last, 59)}"
    return f"At {minutes} past every hour {hours}", False


def _hour_span(hour: CronField) -> tuple[int, int] | None:
    """Return (first, last) when the hours form one unstepped range or value."""
    if len(hour.terms) != 1 or hour.terms[0].step != 1:
        return None

    return hour.terms[0].start, hour.terms[0].stop


def _hour_cadence(hour: CronField) -> str | None:
    """Return "Every n hours" when `*/n` divides the day evenly."""
    term = hour.terms[0]
    if len(hour.terms) != 1 or not term.star or 24 % term.step != 0:
        return None

    return f"Every {term.step} hours"


def _minute_cadence(minute: CronField) -> str | None:
    """Return "Every minute" or "Every n minutes" when minutes repeat evenly."""
    if minute.is_every:
        return "Every minute"

    term = minute.terms[0]
    if len(minute.terms) != 1 or not term.star or 60 % term.step != 0:
        return None

    return f"Every {term.step} minutes"


def _minute_phrase(minute: CronField) -> str:
    cadence = _minute_cadence(minute)
    if cadence is not None:
        return cadence

    return f"At {_words(minute, 'minute', 'minutes', str)}"


def _at_minute(minute: int) -> str:
    return ", on the hour" if minute == 0 else f" at minute {minute}"


def _months(fields: CronFields) -> str:
    if fields.month.is_every or _is_calendar_date(fields):
        return ""

    return f"in {_words(fields.month, '', '', _month_name)}"


def _days(fields: CronFields) -> str:
    dom, dow = fields.day_of_month, fields.day_of_week
    if _is_calendar_date(fields):
        return f"on {_month_name(min(fields.month.values))} {min(dom.values)}"

    dom_words = None if dom.is_every else f"on {_words(dom, 'day', 'days', str)}"
    dow_words = None if dow.is_every else _weekdays(dow)
    if not fields.days_combine_with_and:
        # cronie ORs the two when neither begins with `*`; if either selects
        # every day, the other cannot narrow anything down.
        if dom_words and dow_words:
            return f"{dom_words} of the month and {dow_words}"
        return ""

    if dom_words and dow_words:
        days = _words(dow, "", "", _day_name, conjunction="or")
        return f"{dom_words} of the month, if that day is a {days}"
    if dom_words:
        return f"{dom_words} of the month"

    return dow_words or ""


def _is_calendar_date(fields: CronFields) -> bool:
    """Tell whether the days are one date of one month, like January 1."""
    dom, month = fields.day_of_month, fields.month
    single = len(dom.values) == 1 and len(month.values) == 1
    return single and fields.days_combine_with_and and fields.day_of_week.is_every


def _weekdays(dow: CronField) -> str:
    if dow.values == _WEEKDAYS:
        return "on weekdays (Monday through Friday)"
    if dow.values == _WEEKEND:
        return "on weekends (Saturday and Sunday)"

    return f"every {_words(dow, '', '', _day_name)}"


def _words(
    field: CronField,
    singular: str,
    plural: str,
    name: _Namer,
    conjunction: str = "and",
) -> str:
    """Render a field's terms, with a leading noun unless a step phrase leads."""
    terms = [_term_words(field, term, name) for term in field.terms]
    listed = _join(terms, conjunction)
    if terms[0].startswith("every ") or not singular:
        return listed

    noun = singular if len(field.values) == 1 else plural
    return f"{noun} {listed}"


def _term_words(field: CronField, term: Term, name: _Namer) -> str:
    values = list(term.values())
    # Day-of-week 0 and 7 both name Sunday, so `*/7` lists it once.
    names = list(dict.fromkeys(name(value) for value in values))
    if len(names) == 1:
        return names[0]
    if term.step == 1:
        return f"{name(term.start)} through {name(term.stop)}"
    if len(values) <= _MAX_LISTED_STEP_VALUES:
        return _join(names)

    noun = _STEP_NOUNS.get(field.kind.name, "value")
    span = f"{name(values[0])} through {name(values[-1])}"
    return f"every {_ordinal(term.step)} {noun} from {span}"


def _month_name(value: int) -> str:
    return MONTH_WORDS[value - 1]


def _day_name(value: int) -> str:
    return DAY_WORDS[value % 7]


def _clock(hour: int, minute: int) -> str:
    return f"{hour:02d}:{minute:02d}"


def _ordinal(number: int) -> str:
    if 10 <= number % 100 <= 20:
        return f"{number}th"

    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _join(words: list[str], conjunction: str = "and") -> str:
    if len(words) <= 1:
        return "".join(words)

    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"
