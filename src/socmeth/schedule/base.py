"""Define what every schedule offers: fires strictly after an instant, and words."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime


class Schedule(ABC):
    """Yield the fires of a job's time rule and describe it in plain English.

    Contract: `next_fire(after)` returns the first fire strictly after `after` (an
    aware datetime in any zone) as an aware UTC datetime, or None when no fire
    exists; it is a pure function of its argument. `fires(after, count)` returns
    the same instants as chaining `next_fire` `count` times. Implementations are
    frozen dataclasses carrying `expression` (as the user gave it, stripped) and
    `timezone` (an IANA name).
    """

    expression: str
    timezone: str

    @property
    @abstractmethod
    def is_interval(self) -> bool:
        """Tell whether the schedule is an `@every` interval."""

    @abstractmethod
    def next_fire(self, after: datetime) -> datetime | None:
        """Return the first fire strictly after `after`, in UTC, or None."""

    @abstractmethod
    def describe(self) -> str:
        """Return the schedule in plain English."""

    def fires(self, after: datetime, count: int) -> list[datetime]:
        """Return the next `count` fires strictly after `after`, in UTC."""
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count}")

        found: list[datetime] = []
        cursor: datetime | None = after
        while cursor is not None and len(found) < count:
            cursor = self.next_fire(cursor)
            if cursor is not None:
                found.append(cursor)

        return found


def as_utc(instant: datetime) -> datetime:
    """Return an aware instant in UTC; a naive one is a programming error."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, got naive {instant.isoformat()}")

    return instant.astimezone(UTC)
