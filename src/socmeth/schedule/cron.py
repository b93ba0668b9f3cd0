"""Evaluate five-field cron expressions with cronsim, held to cronie's DST rules.

cronsim enumerates the wall-clock times an expression selects; this module turns
them into instants. The choice of cronsim over croniter, and the cases below, are
recorded in docs/schedules.md and bench/compare_cron_libraries.py.

- UTC: cronsim's own answer is exact (no DST).
- Fixed-time jobs (minute and hour do not begin with `*`): cronsim already walks
  naive wall time and maps a skipped time to the first instant after the jump and
  a repeated one to its first pass, as cronie does. One gap is closed here: asked
  from inside the second pass of a repeated hour, cronsim returns the first-pass
  instant, which lies before `after`.
- Wildcard jobs: cronsim's zone-aware stepping assumes DST shifts of whole hours
  and skips real fires around Lord Howe's 30-minute shift, so wall times come
  from cronsim's naive mode and are mapped to instants here: a wall time that
  does not exist yields nothing, a repeated one yields both passes.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice
from zoneinfo import ZoneInfo

from cronsim import CronSim

from socmeth.schedule.base import Schedule, as_utc
from socmeth.schedule.describe import describe_cron
from socmeth.schedule.fields import CronFields

# Jobs that share an expression, a zone and a last fire share the next fire, so
# one computation serves them all when thousands fire on the same minute.
_NEXT_FIRE_CACHE_SIZE = 16384
_ONE_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """Fire at the wall-clock instants a five-field cron expression selects."""

    expression: str
    timezone: str
    fields: CronFields = field(repr=False, compare=False)

    @property
    def is_interval(self) -> bool:
        """Tell that this is a cron schedule, not an `@every` interval."""
        return False

    def next_fire(self, after: datetime) -> datetime | None:
        """Return the first fire strictly after `after`, in UTC, or None."""
        return _first_fire(self._plan, self.timezone, as_utc(after))

    def fires(self, after: datetime, count: int) -> list[datetime]:
        """Return the next `count` fires strictly after `after`, in UTC."""
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count}")

        found = _iter_fires(self._plan, self.timezone, as_utc(after))
        return list(islice(found, count))

    def describe(self) -> str:
        """Return the expression in plain English, naming a zone other than UTC."""
        return describe_cron(self.fields, self.timezone)

    @property
    def _plan(self) -> tuple[str, bool]:
        return self.fields.canonical, self.fields.is_fixed_time


@lru_cache(maxsize=_NEXT_FIRE_CACHE_SIZE)
def _first_fire(
    plan: tuple[str, bool], timezone: str, after: datetime
) -> datetime | None:
    return next(_iter_fires(plan, timezone, after), None)


def _iter_fires(
    plan: tuple[str, bool], timezone: str, after: datetime
) -> Iterator[datetime]:
    cron_text, fixed_time = plan
    if timezone == "UTC":
        return _utc_fires(cron_text, after)

    zone = ZoneInfo(timezone)
    if fixed_time:
        return _fixed_time_fires(cron_text, zone, after)

    return _wildcard_fires(cron_text, zone, after)


def _utc_fires(cron_text: str, after: datetime) -> Iterator[datetime]:
    return _drain(CronSim(cron_text, after))


def _fixed_time_fires(
    cron_text: str, zone: ZoneInfo, after: datetime
) -> Iterator[datetime]:
    for fire_at in _drain(CronSim(cron_text, after.astimezone(zone))):
        # Asked from inside the second pass of a repeated hour, cronsim hands
        # back the first pass of a wall time, before `after`. cronie ran the job
        # then and does not repeat it, so the right fire is the next one.
        if fire_at > after:
            yield fire_at


def _wildcard_fires(
    cron_text: str, zone: ZoneInfo, after: datetime
) -> Iterator[datetime]:
    """Yield every instant after `after` whose wall time the fields select.

    The earliest instant of each wall time grows strictly with the wall time;
    only second passes of a repeated hour come out of order, so they wait in a
    heap until no later wall time can precede them.
    """
    pending: list[datetime] = []
    for wall in _walls_from(cron_text, zone, after):
        instants = _instants(wall, zone)
        if not instants:
            continue

        earliest = instants[0]
        while pending and pending[0] < earliest:
            yield heapq.heappop(pending)
        for instant in instants:
            if instant > after:
                heapq.heappush(pending, instant)
        while pending and pending[0] <= earliest:
            yield heapq.heappop(pending)

    yield from sorted(pending)


def _walls_from(cron_text: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Yield matching naive wall times, from early enough to cover `after`.

    Inside a repeated hour, wall times up to one shift before `after`'s own
    still have a second pass to come, so enumeration starts that much earlier.
    """
    wall = after.astimezone(zone).replace(tzinfo=None)
    passes = _readings(wall, zone)
    shift = abs(passes[1] - passes[0])
    start = wall if not shift else wall - shift - _ONE_SECOND
    yield from _drain_naive(CronSim(cron_text, start))


def _instants(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """Return the instants showing this wall time: none, one, or two in a fold."""
    first, second = _readings(wall, zone)
    if first == second:
        return [first]
    if first < second:
        return [first, second]

    # fold=0 reading later than fold=1 means the wall time was skipped.
    return []


def _readings(wall: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the wall time read with the offset before and after a transition."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return first, second


def _drain(found: CronSim) -> Iterator[datetime]:
    for local in _drain_naive(found):
        yield local.astimezone(UTC)


def _drain_naive(found: CronSim) -> Iterator[datetime]:
    while True:
        try:
            local: datetime = next(found)
        except (StopIteration, OverflowError):
            # cronsim gives up after 50 years without a match, and datetime ends
            # in year 9999: either way there is no further fire.
            return
        yield local
