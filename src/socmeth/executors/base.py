"""Define the executor interface: what a worker hands over to run one attempt.

The worker claims an attempt, builds an `ExecutionContext`, and awaits
`Executor.execute`, reading the `OutputTail` while it runs and setting `cancel` when the
run is cancelled. The executor owns everything between the start and the end of the
work: spawning, talking to the network, the timeout and the cancellation.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from socmeth.executors.output import OutputTail
from socmeth.models import AttemptState, Job, RunState, Trigger

RESULT_STATES = frozenset(
    {
        AttemptState.SUCCEEDED,
        AttemptState.FAILED,
        AttemptState.TIMED_OUT,
        AttemptState.CANCELLED,
    }
)


@dataclass(frozen=True)
class ExecutionContext:
    """Describe the one attempt to execute; everything an executor may need to know."""

    job: Job
    run_id: int
    attempt: int
    trigger: Trigger
    scheduled_at: datetime | None
    previous_state: RunState | None
    previous_run_id: int | None
    timeout: timedelta
    kill_grace: timedelta = timedelta(seconds=5)


@dataclass(frozen=True)
class ExecutionResult:
    """Tell how an attempt ended: its state and what was observed on the way."""

    state: AttemptState
    exit_code: int | None = None
    http_status: int | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.state not in RESULT_STATES:
            raise ValueError(
                f"an execution ends succeeded, failed, timed_out or cancelled, "
                f"not {self.state}"
            )


class Executor(ABC):
    """Run attempts of one job type.

    Contract, for every implementation:

    - `execute` runs one attempt described by `ctx` and returns how it ended. It never
      raises for a failure of the job itself (a bad command, an HTTP error status, an
      unreachable host, a timeout): each becomes an `ExecutionResult` whose `error` is
      one line for humans. It raises only for bugs and when its own task is cancelled.
    - Output goes into `output` as it arrives, so the worker can show it live.
    - `ctx.timeout` is enforced here (the caller has already capped it): past it, the
      work is stopped and the result is TIMED_OUT.
    - When `cancel` is set the work is stopped as fast as it can be and the result is
      CANCELLED. If `cancel` is already set, nothing is started.
    - When the task running `execute` is cancelled, the work is stopped at once (for a
      command, SIGKILL to its process group) before CancelledError propagates.
    - Nothing outlives the call: no process, no open connection, no zombie.
    - A job's secrets (header values, env values, the webhook secret) are never logged
      or written to the output.
    """

    @abstractmethod
    async def execute(
        self, ctx: ExecutionContext, output: OutputTail, cancel: asyncio.Event
    ) -> ExecutionResult:
        """Run one attempt and return how it ended."""


def iso_utc(instant: datetime) -> str:
    """Format an instant as ISO 8601 in UTC, the form every socmeth interface uses."""
    return instant.astimezone(UTC).isoformat()


def describe_duration(duration: timedelta) -> str:
    """Write a duration the short way a timeout is set: "1s", "0.5s", "300s"."""
    seconds = duration.total_seconds()
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"


def timed_out(ctx: ExecutionContext, exit_code: int | None = None) -> ExecutionResult:
    """Build the result of an attempt stopped at its timeout."""
    return ExecutionResult(
        AttemptState.TIMED_OUT,
        exit_code=exit_code,
        error=f"timed out after {describe_duration(ctx.timeout)}",
    )


def cancelled(exit_code: int | None = None) -> ExecutionResult:
    """Build the result of an attempt stopped because its run was cancelled."""
    return ExecutionResult(
        AttemptState.CANCELLED, exit_code=exit_code, error="cancelled"
    )


class Ending(Enum):
    """Say what ended a wait: the work finishing, the timeout or the cancel event."""

    DONE = "done"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


async def wait_bounded(
    future: asyncio.Future[Any], timeout: timedelta, cancel: asyncio.Event
) -> Ending:
    """Wait until `future` is done, `timeout` has passed or `cancel` is set.

    `future` is left as it is (never cancelled here); when several happen at once,
    the work finishing wins, then the cancel.
    """
    if future.done():
        return Ending.DONE
    if cancel.is_set():
        return Ending.CANCELLED

    waiter = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait(
            {future, waiter},
            timeout=timeout.total_seconds(),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        waiter.cancel()

    if future.done():
        return Ending.DONE
    if cancel.is_set():
        return Ending.CANCELLED
    return Ending.TIMED_OUT


async def run_bounded(
    work: Coroutine[Any, Any, ExecutionResult],
    ctx: ExecutionContext,
    cancel: asyncio.Event,
) -> ExecutionResult:
    """Await `work` until it ends, `ctx.timeout` passes or `cancel` is set.

    Past the timeout or on cancel, `work` is cancelled and awaited, so whatever it holds
    (a connection, a response stream) is released before the result is returned.
    """
    if cancel.is_set():
        work.close()
        return cancelled()

    task = asyncio.ensure_future(work)
    try:
        ending = await wait_bounded(task, ctx.timeout, cancel)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    if ending is Ending.DONE:
        return task.result()
    if ending is Ending.CANCELLED:
        return cancelled()
    return timed_out(ctx)
