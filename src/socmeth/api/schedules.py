"""Serve the schedule preview that the job forms show as an expression is typed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from socmeth.api import NodeDep
from socmeth.api.schemas import Preview
from socmeth.schedule import parse_schedule, validate_timezone

router = APIRouter(prefix="/api/schedules", tags=["schedules"])

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
        AwareDatetime | None,
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
        fires=[fire.astimezone(zone).isoformat() for fire in fires],
        description=parsed.describe(),
    )
