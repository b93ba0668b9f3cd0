"""Own every read of the current time, so tests can move time instead of sleeping.

Scheduler, retry and worker loops read `Clock.now()` once per turn and pass the instant
down to pure functions. `FakeClock` ships in the package so that tests of any layer can
drive time by hand.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta


class Clock(ABC):
    """Tell the current instant and wait for time to pass.

    Contract: `now()` returns an aware UTC datetime that never goes backwards within one
    clock; `sleep(seconds)` returns once at least that much clock time has passed, or
    earlier when the clock is woken (a fake clock moved by a test).
    """

    @abstractmethod
    def now(self) -> datetime:
        """Return the current instant as an aware UTC datetime."""

    @abstractmethod
    def monotonic(self) -> float:
        """Return seconds from an arbitrary origin, for measuring durations."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Wait for `seconds` of clock time."""


class SystemClock(Clock):
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock(Clock):
    """A clock that only moves when a test calls `advance` or `set`."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._origin = self._now
        self._moved = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return (self._now - self._origin).total_seconds()

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake every sleeper."""
        self.set(self._now + timedelta(seconds=seconds))

    def set(self, instant: datetime) -> None:
        """Jump the clock to `instant`, which may not be earlier than now."""
        if instant < self._now:
            raise ValueError(f"FakeClock cannot go back from {self._now} to {instant}")
        self._now = instant
        self._moved.set()
        self._moved = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + timedelta(seconds=seconds)
        while self._now < deadline:
            await self._moved.wait()
