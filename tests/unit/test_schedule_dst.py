"""Hold cron fires to cronie's daylight-saving rules in zones with real transitions.

cronie (cron.c) treats a job as fixed-time unless its minute or hour field begins
with `*`. When the clock jumps forward, fixed-time jobs of the skipped wall times
run once, right after the jump; when it jumps back, only wildcard jobs run in the
repeated wall times, so fixed-time jobs run once, in the first pass. Wildcard
jobs follow the wall clock: they fire in both passes of a repeated hour and not
at all for wall times that do not exist.

Transition instants (2026), checked with zoneinfo by the first test below:
  America/New_York     03-08 07:00Z  01:59:59 EST (-5) -> 03:00 EDT (-4)
                       11-01 06:00Z  01:59:59 EDT (-4) -> 01:00 EST (-5)
  Australia/Lord_Howe  04-04 15:00Z  01:59:59 +11 -> 01:30 +10:30 (30-minute shift)
                       10-03 15:30Z  01:59:59 +10:30 -> 02:30 +11
  Europe/Berlin        03-29 01:00Z  01:59:59 CET (+1) -> 03:00 CEST (+2)
                       10-25 01:00Z  02:59:59 CEST (+2) -> 02:00 CET (+1)
  Europe/London        10-25 01:00Z  01:59:59 BST (+1) -> 01:00 GMT (0)
  America/Havana       03-08 05:00Z  23:59:59 CST (-5) -> 01:00 CDT (-4), no midnight
  Antarctica/Troll     10-25 01:00Z  02:59:59 +02 -> 01:00 +00 (2-hour shift)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from socmeth.schedule import parse_schedule

NY = "America/New_York"
LH = "Australia/Lord_Howe"
BERLIN = "Europe/Berlin"
LONDON = "Europe/London"
HAVANA = "America/Havana"
TROLL = "Antarctica/Troll"


def utc(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def instants(text: str) -> list[datetime]:
    """Read "MM-DD HH:MM, ..." as 2026 instants in UTC."""
    moments = [
        datetime.strptime(f"2026-{item.strip()}", "%Y-%m-%d %H:%M")
        for item in text.split(",")
    ]
    return [moment.replace(tzinfo=UTC) for moment in moments]


def fires(expression: str, zone: str, after: str, count: int = 2) -> list[datetime]:
    """Return the next `count` fires after "MM-DD HH:MM" (UTC)."""
    return parse_schedule(expression, zone).fires(instants(after)[0], count)


@pytest.mark.parametrize(
    ("zone", "instant", "before", "after"),
    [
        (NY, utc(3, 8, 7), "01:59-05:00", "03:00-04:00"),
        (NY, utc(11, 1, 6), "01:59-04:00", "01:00-05:00"),
        (LH, utc(4, 4, 15), "01:59+11:00", "01:30+10:30"),
        (LH, utc(10, 3, 15, 30), "01:59+10:30", "02:30+11:00"),
        (BERLIN, utc(3, 29, 1), "01:59+01:00", "03:00+02:00"),
        (BERLIN, utc(10, 25, 1), "02:59+02:00", "02:00+01:00"),
        (LONDON, utc(10, 25, 1), "01:59+01:00", "01:00+00:00"),
        (HAVANA, utc(3, 8, 5), "23:59-05:00", "01:00-04:00"),
        (TROLL, utc(10, 25, 1), "02:59+02:00", "01:00+00:00"),
    ],
    ids=["ny-spring", "ny-fall", "lord-howe-fall", "lord-howe-spring",
         "berlin-spring", "berlin-fall", "london-fall", "havana-spring",
         "troll-fall"],
)  # fmt: skip
def test_zone_data_has_the_transitions_these_tests_assume(
    zone: str, instant: datetime, before: str, after: str
) -> None:
    def wall(moment: datetime) -> str:
        local = moment.astimezone(ZoneInfo(zone))
        return local.strftime("%H:%M") + local.isoformat()[-6:]

    assert wall(instant - timedelta(minutes=1)) == before
    assert wall(instant) == after


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        ("30 2 * * *", NY, "03-08 05:00", "03-08 07:00, 03-09 06:30"),
        ("0 2 * * *", NY, "03-08 05:00", "03-08 07:00, 03-09 06:00"),
        ("59 2 * * *", NY, "03-08 05:00", "03-08 07:00, 03-09 06:59"),
        ("0,30 2 * * *", NY, "03-08 05:00", "03-08 07:00, 03-09 06:00"),
        ("0 3 * * *", NY, "03-08 05:00", "03-08 07:00, 03-09 07:00"),
        ("15 2 * * *", LH, "10-03 15:00", "10-03 15:30, 10-04 15:15"),
        ("45 2 * * *", LH, "10-03 15:00", "10-03 15:45, 10-04 15:45"),
        ("30 2 * * *", BERLIN, "03-28 23:00", "03-29 01:00, 03-30 00:30"),
        ("0 0 * * *", HAVANA, "03-07 06:00", "03-08 05:00, 03-09 04:00"),
    ],
    ids=[
        "ny-02:30-runs-at-03:00-edt",
        "ny-02:00-runs-at-03:00-edt",
        "ny-02:59-runs-at-03:00-edt",
        "ny-two-skipped-times-run-once",
        "ny-03:00-still-runs-once",
        "lord-howe-02:15-runs-at-02:30-after-30-minute-jump",
        "lord-howe-02:45-exists-and-runs-on-time",
        "berlin-02:30-runs-at-03:00-cest",
        "havana-skipped-midnight-runs-at-01:00",
    ],
)
def test_fixed_time_job_in_a_skipped_hour_runs_once_right_after_the_jump(
    expression: str, zone: str, after: str, expected: str
) -> None:
    wanted = instants(expected)

    assert fires(expression, zone, after, len(wanted)) == wanted


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        ("30 1 * * *", NY, "11-01 04:00", "11-01 05:30, 11-02 06:30"),
        ("45 1 * * *", LH, "04-04 14:00", "04-04 14:45, 04-05 15:15"),
        ("30 2 * * *", BERLIN, "10-24 23:00", "10-25 00:30, 10-26 01:30"),
        ("30 1 * * *", LONDON, "10-24 23:00", "10-25 00:30, 10-26 01:30"),
        ("0 1-3 * * *", NY, "11-01 04:00", "11-01 05:00, 11-01 07:00, 11-01 08:00"),
        ("30 1,2 * * *", TROLL, "10-24 23:00", "10-24 23:30, 10-25 00:30, 10-26 01:30"),
    ],
    ids=[
        "ny-01:30-edt-only",
        "lord-howe-01:45-lhdt-only",
        "berlin-02:30-cest-only",
        "london-01:30-bst-only",
        "ny-hour-range-skips-second-01:00",
        "troll-two-repeated-hours-first-pass-only",
    ],
)
def test_fixed_time_job_in_a_repeated_hour_runs_once_in_the_first_pass(
    expression: str, zone: str, after: str, expected: str
) -> None:
    wanted = instants(expected)

    assert fires(expression, zone, after, len(wanted)) == wanted


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        ("30 1 * * *", NY, "11-01 06:15", "11-02 06:30"),
        ("30 1 * * *", NY, "11-01 05:30", "11-02 06:30"),
        ("45 1 * * *", LH, "04-04 15:10", "04-05 15:15"),
        ("30 2 * * *", BERLIN, "10-25 01:15", "10-26 01:30"),
        ("30 1 * * *", TROLL, "10-25 01:45", "10-26 01:30"),
    ],
    ids=[
        "ny-from-01:15-est",
        "ny-from-the-first-pass-fire",
        "lord-howe-from-01:40-lhst",
        "berlin-from-02:15-cet",
        "troll-from-01:45-utc-offset-0",
    ],
)
def test_asking_from_the_second_pass_never_returns_a_fire_before_after(
    expression: str, zone: str, after: str, expected: str
) -> None:
    # cronsim alone returns the first-pass instant here, which is before
    # `after`; cronie ran the job then, so the next fire is the next day's.
    assert fires(expression, zone, after, 1) == instants(expected)


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        ("*/30 * * * *", NY, "03-08 06:00", "03-08 06:30, 03-08 07:00, 03-08 07:30"),
        ("30 * * * *", NY, "03-08 06:00", "03-08 06:30, 03-08 07:30"),
        ("@hourly", NY, "03-08 05:30", "03-08 06:00, 03-08 07:00, 03-08 08:00"),
        ("*/10 2 * * *", NY, "03-08 06:30", "03-09 06:00, 03-09 06:10"),
        ("*/15 * * * *", LH, "10-03 15:00", "10-03 15:15, 10-03 15:30, 10-03 15:45"),
        ("15 * * * *", LH, "10-03 14:00", "10-03 14:45, 10-03 16:15"),
        ("*/10 2 * * *", LH, "10-03 15:00", "10-03 15:30, 10-03 15:40"),
        ("*/30 0 * * *", HAVANA, "03-08 04:00", "03-09 04:00, 03-09 04:30"),
        ("45 * * * *", LH, "10-03 15:00", "10-03 15:15, 10-03 15:45"),
    ],
    ids=[
        "ny-star-30-skips-02:00-and-02:30",
        "ny-minute-30-every-hour-skips-02:30",
        "ny-hourly-goes-01:00-est-to-03:00-edt",
        "ny-star-10-in-hour-2-skips-the-whole-day",
        "lord-howe-star-15-skips-02:00-and-02:15",
        "lord-howe-minute-15-every-hour-skips-02:15",
        "lord-howe-star-10-in-hour-2-keeps-02:30-on",
        "havana-star-30-at-midnight-skips-the-day",
        "lord-howe-minute-45-keeps-02:45-right-after-the-jump",
    ],
)
def test_wildcard_job_does_not_fire_for_wall_times_that_do_not_exist(
    expression: str, zone: str, after: str, expected: str
) -> None:
    wanted = instants(expected)

    assert fires(expression, zone, after, len(wanted)) == wanted


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        (
            "*/30 * * * *",
            NY,
            "11-01 05:00",
            "11-01 05:30, 11-01 06:00, 11-01 06:30, 11-01 07:00",
        ),
        ("30 * * * *", NY, "11-01 05:00", "11-01 05:30, 11-01 06:30, 11-01 07:30"),
        (
            "*/20 1 * * *",
            NY,
            "11-01 05:00",
            "11-01 05:20, 11-01 05:40, 11-01 06:00, 11-01 06:20, 11-01 06:40, "
            "11-02 06:00",
        ),
        (
            "*/15 * * * *",
            LH,
            "04-04 14:30",
            "04-04 14:45, 04-04 15:00, 04-04 15:15, 04-04 15:30",
        ),
        ("45 * * * *", LH, "04-04 14:00", "04-04 14:45, 04-04 15:15, 04-04 16:15"),
        (
            "*/30 * * * *",
            BERLIN,
            "10-25 00:00",
            "10-25 00:30, 10-25 01:00, 10-25 01:30",
        ),
        ("*/15 * * * *", NY, "11-01 05:45", "11-01 06:00, 11-01 06:15"),
        ("*/15 * * * *", NY, "11-01 06:00", "11-01 06:15, 11-01 06:30"),
        ("*/10 * * * *", LH, "04-04 15:05", "04-04 15:10, 04-04 15:20, 04-04 15:30"),
        ("*/10 * * * *", LH, "04-04 14:52", "04-04 15:00, 04-04 15:10"),
        ("*/15 3 * * *", LH, "04-04 15:10", "04-04 16:30, 04-04 16:45"),
        (
            "30 * * * *",
            TROLL,
            "10-24 23:00",
            "10-24 23:30, 10-25 00:30, 10-25 01:30, 10-25 02:30",
        ),
    ],
    ids=[
        "ny-star-30-fires-in-both-passes",
        "ny-minute-30-every-hour-fires-in-both-passes",
        "ny-star-20-in-hour-1-fires-in-both-passes",
        "lord-howe-star-15-fires-in-both-half-hours",
        "lord-howe-minute-45-every-hour-fires-twice",
        "berlin-star-30-fires-in-both-passes",
        "ny-asked-at-the-last-first-pass-fire",
        "ny-asked-exactly-at-a-second-pass-fire",
        "lord-howe-asked-inside-the-second-pass",
        "lord-howe-asked-late-in-the-first-pass",
        "lord-howe-star-15-in-hour-3-after-the-half-hour-shift",
        "troll-minute-30-every-hour-through-two-repeated-hours",
    ],
)
def test_wildcard_job_fires_in_both_passes_of_a_repeated_hour(
    expression: str, zone: str, after: str, expected: str
) -> None:
    wanted = instants(expected)

    assert fires(expression, zone, after, len(wanted)) == wanted


def test_every_15_minutes_is_every_real_15_minutes_across_fall_back() -> None:
    start = utc(11, 1, 4)

    got = parse_schedule("*/15 * * * *", NY).fires(start, 16)

    assert got == [start + timedelta(minutes=15 * k) for k in range(1, 17)]


def test_fixed_time_job_fires_once_per_local_day_through_a_dst_year() -> None:
    # 02:30 is skipped in New York on 03-08 and 01:30 repeats on 11-01; either
    # way each local date gets exactly one fire.
    zone = ZoneInfo(NY)
    for expression in ("30 2 * * *", "30 1 * * *"):
        got = parse_schedule(expression, NY).fires(utc(1, 1, 12), 365)
        dates = [fire.astimezone(zone).date() for fire in got]

        assert len(set(dates)) == len(dates) == 365


def test_utc_schedules_ignore_other_zones_transitions() -> None:
    assert fires("30 2 * * *", "UTC", "03-08 00:00") == instants(
        "03-08 02:30, 03-09 02:30"
    )
