"""Compare cron libraries with cronie's rules on real DST days; print Markdown tables.

Run from the repository root:

    .venv/bin/python bench/compare_cron_libraries.py

The reference column is not a library: it replays cronie's main loop (cron.c)
minute by minute over real time. That loop keeps a "virtual" wall clock and, at
each wake-up, compares it with the real wall clock:

- one minute later (the usual case): every job whose fields match runs;
- a medium jump forward (6 minutes to 3 hours, as when DST starts): wildcard jobs
  run for the current minute only, and fixed-time jobs run once for every
  skipped minute, all at the moment of the jump;
- a jump back (DST ends): only wildcard jobs run, and the virtual clock waits
  until the wall clock catches up, so fixed-time jobs do not repeat.

A job is a wildcard job when its minute or hour field begins with `*`. Field
matching uses socmeth's parser (checked by its own unit tests). Two fires that
cronie would start in the same minute count as one fire, as in socmeth, where a
fire is identified by (job, instant).

The candidates are called the way their documentation suggests: with an aware
start datetime in the job's zone, results converted to UTC.
"""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from zoneinfo import ZoneInfo

from croniter import croniter
from cronsim import CronSim

from socmeth.schedule import parse_schedule
from socmeth.schedule.fields import CronFields, parse_fields

MINUTE = timedelta(minutes=1)
WALL_EPOCH = datetime(1970, 1, 1)
# cronie treats a jump of more than 3 hours as a clock change, not DST.
LARGE_JUMP_MINUTES = 3 * 60
# cronie treats a jump of up to 5 minutes as a late wake-up.
SMALL_JUMP_MINUTES = 5


