"""Serve the schedule preview that the job forms show as an expression is typed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, tzinfo
from typing import Annotated

from fastapi import APIRouter, Query

from socmeth.api import NodeDep
from socmeth.api.access import VIEWER
from socmeth.api.params import QueryInstant
from socmeth.api.schemas import Preview
from socmeth.schedule import parse_schedule, validate_timezone

router = APIRouter(prefix="/api/schedules", tags=["schedules"], dependencies=[VIEWER])

MAX_PREVIEW = 100


@router.get("/preview")
async def preview_schedule(
    node: NodeDep,
    schedule: Annotated[str, Query(max_length=1000, description="Cron or @every.")],
    timezone: Annotated[
        str | None,
        Query(max_length=100, description="IANA name; default scheduler.timezone."),
    ] = None,
    after: Annotated[
        QueryInstant | None,
        Query(description="ISO 8601 with an offset or Z; default now."),
    ] = None,
    count: Annotated[int, Query(ge=1, le=MAX_PREVIEW)] = 5,
) -> Preview:
    """List the next fires strictly after `after`, in the schedule's time zone.

    An `@every` schedule is previewed as if its job were created at `after`.
    """
    zone_name = timezone or node.config.scheduler.timezone
    zone = validate_timezone(zone_name)
    start = after or node.clock.now()
    parsed = parse_schedule(schedule, zone_name, start)
    fires = parsed.fires(start, count)
    return Preview(
        fires=_local_times(fires, zone),
        description=parsed.describe(),
    )


def _local_times(fires: Iterable[datetime], zone: tzinfo) -> list[str]:
    """Write fires with the zone's offset, up to the last that `datetime` can hold.

    An `@every` schedule ignores the zone, so its fires run up to the end of year 9999
    in UTC, where the local time of a zone ahead of UTC is in year 10000.
    """
    written = []
    for fire in fires:
        try:
            written.append(fire.astimezone(zone).isoformat())
        except OverflowError:
            break
    return written
