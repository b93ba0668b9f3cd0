"""Parse and check the five fields of a cron expression, the way cronie reads them.

Each field is a comma-separated list of terms. A term is `*`, a value, or a range
`a-b`, optionally followed by a step (`*/n`, `a-b/n`). Values are numbers, or
three-letter names in the month and day-of-week fields, in any case. Everything
cronie would reject, and a few things it silently misreads, is refused here with a
message that names the field and the value, so that the evaluator only ever sees
plain numeric text it is known to read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from socmeth.errors import ScheduleError

MONTH_WORDS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
DAY_WORDS = (
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
)
# cronie knows the first three letters of each name, in any case.
_MONTH_NAMES = tuple(word[:3].lower() for word in MONTH_WORDS)
_DAY_NAMES = tuple(word[:3].lower() for word in DAY_WORDS)

# February counts 29 days: `0 0 29 2 *` fires in leap years, which is enough.
_LONGEST_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# Steps and values longer than this are out of any field's range; capping the
# length keeps int() away from pathological digit strings.
_MAX_DIGITS = 9


@dataclass(frozen=True)
class FieldKind:
    """Describe one of the five positions: its name, bounds and symbolic names."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_base: int = 0

    def value_of_name(self, text: str) -> int | None:
        """Return the number a symbolic name stands for, or None."""
        lowered = text.lower()
        if lowered not in self.names:
            return None

        return self.names.index(lowered) + self.names_base

    def describe_bounds(self) -> str:
        """Return the allowed values in words, for error messages."""
        bounds = f"{self.low}-{self.high}"
        if not self.names:
            return bounds

        return f"{bounds} or {self.names[0]}-{self.names[-1]}"


MINUTE = FieldKind("minute", 0, 59)
HOUR = FieldKind("hour", 0, 23)
DAY_OF_MONTH = FieldKind("day-of-month", 1, 31)
MONTH = FieldKind("month", 1, 12, _MONTH_NAMES, names_base=1)
# cronie accepts 0-7 and treats 0 and 7 alike as Sunday.
DAY_OF_WEEK = FieldKind("day-of-week", 0, 7, _DAY_NAMES, names_base=0)
KINDS = (MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK)


@dataclass(frozen=True)
class Term:
    """Hold one list item: the values from `start` to `stop` taken every `step`."""

    start: int
    stop: int
    step: int
    star: bool = False

    @property
    def is_single(self) -> bool:
        """Tell whether the term selects exactly one value (`5`, or `5-5`)."""
        return self.start == self.stop and not self.star

    def values(self) -> range:
        """Return the values the term selects."""
        return range(self.start, self.stop + 1, self.step)

    def canonical(self, kind: FieldKind) -> str:
        """Render the term in plain numeric cron syntax."""
        # A step wider than the span selects only `start`; clamping it keeps the
        # text short without changing what it selects (`*/90` is minute 0).
        step = min(self.step, self.stop - self.start + 1)
        head = "*" if self.star else f"{self.start}-{self.stop}"
        if self.is_single:
            return str(self.start)
        if step == 1:
            return head

        return f"{head}/{step}"


@dataclass(frozen=True)
class CronField:
    """Hold one parsed field: the text as written, its terms and the values."""

    kind: FieldKind
    text: str
    terms: tuple[Term, ...]
    values: frozenset[int]

    @property
    def starred(self) -> bool:
        """Tell whether the field begins with `*`, which cronie treats specially."""
        return self.text.startswith("*")

    @property
    def is_every(self) -> bool:
        """Tell whether the field selects every value of its range."""
        full = range(self.kind.low, self.kind.high + 1)
        if self.kind is DAY_OF_WEEK:
            full = range(0, 7)

        return self.values.issuperset(full)

    def canonical(self) -> str:
        """Render the field in plain numeric cron syntax, keeping a leading `*`."""
        return ",".join(term.canonical(self.kind) for term in self.terms)


@dataclass(frozen=True)
class CronFields:
    """Hold the five parsed fields of a cron expression."""

    minute: CronField
    hour: CronField
    day_of_month: CronField
    month: CronField
    day_of_week: CronField

    @property
    def is_fixed_time(self) -> bool:
        """Tell whether cronie treats the job as fixed-time across DST changes.

        cronie flags a job as a wildcard job when its minute or hour field begins
        with `*` (MIN_STAR, HR_STAR); every other job is fixed-time.
        """
        return not (self.minute.starred or self.hour.starred)

    @property
    def days_combine_with_and(self) -> bool:
        """Tell whether day-of-month and day-of-week must both match.

        cronie ANDs them when either field begins with `*` (DOM_STAR, DOW_STAR)
        and ORs them otherwise, so `*/2` in one of them means AND.
        """
        return self.day_of_month.starred or self.day_of_week.starred

    @cached_property
    def canonical(self) -> str:
        """Render the five fields as plain numeric cron text (computed once)."""
        fields = (
            self.minute,
            self.hour,
            self.day_of_month,
            self.month,
            self.day_of_week,
        )
        return " ".join(field.canonical() for field in fields)