@dataclass(frozen=True)
class Case:
    """One expression asked for its next fires after an instant."""

    label: str
    expression: str
    zone: str
    after: datetime
    count: int
    days: int = 3


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """Build an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# Transition instants, checked with zoneinfo:
#   America/New_York     2026-03-08 07:00Z  01:59:59 EST -> 03:00 EDT
#                        2026-11-01 06:00Z  01:59:59 EDT -> 01:00 EST
#   Australia/Lord_Howe  2026-04-04 15:00Z  01:59:59 +11 -> 01:30 +10:30
#                        2026-10-03 15:30Z  01:59:59 +10:30 -> 02:30 +11
#   Europe/Berlin        2026-03-29 01:00Z  01:59:59 CET -> 03:00 CEST
#                        2026-10-25 01:00Z  02:59:59 CEST -> 02:00 CET
#   Europe/London        2026-10-25 01:00Z  01:59:59 BST -> 01:00 GMT
#   America/Havana       2026-03-08 05:00Z  23:59:59 CST -> 01:00 CDT
NY, LH, BER, LON = (
    "America/New_York",
    "Australia/Lord_Howe",
    "Europe/Berlin",
    "Europe/London",
)
CASES = [
    Case("NY skipped hour, fixed 02:30", "30 2 * * *", NY, utc(2026, 3, 8, 5), 2),
    Case("NY skipped hour, 02:00+02:30", "0,30 2 * * *", NY, utc(2026, 3, 8, 5), 2),
    Case("NY repeated hour, fixed 01:30", "30 1 * * *", NY, utc(2026, 11, 1, 4), 2),
    Case("NY asked in 2nd pass, 01:30", "30 1 * * *", NY, utc(2026, 11, 1, 6, 15), 1),
    Case("NY */30 over spring gap", "*/30 * * * *", NY, utc(2026, 3, 8, 6), 3),
    Case("NY */30 over fall repeat", "*/30 * * * *", NY, utc(2026, 11, 1, 5), 4),
    Case("NY */10 in hour 2, gap day", "*/10 2 * * *", NY, utc(2026, 3, 8, 6, 30), 1),
    Case("NY */20 in hour 1, repeat", "*/20 1 * * *", NY, utc(2026, 11, 1, 5), 6),
    Case("Lord Howe repeat, fixed 01:45", "45 1 * * *", LH, utc(2026, 4, 4, 14), 2),
    Case("Lord Howe repeat, */15", "*/15 * * * *", LH, utc(2026, 4, 4, 14, 30), 4),
    Case("Lord Howe gap, fixed 02:15", "15 2 * * *", LH, utc(2026, 10, 3, 15), 2),
    Case("Lord Howe gap, */15", "*/15 * * * *", LH, utc(2026, 10, 3, 15), 3),
    Case("Lord Howe gap, 15 *", "15 * * * *", LH, utc(2026, 10, 3, 14), 2),
    Case("Lord Howe repeat, 45 *", "45 * * * *", LH, utc(2026, 4, 4, 14), 3),
    Case("Lord Howe gap, 45 *", "45 * * * *", LH, utc(2026, 10, 3, 15), 2),
    Case("Lord Howe repeat, */15 3", "*/15 3 * * *", LH, utc(2026, 4, 4, 15, 10), 2),
    Case("Berlin gap, fixed 02:30", "30 2 * * *", BER, utc(2026, 3, 28, 23), 2),
    Case("Berlin repeat, fixed 02:30", "30 2 * * *", BER, utc(2026, 10, 24, 23), 2),
    Case("Berlin asked in 2nd pass", "30 2 * * *", BER, utc(2026, 10, 25, 1, 15), 1),
    Case("London repeat, fixed 01:30", "30 1 * * *", LON, utc(2026, 10, 24, 23), 2),
    Case("Havana gap at midnight, */30 0", "*/30 0 * * *", "America/Havana",
         utc(2026, 3, 8, 4), 1),
    Case("DOM/DOW OR: 0 0 1 * 1", "0 0 1 * 1", "UTC", utc(2026, 1, 25), 3, days=10),
    Case("DOM/DOW AND: 0 0 */2 * 1", "0 0 */2 * 1", "UTC", utc(2026, 1, 1), 3,
         days=45),
    Case("step over range: */90", "*/90 * * * *", "UTC", utc(2026, 1, 1), 2),
    Case("weekday 7 is Sunday", "0 0 * * 7", "UTC", utc(2026, 1, 1), 1, days=8),
]  # fmt: skip

REFUSALS = [
    ("out of range", "60 * * * *"),
    ("reversed range", "5-1 * * * *"),
    ("wrapping range", "0 22-2 * * *"),
    ("step after one value", "2/27 * * * *"),
    ("step of 0", "*/0 * * * *"),
    ("six fields", "0 0 12 * * *"),
    ("never fires", "0 0 30 2 *"),
    ("never fires", "0 0 31 4,6 *"),
    ("CRON_TZ prefix", "CRON_TZ=UTC 0 2 * * *"),
    ("@reboot", "@reboot"),
    ("Quartz L", "0 0 L * *"),
]


def wall_minutes(instant: datetime, zone: ZoneInfo) -> int:
    """Return the wall-clock time of an instant as minutes since 1970, like cronie."""
    wall = instant.astimezone(zone).replace(tzinfo=None)
    return (wall - WALL_EPOCH) // MINUTE


def matches(fields: CronFields, virtual_minute: int) -> bool:
    """Tell whether the fields select a wall-clock minute, with cronie's day rule."""
    wall = WALL_EPOCH + virtual_minute * MINUTE
    dom = wall.day in fields.day_of_month.values
    dow = wall.isoweekday() % 7 in fields.day_of_week.values
    days = (dom and dow) if fields.days_combine_with_and else (dom or dow)
    return (
        wall.minute in fields.minute.values
        and wall.hour in fields.hour.values
        and wall.month in fields.month.values
        and days
    )


def due_minutes(virtual: int, running: int) -> tuple[int, list[tuple[int, bool]]]:
    """Return cronie's new virtual clock and the (minute, wildcard?) checks to run."""
    diff = running - virtual
    if diff == 1 or abs(diff) > LARGE_JUMP_MINUTES:
        return running, [(running, True), (running, False)]
    if diff > SMALL_JUMP_MINUTES:
        skipped = [(minute, False) for minute in range(virtual + 1, running + 1)]
        return running, [(running, True), *skipped]
    if diff > 0:
        return running, [
            (minute, wild)
            for minute in range(virtual + 1, running + 1)
            for wild in (True, False)
        ]

    return virtual, [(running, True)]


