"""Lay out the dashboard's chart of ended and failed runs per hour, as SVG numbers.

Pure: it takes the store's buckets and returns bar geometry; the template draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from socmeth.store.base import EndedBucket

HOURS = 24
HOUR = timedelta(hours=1)
WIDTH = 480
HEIGHT = 120
GAP = 2


@dataclass(frozen=True)
class Bar:
    """One hour: where its bar stands and how tall its ended and failed parts are."""

    start_at: datetime
    x: float
    width: float
    ended: int
    failed: int
    ended_height: float
    failed_height: float


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    peak: int
    ended: int
    failed: int
    width: int = WIDTH
    height: int = HEIGHT


def chart_since(now: datetime) -> datetime:
    """Return the start of the first hour shown: the current hour is the last."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour - HOUR * (HOURS - 1)


def lay_out(buckets: list[EndedBucket]) -> Chart:
    """Place one bar per bucket, scaled so the busiest hour fills the height."""
    peak = max((b.ended for b in buckets), default=0)
    slot = WIDTH / max(len(buckets), 1)
    scale = HEIGHT / peak if peak else 0.0
    bars = [
        Bar(
            start_at=bucket.start_at,
            x=round(index * slot + GAP / 2, 2),
            width=round(slot - GAP, 2),
            ended=bucket.ended,
            failed=bucket.failed,
            ended_height=round(bucket.ended * scale, 2),
            failed_height=round(bucket.failed * scale, 2),
        )
        for index, bucket in enumerate(buckets)
    ]
    return Chart(
        bars=bars,
        peak=peak,
        ended=sum(b.ended for b in buckets),
        failed=sum(b.failed for b in buckets),
    )
