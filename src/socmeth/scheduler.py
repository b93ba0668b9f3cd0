"""Turn due fires and due retries into queued attempts, one turn at a time.

Each turn reads the clock once and:

1. reads due jobs through the index on next fires (`Store.due_jobs`), plans their runs
   with `fires.plan_job_fires` (pure) and writes runs and next fires in one transaction
   (`Store.record_fires`), which the unique (job, scheduled instant) key guards;
2. cancels the runs a `concurrency: replace` fire displaces;
3. resolves dependencies (`Store.resolve_dependencies` with the pure
   `dependencies.plan_dependencies`), a pass at a time until the work list is empty:
   each pass may demand runs of dependencies, release waiting runs, end them
   `upstream_failed` or `skipped`, and push unscheduled dependents;
4. starts the attempts of runs whose pending retry is due.

Each step publishes the attempts it queued before the next one starts; fires are
published batch by batch, as each is written.

It then sleeps until the earliest next fire or retry, at most `MAX_SLEEP_S`, or until
woken (a job changed, an attempt asked for a retry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from datetime import datetime

from socmeth.clock import Clock
from socmeth.dependencies import plan_dependencies
from socmeth.errors import FencedError, StoreError
from socmeth.fires import plan_job_fires
from socmeth.metrics import Metrics
from socmeth.models import Run, RunState
from socmeth.queue.base import Queue, QueueError
from socmeth.store.base import (
    Fence,
    FireAdvance,
    GiveUp,
    NewRun,
    QueuedAttempt,
    Store,
)
from socmeth.tasks import cancel_and_wait

log = logging.getLogger(__name__)

BATCH = 1000  # due jobs or retries handled per statement batch
# Passes of dependency resolution per turn: each goes one level up a chain of
# demands, so this bounds the depth resolved in one turn, not in all.
MAX_DEPENDENCY_PASSES = 32
MAX_SLEEP_S = 1.0  # bounds the delay of fires of jobs changed by another process
ERROR_BACKOFF_S = (0.5, 1, 2, 5)
# Turns failing in a row before readiness reports the scheduler failing: one may
# be a blip of the store; three (about 3.5 s) are not.
FAILING_AFTER = 3


class Scheduler:
    """Run the scheduler loop of this node."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        clock: Clock,
        metrics: Metrics,
        node_id: str,
        stop_local: Callable[[Collection[int]], None],
    ) -> None:
        self._store = store
        self._stop_local = stop_local
        self._queue = queue
        self._clock = clock
        self._metrics = metrics
        self._node_id = node_id
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.started_at: datetime | None = None
        self.failing: str | None = None  # why the last turns failed, while they do
        self.fence: Fence | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, fence: Fence | None = None, since: datetime | None = None) -> None:
        """Start the loop; fires before `since` (default: now) count as missed.

        With a `fence`, every write of the loop is made under that leadership: once
        another node took the lease, the loop ends instead of writing. A leader
        taking over from another passes `since`, so the fires of the handover are
        made, late, rather than missed.
        """
        now = self._clock.now()
        self.started_at = min(since, now) if since is not None else now
        self.fence = fence
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    def wake(self) -> None:
        """Make the loop take a turn now."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the loop after its current turn."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self.turn(self._clock.now())
                failures = 0
                self.failing = None
            except asyncio.CancelledError:
                raise
            except FencedError as exc:
                # Another node leads: this node's leadership stops the loop, and
                # meanwhile nothing more is tried.
                log.warning(
                    "scheduler stops: %s", exc, extra={"event": "scheduler.fenced"}
                )
                return
            except Exception as exc:
                delay = ERROR_BACKOFF_S[min(failures, len(ERROR_BACKOFF_S) - 1)]
                failures += 1
                if failures >= FAILING_AFTER:
                    self.failing = f"{failures} turns in a row failed: {exc}"
                # An outage of the store is one line; anything else is a bug of
                # ours and keeps its traceback.
                log.warning(
                    "scheduler turn failed (%s); retrying in %ss",
                    exc,
                    delay,
                    exc_info=not isinstance(exc, StoreError),
                    extra={"event": "scheduler.turn_failed"},
                )
                await self._clock.sleep(delay)
                continue
            await self._sleep_until_due()

    async def _sleep_until_due(self) -> None:
        due_at = await self._store.next_due_at()
        now = self._clock.now()
        delay = MAX_SLEEP_S
        if due_at is not None:
            delay = min(delay, max(0.0, (due_at - now).total_seconds()))
        if delay <= 0:
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def turn(self, now: datetime) -> int:
        """Take one turn at `now`; return how many attempts it queued.

        Each step publishes what it queued before the next one starts: its writes
        are committed, and a later step failing must not keep them off the queue.
        """
        assert self.started_at is not None, "start() sets the start instant"
        count = await self._fire_due_jobs(now)
        for step in (self._resolve_dependencies, self._start_due_retries):
            queued = await step(now)
            await self._publish(queued)
            count += len(queued)
        return count

    async def _publish(self, queued: list[QueuedAttempt]) -> None:
        """Publish what a step queued. A queue that fails does not fail the turn:
        the attempts are stored, and the reaper publishes them again once the queue
        answers; the other steps still run."""
        if not queued:
            return
        try:
            await self._queue.publish(queued)
        except QueueError as exc:
            log.warning(
                "%s queued attempts were not published: %s; they are published "
                "again once the queue answers",
                len(queued),
                exc,
                extra={"event": "scheduler.publish_failed", "count": len(queued)},
            )

    async def _fire_due_jobs(self, now: datetime) -> int:
        """Turn due fires into runs, batch by batch; return the attempts queued."""
        assert self.started_at is not None
        count = 0
        while jobs := await self._store.due_jobs(now, BATCH):
            active = await self._store.active_runs([job.id for job in jobs])
            advances: list[FireAdvance] = []
            new_runs: list[NewRun] = []
            cancel_ids: list[int] = []
            give_ups: list[GiveUp] = []
            for job in jobs:
                plan = plan_job_fires(job, active.get(job.id, []), now, self.started_at)
                advances.append(plan.advance)
                new_runs.extend(plan.runs)
                cancel_ids.extend(plan.cancel_run_ids)
                give_ups.extend(plan.give_ups)
            for run_id in cancel_ids:
                await self._store.cancel_run(
                    run_id, "replaced by a newer fire", now, fence=self.fence
                )
            self._stop_local(cancel_ids)
            created = await self._store.record_fires(
                advances, new_runs, now, give_ups, fence=self.fence
            )
            # Each batch goes on the queue once written: with 10,000 fires due at
            # once, workers start on the first thousand while the rest are written.
            batch_queued = self._note_created(created)
            await self._publish(batch_queued)
            count += len(batch_queued)
            if len(jobs) < BATCH:
                break
        return count

    async def _resolve_dependencies(self, now: datetime) -> list[QueuedAttempt]:
        queued: list[QueuedAttempt] = []
        for _ in range(MAX_DEPENDENCY_PASSES):
            # Each pass reads the clock: the runs it makes or ends are stamped with
            # its own instant, not the turn's, which many passes may have aged.
            now = max(now, self._clock.now())
            done = await self._store.resolve_dependencies(
                now, BATCH, plan_dependencies, fence=self.fence
            )
            if not done.worked:
                break
            queued.extend(
                self._note_created([*done.ended, *done.waiting, *done.queued])
            )
        return queued

    def _note_created(self, runs: list[Run]) -> list[QueuedAttempt]:
        """Count and log runs that were created or changed state; return the queued
        attempts among them."""
        queued = []
        for run in runs:
            if not run.state.is_active:
                self._metrics.runs_ended.labels(job=run.job_name, state=run.state).inc()
                log.info(
                    "run %s of job %s %s: %s",
                    run.id,
                    run.job_name,
                    run.state,
                    run.reason,
                    extra={"event": f"run.{run.state}", "run_id": run.id},
                )
                continue
            if run.state is RunState.WAITING:
                log.info(
                    "run %s of job %s waits for its dependencies",
                    run.id,
                    run.job_name,
                    extra={"event": "run.waiting", "run_id": run.id},
                )
                continue
            attempt = run.last_attempt
            if attempt is not None:
                queued.append(QueuedAttempt(attempt.id, run.id, attempt.number))
            cause = (
                f"for the fire at {run.scheduled_at.isoformat()}"
                if run.scheduled_at
                else f"(trigger {run.trigger})"
            )
            log.info(
                "run %s of job %s queued %s%s",
                run.id,
                run.job_name,
                cause,
                " (late)" if run.late else "",
                extra={"event": "run.queued", "run_id": run.id, "late": run.late},
            )
        return queued

    async def _start_due_retries(self, now: datetime) -> list[QueuedAttempt]:
        queued: list[QueuedAttempt] = []
        for run in await self._store.due_retries(now, BATCH):
            attempt = await self._store.start_retry(run.id, now, fence=self.fence)
            if attempt is None:
                continue
            queued.append(attempt)
            log.info(
                "run %s of job %s queued attempt %s",
                run.id,
                run.job_name,
                attempt.number,
                extra={"event": "attempt.queued", "run_id": run.id},
            )
        return queued