def cronie_reference(case: Case) -> list[datetime]:
    """Replay cronie's main loop and return the first fires after `case.after`."""
    fields = parse_fields(case.expression.split())
    zone = ZoneInfo(case.zone)
    wildcard = not fields.is_fixed_time
    # Start hours early: inside a repeated hour, cronie's state depends on the
    # first pass, which the replay must have lived through.
    instant = case.after.replace(second=0, microsecond=0) - timedelta(hours=4)
    virtual = wall_minutes(instant, zone)
    fires: list[datetime] = []
    end = case.after + timedelta(days=case.days)
    while instant < end and len(fires) < case.count:
        instant += MINUTE
        virtual, checks = due_minutes(virtual, wall_minutes(instant, zone))
        due = any(wild == wildcard and matches(fields, m) for m, wild in checks)
        if due and instant > case.after:
            fires.append(instant)

    return fires


def run_cronsim(case: Case) -> list[datetime]:
    """Ask cronsim for the next fires."""
    found = CronSim(case.expression, case.after.astimezone(ZoneInfo(case.zone)))
    return [next(found).astimezone(UTC) for _ in range(case.count)]


def run_croniter(case: Case) -> list[datetime]:
    """Ask croniter for the next fires."""
    found = croniter(case.expression, case.after.astimezone(ZoneInfo(case.zone)))
    return [found.get_next(datetime).astimezone(UTC) for _ in range(case.count)]


def run_socmeth(case: Case) -> list[datetime]:
    """Ask socmeth's wrapper for the next fires."""
    schedule = parse_schedule(case.expression, case.zone)
    return schedule.fires(case.after, case.count)


RUNNERS: dict[str, Callable[[Case], list[datetime]]] = {
    f"cronsim {version('cronsim')}": run_cronsim,
    f"croniter {version('croniter')}": run_croniter,
    "socmeth (cronsim + fix)": run_socmeth,
}


def show(fires: list[datetime]) -> str:
    """Render fires compactly, as UTC."""
    return ", ".join(fire.strftime("%m-%d %H:%MZ") for fire in fires)


def verdict(expected: list[datetime], runner: Callable[[Case], list[datetime]],
            case: Case) -> str:  # fmt: skip
    """Return "ok", or a cross with what the runner returned instead."""
    try:
        got = runner(case)
    except Exception as error:  # any failure is a result worth showing
        return f"✗ {type(error).__name__}"

    return "ok" if got == expected else f"✗ {show(got)}"


def dst_table() -> list[str]:
    """Build the table of DST and day-rule cases."""
    header = ["case", "expression", "cronie rules (reference)", *RUNNERS]
    lines = [row(header), row(["---"] * len(header))]
    for case in CASES:
        expected = cronie_reference(case)
        cells = [verdict(expected, runner, case) for runner in RUNNERS.values()]
        lines.append(row([case.label, f"`{case.expression}`", show(expected), *cells]))

    return lines


def refusal_table() -> list[str]:
    """Build the table of expressions SPEC.md refuses."""
    checks: dict[str, Callable[[str], object]] = {
        "cronsim": lambda text: CronSim(text, datetime.now(UTC)),
        "croniter": lambda text: croniter(text, datetime.now(UTC)),
        "socmeth": parse_schedule,
    }
    header = ["refusal", "expression", *checks]
    lines = [row(header), row(["---"] * len(header))]
    for label, text in REFUSALS:
        cells = [refused(check, text) for check in checks.values()]
        lines.append(row([label, f"`{text}`", *cells]))

    return lines


def refused(check: Callable[[str], object], text: str) -> str:
    """Tell whether a library refuses an expression."""
    try:
        check(text)
    except Exception:  # each library has its own error types
        return "refused"

    return "**accepted**"


# Transitions the random sweep starts near; Antarctica/Troll shifts by 2 hours.
SWEEP_TRANSITIONS = [
    (NY, utc(2026, 3, 8, 7)),
    (NY, utc(2026, 11, 1, 6)),
    (LH, utc(2026, 4, 4, 15)),
    (LH, utc(2026, 10, 3, 15, 30)),
    (BER, utc(2026, 3, 29, 1)),
    (BER, utc(2026, 10, 25, 1)),
    ("America/Havana", utc(2026, 3, 8, 5)),
    ("America/Santiago", utc(2026, 4, 5, 3)),
    ("Antarctica/Troll", utc(2026, 10, 25, 1)),
]
SWEEP_SIZE = 400
SWEEP_SEED = 2026


