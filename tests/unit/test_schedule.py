"""Parse schedules, refuse what cronie would not run, and compute fires in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from socmeth.errors import ScheduleError
from socmeth.schedule import (
    MACROS,
    CronSchedule,
    IntervalSchedule,
    parse_schedule,
    validate_timezone,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday


def utc(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def fires(expression: str, after: datetime, count: int) -> list[datetime]:
    return parse_schedule(expression).fires(after, count)


# --- cron fields -------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 * * * *", utc(2026, 1, 1, 10, 7), [utc(2026, 1, 1, 10, 15)]),
        ("5,35 * * * *", utc(2026, 1, 1, 10, 7), [utc(2026, 1, 1, 10, 35)]),
        ("10-12 * * * *", utc(2026, 1, 1, 10, 11), [utc(2026, 1, 1, 10, 12)]),
        ("0-30/10 * * * *", utc(2026, 1, 1, 10, 21), [utc(2026, 1, 1, 10, 30)]),
        ("0 9-17/4 * * *", utc(2026, 1, 1, 10), [utc(2026, 1, 1, 13)]),
        ("0 0 * JAN,Jul *", utc(2026, 2, 1), [utc(2026, 7, 1)]),
        ("0 0 * jan-mar/2 *", utc(2026, 1, 31, 1), [utc(2026, 3, 1)]),
        ("0 0 * * MON-fri", utc(2026, 1, 2, 1), [utc(2026, 1, 5)]),
        ("0 0 * * 7", T0, [utc(2026, 1, 4)]),
        ("0 0 * * 0", T0, [utc(2026, 1, 4)]),
        ("0 0 * * 5-7", utc(2026, 1, 2, 1), [utc(2026, 1, 3)]),
        ("*/90 * * * *", T0, [utc(2026, 1, 1, 1)]),
        ("0-10/20 * * * *", T0, [utc(2026, 1, 1, 1)]),
        ("0 0 29 2 *", T0, [utc(2028, 2, 29)]),
        ("00 09 * * *", T0, [utc(2026, 1, 1, 9)]),
    ],
    ids=[
        "star-step",
        "list",
        "range",
        "range-step",
        "hour-range-step",
        "month-names-any-case",
        "month-name-range-step",
        "weekday-names-any-case",
        "weekday-7-is-sunday",
        "weekday-0-is-sunday",
        "weekday-range-to-7",
        "step-over-range-fires-at-minute-0-only",
        "range-step-over-span",
        "feb-29-waits-for-leap-year",
        "leading-zeros",
    ],
)
def test_cron_fields_select_the_expected_next_fire(
    expression: str, after: datetime, expected: list[datetime]
) -> None:
    assert fires(expression, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # Neither field begins with `*`: OR (1st of the month, and Mondays).
        ("0 0 1 * 1", [utc(2026, 1, 26), utc(2026, 2, 1), utc(2026, 2, 2)]),
        # `*/2` in day-of-month: AND (Mondays on odd days).
        ("0 0 */2 * 1", [utc(2026, 2, 9), utc(2026, 2, 23), utc(2026, 3, 9)]),
        # `*` in day-of-week: only the day-of-month counts.
        ("0 0 1 * *", [utc(2026, 2, 1), utc(2026, 3, 1), utc(2026, 4, 1)]),
        # `*/1` in day-of-week starts with `*`: AND, so only the 1st on any weekday.
        ("0 0 1 * */1", [utc(2026, 2, 1), utc(2026, 3, 1), utc(2026, 4, 1)]),
        # `1-31` does not start with `*`: OR with Monday, so every day.
        ("0 0 1-31 * 1", [utc(2026, 1, 26), utc(2026, 1, 27), utc(2026, 1, 28)]),
    ],
    ids=["or-when-both-restricted", "and-when-one-starts-with-star", "dom-only",
         "star-step-dow-means-and", "full-range-dom-or-means-every-day"],
)  # fmt: skip
def test_day_of_month_and_day_of_week_combine_like_cronie(
    expression: str, expected: list[datetime]
) -> None:
    assert fires(expression, utc(2026, 1, 25, 12), 3) == expected


@pytest.mark.parametrize(
    ("macro", "after", "expected"),
    [
        ("@yearly", T0, utc(2027, 1, 1)),
        ("@annually", T0, utc(2027, 1, 1)),
        ("@monthly", T0, utc(2026, 2, 1)),
        ("@weekly", T0, utc(2026, 1, 4)),
        ("@daily", T0, utc(2026, 1, 2)),
        ("@midnight", T0, utc(2026, 1, 2)),
        ("@hourly", T0, utc(2026, 1, 1, 1)),
    ],
    ids=["yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly"],
)
def test_macros_expand_as_cronie_does(
    macro: str, after: datetime, expected: datetime
) -> None:
    schedule = parse_schedule(f"  {macro} ")

    assert schedule.expression == macro
    assert schedule.next_fire(after) == expected
    assert not schedule.is_interval


def test_every_macro_is_covered() -> None:
    assert set(MACROS) == {
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    }


# --- fires: strictness, count, zones ------------------------------------------


def test_a_fire_exactly_at_after_is_not_returned() -> None:
    schedule = parse_schedule("0 * * * *")

    assert schedule.next_fire(utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 11)


def test_a_fire_a_microsecond_after_after_is_the_next_whole_minute() -> None:
    schedule = parse_schedule("* * * * *")
    after = utc(2026, 1, 1, 10) + timedelta(microseconds=1)

    assert schedule.next_fire(after) == utc(2026, 1, 1, 10, 1)


def test_fires_returns_count_fires_in_order() -> None:
    got = fires("*/15 * * * *", utc(2026, 1, 1, 23, 40), 4)

    assert got == [
        utc(2026, 1, 1, 23, 45),
        utc(2026, 1, 2, 0, 0),
        utc(2026, 1, 2, 0, 15),
        utc(2026, 1, 2, 0, 30),
    ]


@pytest.mark.parametrize("count", [0, 1, 7], ids=["zero", "one", "seven"])
def test_fires_returns_exactly_count_fires(count: int) -> None:
    assert len(fires("0 0 * * *", T0, count)) == count


def test_fires_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="count"):
        parse_schedule("0 0 * * *").fires(T0, -1)


def test_fires_match_chained_next_fire() -> None:
    schedule = parse_schedule("*/20 1 * * *", "America/New_York")
    after = utc(2026, 10, 31, 12)
    chained = []
    cursor: datetime | None = after
    for _ in range(10):
        assert cursor is not None
        cursor = schedule.next_fire(cursor)
        chained.append(cursor)

    assert schedule.fires(after, 10) == chained


def test_fires_are_aware_utc_whatever_zone_after_is_in() -> None:
    after = datetime(2026, 1, 1, 5, tzinfo=timezone(timedelta(hours=5)))  # 00:00Z
    fire = parse_schedule("30 0 * * *", "Asia/Tokyo").next_fire(after)

    assert fire == utc(2026, 1, 1, 15, 30)  # 00:30 in Tokyo (UTC+9) on 2 January
    assert fire is not None
    assert fire.tzinfo is UTC


def test_next_fire_refuses_a_naive_after() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_schedule("* * * * *").next_fire(datetime(2026, 1, 1))


def test_the_time_zone_decides_the_wall_clock() -> None:
    schedule = parse_schedule("0 9 * * *", "Asia/Kolkata")  # UTC+5:30, no DST

    assert schedule.next_fire(T0) == utc(2026, 1, 1, 3, 30)


def test_parsed_schedules_keep_expression_and_zone() -> None:
    schedule = parse_schedule("  0 9 * * 1-5 ", "Europe/Berlin")

    assert isinstance(schedule, CronSchedule)
    assert (schedule.expression, schedule.timezone) == ("0 9 * * 1-5", "Europe/Berlin")
    assert schedule == parse_schedule("0 9 * * 1-5", "Europe/Berlin")


# --- refusals -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("0 25 * * *", "hour: 25 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month: 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month: 32 is out of range 1-31"),
        ("0 0 * 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * 0 *", "month: 0 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week: 8 is out of range 0-7"),
        ("0-60 * * * *", "minute: 60 (in 0-60) is out of range 0-59"),
        ("99999999999999 * * * *", "minute: 99999999999999 is out of range 0-59"),
        ("5-1 * * * *", "minute: range 5-1 runs backwards"),
        ("0 22-2 * * *", "write it as 22-23,0-2"),
        ("0 0 * * fri-mon", "day-of-week: range fri-mon runs backwards"),
        ("0 0 * * sat-sun", "write it as 6-7"),
        ("0 0 * dec-jan *", "month: range dec-jan runs backwards"),
        ("2/27 * * * *", "minute: 2/27 puts a step after a single value"),
        ("0 5/2 * * *", "such as 5-23/2, or */2"),
        ("*/0 * * * *", "minute: */0 has a step of 0"),
        ("0 0-23/00 * * *", "hour: 0-23/00 has a step of 0"),
        ("*/x * * * *", "minute: the step in */x is 'x', not a whole number"),
        ("*/ * * * *", "minute: the step in */ is '', not a whole number"),
        ("1,,2 * * * *", "minute: 1,,2 has an empty item in its list"),
        ("a * * * *", "minute: 'a' is not a number; allowed: 0-59"),
        ("0 0 * foo *", "month: 'foo' is not a number or a name; allowed: 1-12"),
        ("0 0 * january *", "month: 'january' is not a number or a name"),
        ("0 0 * * 1#2", "day-of-week: '1#2' is not a number or a name"),
        ("0 0 L * *", "day-of-month: 'L' is not a number"),
        ("0 0 ? * *", "day-of-month: '?' is not a number"),
        ("١ * * * *", "minute: '١' is not a number"),
        ("-5 * * * *", "minute: -5 is missing a value"),
        ("1-2-3 * * * *", "minute: '2-3' in 1-2-3 is not a number"),
        ("0 0 30 2 *", "day-of-month: 30 never occurs in February"),
        ("0 0 31 4,6 *", "day-of-month: 31 never occurs in April or June"),
        ("0 0 30,31 2 */2", "choose days up to 29"),
        ("0 0 * * * *", "has 6 fields, but 5 are expected"),
        ("0 0 1 1 * 2030", "has 6 fields, but 5 are expected"),
        ("0 0 * *", "has 4 fields, but 5 are expected"),
        ("0 0 * * * /bin/true", "the command belongs in the job"),
        ("", "the expression is empty"),
        ("  \t ", "the expression is empty"),
        ("CRON_TZ=Europe/Berlin 0 2 * * *", "set the job's timezone field to Europe"),
        ("TZ=UTC 0 2 * * *", "a time zone prefix is not supported"),
        ("cron_tz=UTC 0 2 * * *", "a time zone prefix is not supported"),
        ("@reboot", "@reboot is not supported: a cluster has no single boot"),
        ("@dayly", "@dayly is not a known macro"),
        ("@DAILY", "did you mean @daily?"),
        ("@daily 0", "@daily takes nothing after it"),
        ("@fortnightly", "the macros are @yearly, @annually"),
    ],
    ids=[
        "minute-60",
        "hour-25",
        "day-of-month-0",
        "day-of-month-32",
        "month-13",
        "month-0",
        "day-of-week-8",
        "range-end-out-of-range",
        "huge-number",
        "reversed-range",
        "wrapping-hour-range-with-fix",
        "reversed-weekday-names",
        "weekday-range-to-sunday-suggests-7",
        "reversed-month-names",
        "step-after-single-value",
        "step-after-single-value-fix",
        "step-zero",
        "step-zero-with-leading-zeros",
        "step-not-a-number",
        "step-missing",
        "empty-list-item",
        "letters",
        "unknown-month-name",
        "long-month-name",
        "quartz-nth-weekday",
        "quartz-last-day",
        "quartz-question-mark",
        "non-ascii-digit",
        "missing-range-start",
        "two-dashes",
        "february-30",
        "april-june-31",
        "never-fires-even-with-star-step-weekday",
        "seconds-field",
        "year-field",
        "four-fields",
        "command-in-schedule",
        "empty",
        "blank",
        "cron-tz-prefix",
        "tz-prefix",
        "lower-case-prefix",
        "reboot",
        "misspelt-macro",
        "macro-case-as-cronie",
        "macro-with-fields",
        "unknown-macro",
    ],
)
def test_refused_expressions_name_the_field_and_the_value(
    expression: str, expected: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expression)

    assert caught.value.field == "schedule"
    assert expected in caught.value.reason


def test_a_refusal_message_carries_the_field_for_the_api() -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule("0 25 * * *")

    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("schedule", "hour: 25 is out of range 0-23")
    ]


@pytest.mark.parametrize(
    "expression",
    ["0 0 29 2 *", "0 0 30 2 1", "0 0 31 * *", "0 0 30 */2 *", "0 0 31 1-12/3 *"],
    ids=["feb-29", "feb-30-or-mondays", "31st-some-months",
         "odd-months-include-31-day-ones", "jan-apr-jul-oct"],
)  # fmt: skip
def test_expressions_that_fire_at_least_sometimes_are_accepted(
    expression: str,
) -> None:
    schedule = parse_schedule(expression)

    assert schedule.next_fire(T0) is not None


# --- @every -------------------------------------------------------------------

ANCHOR = utc(2026, 1, 1, 10, 0, 7)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("@every 5m", utc(2026, 1, 1, 10, 12), utc(2026, 1, 1, 10, 15, 7)),
        ("@every 5m", utc(2026, 1, 1, 10, 15, 7), utc(2026, 1, 1, 10, 20, 7)),
        ("@every 5m", utc(2026, 1, 1, 9), utc(2026, 1, 1, 10, 5, 7)),
        ("@every 5m", ANCHOR, utc(2026, 1, 1, 10, 5, 7)),
        ("@every 30s", utc(2026, 1, 1, 10, 0, 40), utc(2026, 1, 1, 10, 1, 7)),
        ("@every 90s", utc(2026, 1, 1, 10, 1), utc(2026, 1, 1, 10, 1, 37)),
        ("@every 1h30m", utc(2026, 1, 2), utc(2026, 1, 2, 1, 0, 7)),
        ("@every 2h", utc(2026, 3, 1), utc(2026, 3, 1, 0, 0, 7)),
        ("@every 1s", utc(2026, 1, 1, 10, 0, 7, 500), utc(2026, 1, 1, 10, 0, 8)),
        ("@every   10m", utc(2026, 1, 1, 10, 0, 8), utc(2026, 1, 1, 10, 10, 7)),
    ],
    ids=[
        "aligned-on-anchor-not-on-after",
        "fire-exactly-at-after-is-skipped",
        "after-before-anchor-gives-first-multiple",
        "anchor-itself-is-not-a-fire",
        "seconds",
        "seconds-over-a-minute",
        "hours-and-minutes",
        "whole-hours-keep-anchor-seconds",
        "one-second-with-microseconds",
        "extra-spaces",
    ],
)
def test_every_fires_on_the_anchor_grid(
    expression: str, after: datetime, expected: datetime
) -> None:
    schedule = parse_schedule(expression, "UTC", ANCHOR)

    assert schedule.next_fire(after) == expected


def test_every_keeps_its_grid_across_restarts() -> None:
    # A scheduler that restarts at an odd instant asks again from there.
    first = parse_schedule("@every 5m", "UTC", ANCHOR).fires(ANCHOR, 3)
    after_restart = parse_schedule("@every 5m", "UTC", ANCHOR).next_fire(
        utc(2026, 1, 1, 10, 11, 59)
    )

    assert first == [
        utc(2026, 1, 1, 10, 5, 7),
        utc(2026, 1, 1, 10, 10, 7),
        utc(2026, 1, 1, 10, 15, 7),
    ]
    assert after_restart == first[2]


def test_every_ignores_the_time_zone() -> None:
    in_utc = parse_schedule("@every 1h", "UTC", ANCHOR)
    in_new_york = parse_schedule("@every 1h", "America/New_York", ANCHOR)
    # New York falls back on 2026-11-01 at 06:00Z: the grid does not notice.
    after = utc(2026, 11, 1, 4)

    assert in_new_york.fires(after, 4) == in_utc.fires(after, 4)
    assert in_new_york.fires(after, 2) == [
        utc(2026, 11, 1, 4, 0, 7),
        utc(2026, 11, 1, 5, 0, 7),
    ]


def test_every_without_anchor_counts_from_the_unix_epoch() -> None:
    schedule = parse_schedule("@every 11m")
    # 2026-01-01T00:00Z is 29,453,760 minutes after the epoch, 6 past a multiple
    # of 11, so the next multiple is 5 minutes later.

    assert isinstance(schedule, IntervalSchedule)
    assert schedule.anchor_at == utc(1970, 1, 1)
    assert schedule.next_fire(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 5)


def test_every_is_an_interval_and_keeps_its_expression() -> None:
    schedule = parse_schedule("@every 1h30m", "UTC", ANCHOR)

    assert schedule.is_interval
    assert schedule.expression == "@every 1h30m"
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.interval == timedelta(hours=1, minutes=30)


def test_every_anchor_in_another_zone_is_stored_in_utc() -> None:
    anchor = datetime(2026, 1, 1, 11, 0, 7, tzinfo=ZoneInfo("Europe/Berlin"))
    schedule = parse_schedule("@every 5m", "UTC", anchor)

    assert isinstance(schedule, IntervalSchedule)
    assert schedule.anchor_at == ANCHOR
    assert schedule.anchor_at.tzinfo is UTC


def test_every_refuses_a_naive_anchor() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_schedule("@every 5m", "UTC", datetime(2026, 1, 1))


def test_every_near_the_end_of_time_has_no_next_fire() -> None:
    schedule = parse_schedule("@every 8784h", "UTC", ANCHOR)

    assert schedule.next_fire(utc(9999, 6, 1)) == utc(9999, 7, 4, 10, 0, 7)
    assert schedule.next_fire(utc(9999, 7, 4, 10, 0, 7)) is None


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("@every", "@every needs a duration"),
        ("@every 0s", "@every 0s is shorter than the minimum of 1s"),
        ("@every 0h0m0s", "shorter than the minimum of 1s"),
        ("@every 500ms", "units below a second are not supported"),
        ("@every 1500ms", "units below a second are not supported"),
        ("@every abc", "'abc' is not a duration"),
        ("@every 1.5h", "'1.5h' is not a duration"),
        ("@every 5", "'5' is not a duration"),
        ("@every 1d", "'1d' is not a duration"),
        ("@every -5m", "'-5m' is not a duration"),
        ("@every 5m 10s", "'5m 10s' is not a duration"),
        ("@every 8785h", "longer than the maximum of 366 days"),
        ("@every 99999999999999999999h", "longer than the maximum"),
        ("@every5m", "did you mean @every 5m?"),
    ],
    ids=[
        "no-duration",
        "zero",
        "zero-in-every-unit",
        "milliseconds",
        "milliseconds-over-a-second",
        "letters",
        "fraction",
        "no-unit",
        "days-unit",
        "negative",
        "space-inside",
        "over-maximum",
        "huge",
        "no-space",
    ],
)
def test_every_refuses_bad_durations(expression: str, expected: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expression, "UTC", ANCHOR)

    assert caught.value.field == "schedule"
    assert expected in caught.value.reason


# --- time zones ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Etc/GMT+5"],
    ids=["utc", "berlin", "new-york", "lord-howe", "fixed-offset"],
)
def test_validate_timezone_returns_the_zone(name: str) -> None:
    assert validate_timezone(name) == ZoneInfo(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("", "the time zone is empty"),
        ("   ", "the time zone is empty"),
        ("Mars/Olympus_Mons", "'Mars/Olympus_Mons' is not an IANA time zone name"),
        ("america/new_york", "did you mean America/New_York?"),
        ("Europe/Berln", "did you mean Europe/Berlin"),
        (" UTC", "did you mean UTC?"),
        ("localtime", "'localtime' is not an IANA time zone name"),
        ("posixrules", "'posixrules' is not an IANA time zone name"),
        ("../../etc/passwd", "is not an IANA time zone name"),
    ],
    ids=[
        "empty",
        "blank",
        "unknown",
        "wrong-case",
        "misspelt",
        "leading-space",
        "host-dependent-localtime",
        "posixrules",
        "path",
    ],
)
def test_validate_timezone_refuses_unknown_names(name: str, expected: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        validate_timezone(name)

    assert caught.value.field == "timezone"
    assert expected in caught.value.reason


def test_parse_schedule_refuses_a_bad_zone_naming_the_timezone_field() -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule("0 * * * *", "Europe/Atlantis")

    assert caught.value.field == "timezone"


def test_parse_schedule_refuses_a_bad_zone_for_every_too() -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule("@every 5m", "Nowhere", ANCHOR)

    assert caught.value.field == "timezone"


# --- describe -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 * * * *", "Every hour, on the hour"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("0 0 * * 0", "At midnight (00:00) every Sunday"),
        (
            "0 9-17 * * 1-5",
            "Every hour from 09:00 through 17:00, on weekdays (Monday through Friday)",
        ),
    ],
    ids=["every-hour", "every-15-minutes", "sunday-midnight", "weekdays-9-to-5"],
)
def test_describe_reads_the_readme_examples(expression: str, expected: str) -> None:
    assert parse_schedule(expression).describe() == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("30 2 * * *", "At 02:30 every day"),
        ("0 12 * * *", "At noon (12:00) every day"),
        ("0 8,18 * * *", "At 08:00 and 18:00 every day"),
        ("* * * * *", "Every minute"),
        ("*/90 * * * *", "Every hour, on the hour"),
        ("30 * * * *", "Every hour at minute 30"),
        ("0 */2 * * *", "Every 2 hours, on the hour"),
        ("0 */5 * * *", "At minute 0 during hours 0, 5, 10, 15 and 20"),
        ("*/7 * * * *", "At every 7th minute from 0 through 56 past every hour"),
        ("0-10/2 * * * *", "At minutes 0, 2, 4, 6, 8 and 10 past every hour"),
        ("*/15 9-17 * * *", "Every 15 minutes from 09:00 through 17:45"),
        ("* 9 * * *", "Every minute from 09:00 through 09:59"),
        ("15 10 * * 1,3,5", "At 10:15 every Monday, Wednesday and Friday"),
        ("0 0 * * 6,0", "At midnight (00:00) on weekends (Saturday and Sunday)"),
        ("0 0 * * 7", "At midnight (00:00) every Sunday"),
        ("0 0 * * 5-7", "At midnight (00:00) every Friday through Sunday"),
        ("0 0 1,15 * *", "At midnight (00:00) on days 1 and 15 of the month"),
        ("0 0 1 * 1", "At midnight (00:00) on day 1 of the month and every Monday"),
        (
            "0 0 */2 * 1",
            "At midnight (00:00) on every 2nd day from 1 through 31 of the month, "
            "if that day is a Monday",
        ),
        ("0 0 1-31 * 1", "At midnight (00:00) every day"),
        ("0 0 * 1-3 *", "At midnight (00:00) every day in January through March"),
        ("@yearly", "At midnight (00:00) on January 1"),
        ("0 0 29 2 *", "At midnight (00:00) on February 29"),
        ("@monthly", "At midnight (00:00) on day 1 of the month"),
        ("@weekly", "At midnight (00:00) every Sunday"),
        ("@hourly", "Every hour, on the hour"),
    ],
    ids=[
        "one-time",
        "noon",
        "two-times",
        "every-minute",
        "step-over-range-reads-as-what-it-does",
        "minute-past-every-hour",
        "every-2-hours",
        "uneven-hour-step-lists-hours",
        "uneven-minute-step",
        "short-step-lists-values",
        "cadence-in-hour-range",
        "every-minute-of-one-hour",
        "weekday-list",
        "weekend",
        "weekday-7",
        "weekday-range-to-7",
        "days-of-month",
        "or-days",
        "and-days",
        "or-with-every-day-of-month-is-every-day",
        "month-range",
        "yearly-as-a-date",
        "leap-day",
        "monthly",
        "weekly",
        "hourly",
    ],
)
def test_describe_reads_what_the_expression_does(
    expression: str, expected: str
) -> None:
    assert parse_schedule(expression).describe() == expected


def test_describe_names_a_zone_other_than_utc() -> None:
    described = parse_schedule("30 2 * * *", "Europe/Berlin").describe()

    assert described == "At 02:30 every day (Europe/Berlin time)"


def test_describe_every_names_the_interval_and_the_anchor() -> None:
    schedule = parse_schedule("@every 1h30m", "Europe/Berlin", ANCHOR)

    assert schedule.describe() == (
        "Every 1 hour 30 minutes, counted from 2026-01-01 10:00:07 UTC"
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("@every 1m", "Every minute"), ("@every 90s", "Every 90 seconds")],
    ids=["singular", "plural-kept-as-written"],
)
def test_describe_every_spells_the_duration(expression: str, expected: str) -> None:
    assert parse_schedule(expression, "UTC", ANCHOR).describe().startswith(expected)