def parse_fields(parts: list[str]) -> CronFields:
    """Parse five field texts, refusing anything cronie would not run."""
    minute, hour, day_of_month, month, day_of_week = (
        parse_field(kind, text) for kind, text in zip(KINDS, parts, strict=True)
    )
    fields = CronFields(minute, hour, day_of_month, month, day_of_week)
    _check_can_fire(fields)
    return fields


def parse_field(kind: FieldKind, text: str) -> CronField:
    """Parse one field's comma-separated list of terms."""
    terms = tuple(_parse_term(kind, item, text) for item in text.split(","))
    values = frozenset(value for term in terms for value in term.values())
    if kind is DAY_OF_WEEK and 7 in values:
        values = values - {7} | {0}

    return CronField(kind, text, terms, values)


def _parse_term(kind: FieldKind, item: str, text: str) -> Term:
    if not item:
        raise _error(kind, f"{text} has an empty item in its list; remove the comma")

    base, slash, step_text = item.partition("/")
    step = _parse_step(kind, item, step_text) if slash else 1
    if base == "*":
        return Term(kind.low, kind.high, step, star=True)

    start_text, dash, stop_text = base.partition("-")
    start = _parse_value(kind, start_text, item)
    if not dash:
        if slash:
            raise _single_value_step(kind, item, start, step_text)
        return Term(start, start, 1)

    stop = _parse_value(kind, stop_text, item)
    if stop < start:
        raise _backwards_range(kind, item, start, stop)

    return Term(start, stop, step)


def _parse_step(kind: FieldKind, item: str, step_text: str) -> int:
    if not step_text.isascii() or not step_text.isdigit():
        raise _error(
            kind,
            f"the step in {item} is {step_text!r}, not a whole number; "
            "write it like */5 or 0-30/5",
        )
    digits = step_text.lstrip("0")
    if not digits:
        raise _error(kind, f"{item} has a step of 0; a step must be 1 or more")

    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _parse_value(kind: FieldKind, text: str, item: str) -> int:
    named = kind.value_of_name(text)
    if named is not None:
        return named

    if not text.isascii() or not text.isdigit():
        raise _not_a_value(kind, text, item)

    digits = text.lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS or not kind.low <= int(digits) <= kind.high:
        where = "" if text == item else f" (in {item})"
        raise _error(kind, f"{text}{where} is out of range {kind.low}-{kind.high}")

    return int(digits)


def _not_a_value(kind: FieldKind, text: str, item: str) -> ScheduleError:
    allowed = f"allowed: {kind.describe_bounds()}"
    if not text:
        return _error(kind, f"{item} is missing a value around its '-'; {allowed}")

    expected = "a number" if not kind.names else "a number or a name"
    where = "" if text == item else f" in {item}"
    return _error(kind, f"{text!r}{where} is not {expected}; {allowed}")


def _single_value_step(
    kind: FieldKind, item: str, start: int, step_text: str
) -> ScheduleError:
    return _error(
        kind,
        f"{item} puts a step after a single value; write a range with the step, "
        f"such as {start}-{kind.high}/{step_text}, or */{step_text} to start "
        f"from {kind.low}",
    )


def _backwards_range(
    kind: FieldKind, item: str, start: int, stop: int
) -> ScheduleError:
    return _error(
        kind,
        f"range {item} runs backwards; ranges may not wrap past the end of "
        f"{kind.low}-{kind.high}, so write it as {_unwrapped(kind, start, stop)}",
    )


def _unwrapped(kind: FieldKind, start: int, stop: int) -> str:
    # Day-of-week has a shorter way out: 7 is Sunday as well as 0.
    if kind is DAY_OF_WEEK and stop == 0:
        return f"{start}-7"

    high = 6 if kind is DAY_OF_WEEK else kind.high
    head = str(start) if start == high else f"{start}-{high}"
    tail = str(kind.low) if stop == kind.low else f"{kind.low}-{stop}"
    return f"{head},{tail}"


def _check_can_fire(fields: CronFields) -> None:
    # With OR, any day-of-week fires in every month. With AND, every (month,
    # day) pair that exists falls on each weekday somewhere in the 400-year
    # Gregorian cycle (29 February included), so only the day-of-month against
    # the months' lengths can make the schedule empty.
    if not fields.days_combine_with_and:
        return

    months = sorted(fields.month.values)
    longest = max(_LONGEST_MONTH[month] for month in months)
    if min(fields.day_of_month.values) <= longest:
        return

    month_words = " or ".join(MONTH_WORDS[month - 1] for month in months)
    raise _error(
        DAY_OF_MONTH,
        f"{fields.day_of_month.text} never occurs in {month_words} "
        f"(month {fields.month.text}), so the schedule would never fire; "
        f"choose days up to {longest}",
    )


def _error(kind: FieldKind, message: str) -> ScheduleError:
    return ScheduleError(f"{kind.name}: {message}")