def random_field(rng: random.Random, low: int, high: int) -> str:
    """Return a random minute or hour field: star, step, value, list or range."""
    first, second = sorted(rng.sample(range(low, high + 1), 2))
    return rng.choice(
        [
            "*",
            f"*/{rng.choice([2, 3, 5, 7, 10, 15, 20, 30, 45])}",
            str(first),
            f"{first},{second}",
            f"{first}-{second}",
            f"{first}-{second}/{rng.randint(2, 5)}",
        ]
    )


def sweep_cases() -> list[Case]:
    """Return random daily expressions asked from within 3 hours of a transition."""
    rng = random.Random(SWEEP_SEED)
    cases = []
    for _ in range(SWEEP_SIZE):
        zone, transition = rng.choice(SWEEP_TRANSITIONS)
        hour = rng.choice([random_field(rng, 0, 23), "1", "2", "1-3", "*/2"])
        expression = f"{random_field(rng, 0, 59)} {hour} * * *"
        after = transition + timedelta(minutes=rng.randint(-180, 180))
        cases.append(Case("sweep", expression, zone, after, count=6, days=4))

    return cases


def sweep_table() -> list[str]:
    """Count, per library, the random cases whose fires differ from cronie's."""
    cases = sweep_cases()
    references = [cronie_reference(case) for case in cases]
    header = ["library", f"cases differing from cronie (of {len(cases)})"]
    lines = [row(header), row(["---"] * len(header))]
    for name, runner in RUNNERS.items():
        wrong = sum(
            not agrees(expected, runner, case)
            for case, expected in zip(cases, references, strict=True)
        )
        lines.append(row([name, str(wrong)]))

    return lines


def agrees(
    expected: list[datetime], runner: Callable[[Case], list[datetime]], case: Case
) -> bool:
    """Tell whether a runner's fires start with the reference's (a 4-day window)."""
    try:
        got = runner(case)
    except Exception:  # a crash is a disagreement
        return False

    return got[: len(expected)] == expected


def timing_table() -> list[str]:
    """Time one next-fire computation per library, in microseconds."""
    header = ["expression", "cronsim (parse+next)", "croniter", "socmeth (cache miss)"]
    lines = [row(header), row(["---"] * len(header))]
    for text in ("*/15 * * * *", "0 9-17 * * 1-5", "30 2 1 * *"):
        cells = [micros(call) for call in timed_calls(text)]
        lines.append(row([f"`{text}`", *cells]))

    return lines


def timed_calls(text: str) -> list[Callable[[], object]]:
    """Return one next-fire call per library for an expression in New York."""
    after = utc(2026, 5, 4, 12).astimezone(ZoneInfo(NY))
    schedule = parse_schedule(text, NY)
    steps = iter(range(10**9))

    def with_cronsim() -> object:
        return next(CronSim(text, after))

    def with_croniter() -> object:
        return croniter(text, after).get_next(datetime)

    def with_socmeth() -> object:
        # A new `after` each call, so the next-fire cache never answers.
        return schedule.next_fire(after + next(steps) * timedelta(seconds=1))

    return [with_cronsim, with_croniter, with_socmeth]


def micros(call: Callable[[], object], number: int = 2000) -> str:
    """Return the mean time of a call in microseconds."""
    return f"{timeit.timeit(call, number=number) / number * 1e6:.0f} µs"


def row(cells: list[str]) -> str:
    """Render a Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    """Print the four tables."""
    print("## Next fires on DST days and day-rule cases (UTC)\n")
    print("\n".join(dst_table()))
    print(f"\n## Random sweep near transitions (seed {SWEEP_SEED})\n")
    print("\n".join(sweep_table()))
    print("\n## Expressions SPEC.md refuses\n")
    print("\n".join(refusal_table()))
    print("\n## Time for one next fire, America/New_York\n")
    print("\n".join(timing_table()))


if __name__ == "__main__":
    main()
